//! The web console in a real browser: `tests/console` (pytest driving Debian's
//! chromium through Playwright) against this package's real `opsd` binary,
//! which the tests start themselves. `scripts/console-venv` builds the venv.
//!
//! Without a chromium (`/usr/bin/chromium`, or `OPSD_CHROMIUM`) the test
//! says `SKIPPED` and passes, unless `OPSD_REQUIRE_BROWSER=1` (set by
//! `.ci/run`) makes that a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("OPSD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    path.is_file().then_some(path)
}

fn console_python() -> String {
    let venv = Command::new("bash")
        .arg(repo_root().join("scripts/console-venv"))
        .output()
        .expect("bash runs scripts/console-venv");
    assert!(
        venv.status.success(),
        "cannot prepare the console test environment: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    String::from_utf8(venv.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("console-venv prints the python path")
        .trim()
        .to_owned()
}

/// Every browser test passes; none is skipped.
#[test]
fn the_console_works_in_a_real_browser_against_a_real_opsd() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var("OPSD_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "OPSD_REQUIRE_BROWSER=1 but there is no chromium at /usr/bin/chromium (apt-get install chromium, or set OPSD_CHROMIUM)"
        );
        eprintln!(
            "SKIPPED: no chromium at /usr/bin/chromium; apt-get install chromium to run the console's browser tests"
        );
        return;
    };
    let python = console_python();
    let output = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"])
        .arg(repo_root().join("tests/console"))
        .env("OPSD_BIN", env!("CARGO_BIN_EXE_opsd"))
        .env("OPSD_CHROMIUM", &chromium)
        .output()
        .expect("the venv's python runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "console tests failed:\n{report}");
    assert!(report.contains(" passed"), "pytest ran no test:\n{report}");
    assert!(
        !report.contains("skipped"),
        "a console test was skipped:\n{report}"
    );
}
