//! Records the commit sluice is built from, for the `created_by` of the Parquet files it
//! writes (`sluice version X.Y.Z (build <hash>)`, the form parquet-java parses).

use std::path::Path;
use std::process::Command;

fn main() {
    let git = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.git");
    for watched in ["HEAD", "refs/heads", "packed-refs"] {
        let p = git.join(watched);
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    println!("cargo:rerun-if-env-changed=SLUICE_BUILD");
    let hash = std::env::var("SLUICE_BUILD").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|h| !h.is_empty())
    });
    println!(
        "cargo:rustc-env=SLUICE_BUILD={}",
        hash.unwrap_or_else(|| "unknown".into())
    );
}
