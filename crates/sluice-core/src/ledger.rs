//! The commit ledger of a table: which files are committed, and which chunk parts they hold.
//!
//! ```text
//!  consumer                                object store (lake)
//!  ────────                                ───────────────────
//!  write part-<uuid>.parquet ────────────► <table>/year=2024/part-<uuid>.parquet   (not yet visible)
//!  commit v+1 (create-if-absent) ────────► <table>/_sluice/log/000…(v+1).json       (atomic)
//!     └─ AlreadyExists? refresh, check chunk conflicts, retry as v+2
//!  delete queue messages                   (only after the commit succeeded)
//! ```
//!
//! A commit is a value ([`Commit`]) written once with `PutMode::Create`, so two writers can never
//! both commit the same version; the loser refreshes and retries on the next version, unless a
//! chunk part it holds was committed meanwhile (then it fails with `Conflict`). Readers see a
//! file only once a commit names it. The same protocol works on local disk and on S3.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lake::Lake;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Data,
    Quarantine,
}

/// A committed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Path relative to the lake root.
    pub path: String,
    /// Partition directory (`year=2024`), empty for quarantine files.
    pub partition: String,
    pub rows: u64,
    pub bytes: u64,
    pub kind: FileKind,
}

/// The rows of one chunk that fall into one partition: the unit of exactly-once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkPart {
    pub chunk: String,
    pub partition: String,
}

/// One commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub version: u64,
    /// Unique id, so a committer whose write succeeded but whose reply was lost recognises it.
    pub id: String,
    pub committed_at_ms: i64,
    /// Who committed (host, process, consumer id), for operators.
    pub writer: String,
    pub add: Vec<DataFile>,
    #[serde(default)]
    pub remove: Vec<String>,
    pub chunks: Vec<ChunkPart>,
}

/// The ledger's state at a version.
#[derive(Debug, Clone, Default)]
pub struct LedgerState {
    pub version: u64,
    pub files: BTreeMap<String, DataFile>,
    chunk_parts: HashMap<String, HashSet<String>>,
    commit_ids: HashMap<String, u64>,
}

impl LedgerState {
    /// Whether the rows of `chunk` in `partition` are committed.
    pub fn has_part(&self, chunk: &str, partition: &str) -> bool {
        self.chunk_parts
            .get(chunk)
            .is_some_and(|p| p.contains(partition))
    }

    /// Whether any part of `chunk` is committed.
    pub fn has_chunk(&self, chunk: &str) -> bool {
        self.chunk_parts.contains_key(chunk)
    }

    /// Number of distinct chunks with committed parts.
    pub fn chunk_count(&self) -> usize {
        self.chunk_parts.len()
    }

    fn apply(&mut self, c: &Commit) {
        for p in &c.remove {
            self.files.remove(p);
        }
        for f in &c.add {
            self.files.insert(f.path.clone(), f.clone());
        }
        for cp in &c.chunks {
            self.chunk_parts
                .entry(cp.chunk.clone())
                .or_default()
                .insert(cp.partition.clone());
        }
        self.commit_ids.insert(c.id.clone(), c.version);
        self.version = c.version;
    }
}

/// What a committer wants to add.
#[derive(Debug, Clone, Default)]
pub struct CommitDraft {
    /// Unique id of this commit. Keep it when retrying a failed commit: a write whose reply was
    /// lost is then recognised instead of being taken for a conflict.
    pub id: String,
    pub add: Vec<DataFile>,
    pub remove: Vec<String>,
    pub chunks: Vec<ChunkPart>,
}

/// A table's ledger, with its state cached.
#[derive(Debug)]
pub struct Ledger {
    lake: Lake,
    dir: String,
    writer: String,
    state: LedgerState,
}

fn version_of(name: &str) -> Option<u64> {
    name.strip_suffix(".json")?.parse().ok()
}

impl Ledger {
    /// Opens the ledger of `table` and reads it.
    pub async fn open(lake: &Lake, table: &str, writer: impl Into<String>) -> Result<Self> {
        let mut l = Ledger {
            lake: lake.clone(),
            dir: Lake::ledger_dir(table),
            writer: writer.into(),
            state: LedgerState::default(),
        };
        l.refresh().await?;
        Ok(l)
    }

    /// The cached state.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// Reads commits newer than the cached state.
    pub async fn refresh(&mut self) -> Result<()> {
        let prefix = self.lake.path(&self.dir);
        let mut versions: Vec<u64> = self
            .lake
            .store
            .list(Some(&prefix))
            .try_filter_map(|m| async move { Ok(m.location.filename().and_then(version_of)) })
            .try_collect()
            .await?;
        versions.retain(|v| *v > self.state.version);
        versions.sort_unstable();
        for v in versions {
            if v != self.state.version + 1 {
                return Err(Error::Config(format!(
                    "ledger {} has no commit {} before {v}",
                    self.dir,
                    self.state.version + 1
                )));
            }
            let path = self.lake.path(&format!("{}{:020}.json", self.dir, v));
            let bytes = self.lake.store.get(&path).await?.bytes().await?;
            let c: Commit = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Config(format!("ledger commit {path} is corrupt: {e}")))?;
            self.state.apply(&c);
        }
        Ok(())
    }

    /// Commits a draft atomically. Fails with `Conflict` if any of its chunk parts was committed
    /// by someone else; retries on the next version when another commit won the race.
    ///
    /// Retrying is the caller's: call again with the same draft (same id) after a retryable error.
    pub async fn commit(&mut self, draft: CommitDraft) -> Result<Commit> {
        let id = if draft.id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            draft.id.clone()
        };
        loop {
            if let Some(v) = self.state.commit_ids.get(&id) {
                // An earlier attempt landed although its reply was lost.
                let path = self.lake.path(&format!("{}{:020}.json", self.dir, v));
                let bytes = self.lake.store.get(&path).await?.bytes().await?;
                return serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Config(format!("ledger commit {path} is corrupt: {e}")));
            }
            if let Some(cp) = draft
                .chunks
                .iter()
                .find(|cp| self.state.has_part(&cp.chunk, &cp.partition))
            {
                return Err(Error::Conflict(format!(
                    "chunk {} partition {:?} is already committed",
                    cp.chunk, cp.partition
                )));
            }
            let commit = Commit {
                version: self.state.version + 1,
                id: id.clone(),
                committed_at_ms: chrono::Utc::now().timestamp_millis(),
                writer: self.writer.clone(),
                add: draft.add.clone(),
                remove: draft.remove.clone(),
                chunks: draft.chunks.clone(),
            };
            let path = self
                .lake
                .path(&format!("{}{:020}.json", self.dir, commit.version));
            let body = serde_json::to_vec(&commit).expect("commit serializes");
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self
                .lake
                .store
                .put_opts(&path, PutPayload::from(body), opts)
                .await
            {
                Ok(_) => {
                    self.state.apply(&commit);
                    return Ok(commit);
                }
                Err(object_store::Error::AlreadyExists { .. }) => self.refresh().await?,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
