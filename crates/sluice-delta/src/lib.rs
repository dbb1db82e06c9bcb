//! # sluice-delta
//!
//! The parts of sluice's Delta Lake tables that need `deltalake`: checkpoints (the
//! [`DeltaCheckpointer`] the consumer calls every 100 versions) and opening a table, at its
//! newest version or an earlier one, for queries. Commits themselves are written by
//! [`sluice_core::delta::log::Ledger`], which needs no `deltalake`, so that the core stays light.
//!
//! Every table is opened on the lake's own object store (the one sluice built, with its
//! endpoint, credentials and retries), through `deltalake`'s default log store: no global
//! registry of URL schemes is consulted, so `s3://` works without `deltalake-aws`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake_core::DeltaTable;
use deltalake_core::logstore::{LogStoreRef, StorageConfig, default_logstore};
use object_store::prefix::PrefixStore;
use sluice_core::delta::log::Checkpointer;
use sluice_core::lake::Lake;
use sluice_core::{Error, Result};
use url::Url;

pub use deltalake_core;

/// Which version of a table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AsOf {
    /// The newest version.
    #[default]
    Latest,
    /// Exactly this version.
    Version(u64),
    /// The newest version committed at or before this instant.
    Timestamp(DateTime<Utc>),
}

impl AsOf {
    /// Parses `--as-of`: a version number, or an RFC 3339 timestamp (`2026-11-29T08:00:00Z`), or
    /// a date (`2026-11-29`, meaning its midnight UTC).
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Ok(v) = s.parse::<u64>() {
            return Ok(AsOf::Version(v));
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(AsOf::Timestamp(t.with_timezone(&Utc)));
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(AsOf::Timestamp(
                d.and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
            ));
        }
        Err(Error::Config(format!(
            "--as-of {s:?}: expected a version number, an RFC 3339 timestamp or a date (YYYY-MM-DD)"
        )))
    }
}

impl AsOf {
    fn describe(&self) -> String {
        match self {
            AsOf::Latest => "the newest version".into(),
            AsOf::Version(v) => format!("version {v}"),
            AsOf::Timestamp(t) => t.to_rfc3339(),
        }
    }
}

/// Maps a `deltalake` error into sluice's error, naming the table.
pub fn delta_error(table_url: &Url, e: deltalake_core::DeltaTableError) -> Error {
    use deltalake_core::DeltaTableError as D;
    match e {
        D::ObjectStore { source } => Error::from(source),
        D::NotATable(_) => Error::NotFound {
            what: "Delta table",
            name: table_url.to_string(),
        },
        other => Error::CorruptLog {
            path: table_url.to_string(),
            message: other.to_string(),
        },
    }
}

/// The URL of a table directory (relative to the lake root).
pub fn table_url(lake: &Lake, table_dir: &str) -> Result<Url> {
    let mut dir = table_dir.trim_matches('/').to_string();
    dir.push('/');
    lake.url
        .join(&dir)
        .map_err(|e| Error::Config(format!("table directory {table_dir:?}: {e}")))
}

/// A `deltalake` log store for the table in `table_dir`, on the lake's own object store.
pub fn log_store(lake: &Lake, table_dir: &str) -> Result<LogStoreRef> {
    let url = table_url(lake, table_dir)?;
    let prefixed = Arc::new(PrefixStore::new(lake.store.clone(), lake.path(table_dir)));
    Ok(default_logstore(
        prefixed,
        lake.store.clone(),
        &url,
        &StorageConfig::default(),
    ))
}

/// Opens the table in `table_dir` at `as_of`.
pub async fn open_table(lake: &Lake, table_dir: &str, as_of: AsOf) -> Result<DeltaTable> {
    let url = table_url(lake, table_dir)?;
    // No log, no table: said without asking the kernel, which logs an error for it.
    if !lake
        .has_objects_under(&format!("{}/_delta_log", table_dir.trim_matches('/')))
        .await?
    {
        return Err(Error::NotFound {
            what: "Delta table",
            name: url.to_string(),
        });
    }
    let mut table = DeltaTable::new(log_store(lake, table_dir)?);
    let loaded = match as_of {
        AsOf::Latest => table.load().await,
        AsOf::Version(v) => table.load_version(v as _).await,
        AsOf::Timestamp(t) => table.load_with_datetime(t).await,
    };
    match loaded {
        Ok(()) => {
            // deltalake falls back to the first version for a time before it; that version did
            // not exist then.
            if let AsOf::Timestamp(t) = as_of
                && let Ok(snapshot) = table.snapshot()
                && let Some(ts) = snapshot.version_timestamp(snapshot.version())
                && ts > t.timestamp_millis()
            {
                return Err(Error::NotFound {
                    what: "table version",
                    name: format!(
                        "{url} as of {} (its first version was committed at {})",
                        as_of.describe(),
                        DateTime::from_timestamp_millis(ts)
                            .map(|d| d.to_rfc3339())
                            .unwrap_or_else(|| ts.to_string())
                    ),
                });
            }
            Ok(table)
        }
        // The log is there but not the version asked for (before the table's first commit, or
        // past its newest, or removed by log clean-up).
        Err(e)
            if as_of != AsOf::Latest
                && !matches!(
                    e,
                    deltalake_core::DeltaTableError::ObjectStore { .. }
                        | deltalake_core::DeltaTableError::NotATable(_)
                ) =>
        {
            Err(Error::NotFound {
                what: "table version",
                name: format!("{url} as of {} ({e})", as_of.describe()),
            })
        }
        // A table the catalog has but nothing committed to yet (a producer created it): on a
        // local lake its directory does not exist, which the kernel reports as an invalid
        // location, not as "not a table".
        Err(_)
            if !lake
                .has_objects_under(&format!("{}/_delta_log", table_dir.trim_matches('/')))
                .await? =>
        {
            Err(Error::NotFound {
                what: "Delta table",
                name: url.to_string(),
            })
        }
        Err(e) => Err(delta_error(&url, e)),
    }
}

/// Writes checkpoints with `deltalake`, then removes log files older than the table's log
/// retention (30 days unless `delta.logRetentionDuration` says otherwise) that the checkpoint
/// makes unnecessary.
#[derive(Debug, Default, Clone)]
pub struct DeltaCheckpointer;

#[async_trait::async_trait]
impl Checkpointer for DeltaCheckpointer {
    async fn checkpoint(&self, lake: &Lake, table_dir: &str, version: u64) -> Result<()> {
        let url = table_url(lake, table_dir)?;
        let table = open_table(lake, table_dir, AsOf::Version(version)).await?;
        deltalake_core::checkpoints::create_checkpoint(&table, None)
            .await
            .map_err(|e| delta_error(&url, e))?;
        match deltalake_core::checkpoints::cleanup_metadata(&table, None).await {
            Ok(n) if n > 0 => {
                tracing::debug!(table = %url, removed = n, "expired log files removed")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(table = %url, error = %e, "log clean-up failed"),
        }
        Ok(())
    }
}

/// The checkpointer sluice uses, as the core's trait object.
pub fn checkpointer() -> Arc<dyn Checkpointer> {
    Arc::new(DeltaCheckpointer)
}

/// Parses `--where`: `KEY = VALUE` conditions on partition columns joined by `AND` (values
/// plain or in single quotes), as Delta partition filters.
pub fn parse_partition_filter(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let lower = s.to_ascii_lowercase();
    let mut rest = s;
    let mut lrest = lower.as_str();
    loop {
        let (cond, next, lnext) = match lrest.find(" and ") {
            Some(i) => (&rest[..i], &rest[i + 5..], &lrest[i + 5..]),
            None => (rest, "", ""),
        };
        let (k, v) = cond.split_once('=').ok_or_else(|| {
            Error::Config(format!(
                "--where {s:?}: expected KEY = VALUE conditions on partition columns joined by AND"
            ))
        })?;
        let (k, v) = (k.trim(), v.trim());
        let v = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or(v);
        if k.is_empty() || v.is_empty() || k.contains(['<', '>', '!']) {
            return Err(Error::Config(format!(
                "--where {s:?}: expected KEY = VALUE conditions on partition columns joined by AND"
            )));
        }
        out.push((k.to_string(), v.to_string()));
        if next.is_empty() {
            return Ok(out);
        }
        rest = next;
        lrest = lnext;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_clauses() {
        assert_eq!(
            parse_partition_filter("year = 2024 AND region='eu west'").unwrap(),
            vec![
                ("year".to_string(), "2024".to_string()),
                ("region".to_string(), "eu west".to_string())
            ]
        );
        assert!(parse_partition_filter("year > 2024").is_err());
        assert!(parse_partition_filter("year").is_err());
    }
}

/// What a vacuum did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VacuumReport {
    pub dry_run: bool,
    /// Files (relative to the table) with their sizes in bytes.
    pub files: Vec<(String, u64)>,
}

/// Files no version names are deleted only once at least this old, whatever the retention: a
/// running writer's upload is named by its commit within seconds, never an hour later.
pub const ORPHAN_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(3_600);

/// Deletes the files that versions of the table in `table_dir` removed (compaction) more than
/// `retain` ago, and files no version ever named (uploads of a writer or a compaction killed
/// before its commit) once older than `retain` and [`ORPHAN_MIN_AGE`]. Readers still on a
/// version older than `retain` lose its files; readers of newer versions lose nothing.
pub async fn vacuum(
    lake: &Lake,
    table_dir: &str,
    retain: std::time::Duration,
    dry_run: bool,
) -> Result<VacuumReport> {
    use deltalake_core::operations::vacuum::VacuumMode;
    use object_store::ObjectStoreExt;
    let url = table_url(lake, table_dir)?;
    // The protocol gate first (`vacuumProtocolCheck` asks it of every vacuum).
    let log = sluice_core::delta::log::Ledger::open_dir(
        lake,
        table_dir,
        sluice_core::delta::log::FileKind::Data,
        "vacuum",
    )
    .await?;
    log.check(sluice_core::delta::Operation::Vacuum)?;
    // A retention the table itself sets (another engine may) is Delta's rule for every
    // vacuum: never shorter.
    if let Some(kept) = log
        .state()
        .metadata
        .as_ref()
        .and_then(|m| m.config("delta.deletedFileRetentionDuration"))
        .and_then(sluice_core::delta::log::parse_interval_ms)
        && (retain.as_millis() as i64) < kept
    {
        return Err(Error::Config(format!(
            "table {url} keeps removed files for {} h (delta.deletedFileRetentionDuration); a vacuum with a shorter retention ({} h) would take files from readers of versions inside it",
            kept / 3_600_000,
            retain.as_secs() / 3_600
        )));
    }
    let mut names: Vec<String> = Vec::new();
    for (mode, age) in [
        (VacuumMode::Lite, retain),
        (VacuumMode::Full, retain.max(ORPHAN_MIN_AGE)),
    ] {
        let table = open_table(lake, table_dir, AsOf::Latest).await?;
        let age =
            chrono::Duration::from_std(age).map_err(|e| Error::Config(format!("--retain: {e}")))?;
        let (_, m) = table
            .vacuum()
            .with_mode(mode)
            .with_retention_period(age)
            .with_enforce_retention_duration(false)
            .with_dry_run(dry_run)
            .await
            .map_err(|e| delta_error(&url, e))?;
        for f in m.files_deleted {
            let rel = f
                .strip_prefix(url.as_str())
                .map(str::to_string)
                .unwrap_or(f);
            if !names.contains(&rel) {
                names.push(rel);
            }
        }
    }
    let mut files = Vec::with_capacity(names.len());
    // A keyed table's deleted keys that count for nothing (Delta's vacuum leaves `_sluice/`
    // alone, as every engine's vacuum leaves directories whose names begin with `_`).
    let dir = format!("{}/", table_dir.trim_matches('/'));
    files.extend(
        sluice_core::pipeline::merge::vacuum_deleted_keys(
            lake,
            &dir,
            log.state(),
            retain.max(ORPHAN_MIN_AGE),
            dry_run,
        )
        .await?,
    );
    for rel in names {
        let size = if dry_run {
            let path = lake.path(&format!("{}/{rel}", table_dir.trim_matches('/')));
            lake.store.head(&path).await.map(|m| m.size).unwrap_or(0)
        } else {
            0
        };
        files.push((rel, size));
    }
    Ok(VacuumReport { dry_run, files })
}

/// Parses a duration such as `168h`, `7d`, `30m`, `90s`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || Error::Config(format!("{s:?} is not a duration (e.g. 168h, 7d, 30m)"));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    Ok(std::time::Duration::from_secs(n * secs))
}
