//! libFuzzer entry for the `list_query` target of opsd-fuzz: the same function, coverage-guided.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let target = opsd_fuzz::target("list_query").expect("a known target");
    (target.run)(data);
});
