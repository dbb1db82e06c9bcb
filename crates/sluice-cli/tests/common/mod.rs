//! Helpers shared by the CLI test files.

use std::path::Path;
use std::process::{Command, Output};

/// `sluice --home HOME ARGS…`, run from the home's parent, ignoring the caller's SLUICE_*.
pub fn command(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.arg("--home").arg(home).args(args);
    for v in [
        "SLUICE_HOME",
        "SLUICE_QUEUE",
        "SLUICE_LAKE",
        "SLUICE_CONFIG",
    ] {
        c.env_remove(v);
    }
    c.current_dir(home.parent().expect("home has a parent"));
    c
}

/// Asserts success and returns stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("utf-8 output")
}
