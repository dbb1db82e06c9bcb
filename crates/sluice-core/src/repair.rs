//! Recovery: remove data files that no Delta version names.
//!
//! A consumer that dies between uploading a file and committing it leaves the file in the
//! table's directory. Readers of the Delta log never read it; readers that list directories (a
//! `read_parquet` glob) would, until recovery removes it. Files that a later version removed are
//! kept: earlier versions reference them.
//! Recovery runs when a consumer starts and by `sluice repair`. Consumers record each upload in
//! their spool (`uploads.log`) before it starts; recovery removes the uncommitted uploads of
//! consumers that are known to be dead at once, never touches those of running consumers, and
//! removes other uncommitted files (written by consumers elsewhere) only after a grace period.

use std::collections::HashSet;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::error::Result;
use crate::lake::Lake;
use crate::ledger::Ledger;

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepairReport {
    /// Uncommitted files removed (paths relative to the lake root).
    pub removed: Vec<String>,
    /// Uncommitted files left because they are younger than the grace period.
    pub kept_recent: u64,
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
            let name = m.location.filename().unwrap_or_default();
            // Only sluice's own data files and multipart leftovers.
            if !(name.starts_with("part-")
                && (name.ends_with(".parquet") || name.contains(".parquet#")))
            {
                continue;
            }
            let age = now
                .signed_duration_since(m.last_modified)
                .to_std()
                .unwrap_or_default();
            let key = rel.split('#').next().unwrap_or(&rel);
            if opts.protect.contains(key) || (!opts.dead.contains(key) && age < opts.grace) {
                report.kept_recent += 1;
                continue;
            }
            lake.store.delete(&m.location).await?;
            report.removed.push(rel);
        }
    }
    Ok(report)
}

/// Start-up recovery of a consumer of `table` that holds `claim`: the uploads that dead consumers
/// of this home recorded and never committed are removed at once (for every table they wrote),
/// uploads of running consumers are never touched, and other uncommitted files of `table`
/// (from consumers elsewhere) are removed once older than twice the visibility timeout, and at
/// least 10 minutes. Returns the files removed, per table.
pub async fn recover(
    home: &crate::home::Home,
    lake: &Lake,
    table: &str,
    claim: &crate::home::SpoolClaim,
    visibility: Duration,
) -> Result<Vec<(String, Vec<String>)>> {
    let mut tables: Vec<&str> = claim.orphans.iter().map(|(t, _)| t.as_str()).collect();
    tables.push(table);
    tables.sort_unstable();
    tables.dedup();
    let protect = home.live_uploads();
    let mut out = Vec::new();
    for t in tables {
        let opts = RepairOptions {
            grace: (visibility * 2).max(Duration::from_secs(600)),
            protect: protect.clone(),
            dead: claim
                .orphans
                .iter()
                .filter(|(ot, _)| ot == t)
                .map(|(_, p)| p.clone())
                .collect(),
        };
        let r = repair(lake, t, &opts).await?;
        if !r.removed.is_empty() {
            out.push((t.to_string(), r.removed));
        }
    }
    Ok(out)
}
