//! The Python client (`clients/python`): its pytest suite against this
//! package's real `opsd` binary, which the tests start, kill and restart
//! themselves. `scripts/python-client-venv` builds the venv (the pinned
//! requirements, then the package installed with pip).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The python of the client's venv (created or refreshed first).
fn client_python() -> String {
    let venv = Command::new("bash")
        .arg(repo_root().join("scripts/python-client-venv"))
        .output()
        .expect("bash runs scripts/python-client-venv");
    assert!(
        venv.status.success(),
        "cannot prepare the python client environment: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    String::from_utf8(venv.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("python-client-venv prints the python path")
        .trim()
        .to_owned()
}

/// Every pytest test of the client passes; none is skipped.
#[test]
fn the_python_client_passes_its_tests_against_a_real_opsd() {
    let python = client_python();
    let output = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(repo_root().join("clients/python/tests"))
        .env("OPSD_BIN", env!("CARGO_BIN_EXE_opsd"))
        .env_remove("OPSD_ENDPOINT")
        .env_remove("OPSD_TOKEN")
        .env_remove("OPSD_CA")
        .env_remove("TRACEPARENT")
        .env_remove("TRACESTATE")
        .output()
        .expect("the venv's python runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "python client tests failed:\n{report}"
    );
    assert!(report.contains(" passed"), "pytest ran no test:\n{report}");
    assert!(
        !report.contains("skipped"),
        "a python client test was skipped:\n{report}"
    );
}
