//! libFuzzer entry for the `iam` target of opsd-fuzz: the same function, coverage-guided.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let target = opsd_fuzz::target("iam").expect("a known target");
    (target.run)(data);
});
