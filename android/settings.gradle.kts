// A standalone build of the `student` Android library; an app can also include this
// folder as a module of its own build (`include(":student")` with `projectDir` set here).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "student"
