//! The commit log of earlier sluice versions (`<table>/_sluice/log/<version>.json`), read only
//! to upgrade a lake to Delta Lake tables (`sluice upgrade`).

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::Deserialize;

use crate::delta::log::{ChunkPart, FileKind};
use crate::error::{Error, Result};
use crate::lake::Lake;

/// Ledger directory of a table in earlier versions, relative to the lake root.
pub(crate) fn legacy_dir(table: &str) -> String {
    format!("{table}/_sluice/log/")
}

#[derive(Debug, Deserialize)]
struct LegacyFile {
    path: String,
    partition: String,
    rows: u64,
    bytes: u64,
    kind: FileKind,
}

#[derive(Debug, Deserialize)]
struct LegacyCommit {
    add: Vec<LegacyFile>,
    #[serde(default)]
    remove: Vec<String>,
    chunks: Vec<ChunkPart>,
}

/// A committed file of the earlier log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LegacyEntry {
    /// Path relative to the lake root.
    pub path: String,
    pub partition: String,
    pub rows: u64,
    pub bytes: u64,
    pub kind: FileKind,
}

/// What the earlier log of a table holds at its newest version.
#[derive(Debug, Clone, Default)]
pub(crate) struct LegacyState {
    pub version: u64,
    pub files: BTreeMap<String, LegacyEntry>,
    pub chunk_parts: BTreeSet<ChunkPart>,
}

/// Whether `table` has an earlier log.
pub(crate) async fn has_legacy_log(lake: &Lake, table: &str) -> Result<bool> {
    lake.has_objects_under(&legacy_dir(table)).await
}

/// Reads the earlier log of `table` whole.
pub(crate) async fn read_legacy(lake: &Lake, table: &str) -> Result<LegacyState> {
    let dir = legacy_dir(table);
    let prefix = lake.path(&dir);
    let mut versions: Vec<u64> = lake
        .store
        .list(Some(&prefix))
        .try_filter_map(|m| async move {
            Ok(m.location
                .filename()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|v| v.parse::<u64>().ok()))
        })
        .try_collect()
        .await?;
    versions.sort_unstable();
    let mut state = LegacyState::default();
    for v in versions {
        if v != state.version + 1 {
            return Err(Error::CorruptLog {
                path: lake.url_of(&dir),
                message: format!("version {} is missing (found {v})", state.version + 1),
            });
        }
        let path = lake.path(&format!("{dir}{v:020}.json"));
        let bytes = lake.store.get(&path).await?.bytes().await?;
        let c: LegacyCommit = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptLog {
            path: lake.url_of(&format!("{dir}{v:020}.json")),
            message: e.to_string(),
        })?;
        for p in &c.remove {
            state.files.remove(p);
        }
        for f in c.add {
            state.files.insert(
                f.path.clone(),
                LegacyEntry {
                    path: f.path,
                    partition: f.partition,
                    rows: f.rows,
                    bytes: f.bytes,
                    kind: f.kind,
                },
            );
        }
        state.chunk_parts.extend(c.chunks);
        state.version = v;
    }
    Ok(state)
}
