//! Recovery: remove files that no commit names, and re-sync the catalog from the ledger.
//!
//! A consumer that dies between uploading a file and committing it leaves the file in the
//! table's directory. sluice's query engine never reads it (it reads committed files only);
//! readers that list directories (Athena, DuckDB, Spark) would, until recovery removes it.
//! Recovery runs when a consumer starts and by `sluice repair`. Consumers record each upload in
//! their spool (`uploads.log`) before it starts; recovery removes the uncommitted uploads of
//! consumers that are known to be dead at once, never touches those of running consumers, and
//! removes other uncommitted files (written by consumers elsewhere) only after a grace period.

use std::collections::HashSet;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::catalog::Catalog;
use crate::consumer::partition_defs;
use crate::error::Result;
use crate::lake::Lake;
use crate::ledger::{FileKind, Ledger};

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RepairReport {
    /// Uncommitted files removed (paths relative to the lake root).
    pub removed: Vec<String>,
    /// Uncommitted files left because they are younger than the grace period.
    pub kept_recent: u64,
    /// Partitions re-registered in the catalog.
    pub partitions: u64,
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
pub async fn repair(
    lake: &Lake,
    catalog: &dyn Catalog,
    database: &str,
    table: &str,
    opts: &RepairOptions,
) -> Result<RepairReport> {
    let ledger = Ledger::open(lake, table, "repair").await?;
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
            if rel.contains("/_sluice/") || state.files.contains_key(&rel) {
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
    if let Ok(def) = catalog.get_table(database, table).await {
        let mut parts: Vec<String> = state
            .files
            .values()
            .filter(|f| f.kind == FileKind::Data)
            .map(|f| f.partition.clone())
            .collect();
        parts.sort();
        parts.dedup();
        let defs = partition_defs(&def, state, &parts);
        report.partitions = defs.len() as u64;
        catalog.upsert_partitions(database, table, &defs).await?;
    }
    Ok(report)
}
