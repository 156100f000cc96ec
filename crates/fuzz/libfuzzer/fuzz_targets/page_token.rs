//! libFuzzer entry for the `page_token` target of opsd-fuzz: the same function, coverage-guided.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let target = opsd_fuzz::target("page_token").expect("a known target");
    (target.run)(data);
});
