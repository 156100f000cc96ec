//! Fuzz targets for everything opsd reads from a caller or an operator, and a
//! mutation driver for them that runs on stable Rust.
//!
//! Each target takes arbitrary bytes, feeds them to the code the server runs
//! (id and page-token parsing, list filters, gRPC requests through the real
//! router, REST requests through the real gateway, configuration files, the
//! IAM token exchange and the tokens it issues) and
//! asserts what must hold for any input: a property broken is a panic. Each
//! returns a short label of what the input did (`create:INVALID_ARGUMENT:description`);
//! the driver keeps inputs that show a label not seen before, which steers it
//! towards new behaviour without coverage instrumentation.
//!
//! `corpus/<target>/` holds the checked-in inputs every run starts from;
//! `tests/smoke.rs` replays them and runs every target briefly, and
//! `cargo run --release -p opsd-fuzz -- --target all --seconds 600` runs long.

pub mod driver;
pub mod harness;
pub mod mutate;
pub mod seeds;
pub mod targets;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// What it feeds and what it asserts, for `--list`.
    pub about: &'static str,
    /// Runs one input; panics when a property breaks; returns the behaviour label.
    pub run: fn(&[u8]) -> String,
    /// Tokens the mutator splices in: field names, enum names, edge values.
    pub dictionary: &'static [&'static [u8]],
}

/// Every target, in the order `--target all` runs them.
pub fn targets() -> &'static [Target] {
    targets::ALL
}

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    targets().iter().find(|t| t.name == name)
}

/// The checked-in corpus directory of a target.
pub fn corpus_dir(target: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Every file of a corpus directory, by name (missing directory: none).
pub fn read_corpus(dir: &std::path::Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            files.push((name, std::fs::read(entry.path())?));
        }
    }
    files.sort();
    Ok(files)
}
