#![no_main]

use libfuzzer_sys::fuzz_target;
use student_fuzz::fuzzing;

fuzz_target!(|data: &[u8]| {
    student_fuzz::init();
    student_fuzz::report(fuzzing::compile(data));
});
