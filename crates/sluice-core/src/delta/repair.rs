//! Recovery: remove data files that no Delta version names.
//!
//! A consumer that dies between uploading a file and committing it leaves the file in the
//! table's directory. Readers of the Delta log never read it; readers that list directories (a
//! `read_parquet` glob) would, until recovery removes it. Files that a later version removed are
//! kept: earlier versions reference them.
//! Recovery runs when a consumer starts ([`crate::pipeline::startup`]) and by `sluice repair`. Consumers record each upload in
//! their spool (`uploads.log`) before it starts; recovery removes the uncommitted uploads of
//! consumers that are known to be dead at once, never touches those of running consumers, and
//! removes other uncommitted files (written by consumers elsewhere) only after a grace period.
//! A file a writer on any machine holds a lease on (`crate::lake::pending`) is never removed,
//! whatever its age, unless that writer is known dead.
//! Only files named as sluice names its own (`is_sluice_file`) are ever removed: a file another
//! engine uploaded is that engine's to commit, and Delta's vacuum (after its retention) to
//! remove.

use std::collections::HashSet;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::delta::log::Ledger;
use crate::error::Result;
use crate::lake::Lake;

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepairReport {
    /// Uncommitted files removed (paths relative to the lake root).
    pub removed: Vec<String>,
    /// Uncommitted files left because they are younger than the grace period.
    pub kept_recent: u64,
    /// The Delta version the repair read.
    pub ledger_version: u64,
}

/// Which uncommitted files a repair may remove.
#[derive(Debug, Clone, Default)]
pub struct RepairOptions {
    /// Remove uncommitted files at least this old.
    pub grace: Duration,
    /// Never remove these (uploads of running consumers), whatever their age.
    pub protect: HashSet<String>,
    /// Remove these if uncommitted, whatever their age (uploads of consumers known to be dead).
    pub dead: HashSet<String>,
}

/// Repairs one table.
pub async fn repair(lake: &Lake, table: &str, opts: &RepairOptions) -> Result<RepairReport> {
    let ledger = Ledger::open(lake, table, "repair").await?;
    let quarantine = Ledger::open_quarantine(lake, table, "repair").await?;
    let state = ledger.state();
    let mut report = RepairReport {
        ledger_version: state.version,
        ..Default::default()
    };
    // Uploads that a writer on any machine still holds a lease on.
    let leased = crate::lake::pending::leased(lake, table, true).await?;
    let now = chrono::Utc::now();
    for dir in [Lake::table_dir(table), Lake::quarantine_dir(table)] {
        let prefix = lake.path(&dir);
        let objects: Vec<_> = lake.store.list(Some(&prefix)).try_collect().await?;
        let root = format!("{}/", lake.root);
        for m in objects {
            let full = m.location.to_string();
            let rel = if lake.root.as_ref().is_empty() {
                full.clone()
            } else {
                full.strip_prefix(&root).unwrap_or(&full).to_string()
            };
            if rel.contains("/_sluice/")
                || rel.contains("/_delta_log/")
                || state.files.contains_key(&rel)
                || state.removed.contains(&rel)
                || quarantine.state().files.contains_key(&rel)
                || quarantine.state().removed.contains(&rel)
            {
                continue;
            }
            // Only sluice's own data files and their multipart leftovers: a file another engine
            // uploaded may be committed by it any moment.
            if !is_sluice_file(m.location.filename().unwrap_or_default()) {
                continue;
            }
            let age = now
                .signed_duration_since(m.last_modified)
                .to_std()
                .unwrap_or_default();
            let key = rel.split('#').next().unwrap_or(&rel);
            // A writer known dead (its spool is free) holds nothing, whatever its lease says.
            let leased = !opts.dead.contains(key) && leased.contains(key);
            if opts.protect.contains(key)
                || leased
                || (!opts.dead.contains(key) && age < opts.grace)
            {
                report.kept_recent += 1;
                continue;
            }
            lake.store.delete(&m.location).await?;
            report.removed.push(rel);
        }
    }
    Ok(report)
}

/// Whether a file name is one sluice gives its data files: `part-<UUIDv7>.parquet` (or a local
/// multipart upload of one, `…parquet#<n>`). Spark's `part-00000-<uuid>-c000.snappy.parquet`,
/// delta-rs's `part-00001-<uuid>-c000.zstd.parquet` and pyarrow's `part-0.parquet` are not.
pub(crate) fn is_sluice_file(name: &str) -> bool {
    let base = name.split('#').next().unwrap_or(name);
    let Some(id) = base
        .strip_prefix("part-")
        .and_then(|r| r.strip_suffix(".parquet"))
    else {
        return false;
    };
    id.len() == 36 && uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 7)
}

/// Default grace of `sluice repair` for files no running consumer of this home is uploading:
/// a slow upload from another machine is committed well within it.
pub const REPAIR_GRACE: Duration = Duration::from_secs(3_600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sluice_names_are_sluice_files() {
        let own = format!("part-{}.parquet", uuid::Uuid::now_v7());
        assert!(is_sluice_file(&own));
        assert!(is_sluice_file(&format!("{own}#3")));
        for other in [
            "part-00000-4f1c7d3e-1b2a-4c3d-9e8f-0a1b2c3d4e5f-c000.snappy.parquet",
            "part-00001-4f1c7d3e-1b2a-4c3d-9e8f-0a1b2c3d4e5f-c000.zstd.parquet",
            "part-0.parquet",
            "part-00000000-dead.parquet",
            // A UUID, but version 4: not one sluice made.
            "part-4f1c7d3e-1b2a-4c3d-9e8f-0a1b2c3d4e5f.parquet",
        ] {
            assert!(!is_sluice_file(other), "{other}");
        }
    }
}
