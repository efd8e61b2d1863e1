// The `student` Android library (AAR): the Rust runtime built for each ABI with cargo-ndk,
// and the Kotlin bindings generated from that library with uniffi-bindgen at build time.
//
//   ./gradlew assembleRelease      -> build/outputs/aar/student-release.aar
//
// Needs rustup with the Android targets, `cargo install cargo-ndk`, and the NDK
// (ANDROID_NDK_HOME, or the NDK that the Android SDK manager installed).

plugins {
    id("com.android.library") version "8.7.3"
    id("org.jetbrains.kotlin.android") version "2.1.0"
}

val repository: File = rootDir.parentFile
val rustLibs = layout.buildDirectory.dir("rustJniLibs")
val generatedKotlin = layout.buildDirectory.dir("generated/uniffi")
val abis = listOf("arm64-v8a", "armeabi-v7a", "x86_64")

android {
    namespace = "dev.student"
    compileSdk = 35

    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
        ndk { abiFilters += abis }
    }

    sourceSets["main"].jniLibs.srcDir(rustLibs)
    sourceSets["main"].java.srcDir(generatedKotlin)

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
}

dependencies {
    // The generated bindings call the Rust library through JNA; the AAR flavour carries
    // JNA's own native code for every ABI.
    implementation("net.java.dev.jna:jna:5.17.0@aar")
}

// libstudent_ffi.so for every ABI, into build/rustJniLibs/<abi>/.
val cargoNdk by tasks.registering(Exec::class) {
    workingDir = repository
    val targets = abis.flatMap { listOf("-t", it) }
    commandLine(
        listOf("cargo", "ndk") + targets +
            listOf("-o", rustLibs.get().asFile.path, "build", "--release", "-p", "student-ffi")
    )
    inputs.dir(File(repository, "runtime/src"))
    inputs.dir(File(repository, "bindings/src"))
    inputs.files(
        File(repository, "Cargo.toml"),
        File(repository, "Cargo.lock"),
        File(repository, "runtime/Cargo.toml"),
        File(repository, "bindings/Cargo.toml"),
        File(repository, "bindings/uniffi.toml"),
    )
    outputs.dir(rustLibs)
}

// Kotlin bindings read from the built library itself (uniffi's library mode), so they
// always match it.
val generateBindings by tasks.registering(Exec::class) {
    dependsOn(cargoNdk)
    workingDir = repository
    val library = rustLibs.get().file("arm64-v8a/libstudent_ffi.so").asFile.path
    val out = generatedKotlin.get().asFile.path
    commandLine(
        "sh", "-c",
        "cargo build --release -p student-ffi-bindgen && " +
            "target/release/uniffi-bindgen generate --library '$library' " +
            "--language kotlin --out-dir '$out'"
    )
    // The bindings are read from the library and shaped by uniffi.toml: either changing
    // must regenerate them.
    inputs.file(library)
    inputs.file(File(repository, "bindings/uniffi.toml"))
    outputs.dir(generatedKotlin)
}

tasks.named("preBuild") { dependsOn(generateBindings) }
