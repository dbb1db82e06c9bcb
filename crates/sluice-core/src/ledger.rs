//! The commit log of a table: a Delta Lake log, which every engine users scale out to reads.
//!
//! ```text
//!  consumer                                object store (lake)
//!  ────────                                ───────────────────
//!  write part-<uuid>.parquet ────────────► <table>/year=2024/part-<uuid>.parquet   (not yet visible)
//!  commit v+1 (create-if-absent) ────────► <table>/_delta_log/000…(v+1).json       (atomic)
//!     │   commitInfo (our commit id) · one txn per chunk part · add per file (stats)
//!     └─ AlreadyExists? read the versions that won; ours (lost reply)? done;
//!        one of our chunk parts in them? Conflict; otherwise retry as v+2
//!  every 100 versions: checkpoint (Parquet) ─► <table>/_delta_log/000…v.checkpoint.parquet
//!  delete queue messages                   (only after the commit succeeded)
//! ```
//!
//! Each version is written once with `PutMode::Create` (if-none-match on S3), so two writers can
//! never both commit the same version: this is Delta's own protocol for object stores with
//! conditional writes, and needs no lock service. Readers (DuckDB, Spark, Athena, Polars, the
//! `deltalake` package, `sluice query`) see a file only once a version adds it.
//!
//! Exactly-once: each chunk part (the rows of one chunk that fall into one partition) is an
//! application transaction (`txn`, app id `sluice/<chunk>/<partition>`) committed in the same
//! version as its file. `txn` actions are kept by checkpoints and survive compaction, unlike
//! `add.tags` or `commitInfo`. [`Ledger`] keeps its own index of the committed chunk parts at
//! exactly the version it commits against, read from the newest checkpoint and the versions
//! after it.
//!
//! Checkpoints are written by a [`Checkpointer`] (the `sluice-delta` crate implements it with
//! `deltalake`); a failed checkpoint never fails the commit that landed before it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, StructArray};
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::catalog::TableDef;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::schema::ColumnType;

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
    /// Path relative to the lake root, as the object is named (Hive-escaped, not URL-encoded).
    pub path: String,
    /// Partition directory (`year=2024`), empty for unpartitioned tables.
    pub partition: String,
    pub rows: u64,
    pub bytes: u64,
    pub kind: FileKind,
    /// Delta statistics (`numRecords`, `minValues`, `maxValues`, `nullCount`) as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
}

/// The rows of one chunk that fall into one partition: the unit of exactly-once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkPart {
    pub chunk: String,
    pub partition: String,
}

impl ChunkPart {
    /// The Delta application-transaction id recording this chunk part.
    pub fn app_id(&self) -> String {
        app_id(&self.chunk, &self.partition)
    }
}

fn app_id(chunk: &str, partition: &str) -> String {
    format!("sluice/{chunk}/{partition}")
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
    /// The same rows rearranged (compaction): `dataChange` false, operation `OPTIMIZE`.
    #[serde(default)]
    pub rearrange: bool,
}

/// A column of a Delta table's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaField {
    pub name: String,
    /// Delta's primitive type name (`long`, `string`, `timestamp_ntz`, …).
    pub ty: &'static str,
    pub nullable: bool,
}

/// The schema of a Delta table: its columns (the partition columns too) and partition columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaSchema {
    pub fields: Vec<DeltaField>,
    pub partition_columns: Vec<String>,
}

/// Delta's type for a column type. Timestamps without zone are `timestamp_ntz`.
pub fn delta_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Boolean => "boolean",
        ColumnType::Int64 => "long",
        ColumnType::Float64 => "double",
        ColumnType::Date => "date",
        ColumnType::Timestamp => "timestamp_ntz",
        ColumnType::TimestampTz => "timestamp",
        ColumnType::String => "string",
    }
}

/// The column type of a Delta primitive type sluice writes (and of Delta's narrower integers
/// and floats, which it reads as its own).
pub fn column_type_of_delta(ty: &str) -> Option<ColumnType> {
    Some(match ty {
        "boolean" => ColumnType::Boolean,
        "long" | "integer" | "short" | "byte" => ColumnType::Int64,
        "double" | "float" => ColumnType::Float64,
        "date" => ColumnType::Date,
        "timestamp_ntz" => ColumnType::Timestamp,
        "timestamp" => ColumnType::TimestampTz,
        "string" => ColumnType::String,
        _ => return None,
    })
}

impl DeltaSchema {
    /// The schema of a catalog table: its file columns, then its partition keys.
    pub fn of_table(def: &TableDef) -> Self {
        let mut fields: Vec<DeltaField> = def
            .columns
            .iter()
            .map(|c| DeltaField {
                name: c.name.clone(),
                ty: delta_type(c.ty),
                nullable: true,
            })
            .collect();
        fields.extend(def.partition_keys.iter().map(|c| DeltaField {
            name: c.name.clone(),
            ty: delta_type(c.ty),
            nullable: true,
        }));
        DeltaSchema {
            fields,
            partition_columns: def.partition_keys.iter().map(|c| c.name.clone()).collect(),
        }
    }

    /// The schema of an Arrow schema (unpartitioned), for the quarantine table.
    pub fn of_arrow(schema: &arrow::datatypes::Schema) -> Result<Self> {
        use arrow::datatypes::{DataType, TimeUnit};
        let fields = schema
            .fields()
            .iter()
            .map(|f| {
                let ty = match f.data_type() {
                    DataType::Boolean => "boolean",
                    DataType::Int64 => "long",
                    DataType::Int32 => "integer",
                    DataType::Float64 => "double",
                    DataType::Date32 => "date",
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string",
                    DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp_ntz",
                    DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "timestamp",
                    other => {
                        return Err(Error::Config(format!(
                            "column {} has type {other}, which sluice does not write to Delta",
                            f.name()
                        )));
                    }
                };
                Ok(DeltaField {
                    name: f.name().clone(),
                    ty,
                    nullable: f.is_nullable(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(DeltaSchema {
            fields,
            partition_columns: vec![],
        })
    }

    /// Delta's `schemaString`.
    pub fn schema_string(&self) -> String {
        let fields: Vec<Value> = self
            .fields
            .iter()
            .map(|f| json!({"name": f.name, "type": f.ty, "nullable": f.nullable, "metadata": {}}))
            .collect();
        json!({"type": "struct", "fields": fields}).to_string()
    }

    /// The protocol a table of this schema needs: reader 1 / writer 2, or reader 3 / writer 7
    /// with the `timestampNtz` feature when a column is a timestamp without zone. Nothing else:
    /// Athena engine v3 reads both.
    pub fn protocol(&self) -> Value {
        if self.fields.iter().any(|f| f.ty == "timestamp_ntz") {
            json!({"minReaderVersion": 3, "minWriterVersion": 7,
                   "readerFeatures": ["timestampNtz"], "writerFeatures": ["timestampNtz"]})
        } else {
            json!({"minReaderVersion": 1, "minWriterVersion": 2})
        }
    }
}

/// The log's state at a version.
#[derive(Debug, Clone, Default)]
pub struct LedgerState {
    /// The newest version read; meaningful only when [`LedgerState::exists`].
    pub version: u64,
    /// Whether the table has a log (version 0 exists).
    pub exists: bool,
    pub files: BTreeMap<String, DataFile>,
    /// Files that a version removed (paths relative to the lake root): earlier versions still
    /// reference them, so only a vacuum after their retention may delete them.
    pub removed: HashSet<String>,
    /// `schemaString` and `partitionColumns` of the newest `metaData`.
    pub schema_string: Option<String>,
    pub partition_columns: Vec<String>,
    /// The newest `metaData` and `protocol` actions, whole (a schema change keeps the rest).
    pub metadata: Option<Value>,
    pub protocol: Option<Value>,
    app_ids: HashSet<String>,
    commit_ids: HashMap<String, u64>,
}

impl LedgerState {
    /// Whether the rows of `chunk` in `partition` are committed.
    pub fn has_part(&self, chunk: &str, partition: &str) -> bool {
        self.app_ids.contains(&app_id(chunk, partition))
    }

    /// The chunks with rows committed in `partition`.
    pub fn chunks_in(&self, partition: &str) -> HashSet<String> {
        let suffix = format!("/{partition}");
        self.app_ids
            .iter()
            .filter_map(|a| a.strip_prefix("sluice/")?.strip_suffix(&suffix))
            .filter(|c| !c.contains('/'))
            .map(str::to_string)
            .collect()
    }

    /// The columns of the newest schema: (name, Delta type), the partition columns too.
    pub fn schema_fields(&self) -> Vec<(String, String)> {
        let Some(schema) = self
            .schema_string
            .as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
        else {
            return Vec::new();
        };
        schema
            .get("fields")
            .and_then(Value::as_array)
            .map(|fields| {
                fields
                    .iter()
                    .filter_map(|f| {
                        let name = f.get("name")?.as_str()?.to_string();
                        let ty = match f.get("type")? {
                            Value::String(t) => t.clone(),
                            other => other.to_string(),
                        };
                        Some((name, ty))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of committed chunk parts.
    pub fn chunk_part_count(&self) -> usize {
        self.app_ids.len()
    }

    /// The partitions of the live files, in order, with their totals.
    pub fn partitions(&self) -> Vec<PartitionSummary> {
        let mut by: BTreeMap<&str, PartitionSummary> = BTreeMap::new();
        for f in self.files.values() {
            let p = by
                .entry(f.partition.as_str())
                .or_insert_with(|| PartitionSummary {
                    dir: f.partition.clone(),
                    values: crate::partition::parse_partition_path(&f.partition),
                    files: 0,
                    rows: 0,
                    bytes: 0,
                });
            p.files += 1;
            p.rows += f.rows;
            p.bytes += f.bytes;
        }
        by.into_values().collect()
    }
}

/// One partition of a table, from its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionSummary {
    /// The partition directory (`year=2024`), relative to the table.
    pub dir: String,
    /// `(key, value)` pairs; `None` is the NULL (default) partition.
    pub values: Vec<(String, Option<String>)>,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

/// What a committer wants to add.
#[derive(Debug, Clone, Default)]
pub struct CommitDraft {
    /// Unique id of this commit. Keep it when retrying a failed commit: a write whose reply was
    /// lost is then recognised instead of being taken for a conflict.
    pub id: String,
    pub add: Vec<DataFile>,
    /// Files (paths relative to the lake root) to remove: each must be live when the commit
    /// lands, or the commit is a conflict.
    pub remove: Vec<String>,
    pub chunks: Vec<ChunkPart>,
    /// The same rows rearranged (compaction), not new data.
    pub rearrange: bool,
}

/// Writes Delta checkpoints. Implemented outside the core (by `sluice-delta`), so that the
/// core does not depend on `deltalake`.
///
/// # Contract
/// `checkpoint` writes a checkpoint of the table at `table_url` for exactly `version` (which is
/// committed), and may remove log files older than the table's log retention. It is idempotent.
#[async_trait::async_trait]
pub trait Checkpointer: Send + Sync + std::fmt::Debug {
    async fn checkpoint(&self, lake: &Lake, table_dir: &str, version: u64) -> Result<()>;
}

/// Checkpoint every this many versions (Delta's default `delta.checkpointInterval`).
pub const CHECKPOINT_INTERVAL: u64 = 100;

/// Commit-info key holding sluice's commit id.
const COMMIT_ID_KEY: &str = "sluiceCommitId";

/// A table's Delta log, with its state cached.
#[derive(Debug)]
pub struct Ledger {
    lake: Lake,
    /// Table directory relative to the lake root, ending in `/`.
    dir: String,
    kind: FileKind,
    writer: String,
    state: LedgerState,
    checkpointer: Option<Arc<dyn Checkpointer>>,
}

fn version_of_json(name: &str) -> Option<u64> {
    let v = name.strip_suffix(".json")?;
    (v.len() == 20).then(|| v.parse().ok())?
}

/// `(version, part, parts)` of a classic checkpoint file name.
fn checkpoint_of(name: &str) -> Option<(u64, u32, u32)> {
    let rest = name.strip_suffix(".parquet")?;
    let (v, rest) = rest.split_once(".checkpoint")?;
    if v.len() != 20 {
        return None;
    }
    let v = v.parse().ok()?;
    if rest.is_empty() {
        return Some((v, 1, 1));
    }
    let mut it = rest.trim_start_matches('.').split('.');
    let part = it.next()?.parse().ok()?;
    let parts = it.next()?.parse().ok()?;
    // Anything else (a UUID: a v2 checkpoint) is not a classic checkpoint.
    it.next().is_none().then_some((v, part, parts))
}

/// Percent-encodes a relative path for `add.path` (Delta paths are URIs): `%` of Hive escapes
/// becomes `%25`, so that readers decoding the URI find the object by its real name.
pub fn encode_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/=".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a Delta `add.path` (percent-decoding, the same as undoing Hive's escapes).
pub fn decode_path(p: &str) -> String {
    crate::partition::unescape_path_name(p)
}

impl Ledger {
    /// Opens the Delta log of a table's data and reads it (a table without a log reads as empty).
    pub async fn open(lake: &Lake, table: &str, writer: impl Into<String>) -> Result<Self> {
        Self::open_dir(lake, &Lake::table_dir(table), FileKind::Data, writer).await
    }

    /// Opens the Delta log of a table's quarantine.
    pub async fn open_quarantine(
        lake: &Lake,
        table: &str,
        writer: impl Into<String>,
    ) -> Result<Self> {
        Self::open_dir(
            lake,
            &Lake::quarantine_dir(table),
            FileKind::Quarantine,
            writer,
        )
        .await
    }

    /// Opens the Delta log of the table in `dir` (relative to the lake root).
    pub async fn open_dir(
        lake: &Lake,
        dir: &str,
        kind: FileKind,
        writer: impl Into<String>,
    ) -> Result<Self> {
        let mut dir = dir.trim_start_matches('/').to_string();
        if !dir.ends_with('/') {
            dir.push('/');
        }
        let mut l = Ledger {
            lake: lake.clone(),
            dir,
            kind,
            writer: writer.into(),
            state: LedgerState::default(),
            checkpointer: None,
        };
        l.refresh().await?;
        Ok(l)
    }

    /// Writes checkpoints with `c` every [`CHECKPOINT_INTERVAL`] versions.
    pub fn with_checkpointer(mut self, c: Option<Arc<dyn Checkpointer>>) -> Self {
        self.checkpointer = c;
        self
    }

    /// The cached state.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// The table directory, relative to the lake root.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    fn log_dir(&self) -> String {
        format!("{}_delta_log/", self.dir)
    }

    fn version_path(&self, v: u64) -> object_store::path::Path {
        self.lake.path(&format!("{}{v:020}.json", self.log_dir()))
    }

    /// Creates the table (version 0: protocol and metadata) unless it exists.
    pub async fn create_if_missing(&mut self, schema: &DeltaSchema) -> Result<()> {
        if self.state.exists {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp_millis();
        let lines = [
            json!({"commitInfo": {
                "timestamp": now,
                "operation": "CREATE TABLE",
                "operationParameters": {"mode": "ErrorIfExists", "location": self.lake.url_of(&self.dir)},
                "engineInfo": format!("sluice/{}", env!("CARGO_PKG_VERSION")),
                "clientVersion": format!("sluice-{}", env!("CARGO_PKG_VERSION")),
                "isBlindAppend": true,
                "sluiceWriter": self.writer,
            }}),
            json!({"protocol": schema.protocol()}),
            json!({"metaData": {
                "id": uuid::Uuid::new_v4().to_string(),
                "format": {"provider": "parquet", "options": {}},
                "schemaString": schema.schema_string(),
                "partitionColumns": schema.partition_columns,
                "configuration": {},
                "createdTime": now,
            }}),
        ];
        // Written, or another writer created it first: either way the table exists now.
        self.put_version(0, &join_lines(&lines)).await?;
        self.refresh().await
    }

    /// Adds nullable columns to the table's schema: one version with a `metaData` action (the
    /// table's id, partitioning and configuration kept) and, when a timestamp without zone is
    /// new to the table, the `protocol` with the `timestampNtz` feature. Columns already in the
    /// schema are left as they are (whatever their type); new ones go before the partition
    /// columns. Returns the version written, or `None` when every column was already there.
    ///
    /// Files committed before, and files of commits racing with this one, lack the columns:
    /// every reader reads them as NULL there, so appends never conflict with a schema change.
    pub async fn add_columns(&mut self, add: &[DeltaField]) -> Result<Option<u64>> {
        let id = uuid::Uuid::now_v7().to_string();
        loop {
            if let Some(v) = self.state.commit_ids.get(&id) {
                return Ok(Some(*v));
            }
            let url = self.lake.url_of(&self.log_dir());
            let corrupt = |message: String| Error::CorruptLog {
                path: url.clone(),
                message,
            };
            let mut meta = self
                .state
                .metadata
                .clone()
                .ok_or_else(|| corrupt("the log has no metaData action".into()))?;
            let mut schema: Value = meta
                .get("schemaString")
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str(s).ok())
                .ok_or_else(|| corrupt("metaData has no readable schemaString".into()))?;
            let fields = schema
                .get_mut("fields")
                .and_then(Value::as_array_mut)
                .ok_or_else(|| corrupt("schemaString has no fields".into()))?;
            let names: HashSet<String> = fields
                .iter()
                .filter_map(|f| f.get("name").and_then(Value::as_str).map(str::to_string))
                .collect();
            let new: Vec<&DeltaField> = add.iter().filter(|f| !names.contains(&f.name)).collect();
            if new.is_empty() {
                return Ok(None);
            }
            let had_ntz = fields
                .iter()
                .any(|f| f.get("type") == Some(&json!("timestamp_ntz")));
            let at = fields
                .iter()
                .position(|f| {
                    f.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| self.state.partition_columns.iter().any(|p| p == n))
                })
                .unwrap_or(fields.len());
            let new_json: Vec<Value> = new
                .iter()
                .map(|f| json!({"name": f.name, "type": f.ty, "nullable": true, "metadata": {}}))
                .collect();
            for (k, f) in new_json.iter().enumerate() {
                fields.insert(at + k, f.clone());
            }
            meta["schemaString"] = Value::String(schema.to_string());
            let now = chrono::Utc::now().timestamp_millis();
            let columns: Vec<Value> = new_json.iter().map(|f| json!({"column": f})).collect();
            let mut lines = vec![json!({"commitInfo": {
                "timestamp": now,
                "operation": "ADD COLUMNS",
                "operationParameters": {"columns": Value::Array(columns).to_string()},
                "engineInfo": format!("sluice/{}", env!("CARGO_PKG_VERSION")),
                "clientVersion": format!("sluice-{}", env!("CARGO_PKG_VERSION")),
                "isBlindAppend": false,
                COMMIT_ID_KEY: id,
                "sluiceWriter": self.writer,
            }})];
            if !had_ntz && new.iter().any(|f| f.ty == "timestamp_ntz") {
                lines.push(
                    json!({"protocol": with_feature(self.state.protocol.as_ref(), "timestampNtz")}),
                );
            }
            lines.push(json!({"metaData": meta}));
            let body = join_lines(&lines);
            let version = self.state.version + 1;
            if self.put_version(version, &body).await? {
                self.apply_version(version, &body)?;
                self.after_commit(version).await;
                return Ok(Some(version));
            }
            self.refresh().await?;
        }
    }

    /// Writes version `v` unless it exists (create-if-absent): `false` when another writer wrote
    /// it first.
    async fn put_version(&self, v: u64, body: &str) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .lake
            .store
            .put_opts(
                &self.version_path(v),
                PutPayload::from(body.as_bytes().to_vec()),
                opts,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the versions newer than the cached state (from the newest checkpoint when the
    /// cached state is empty).
    pub async fn refresh(&mut self) -> Result<()> {
        let log_dir = self.log_dir();
        let prefix = self.lake.path(&log_dir);
        let listing = if self.state.exists {
            let offset = self.version_path(self.state.version);
            self.lake
                .store
                .list_with_offset(Some(&prefix), &offset)
                .try_collect::<Vec<_>>()
                .await?
        } else {
            self.lake.store.list(Some(&prefix)).try_collect().await?
        };
        let mut jsons: Vec<u64> = Vec::new();
        let mut checkpoints: BTreeMap<u64, (u32, Vec<object_store::path::Path>)> = BTreeMap::new();
        for m in &listing {
            let Some(name) = m.location.filename() else {
                continue;
            };
            if let Some(v) = version_of_json(name) {
                jsons.push(v);
            } else if let Some((v, _, parts)) = checkpoint_of(name) {
                let e = checkpoints.entry(v).or_insert((parts, Vec::new()));
                e.1.push(m.location.clone());
            }
        }
        jsons.sort_unstable();
        let mut next = if self.state.exists {
            self.state.version + 1
        } else {
            0
        };
        if !self.state.exists {
            // The newest complete checkpoint, if any.
            let newest = checkpoints
                .iter()
                .rev()
                .find(|(_, (parts, files))| files.len() == *parts as usize);
            if let Some((v, (_, files))) = newest {
                let mut files = files.clone();
                files.sort();
                self.read_checkpoint(&files).await?;
                self.state.version = *v;
                self.state.exists = true;
                next = v + 1;
            }
        }
        let start = next;
        for v in jsons.into_iter().filter(|v| *v >= start) {
            if v != next {
                return Err(Error::CorruptLog {
                    path: self.lake.url_of(&log_dir),
                    message: format!("version {next} is missing (found {v})"),
                });
            }
            self.read_version(v).await?;
            next = v + 1;
        }
        Ok(())
    }

    async fn read_version(&mut self, v: u64) -> Result<()> {
        let path = self.version_path(v);
        let bytes = self.lake.store.get(&path).await?.bytes().await?;
        let text = std::str::from_utf8(&bytes).map_err(|e| Error::CorruptLog {
            path: self.lake.url_of(&format!("{}{v:020}.json", self.log_dir())),
            message: e.to_string(),
        })?;
        self.apply_version(v, text)
    }

    /// Applies the actions of version `v` (its JSON lines) to the cached state.
    fn apply_version(&mut self, v: u64, text: &str) -> Result<()> {
        let url = self.lake.url_of(&format!("{}{v:020}.json", self.log_dir()));
        let corrupt = |message: String| Error::CorruptLog {
            path: url.clone(),
            message,
        };
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let action: Value =
                serde_json::from_str(line).map_err(|e| corrupt(format!("line {}: {e}", i + 1)))?;
            if let Some(a) = action.get("add") {
                let path = a
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| corrupt(format!("line {}: add without a path", i + 1)))?;
                let size = a.get("size").and_then(Value::as_u64).unwrap_or(0);
                let stats = a.get("stats").and_then(Value::as_str).map(str::to_string);
                self.add_file(path, size, stats);
            } else if let Some(r) = action.get("remove") {
                if let Some(p) = r.get("path").and_then(Value::as_str) {
                    let rel = self.lake_path(p);
                    self.state.files.remove(&rel);
                    self.state.removed.insert(rel);
                }
            } else if let Some(t) = action.get("txn") {
                if let Some(id) = t.get("appId").and_then(Value::as_str) {
                    self.state.app_ids.insert(id.to_string());
                }
            } else if let Some(c) = action.get("commitInfo") {
                if let Some(id) = c.get(COMMIT_ID_KEY).and_then(Value::as_str) {
                    self.state.commit_ids.insert(id.to_string(), v);
                }
            } else if let Some(p) = action.get("protocol") {
                self.state.protocol = Some(p.clone());
            } else if let Some(m) = action.get("metaData") {
                self.state.metadata = Some(m.clone());
                self.state.schema_string = m
                    .get("schemaString")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                self.state.partition_columns = m
                    .get("partitionColumns")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
            }
        }
        self.state.version = v;
        self.state.exists = true;
        Ok(())
    }

    /// The path, relative to the lake root, of a Delta `path` (relative to the table, encoded).
    fn lake_path(&self, delta_path: &str) -> String {
        format!("{}{}", self.dir, decode_path(delta_path))
    }

    fn add_file(&mut self, path: &str, size: u64, stats: Option<String>) {
        let decoded = decode_path(path);
        let rel = format!("{}{}", self.dir, decoded);
        let partition = match decoded.rsplit_once('/') {
            Some((dir, _)) => dir.to_string(),
            None => String::new(),
        };
        let rows = stats
            .as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .and_then(|v| v.get("numRecords").and_then(Value::as_u64))
            .unwrap_or(0);
        self.state.files.insert(
            rel.clone(),
            DataFile {
                path: rel,
                partition,
                rows,
                bytes: size,
                kind: self.kind,
                stats,
            },
        );
    }

    /// Reads a classic checkpoint (one file or several parts): live files, transactions and
    /// metadata at its version.
    async fn read_checkpoint(&mut self, files: &[object_store::path::Path]) -> Result<()> {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        for path in files {
            let corrupt = |message: String| Error::CorruptLog {
                path: path.to_string(),
                message,
            };
            // A checkpoint holds one row per live file and chunk part: read it whole.
            let bytes = self.lake.store.get(path).await?.bytes().await?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
            for batch in reader {
                let batch = batch?;
                if let Some(add) = batch.column_by_name("add") {
                    let add = add
                        .as_struct_opt()
                        .ok_or_else(|| corrupt("add is not a struct".into()))?;
                    let paths =
                        string_field(add, "path").ok_or_else(|| corrupt("add.path".into()))?;
                    let sizes = add
                        .column_by_name("size")
                        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>().cloned());
                    let stats = string_field(add, "stats");
                    for i in 0..add.len() {
                        if add.is_null(i) || paths.is_null(i) {
                            continue;
                        }
                        let size = sizes.as_ref().map(|s| s.value(i) as u64).unwrap_or(0);
                        let st = stats
                            .as_ref()
                            .filter(|s| s.is_valid(i))
                            .map(|s| s.value(i).to_string());
                        self.add_file(paths.value(i), size, st);
                    }
                }
                let mut removed = Vec::new();
                for_each_string(&batch, "remove", "path", &corrupt, |p| {
                    removed.push(self.lake_path(p))
                })?;
                self.state.removed.extend(removed);
                for_each_string(&batch, "txn", "appId", &corrupt, |id| {
                    self.state.app_ids.insert(id.to_string());
                })?;
                if let Some(meta) = batch.column_by_name("metaData") {
                    let col = meta.clone();
                    let meta = meta
                        .as_struct_opt()
                        .ok_or_else(|| corrupt("metaData is not a struct".into()))?;
                    if let Some(s) = string_field(meta, "schemaString") {
                        for i in 0..meta.len() {
                            if !meta.is_null(i) && s.is_valid(i) {
                                self.state.schema_string = Some(s.value(i).to_string());
                                self.state.partition_columns = partition_columns_at(meta, i);
                                self.state.metadata = Some(action_json(&col, i)?);
                            }
                        }
                    }
                }
                if let Some(p) = batch.column_by_name("protocol") {
                    for i in 0..p.len() {
                        if p.is_valid(i) {
                            self.state.protocol = Some(action_json(p, i)?);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Commits a draft atomically. Fails with `Conflict` if any of its chunk parts was committed
    /// by someone else; retries on the next version when another commit won the race.
    ///
    /// Retrying is the caller's: call again with the same draft (same id) after a retryable error.
    pub async fn commit(&mut self, draft: CommitDraft) -> Result<Commit> {
        if !self.state.exists {
            return Err(Error::NotFound {
                what: "Delta table",
                name: self.lake.url_of(&self.dir),
            });
        }
        let id = if draft.id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            draft.id.clone()
        };
        loop {
            if let Some(v) = self.state.commit_ids.get(&id) {
                // An earlier attempt landed although its reply was lost.
                debug!(
                    version = v,
                    "commit found in the log: an earlier attempt landed"
                );
                return Ok(self.commit_of(&id, *v, &draft));
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
            if let Some(gone) = draft
                .remove
                .iter()
                .find(|p| !self.state.files.contains_key(*p))
            {
                return Err(Error::Conflict(format!(
                    "file {gone} is no longer in the table (another commit removed it)"
                )));
            }
            let commit = self.commit_of(&id, self.state.version + 1, &draft);
            let body = self.render(&commit)?;
            if self.put_version(commit.version, &body).await? {
                // The version is exactly what was written: apply it without reading it back.
                self.apply_version(commit.version, &body)?;
                self.after_commit(commit.version).await;
                return Ok(commit);
            }
            self.refresh().await?;
        }
    }

    fn commit_of(&self, id: &str, version: u64, draft: &CommitDraft) -> Commit {
        Commit {
            version,
            id: id.to_string(),
            committed_at_ms: chrono::Utc::now().timestamp_millis(),
            writer: self.writer.clone(),
            add: draft.add.clone(),
            remove: draft.remove.clone(),
            chunks: draft.chunks.clone(),
            rearrange: draft.rearrange,
        }
    }

    /// Writes a checkpoint when one is due. A failure is logged: the commit has landed.
    async fn after_commit(&self, version: u64) {
        if !version.is_multiple_of(CHECKPOINT_INTERVAL) {
            return;
        }
        if let Some(c) = &self.checkpointer
            && let Err(e) = c.checkpoint(&self.lake, &self.dir, version).await
        {
            warn!(table = %self.dir, version, error = %e, "checkpoint failed; the commit stands, readers replay more versions until the next checkpoint");
        }
    }

    /// Delta `partitionValues` of a partition directory (`year=2024`).
    fn partition_values(&self, partition: &str) -> serde_json::Map<String, Value> {
        let mut pv = serde_json::Map::new();
        let kv = crate::partition::parse_partition_path(partition);
        for col in &self.state.partition_columns {
            let v = kv
                .iter()
                .find(|(k, _)| k == col)
                .and_then(|(_, v)| v.clone());
            pv.insert(col.clone(), v.map(Value::String).unwrap_or(Value::Null));
        }
        pv
    }

    fn render(&self, c: &Commit) -> Result<String> {
        let mut lines = Vec::with_capacity(2 + c.add.len() + c.chunks.len());
        let rows: u64 = c.add.iter().map(|a| a.rows).sum();
        let bytes: u64 = c.add.iter().map(|a| a.bytes).sum();
        let (operation, parameters) = if c.rearrange {
            ("OPTIMIZE", json!({"targetSize": null}))
        } else {
            ("WRITE", json!({"mode": "Append"}))
        };
        lines.push(json!({"commitInfo": {
            "timestamp": c.committed_at_ms,
            "operation": operation,
            "operationParameters": parameters,
            "engineInfo": format!("sluice/{}", env!("CARGO_PKG_VERSION")),
            "clientVersion": format!("sluice-{}", env!("CARGO_PKG_VERSION")),
            "isBlindAppend": c.remove.is_empty() && !c.rearrange,
            "operationMetrics": {
                "numFiles": c.add.len().to_string(),
                "numOutputRows": rows.to_string(),
                "numOutputBytes": bytes.to_string(),
            },
            COMMIT_ID_KEY: c.id,
            "sluiceWriter": c.writer,
            "sluiceChunkParts": c.chunks.len(),
        }}));
        for cp in &c.chunks {
            lines.push(json!({"txn": {"appId": cp.app_id(), "version": 1, "lastUpdated": c.committed_at_ms}}));
        }
        for a in &c.add {
            let rel = a.path.strip_prefix(&self.dir).ok_or_else(|| {
                Error::Config(format!(
                    "file {} is not in table directory {}",
                    a.path, self.dir
                ))
            })?;
            let mut add = json!({
                "path": encode_path(rel),
                "partitionValues": self.partition_values(&a.partition),
                "size": a.bytes,
                "modificationTime": c.committed_at_ms,
                "dataChange": !c.rearrange,
            });
            let stats = a
                .stats
                .clone()
                .unwrap_or_else(|| json!({"numRecords": a.rows}).to_string());
            add["stats"] = Value::String(stats);
            lines.push(json!({"add": add}));
        }
        for r in &c.remove {
            let rel = r.strip_prefix(&self.dir).unwrap_or(r);
            let mut remove = json!({
                "path": encode_path(rel),
                "deletionTimestamp": c.committed_at_ms,
                "dataChange": !c.rearrange,
            });
            if let Some(f) = self.state.files.get(r) {
                remove["extendedFileMetadata"] = Value::Bool(true);
                remove["partitionValues"] = Value::Object(self.partition_values(&f.partition));
                remove["size"] = json!(f.bytes);
            }
            lines.push(json!({"remove": remove}));
        }
        Ok(lines
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// One version of a table's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub version: u64,
    pub timestamp_ms: i64,
    pub operation: String,
    /// Rows added, when the committer recorded them (`operationMetrics.numOutputRows`).
    pub rows: Option<u64>,
    pub files_added: u64,
    pub files_removed: u64,
    pub chunk_parts: u64,
    /// sluice's writer id, or the engine that committed (`engineInfo`).
    pub writer: Option<String>,
}

/// The newest `limit` versions of the table in `dir` (relative to the lake root), newest first.
/// Versions whose JSON was removed by log clean-up (after their retention) are not listed.
pub async fn history(lake: &Lake, dir: &str, limit: usize) -> Result<Vec<HistoryEntry>> {
    let log_dir = format!("{}/_delta_log/", dir.trim_matches('/'));
    let prefix = lake.path(&log_dir);
    let mut versions: Vec<u64> = lake
        .store
        .list(Some(&prefix))
        .try_filter_map(|m| async move { Ok(m.location.filename().and_then(version_of_json)) })
        .try_collect()
        .await?;
    if versions.is_empty() {
        return Err(Error::NotFound {
            what: "Delta table",
            name: lake.url_of(dir),
        });
    }
    versions.sort_unstable_by(|a, b| b.cmp(a));
    versions.truncate(limit);
    let mut out = Vec::with_capacity(versions.len());
    for v in versions {
        let rel = format!("{log_dir}{v:020}.json");
        let bytes = lake.store.get(&lake.path(&rel)).await?.bytes().await?;
        let text = String::from_utf8_lossy(&bytes);
        let mut e = HistoryEntry {
            version: v,
            timestamp_ms: 0,
            operation: String::new(),
            rows: None,
            files_added: 0,
            files_removed: 0,
            chunk_parts: 0,
            writer: None,
        };
        for line in text.lines() {
            let Ok(a) = serde_json::from_str::<Value>(line) else {
                return Err(Error::CorruptLog {
                    path: lake.url_of(&rel),
                    message: "a line is not JSON".into(),
                });
            };
            if let Some(c) = a.get("commitInfo") {
                e.timestamp_ms = c.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
                e.operation = c
                    .get("operation")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                e.rows = c.pointer("/operationMetrics/numOutputRows").and_then(|v| {
                    v.as_str()
                        .and_then(|s| s.parse().ok())
                        .or_else(|| v.as_u64())
                });
                e.writer = c
                    .get("sluiceWriter")
                    .or_else(|| c.get("engineInfo"))
                    .and_then(Value::as_str)
                    .map(str::to_string);
            } else if a.get("add").is_some() {
                e.files_added += 1;
            } else if a.get("remove").is_some() {
                e.files_removed += 1;
            } else if a.get("txn").is_some() {
                e.chunk_parts += 1;
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// Calls `f` with `action.field` of every row of a checkpoint batch that has that action.
fn for_each_string(
    batch: &arrow::array::RecordBatch,
    action: &str,
    field: &str,
    corrupt: &dyn Fn(String) -> Error,
    mut f: impl FnMut(&str),
) -> Result<()> {
    let Some(col) = batch.column_by_name(action) else {
        return Ok(());
    };
    let s = col
        .as_struct_opt()
        .ok_or_else(|| corrupt(format!("{action} is not a struct")))?;
    if let Some(values) = string_field(s, field) {
        for i in 0..s.len() {
            if !s.is_null(i) && values.is_valid(i) {
                f(values.value(i));
            }
        }
    }
    Ok(())
}

fn string_field(s: &StructArray, name: &str) -> Option<arrow::array::StringArray> {
    let c = s.column_by_name(name)?;
    let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).ok()?;
    c.as_string_opt::<i32>().cloned()
}

/// A protocol with a table feature added (readers and writers): reader 3 / writer 7, the
/// features the table had kept.
fn with_feature(protocol: Option<&Value>, feature: &str) -> Value {
    let list = |key: &str| -> Vec<Value> {
        let mut v: Vec<Value> = protocol
            .and_then(|p| p.get(key))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !v.iter().any(|f| f == feature) {
            v.push(Value::String(feature.to_string()));
        }
        v
    };
    let version = |key: &str, min: u64| {
        protocol
            .and_then(|p| p.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .max(min)
    };
    json!({
        "minReaderVersion": version("minReaderVersion", 3),
        "minWriterVersion": version("minWriterVersion", 7),
        "readerFeatures": list("readerFeatures"),
        "writerFeatures": list("writerFeatures"),
    })
}

/// Row `i` of a checkpoint's action column as the JSON the action has in a commit file.
fn action_json(col: &arrow::array::ArrayRef, i: usize) -> Result<Value> {
    let batch = arrow::array::RecordBatch::try_from_iter([("a", col.slice(i, 1))])?;
    let mut buf = Vec::new();
    let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
    w.write(&batch)?;
    w.finish()?;
    let mut v: Value = serde_json::from_slice(&buf).map_err(|e| Error::CorruptLog {
        path: "checkpoint".into(),
        message: format!("an action does not read as JSON: {e}"),
    })?;
    Ok(v.get_mut("a").map(Value::take).unwrap_or(Value::Null))
}

/// A version's actions, one JSON object per line.
fn join_lines(lines: &[Value]) -> String {
    lines
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn partition_columns_at(meta: &StructArray, i: usize) -> Vec<String> {
    let Some(c) = meta.column_by_name("partitionColumns") else {
        return vec![];
    };
    let Some(list) = c.as_list_opt::<i32>() else {
        return vec![];
    };
    if list.is_null(i) {
        return vec![];
    }
    let v = list.value(i);
    let Ok(v) = arrow::compute::cast(&v, &arrow::datatypes::DataType::Utf8) else {
        return vec![];
    };
    let s = v.as_string::<i32>();
    (0..s.len())
        .filter(|j| s.is_valid(*j))
        .map(|j| s.value(j).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        let raw = "k=a%3Ab c/part-1.parquet";
        let enc = encode_path(raw);
        assert_eq!(enc, "k=a%253Ab%20c/part-1.parquet");
        assert_eq!(decode_path(&enc), raw);
    }

    #[test]
    fn checkpoint_names() {
        assert_eq!(
            checkpoint_of("00000000000000000100.checkpoint.parquet"),
            Some((100, 1, 1))
        );
        assert_eq!(
            checkpoint_of("00000000000000000100.checkpoint.0000000002.0000000003.parquet"),
            Some((100, 2, 3))
        );
        assert_eq!(
            checkpoint_of(
                "00000000000000000100.checkpoint.80a083e8-7026-4e79-81be-64bd76c43a11.parquet"
            ),
            None
        );
        assert_eq!(version_of_json("00000000000000000007.json"), Some(7));
        assert_eq!(version_of_json("00000000000000000007.crc"), None);
    }
}
