//! The fuzz targets in CI: every checked-in corpus file passes, then each
//! target runs a few seconds from its corpus with a fixed seed. Long runs:
//! `cargo run --release -p opsd-fuzz -- --target all --seconds 600`.
//!
//! `OPSD_FUZZ_SECONDS` (default 4) and `OPSD_FUZZ_SEED` (default 1) change
//! the bounded runs.

use std::time::Duration;

use opsd_fuzz::driver::{self, Options};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let files = opsd_fuzz::read_corpus(&opsd_fuzz::corpus_dir(target)).unwrap();
    assert!(!files.is_empty(), "the {target} corpus is checked in");
    files
}

#[test]
fn every_corpus_file_passes() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for target in opsd_fuzz::targets() {
        for (name, input) in corpus(target.name) {
            replayed += 1;
            if let Err(message) = driver::run_one(target, &input) {
                failures.push(format!("{}/{name}: {message}", target.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(replayed > 100, "only {replayed} corpus files");
}

#[test]
fn the_seeds_are_in_the_corpus() {
    for target in opsd_fuzz::targets() {
        let files = corpus(target.name);
        for (name, bytes) in opsd_fuzz::seeds::seeds(target.name) {
            let checked_in = files.iter().find(|(file, _)| *file == name);
            assert_eq!(
                checked_in.map(|(_, b)| b),
                Some(&bytes),
                "{}/{name} differs from its seed: run `cargo run -p opsd-fuzz -- --write-seeds`",
                target.name
            );
        }
    }
}

fn fuzz_briefly(name: &str) {
    let target = opsd_fuzz::target(name).unwrap();
    let inputs: Vec<Vec<u8>> = corpus(name).into_iter().map(|(_, b)| b).collect();
    let options = Options {
        max_executions: 2_000_000,
        ..Options::bounded(
            Duration::from_secs(env_u64("OPSD_FUZZ_SECONDS", 4)),
            env_u64("OPSD_FUZZ_SEED", 1),
        )
    };
    let report = driver::run(target, &inputs, &options);
    eprintln!("{}", report.summary());
    if let Some(failure) = &report.failure {
        panic!(
            "{name}: {}\ninput: {}\nadd it to crates/fuzz/corpus/{name}/ once fixed",
            failure.message,
            driver::escape(&failure.input)
        );
    }
    assert!(
        report.executions > inputs.len() as u64,
        "{name} ran past its corpus"
    );
}

#[test]
fn fuzz_id() {
    fuzz_briefly("id");
}

#[test]
fn fuzz_page_token() {
    fuzz_briefly("page_token");
}

#[test]
fn fuzz_list_query() {
    fuzz_briefly("list_query");
}

#[test]
fn fuzz_grpc() {
    fuzz_briefly("grpc");
}

#[test]
fn fuzz_rest() {
    fuzz_briefly("rest");
}

#[test]
fn fuzz_config() {
    fuzz_briefly("config");
}

#[test]
fn fuzz_iam() {
    fuzz_briefly("iam");
}
