//! Converting a table written by an earlier sluice (commit log in `<table>/_sluice/log/`) into a
//! Delta Lake table in place.
//!
//! The data files stay where they are. One Delta version adds every file the earlier log had
//! committed and records every chunk part it held as a `txn`, so that messages delivered again
//! after the upgrade are still recognised. The quarantine becomes its own Delta table the same
//! way. The commit ids are fixed, so an upgrade interrupted part-way is finished by running it
//! again, and a finished one is not repeated.

use serde::Serialize;

use crate::catalog::TableDef;
use crate::delta::legacy::{has_legacy_log, read_legacy};
use crate::delta::log::{ChunkPart, CommitDraft, DataFile, DeltaSchema, FileKind, Ledger};
use crate::error::{Error, Result};
use crate::lake::Lake;

/// What an upgrade did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpgradeReport {
    /// The last version of the earlier sluice's log.
    pub legacy_version: u64,
    /// The Delta version that holds it.
    pub delta_version: u64,
    /// Data files carried over.
    pub files: u64,
    /// Rows in them.
    pub rows: u64,
    /// Quarantine files carried over.
    pub quarantine_files: u64,
    /// Chunk parts carried over (so no chunk lands twice).
    pub chunk_parts: u64,
}

/// Upgrades `def`'s table. Fails with `NotFound` when the table has no earlier log.
pub async fn upgrade(lake: &Lake, def: &TableDef, writer: &str) -> Result<UpgradeReport> {
    if !has_legacy_log(lake, &def.name).await? {
        return Err(Error::NotFound {
            what: "earlier sluice commit log",
            name: lake.url_of(&crate::delta::legacy::legacy_dir(&def.name)),
        });
    }
    let legacy = read_legacy(lake, &def.name).await?;
    let mut report = UpgradeReport {
        legacy_version: legacy.version,
        ..Default::default()
    };
    for kind in [FileKind::Data, FileKind::Quarantine] {
        let (mut log, schema) = match kind {
            FileKind::Data => (
                Ledger::open(lake, &def.name, writer).await?,
                DeltaSchema::of_table(def),
            ),
            FileKind::Quarantine => (
                Ledger::open_quarantine(lake, &def.name, writer).await?,
                DeltaSchema::of_arrow(&crate::parquet::writer::quarantine_schema())?,
            ),
        };
        log.create_if_missing(&schema).await?;
        let is_quarantine = |p: &str| p == crate::lake::QUARANTINE_PART;
        let draft = CommitDraft {
            id: format!("upgrade-{}-{:?}-v{}", def.name, kind, legacy.version),
            add: legacy
                .files
                .values()
                .filter(|f| f.kind == kind)
                .map(|f| DataFile {
                    path: f.path.clone(),
                    partition: f.partition.clone(),
                    rows: f.rows,
                    bytes: f.bytes,
                    kind,
                    stats: None,
                })
                .collect(),
            remove: vec![],
            chunks: legacy
                .chunk_parts
                .iter()
                .filter(|cp| is_quarantine(&cp.partition) == (kind == FileKind::Quarantine))
                .filter(|cp| !log.state().has_part(&cp.chunk, &cp.partition))
                .cloned()
                .collect::<Vec<ChunkPart>>(),
            rearrange: false,
            merge: None,
        };
        let n_files = draft.add.len() as u64;
        let rows: u64 = draft.add.iter().map(|a| a.rows).sum();
        let n_parts = draft.chunks.len() as u64;
        let already = log.state().version > 0;
        let version = if already {
            log.state().version
        } else {
            log.commit(draft).await?.version
        };
        match kind {
            FileKind::Data => {
                report.delta_version = version;
                report.files = if already {
                    log.state().files.len() as u64
                } else {
                    n_files
                };
                report.rows = if already {
                    log.state().files.values().map(|f| f.rows).sum()
                } else {
                    rows
                };
            }
            FileKind::Quarantine => {
                report.quarantine_files = if already {
                    log.state().files.len() as u64
                } else {
                    n_files
                };
            }
        }
        report.chunk_parts += if already {
            log.state().chunk_part_count() as u64
        } else {
            n_parts
        };
    }
    Ok(report)
}
