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
use crate::delta::actions::{self, StructField};
use crate::delta::constraints::{Checks, ConstraintEngine};
pub use crate::delta::records::{PartKey, PartKeyHasher, part_key};
use crate::delta::records::{PartKeys, RecordIndex, app_id, app_key};
use crate::delta::{
    Action, Add, CommitInfo, DomainMetadata, Metadata, Operation, Protocol, Remove, Txn, WriteRules,
};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::schema::ColumnType;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// The table's own rows.
    Data,
    /// Rows that could not be parsed, in the quarantine table.
    Quarantine,
}

/// A committed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Path relative to the lake root, as the object is named (Hive-escaped, not URL-encoded).
    pub path: String,
    /// Partition directory (`year=2024`), empty for unpartitioned tables.
    pub partition: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// Which table the file is for.
    pub kind: FileKind,
    /// Delta statistics (`numRecords`, `minValues`, `maxValues`, `nullCount`) as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
}

/// The rows of one chunk that fall into one partition: the unit of exactly-once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkPart {
    /// The chunk id.
    pub chunk: String,
    /// The partition (Hive path) of the part.
    pub partition: String,
}

impl ChunkPart {
    /// The Delta application-transaction id recording this chunk part.
    pub fn app_id(&self) -> String {
        app_id(&self.chunk, &self.partition)
    }
}

/// The chunk parts committed at a version (records not expired): a snapshot to look pieces up
/// in from another thread ([`LedgerState::records`]).
#[derive(Debug, Clone, Default)]
pub struct Records {
    recent: PartKeys,
    index: Option<Arc<RecordIndex>>,
    /// Records of the index updated before this (ms since the epoch) have expired.
    expired_before: Option<i64>,
}

impl Records {
    /// Whether the chunk part of `key` ([`part_key`]) is committed.
    pub fn contains(&self, key: &PartKey) -> bool {
        self.recent.contains(key)
            || self.index.as_ref().is_some_and(|ix| {
                ix.get(key)
                    .is_some_and(|t| self.expired_before.is_none_or(|e| t >= e))
            })
    }

    /// Counts `key` as committed in this snapshot.
    pub fn insert(&mut self, key: PartKey) {
        self.recent.insert(key);
    }
}

/// One commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The Delta version the commit landed as.
    pub version: u64,
    /// Unique id, so a committer whose write succeeded but whose reply was lost recognises it.
    pub id: String,
    /// When it was committed, in milliseconds since the epoch.
    pub committed_at_ms: i64,
    /// Who committed (host, process, consumer id), for operators.
    pub writer: String,
    /// Files it added.
    pub add: Vec<DataFile>,
    /// Paths of the files it removed.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Chunk parts it recorded.
    pub chunks: Vec<ChunkPart>,
    /// The same rows rearranged (compaction): `dataChange` false, operation `OPTIMIZE`.
    #[serde(default)]
    pub rearrange: bool,
    /// What a keyed table's merge did (operation `MERGE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeMetrics>,
}

/// What a merge of changes into a keyed table did, by row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeMetrics {
    /// Changes that inserted a key the table did not hold.
    pub inserted: u64,
    /// Changes that replaced a key's row.
    pub updated: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// Changes ignored: older than the key's row, or superseded within the merge by a later
    /// change of the same key, or deletes of keys the table did not hold.
    pub ignored: u64,
    /// Rows of the rewritten files that were copied unchanged.
    pub copied: u64,
}

/// A merge's part of a commit draft.
#[derive(Debug, Clone, Default)]
pub struct MergeDraft {
    /// The version whose rows the merge read: a commit after another writer changed rows is
    /// refused with [`Error::MergeStale`].
    pub read_version: u64,
    /// What it did.
    pub metrics: MergeMetrics,
}

/// A column of a Delta table's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaField {
    /// The column's name.
    pub name: String,
    /// Delta's type: a primitive's name (`long`, `string`, `decimal(12,2)`, …), a nested type's JSON.
    pub ty: String,
    /// Whether it may hold NULL.
    pub nullable: bool,
    /// The name its sources gave the column, when the table's naming rule changed it: kept in
    /// the field's metadata (`sluice.sourceName`).
    pub source_name: Option<String>,
}

/// The schema of a Delta table: its columns (the partition columns too) and partition columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaSchema {
    /// The columns, in order.
    pub fields: Vec<DeltaField>,
    /// The partition columns, in order.
    pub partition_columns: Vec<String>,
    /// Table properties sluice adds to its own (`metaData.configuration`), such as its
    /// partition spec, by which a new home adopts the table as it was made.
    pub configuration: BTreeMap<String, String>,
}

/// Table property holding sluice's `--partition-by` spec (`year(month)`): a Delta table's
/// partition columns alone do not say that `year` is the year of `month`.
pub(crate) const CONFIG_PARTITION_BY: &str = "sluice.partitionBy";
/// Table property holding the table's date format, when it has one.
pub(crate) const CONFIG_DATE_FORMAT: &str = "sluice.dateFormat";
/// Table property: `true` when the table infers numbers written with a point as decimals.
pub(crate) const CONFIG_EXACT_DECIMALS: &str = "sluice.exactDecimals";
/// Field metadata: the name a column had in its sources, when the table renamed it.
pub(crate) const SOURCE_NAME: &str = "sluice.sourceName";
/// Table property: how the table names its sources' columns (`snake_case`, `as-is`).
pub(crate) const CONFIG_COLUMN_NAMES: &str = "sluice.columnNames";
/// Table properties of a keyed table ([`crate::table::keyed`]), with the catalog parameters
/// they hold.
pub(crate) const CONFIG_KEYED: [(&str, &str); 4] = [
    ("sluice.mergeKey", crate::table::keyed::PARAM_MERGE_KEY),
    ("sluice.opColumn", crate::table::keyed::PARAM_OP_COLUMN),
    ("sluice.sequenceBy", crate::table::keyed::PARAM_SEQUENCE_BY),
    (
        "sluice.keepOpColumn",
        crate::table::keyed::PARAM_KEEP_OP_COLUMN,
    ),
];

/// Delta's type for a column type. Timestamps without zone are `timestamp_ntz`.
pub(crate) fn delta_type(ty: ColumnType) -> String {
    match delta_type_value(ty) {
        Value::String(t) => t,
        nested => nested.to_string(),
    }
}

/// A column type as Delta's schema writes it: a primitive's name, a nested type's JSON.
pub(crate) fn delta_type_value(ty: ColumnType) -> Value {
    Value::String(
        match ty {
            ColumnType::Boolean => "boolean",
            ColumnType::Int8 => "byte",
            ColumnType::Int16 => "short",
            ColumnType::Int32 => "integer",
            ColumnType::Int64 => "long",
            ColumnType::Float32 => "float",
            ColumnType::Float64 => "double",
            ColumnType::Decimal { precision, scale } => {
                return Value::String(format!("decimal({precision},{scale})"));
            }
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp_ntz",
            ColumnType::TimestampTz => "timestamp",
            ColumnType::String => "string",
            ColumnType::Binary => "binary",
            ColumnType::Struct(fields) => {
                let fields: Vec<Value> = fields
                    .iter()
                    .map(|f| {
                        json!({"name": f.name, "type": delta_type_value(f.ty), "nullable": true, "metadata": {}})
                    })
                    .collect();
                return json!({"type": "struct", "fields": fields});
            }
            ColumnType::List(elem) => {
                return json!({"type": "array", "elementType": delta_type_value(*elem), "containsNull": true});
            }
            ColumnType::Map((k, v)) => {
                return json!({"type": "map", "keyType": delta_type_value(*k), "valueType": delta_type_value(*v), "valueContainsNull": true});
            }
        }
        .to_string(),
    )
}

/// The column type of a Delta type as [`LedgerState::schema_fields`] gives it (a primitive's
/// name, a nested type's JSON); `None` for a type sluice does not write: an unknown one, and
/// nested types whose parts may not hold NULL.
pub(crate) fn column_type_of_delta(ty: &str) -> Option<ColumnType> {
    if ty.starts_with('{') {
        return column_type_of_delta_value(&serde_json::from_str(ty).ok()?);
    }
    Some(match ty {
        "boolean" => ColumnType::Boolean,
        "byte" => ColumnType::Int8,
        "short" => ColumnType::Int16,
        "integer" => ColumnType::Int32,
        "long" => ColumnType::Int64,
        "float" => ColumnType::Float32,
        "double" => ColumnType::Float64,
        "date" => ColumnType::Date,
        "timestamp_ntz" => ColumnType::Timestamp,
        "timestamp" => ColumnType::TimestampTz,
        "string" => ColumnType::String,
        "binary" => ColumnType::Binary,
        _ => {
            let args = ty.strip_prefix("decimal(")?.strip_suffix(')')?;
            let (p, s) = args.split_once(',')?;
            return ColumnType::decimal(p.trim().parse().ok()?, s.trim().parse().ok()?).ok();
        }
    })
}

fn column_type_of_delta_value(v: &Value) -> Option<ColumnType> {
    let nullable = |key: &str| v.get(key).and_then(Value::as_bool).unwrap_or(true);
    match v {
        Value::String(t) => column_type_of_delta(t),
        Value::Object(o) => match o.get("type")?.as_str()? {
            "struct" => {
                let fields = o.get("fields")?.as_array()?;
                let fields = fields
                    .iter()
                    .map(|f| {
                        // Column mapping's physical names are the mapping's (see
                        // `delta::mapping`), not the type's.
                        let nullable = f.get("nullable").and_then(Value::as_bool).unwrap_or(true);
                        if !nullable {
                            return None;
                        }
                        Some(crate::schema::StructField::new(
                            f.get("name")?.as_str()?,
                            column_type_of_delta_value(f.get("type")?)?,
                        ))
                    })
                    .collect::<Option<Vec<_>>>()?;
                ColumnType::structure(fields).ok()
            }
            "array" if nullable("containsNull") => Some(ColumnType::list(
                column_type_of_delta_value(o.get("elementType")?)?,
            )),
            "map" if nullable("valueContainsNull") => ColumnType::map(
                column_type_of_delta_value(o.get("keyType")?)?,
                column_type_of_delta_value(o.get("valueType")?)?,
            )
            .ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Gives a field of a column-mapped table the next id and a physical name of its own.
fn map_field(metadata: &mut serde_json::Map<String, Value>, max: &mut i64) {
    *max += 1;
    metadata.insert("delta.columnMapping.id".into(), json!(*max));
    metadata.insert(
        "delta.columnMapping.physicalName".into(),
        json!(format!("col-{}", uuid::Uuid::new_v4())),
    );
}

/// Gives every struct field of a Delta type (at any depth) that has none an id and a physical
/// name, as a column-mapped table needs.
fn map_nested(ty: &mut Value, max: &mut i64) {
    let Value::Object(o) = ty else { return };
    match o.get("type").and_then(Value::as_str) {
        Some("struct") => {
            if let Some(Value::Array(fields)) = o.get_mut("fields") {
                for f in fields {
                    let Value::Object(f) = f else { continue };
                    let meta = f
                        .entry("metadata")
                        .or_insert_with(|| Value::Object(Default::default()));
                    if let Value::Object(meta) = meta
                        && !meta.contains_key("delta.columnMapping.id")
                    {
                        map_field(meta, max);
                    }
                    if let Some(t) = f.get_mut("type") {
                        map_nested(t, max);
                    }
                }
            }
        }
        Some("array") => {
            if let Some(t) = o.get_mut("elementType") {
                map_nested(t, max);
            }
        }
        Some("map") => {
            for key in ["keyType", "valueType"] {
                if let Some(t) = o.get_mut(key) {
                    map_nested(t, max);
                }
            }
        }
        _ => {}
    }
}

/// A Delta type `have` with the struct fields `want` has and it lacks (at any depth) added after
/// its own; its own fields keep their metadata. Under column mapping (`max_id`), the added
/// fields get ids and physical names.
fn widen_delta_type(have: &Value, want: ColumnType, max_id: &mut Option<i64>) -> Value {
    let mut out = have.clone();
    let kind = have.get("type").and_then(Value::as_str);
    match (kind, want) {
        (Some("struct"), ColumnType::Struct(fields)) => {
            let Some(Value::Array(existing)) = out.get_mut("fields") else {
                return out;
            };
            for f in existing.iter_mut() {
                let Some(w) = f
                    .get("name")
                    .and_then(Value::as_str)
                    .and_then(|n| fields.iter().find(|w| w.name == n))
                else {
                    continue;
                };
                if let Some(t) = f.get_mut("type") {
                    *t = widen_delta_type(t, w.ty, max_id);
                }
            }
            let known: Vec<String> = existing
                .iter()
                .filter_map(|f| f.get("name").and_then(Value::as_str).map(str::to_string))
                .collect();
            for w in fields.iter().filter(|w| !known.contains(&w.name)) {
                let mut ty = delta_type_value(w.ty);
                let mut meta = serde_json::Map::new();
                if let Some(max) = max_id.as_mut() {
                    map_field(&mut meta, max);
                    map_nested(&mut ty, max);
                }
                existing
                    .push(json!({"name": w.name, "type": ty, "nullable": true, "metadata": meta}));
            }
        }
        (Some("array"), ColumnType::List(elem)) => {
            if let Some(t) = out.get_mut("elementType") {
                *t = widen_delta_type(t, *elem, max_id);
            }
        }
        (Some("map"), ColumnType::Map((_, v))) => {
            if let Some(t) = out.get_mut("valueType") {
                *t = widen_delta_type(t, *v, max_id);
            }
        }
        _ => {}
    }
    out
}

/// Whether a Delta type as [`LedgerState::schema_fields`] gives it is exactly what sluice
/// writes for `t` (a file of `long` values in an `integer` column is one readers refuse).
pub(crate) fn is_delta_type(t: ColumnType, ty: &str) -> bool {
    if t.is_nested() {
        // `column_type_of_delta` took only nested types sluice writes as they are.
        column_type_of_delta(ty) == Some(t)
    } else {
        delta_type(t) == ty
    }
}

/// Whether a Delta type (as above) is or holds a timestamp without zone.
pub(crate) fn has_timestamp_ntz(ty: &str) -> bool {
    ty == "timestamp_ntz" || (ty.starts_with('{') && ty.contains("\"timestamp_ntz\""))
}

impl DeltaSchema {
    /// The schema of a catalog table: its file columns, then its partition keys.
    pub fn of_table(def: &TableDef) -> Self {
        // A keyed table's operation column is in its changes, not in its files (unless kept).
        let op = crate::table::keyed::KeySpec::of_params(&def.parameters)
            .ok()
            .flatten()
            .filter(|k| !k.keep_op)
            .and_then(|k| k.op);
        let fields: Vec<DeltaField> = def
            .columns
            .iter()
            .filter(|c| op.as_ref() != Some(&c.name))
            .chain(&def.partition_keys)
            .map(DeltaField::of_column)
            .collect();
        let mut configuration = BTreeMap::new();
        for (param, key) in [
            (crate::catalog::PARAM_PARTITION_BY, CONFIG_PARTITION_BY),
            (crate::catalog::PARAM_DATE_FORMAT, CONFIG_DATE_FORMAT),
            (crate::catalog::PARAM_EXACT_DECIMALS, CONFIG_EXACT_DECIMALS),
            (crate::catalog::PARAM_COLUMN_NAMES, CONFIG_COLUMN_NAMES),
        ]
        .into_iter()
        .chain(CONFIG_KEYED.iter().map(|(config, param)| (*param, *config)))
        {
            if let Some(v) = def.parameters.get(param) {
                configuration.insert(key.to_string(), v.clone());
            }
        }
        DeltaSchema {
            fields,
            partition_columns: def.partition_keys.iter().map(|c| c.name.clone()).collect(),
            configuration,
        }
    }

    /// The schema of an Arrow schema (unpartitioned), for the quarantine table.
    pub fn of_arrow(schema: &arrow::datatypes::Schema) -> Result<Self> {
        use arrow::datatypes::DataType;
        let fields = schema
            .fields()
            .iter()
            .map(|f| {
                let ty = match f.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
                    other => match ColumnType::of_arrow(other) {
                        Some(t) => delta_type(t),
                        None => {
                            return Err(Error::Internal(format!(
                                "column {} has type {other}, which sluice does not write to Delta",
                                f.name()
                            )));
                        }
                    },
                };
                Ok(DeltaField {
                    name: f.name().clone(),
                    ty,
                    nullable: f.is_nullable(),
                    source_name: None,
                })
            })
            .collect::<Result<_>>()?;
        Ok(DeltaSchema {
            fields,
            partition_columns: vec![],
            configuration: BTreeMap::new(),
        })
    }

    /// Delta's `schemaString`.
    pub fn schema_string(&self) -> String {
        let fields: Vec<StructField> = self
            .fields
            .iter()
            .map(DeltaField::to_struct_field)
            .collect();
        serde_json::to_string(&crate::delta::actions::StructType {
            kind: "struct".into(),
            fields,
        })
        .expect("schema serializes")
    }

    /// The protocol a table of this schema needs: reader 1 / writer 2, or reader 3 / writer 7
    /// with the `timestampNtz` feature when a column is a timestamp without zone. Nothing else:
    /// Athena engine v3 reads both.
    pub fn protocol(&self) -> Protocol {
        if self.fields.iter().any(|f| has_timestamp_ntz(&f.ty)) {
            Protocol {
                min_reader_version: 3,
                min_writer_version: 7,
                reader_features: Some(vec!["timestampNtz".into()]),
                writer_features: Some(vec!["timestampNtz".into()]),
            }
        } else {
            Protocol::legacy()
        }
    }
}

impl DeltaField {
    /// The nullable field of a column (sluice writes every column nullable).
    pub fn of_column(c: &crate::schema::Column) -> Self {
        DeltaField {
            name: c.name.clone(),
            ty: delta_type(c.ty),
            nullable: true,
            source_name: c.source_name.clone(),
        }
    }

    /// The field as it stands in a Delta schema.
    pub fn to_struct_field(&self) -> StructField {
        StructField {
            name: self.name.clone(),
            ty: if self.ty.starts_with('{') {
                serde_json::from_str(&self.ty).unwrap_or_else(|_| Value::String(self.ty.clone()))
            } else {
                Value::String(self.ty.clone())
            },
            nullable: self.nullable,
            metadata: self
                .source_name
                .iter()
                .map(|n| (SOURCE_NAME.to_string(), Value::String(n.clone())))
                .collect(),
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
    /// The live data files, by path relative to the lake root.
    pub files: BTreeMap<String, DataFile>,
    /// Files that a version removed (paths relative to the lake root): earlier versions still
    /// reference them, so only a vacuum after their retention may delete them.
    pub removed: HashSet<String>,
    /// `schemaString` and `partitionColumns` of the newest `metaData`.
    pub schema_string: Option<String>,
    /// The partition columns of the table.
    pub partition_columns: Vec<String>,
    /// The newest `metaData` and `protocol` actions, whole (a schema change keeps the rest).
    pub metadata: Option<Metadata>,
    /// The table's protocol action, if the table exists.
    pub protocol: Option<Protocol>,
    /// Live files that carry a deletion vector (paths relative to the lake root): some of
    /// their rows are deleted, so compaction leaves them alone.
    pub deletion_vectors: HashSet<String>,
    /// Domain metadata by domain (the domains removed are gone).
    pub domains: BTreeMap<String, DomainMetadata>,
    /// `(version, inCommitTimestamp)` of the newest commit that had one, when read.
    in_commit_timestamp: Option<(u64, i64)>,
    /// `delta.setTransactionRetentionDuration` in milliseconds, when the table sets it.
    txn_retention_ms: Option<i64>,
    /// The newest version read that changed rows (an `add` or `remove` with `dataChange`, or
    /// any `MERGE`, which may have recorded deleted keys of a keyed table), or at most the
    /// checkpoint the state was read from.
    last_data_change: u64,
    /// The key of each partition column in `partitionValues`: its physical name under column
    /// mapping, else its name.
    partition_keys: Vec<String>,
    /// Application transactions: the 128-bit hash of the app id ([`part_key`]) → `lastUpdated`
    /// (`i64::MAX` when not recorded): 24 bytes a record. Those of the versions after
    /// `records_index`'s, or all of them when there is no index.
    app_ids: HashMap<PartKey, i64, PartKeyHasher>,
    /// The records up to a version, from the index beside the table
    /// ([`crate::delta::records`]), instead of the checkpoint's `txn` rows.
    records_index: Option<Arc<RecordIndex>>,
    commit_ids: HashMap<String, u64>,
}

impl LedgerState {
    /// Whether the rows of `chunk` in `partition` are committed (and their record has not
    /// expired: see [`TXN_RETENTION`]).
    pub fn has_part(&self, chunk: &str, partition: &str) -> bool {
        self.has_app_id(&app_id(chunk, partition))
    }

    fn has_app_id(&self, id: &str) -> bool {
        let key = app_key(id);
        let now = chrono::Utc::now().timestamp_millis();
        self.app_ids
            .get(&key)
            .or(self
                .records_index
                .as_ref()
                .and_then(|ix| ix.get(&key))
                .as_ref())
            .is_some_and(|t| self.txn_alive(*t, now))
    }

    /// How long the table keeps its exactly-once records (`delta.setTransactionRetentionDuration`,
    /// milliseconds), when it sets it; a keyed table remembers its deleted keys as long.
    pub fn record_retention_ms(&self) -> Option<i64> {
        self.txn_retention_ms
    }

    fn txn_alive(&self, last_updated: i64, now_ms: i64) -> bool {
        self.txn_retention_ms
            .is_none_or(|r| last_updated >= now_ms.saturating_sub(r))
    }

    /// Every chunk part committed (records not expired): a snapshot to look pieces up in from
    /// another thread.
    pub fn records(&self) -> Records {
        let now = chrono::Utc::now().timestamp_millis();
        Records {
            recent: self
                .app_ids
                .iter()
                .filter(|(_, t)| self.txn_alive(**t, now))
                .map(|(k, _)| *k)
                .collect(),
            index: self.records_index.clone(),
            expired_before: self.txn_retention_ms.map(|r| now.saturating_sub(r)),
        }
    }

    /// Every record (`key`, `lastUpdated`) not expired: the index's and those after it.
    fn live_records(&self) -> Vec<(PartKey, i64)> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut out: Vec<(PartKey, i64)> = Vec::with_capacity(
            self.app_ids.len() + self.records_index.as_ref().map_or(0, |ix| ix.len()),
        );
        if let Some(ix) = &self.records_index {
            out.extend(ix.iter().filter(|(_, t)| self.txn_alive(*t, now)));
        }
        out.extend(
            self.app_ids
                .iter()
                .filter(|(_, t)| self.txn_alive(**t, now))
                .map(|(k, t)| (*k, *t)),
        );
        out
    }

    /// The columns of the newest schema: (name, Delta type), the partition columns too.
    pub fn schema_fields(&self) -> Vec<(String, String)> {
        let Some(schema) = self.metadata.as_ref().and_then(|m| m.schema().ok()) else {
            return Vec::new();
        };
        schema
            .fields
            .into_iter()
            .map(|f| {
                let ty = match f.ty {
                    Value::String(t) => t,
                    other => other.to_string(),
                };
                (f.name, ty)
            })
            .collect()
    }

    /// Number of recorded chunk parts (expired records too, until a checkpoint drops them).
    pub fn chunk_part_count(&self) -> usize {
        match &self.records_index {
            None => self.app_ids.len(),
            Some(ix) => ix.len() + self.app_ids.keys().filter(|k| ix.get(k).is_none()).count(),
        }
    }

    /// The partitions of the live files, in order, with their totals.
    pub fn partitions(&self) -> Vec<PartitionSummary> {
        let mut by: BTreeMap<&str, PartitionSummary> = BTreeMap::new();
        for f in self.files.values() {
            let p = by
                .entry(f.partition.as_str())
                .or_insert_with(|| PartitionSummary {
                    dir: f.partition.clone(),
                    values: crate::schema::partition::parse_partition_path(&f.partition),
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

    fn set_metadata(&mut self, m: Metadata) {
        self.schema_string = Some(m.schema_string.clone());
        self.partition_columns = m.partition_columns.clone();
        self.txn_retention_ms = m.config(TXN_RETENTION_KEY).and_then(parse_interval_ms);
        let physical: HashMap<String, String> = m
            .schema()
            .map(|s| {
                s.fields
                    .into_iter()
                    .filter_map(|f| {
                        let p = f
                            .metadata
                            .get("delta.columnMapping.physicalName")?
                            .as_str()?;
                        Some((f.name.clone(), p.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.partition_keys = m
            .partition_columns
            .iter()
            .map(|c| physical.get(c).cloned().unwrap_or_else(|| c.clone()))
            .collect();
        self.metadata = Some(m);
    }

    /// The table's column mapping, when its metadata turns it on.
    pub fn column_mapping(&self) -> Result<Option<crate::delta::mapping::ColumnMapping>> {
        match &self.metadata {
            Some(m) => crate::delta::mapping::ColumnMapping::of_metadata(m),
            None => Ok(None),
        }
    }

    /// The file schema sluice writes for the logical file schema `logical`: the same under
    /// column mapping's physical names and field ids, or `logical` itself.
    pub fn physical_file_schema(
        &self,
        logical: &arrow::datatypes::SchemaRef,
    ) -> Result<arrow::datatypes::SchemaRef> {
        match self.column_mapping()? {
            Some(m) => m.physical_schema(logical),
            None => Ok(logical.clone()),
        }
    }

    /// The row-id high-water mark of the `delta.rowTracking` domain (-1: no row ids yet).
    fn row_id_high_water_mark(&self) -> i64 {
        self.domains
            .get(ROW_TRACKING_DOMAIN)
            .and_then(|d| serde_json::from_str::<Value>(&d.configuration).ok())
            .and_then(|c| c.get("rowIdHighWaterMark").and_then(Value::as_i64))
            .unwrap_or(-1)
    }
}

/// Table property that bounds how long `txn` records (sluice's exactly-once records) are kept.
pub const TXN_RETENTION_KEY: &str = "delta.setTransactionRetentionDuration";

/// What sluice sets [`TXN_RETENTION_KEY`] to on the tables it creates: a chunk delivered, or a
/// source sent, again within this time of its first commit is recognised and dropped; later it
/// lands again. It covers SQS's longest retention (14 days) twice over.
pub const TXN_RETENTION: &str = "interval 30 days";

const ROW_TRACKING_DOMAIN: &str = "delta.rowTracking";

/// Milliseconds of a Delta interval property (`interval 30 days`, `interval 1 week`, `7 days`).
pub fn parse_interval_ms(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_prefix("interval").unwrap_or(&s).trim();
    let mut parts = s.split_whitespace();
    let n: i64 = parts.next()?.parse().ok()?;
    let unit = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let ms: i64 = match unit.trim_end_matches('s') {
        "nanosecond" => return Some(n / 1_000_000),
        "microsecond" => return Some(n / 1_000),
        "millisecond" => 1,
        "second" => 1_000,
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        "week" => 604_800_000,
        _ => return None,
    };
    n.checked_mul(ms)
}

/// One partition of a table, from its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionSummary {
    /// The partition directory (`year=2024`), relative to the table.
    pub dir: String,
    /// `(key, value)` pairs; `None` is the NULL (default) partition.
    pub values: Vec<(String, Option<String>)>,
    /// Live files in the partition.
    pub files: u64,
    /// Rows in them.
    pub rows: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What a committer wants to add.
#[derive(Debug, Clone, Default)]
pub struct CommitDraft {
    /// Unique id of this commit. Keep it when retrying a failed commit: a write whose reply was
    /// lost is then recognised instead of being taken for a conflict.
    pub id: String,
    /// Files to add.
    pub add: Vec<DataFile>,
    /// Files (paths relative to the lake root) to remove: each must be live when the commit
    /// lands, or the commit is a conflict.
    pub remove: Vec<String>,
    /// Chunk parts the commit records (so that they are never written twice).
    pub chunks: Vec<ChunkPart>,
    /// The same rows rearranged (compaction), not new data.
    pub rearrange: bool,
    /// A keyed table's merge: what it read and did.
    pub merge: Option<MergeDraft>,
}

/// Writes Delta checkpoints. Implemented outside the core (by `sluice-delta`), so that the
/// core does not depend on `deltalake`.
///
/// # Contract
/// `checkpoint` writes a checkpoint of the table at `table_url` for exactly `version` (which is
/// committed), and may remove log files older than the table's log retention. It is idempotent.
#[async_trait::async_trait]
pub trait Checkpointer: Send + Sync + std::fmt::Debug {
    /// Writes a checkpoint of the table at `version`.
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
    /// The metadata the files this process commits were written for: as opened, or as this
    /// ledger last changed it. A commit refuses a table whose metadata another writer has
    /// changed incompatibly since ([`Ledger::commit`]).
    written_for: Option<Metadata>,
    /// Evaluates CHECK constraints and invariants (set by writers that check rows).
    engine: Option<Arc<dyn ConstraintEngine>>,
    /// The table's constraints, compiled, when it has any and an engine was given.
    checks: Option<Checks>,
    /// The checkpoint whose records were read from its `txn` rows, for want of an index: the
    /// index serving it is written after this writer's next commit.
    index_due: Option<u64>,
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

/// The version of a V2 checkpoint named with a UUID (`n.checkpoint.<uuid>.json|parquet`).
fn v2_checkpoint_of(name: &str) -> Option<u64> {
    let rest = name
        .strip_suffix(".json")
        .or_else(|| name.strip_suffix(".parquet"))?;
    let (v, id) = rest.split_once(".checkpoint.")?;
    if v.len() != 20 || uuid::Uuid::parse_str(id).is_err() {
        return None;
    }
    v.parse().ok()
}

/// Percent-encodes a relative path for `add.path` (Delta paths are URIs): `%` of Hive escapes
/// becomes `%25`, so that readers decoding the URI find the object by its real name.
pub(crate) fn encode_path(p: &str) -> String {
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
    crate::schema::partition::unescape_path_name(p)
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
            written_for: None,
            engine: None,
            checks: None,
            index_due: None,
        };
        l.refresh().await?;
        l.written_for = l.state.metadata.clone();
        Ok(l)
    }

    /// Writes checkpoints with `c` every `delta.checkpointInterval` (100) versions.
    pub fn with_checkpointer(mut self, c: Option<Arc<dyn Checkpointer>>) -> Self {
        self.checkpointer = c;
        self
    }

    /// Evaluates the table's CHECK constraints and invariants with `engine`: the protocol gate
    /// then honours them, and [`Ledger::checks`] holds them compiled for the rows to write.
    pub fn with_constraint_engine(
        mut self,
        engine: Option<Arc<dyn ConstraintEngine>>,
    ) -> Result<Self> {
        self.engine = engine;
        self.compile_checks()?;
        Ok(self)
    }

    /// The table's constraints, compiled (none: nothing to check, or no engine).
    pub fn checks(&self) -> Option<&Checks> {
        self.checks.as_ref()
    }

    /// Compiles the constraints of the cached metadata for every column of the table.
    fn compile_checks(&mut self) -> Result<()> {
        self.checks = None;
        let (Some(engine), Some(meta)) = (&self.engine, &self.state.metadata) else {
            return Ok(());
        };
        let constraints = crate::delta::constraints::of_metadata(meta)?;
        if constraints.is_empty() {
            return Ok(());
        }
        let generated = crate::delta::constraints::generated_of_metadata(meta)?;
        if let Some((c, _)) = generated
            .iter()
            .find(|(c, _)| self.state.partition_columns.contains(c))
        {
            return Err(Error::UnsupportedFeature {
                table: self.url(),
                feature: "generatedColumns".into(),
                operation: "append to",
                reason: format!(
                    "partition column {c} is generated, and sluice partitions rows before it could compute it"
                ),
            });
        }
        let schema = self.table_schema("read in its constraint checks")?;
        let checker = engine.compile(&schema, &constraints)?;
        let generator = if generated.is_empty() {
            None
        } else {
            Some(engine.generator(&schema, &generated)?)
        };
        self.checks = Some(Checks {
            constraints,
            schema,
            checker,
            generated,
            generator,
        });
        Ok(())
    }

    /// Every column of the table (partition columns too) as Arrow fields, for expressions
    /// over its rows.
    fn table_schema(&self, operation: &'static str) -> Result<arrow::datatypes::SchemaRef> {
        let fields = self
            .state
            .schema_fields()
            .into_iter()
            .map(|(name, ty)| {
                let t = column_type_of_delta(&ty).ok_or_else(|| Error::UnsupportedType {
                    table: self.url(),
                    column: name.to_string(),
                    ty: ty.to_string(),
                    operation,
                })?;
                Ok(arrow::datatypes::Field::new(name, t.arrow_type(), true))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(arrow::datatypes::Schema::new(fields)))
    }

    /// The table's column defaults, evaluated once (as Spark evaluates a default once per
    /// statement), as text its rows would carry: (column, value). A default that is NULL is
    /// left out. Without an expression engine a table with defaults is refused by the
    /// protocol gate before this is asked.
    pub fn column_defaults(&self) -> Result<Vec<(String, String)>> {
        let Some(meta) = &self.state.metadata else {
            return Ok(Vec::new());
        };
        let defaults = crate::delta::constraints::defaults_of_metadata(meta)?;
        if defaults.is_empty() {
            return Ok(Vec::new());
        }
        let Some(engine) = &self.engine else {
            return Err(Error::UnsupportedFeature {
                table: self.url(),
                feature: "allowColumnDefaults".into(),
                operation: "append to",
                reason: "a column has a default value, and this writer evaluates no expressions"
                    .into(),
            });
        };
        let schema = self.table_schema("fill in with its default")?;
        let generator = engine.generator(&schema, &defaults)?;
        let row = arrow::array::RecordBatch::try_new(
            schema.clone(),
            schema
                .fields()
                .iter()
                .map(|f| arrow::array::new_null_array(f.data_type(), 1))
                .collect(),
        )?;
        let values = generator.fill(&row)?;
        let mut out = Vec::with_capacity(defaults.len());
        for ((column, expression), v) in defaults.into_iter().zip(values) {
            use arrow::array::{Array, AsArray};
            if v.is_null(0) {
                continue;
            }
            let ty = schema.field_with_name(&column)?.data_type().clone();
            let v = if *v.data_type() == ty {
                v
            } else {
                arrow::compute::cast(&v, &ty)?
            };
            let text = match &ty {
                arrow::datatypes::DataType::Binary => v
                    .as_binary::<i32>()
                    .value(0)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                _ => {
                    let t = arrow::compute::cast(&v, &arrow::datatypes::DataType::Utf8)?;
                    t.as_string::<i32>().value(0).to_string()
                }
            };
            // The typer reads it as it reads a source's value: it must read back exactly.
            let readable = ColumnType::of_arrow(&ty).is_some_and(|t| {
                !t.is_nested() && crate::decode::value::type_leaf(&text, t, None, false).is_ok()
            });
            if !readable {
                return Err(Error::UnsupportedFeature {
                    table: self.url(),
                    feature: "allowColumnDefaults".into(),
                    operation: "append to",
                    reason: format!(
                        "the default of column {column} ({expression}) is {text:?}, which sluice cannot write as its type {ty}"
                    ),
                });
            }
            tracing::debug!(table = %self.url(), column, expression, value = %text, "column default");
            out.push((column, text));
        }
        Ok(out)
    }

    /// The cached state.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// The table directory, relative to the lake root.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// The table's URL, for messages.
    pub fn url(&self) -> String {
        self.lake.url_of(&self.dir)
    }

    fn log_dir(&self) -> String {
        format!("{}_delta_log/", self.dir)
    }

    fn version_path(&self, v: u64) -> object_store::path::Path {
        self.lake.path(&format!("{}{v:020}.json", self.log_dir()))
    }

    fn corrupt(&self, message: impl Into<String>) -> Error {
        Error::CorruptLog {
            path: self.lake.url_of(&self.log_dir()),
            message: message.into(),
        }
    }

    /// The protocol gate ([`crate::delta::protocol::check`]) for `op` on the cached state: the
    /// rules the writer must follow, or the feature that rules `op` out. A table without a log
    /// yet passes (sluice creates it).
    pub fn check(&self, op: Operation) -> Result<WriteRules> {
        if !self.state.exists {
            return Ok(WriteRules {
                checkpoints: true,
                checkpoint_interval: CHECKPOINT_INTERVAL,
                ..WriteRules::default()
            });
        }
        let p = self
            .state
            .protocol
            .as_ref()
            .ok_or_else(|| self.corrupt("the log has no protocol action"))?;
        let m = self
            .state
            .metadata
            .as_ref()
            .ok_or_else(|| self.corrupt("the log has no metaData action"))?;
        let caps = crate::delta::Capabilities {
            // The quarantine's rows are sluice's own making: its NOT NULL columns always have
            // a value, and it has no constraints.
            constraints: self.engine.is_some() || self.kind == FileKind::Quarantine,
        };
        crate::delta::protocol::check_with(&self.url(), p, m, op, caps)
    }

    /// [`Ledger::check`] for a writer with `caps` (that has not given this ledger its engine).
    pub fn check_as(&self, op: Operation, caps: crate::delta::Capabilities) -> Result<WriteRules> {
        match (&self.state.protocol, &self.state.metadata) {
            (Some(p), Some(m)) if self.state.exists => {
                crate::delta::protocol::check_with(&self.url(), p, m, op, caps)
            }
            _ => self.check(op),
        }
    }

    /// Creates the table (version 0: protocol and metadata) unless it exists. Tables sluice
    /// creates keep their exactly-once records for [`TXN_RETENTION`].
    pub async fn create_if_missing(&mut self, schema: &DeltaSchema) -> Result<()> {
        if self.state.exists {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp_millis();
        let mut info = self.commit_info(now, None, "CREATE TABLE", true);
        info.operation_parameters =
            Some(json!({"mode": "ErrorIfExists", "location": self.lake.url_of(&self.dir)}));
        let mut configuration = BTreeMap::new();
        configuration.insert(
            TXN_RETENTION_KEY.to_string(),
            Some(TXN_RETENTION.to_string()),
        );
        for (k, v) in &schema.configuration {
            configuration.insert(k.clone(), Some(v.clone()));
        }
        let actions = [
            Action::CommitInfo(info),
            Action::Protocol(schema.protocol()),
            Action::Metadata(Metadata {
                id: uuid::Uuid::new_v4().to_string(),
                name: None,
                description: None,
                format: Default::default(),
                schema_string: schema.schema_string(),
                partition_columns: schema.partition_columns.clone(),
                configuration,
                created_time: Some(now),
                extra: Default::default(),
            }),
        ];
        // Written, or another writer created it first: either way the table exists now.
        self.put_version(0, &actions::render(&actions)).await?;
        self.refresh().await?;
        self.written_for = self.state.metadata.clone();
        Ok(())
    }

    /// Adds nullable columns to the table's schema: one version with a `metaData` action (the
    /// table's id, partitioning and configuration kept) and, when a timestamp without zone is
    /// new to the table, the `protocol` with the `timestampNtz` feature. Columns already in the
    /// schema are left as they are (whatever their type); new ones go before the partition
    /// columns. Returns the version written, or `None` when every column was already there.
    ///
    /// Files committed before, and files of commits racing with this one, lack the columns:
    /// every reader reads them as NULL there, so appends never conflict with a schema change.
    /// A change that loses the race is made again on the winner's schema, through the gate.
    pub async fn add_columns(&mut self, add: &[DeltaField]) -> Result<Option<u64>> {
        let id = uuid::Uuid::now_v7().to_string();
        loop {
            if let Some(v) = self.state.commit_ids.get(&id) {
                return Ok(Some(*v));
            }
            let rules = self.check(Operation::ChangeSchema)?;
            let mut meta = self
                .state
                .metadata
                .clone()
                .ok_or_else(|| self.corrupt("the log has no metaData action"))?;
            let mut schema = meta
                .schema()
                .map_err(|e| self.corrupt(format!("metaData has no readable schemaString: {e}")))?;
            let names: HashSet<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
            let new: Vec<&DeltaField> = add
                .iter()
                .filter(|f| !names.contains(f.name.as_str()))
                .collect();
            // Struct columns the table has, given fields they lack: their types with those
            // fields added (merged with what another writer added since).
            let mut widened: Vec<(String, ColumnType)> = Vec::new();
            for f in add.iter().filter(|f| names.contains(f.name.as_str())) {
                let Some(at) = schema.fields.iter().position(|g| g.name == f.name) else {
                    continue;
                };
                let have = column_type_of_delta_value(&schema.fields[at].ty);
                if let (Some(have), Some(want)) = (have, column_type_of_delta(&f.ty)) {
                    let merged = have.widened(want);
                    if merged != have {
                        widened.push((f.name.clone(), merged));
                    }
                }
            }
            if new.is_empty() && widened.is_empty() {
                return Ok(None);
            }
            // Under column mapping every new column and struct field (at any depth) gets the
            // next id and a physical name of its own, and the table its new highest id.
            let mapped = crate::delta::mapping::ColumnMapping::of_metadata(&meta)?.is_some();
            let max_key = "delta.columnMapping.maxColumnId";
            let mut max_id = mapped.then(|| {
                meta.config(max_key)
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .unwrap_or(0)
            });
            for f in &mut schema.fields {
                if let Some((_, ty)) = widened.iter().find(|(n, _)| *n == f.name) {
                    // The fields it has keep their metadata (their physical names).
                    f.ty = widen_delta_type(&f.ty, *ty, &mut max_id);
                }
            }
            let had_ntz = schema.fields.iter().any(|f| {
                has_timestamp_ntz(
                    &f.ty
                        .as_str()
                        .map_or_else(|| f.ty.to_string(), str::to_string),
                )
            });
            let at = schema
                .fields
                .iter()
                .position(|f| self.state.partition_columns.contains(&f.name))
                .unwrap_or(schema.fields.len());
            let mut new_fields: Vec<StructField> =
                new.iter().map(|f| f.to_struct_field()).collect();
            if let Some(max) = max_id.as_mut() {
                for f in &mut new_fields {
                    map_field(&mut f.metadata, max);
                    map_nested(&mut f.ty, max);
                }
            }
            if let Some(max) = max_id {
                meta.configuration
                    .insert(max_key.to_string(), Some(max.to_string()));
            }
            for (k, f) in new_fields.iter().enumerate() {
                schema.fields.insert(at + k, f.clone());
            }
            meta.schema_string = serde_json::to_string(&schema).expect("schema serializes");
            let now = chrono::Utc::now().timestamp_millis();
            let ict = self.next_in_commit_timestamp(&rules, now).await?;
            let columns: Vec<Value> = new_fields
                .iter()
                .chain(
                    schema
                        .fields
                        .iter()
                        .filter(|f| widened.iter().any(|(n, _)| *n == f.name)),
                )
                .map(|f| json!({"column": f}))
                .collect();
            let mut info = self.commit_info(now, ict, "ADD COLUMNS", false);
            info.operation_parameters = Some(json!({"columns": Value::Array(columns).to_string()}));
            info.extra
                .insert(COMMIT_ID_KEY.into(), Value::String(id.clone()));
            let mut actions = vec![Action::CommitInfo(info)];
            if !had_ntz
                && (new.iter().any(|f| has_timestamp_ntz(&f.ty))
                    || widened
                        .iter()
                        .any(|(_, t)| has_timestamp_ntz(&delta_type(*t))))
            {
                let p = self.state.protocol.clone().unwrap_or_else(Protocol::legacy);
                actions.push(Action::Protocol(p.with_feature("timestampNtz")));
            }
            actions.push(Action::Metadata(meta));
            if let Some(version) = self
                .land_metadata_change(&actions::render(&actions), &rules)
                .await?
            {
                return Ok(Some(version));
            }
        }
    }

    /// Writes a change of the table's metadata as the next version: `Some(version)` when it
    /// landed (this writer's files are written for it from then on), `None` when another commit
    /// took the version first (the state is read again, for the caller to make the change anew).
    async fn land_metadata_change(
        &mut self,
        body: &str,
        rules: &WriteRules,
    ) -> Result<Option<u64>> {
        let version = self.state.version + 1;
        if self.put_version(version, body).await? {
            self.apply_version(version, body)?;
            self.written_for = self.state.metadata.clone();
            self.compile_checks()?;
            self.after_commit(version, rules).await;
            return Ok(Some(version));
        }
        self.refresh().await?;
        Ok(None)
    }

    /// Claims `count` values of identity column `column` (see [`crate::delta::identity`]): a
    /// version that raises its high-water mark past them. Returns the first value (the others
    /// follow it by the column's step). A claim that loses the race is made again above the
    /// winner's mark; one whose reply was lost is found by its commit id.
    pub async fn reserve_identity(&mut self, column: &str, count: u64) -> Result<i64> {
        use crate::delta::identity::{HIGH_WATER_MARK, identities_of_metadata};
        let id = uuid::Uuid::now_v7().to_string();
        let mut first = None;
        loop {
            if self.state.commit_ids.contains_key(&id) {
                return first
                    .ok_or_else(|| Error::Internal("identity claim without a value".into()));
            }
            let rules = self.check(Operation::ChangeSchema)?;
            let mut meta = self
                .state
                .metadata
                .clone()
                .ok_or_else(|| self.corrupt("the log has no metaData action"))?;
            let identity = identities_of_metadata(&meta)?
                .into_iter()
                .find(|i| i.column == column)
                .ok_or_else(|| Error::Internal(format!("{column} is not an identity column")))?;
            let (from, mark) = identity
                .claim(count)
                .ok_or_else(|| Error::UnsupportedFeature {
                    table: self.url(),
                    feature: "identityColumns".into(),
                    operation: "append to",
                    reason: format!(
                        "identity column {column} has no {count} more values within 64 bits"
                    ),
                })?;
            let mut schema = meta
                .schema()
                .map_err(|e| self.corrupt(format!("metaData has no readable schemaString: {e}")))?;
            if let Some(f) = schema.fields.iter_mut().find(|f| f.name == column) {
                f.metadata.insert(HIGH_WATER_MARK.into(), json!(mark));
            }
            meta.schema_string = serde_json::to_string(&schema).expect("schema serializes");
            let now = chrono::Utc::now().timestamp_millis();
            let ict = self.next_in_commit_timestamp(&rules, now).await?;
            let mut info = self.commit_info(now, ict, "CHANGE COLUMN", false);
            info.operation_parameters = Some(json!({
                "column": column,
                "highWaterMark": mark,
                "reason": format!("sluice reserves {count} identity values from {from}"),
            }));
            info.extra
                .insert(COMMIT_ID_KEY.into(), Value::String(id.clone()));
            let body = actions::render(&[Action::CommitInfo(info), Action::Metadata(meta)]);
            first = Some(from);
            if self.land_metadata_change(&body, &rules).await?.is_some() {
                return Ok(from);
            }
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
    /// cached state is empty; `_last_checkpoint` says where to start listing). A table whose
    /// reader features sluice does not know is an error.
    pub async fn refresh(&mut self) -> Result<()> {
        let log_dir = self.log_dir();
        let prefix = self.lake.path(&log_dir);
        let hint = if self.state.exists {
            None
        } else {
            self.last_checkpoint_version().await?
        };
        let offset = match (self.state.exists, hint) {
            (true, _) => Some(self.version_path(self.state.version)),
            // Everything from the hinted checkpoint's version on (names sort by version).
            (false, Some(v)) => Some(self.lake.path(&format!("{log_dir}{v:020}"))),
            (false, None) => None,
        };
        let mut listing: Vec<object_store::ObjectMeta> = match &offset {
            Some(o) => {
                self.lake
                    .store
                    .list_with_offset(Some(&prefix), o)
                    .try_collect()
                    .await?
            }
            None => self.lake.store.list(Some(&prefix)).try_collect().await?,
        };
        let mut log = LogListing::of(&listing);
        if !self.state.exists && hint.is_some() && log.newest_checkpoint().is_none() {
            // `_last_checkpoint` named a checkpoint that is not there: read the whole log.
            listing = self.lake.store.list(Some(&prefix)).try_collect().await?;
            log = LogListing::of(&listing);
        }
        let mut next = if self.state.exists {
            self.state.version + 1
        } else {
            0
        };
        if !self.state.exists
            && let Some((v, files)) = log.newest_checkpoint()
        {
            let newest = log.jsons.last().copied().unwrap_or(v).max(v);
            let index = self.read_record_index(v, newest).await;
            self.read_checkpoint(&files, index.is_none()).await?;
            let table_id = self.state.metadata.as_ref().map(|m| m.id.as_str());
            match index {
                Some(ix) if Some(ix.table_id.as_str()) == table_id => {
                    self.state.records_index = Some(Arc::new(ix));
                }
                Some(ix) => {
                    warn!(table = %self.dir, indexed = %ix.table_id, table_id = ?table_id, "the record index is of another table under this name; reading the records from the checkpoint");
                    self.state = LedgerState::default();
                    self.read_checkpoint(&files, true).await?;
                    self.index_due = Some(v);
                }
                None => {
                    if !self.state.app_ids.is_empty() {
                        self.index_due = Some(v);
                    }
                }
            }
            self.state.version = v;
            self.state.last_data_change = v;
            self.state.exists = true;
            next = v + 1;
        }
        let start = next;
        for v in log.jsons.into_iter().filter(|v| *v >= start) {
            if v != next {
                return Err(self.corrupt(if next == 0 {
                    format!("version 0 is missing and no checkpoint covers the versions before {v}")
                } else {
                    format!("version {next} is missing (found {v})")
                }));
            }
            self.read_version(v).await?;
            next = v + 1;
        }
        if self.state.exists {
            self.check(Operation::Read)?;
        }
        Ok(())
    }

    /// The record index serving checkpoint `checkpoint` ([`crate::delta::records`]), when there
    /// is one that reads and holds the records of a version from `checkpoint` to `newest` (the
    /// newest the log lists). Anything else is no index: the checkpoint's records are read.
    async fn read_record_index(&self, checkpoint: u64, newest: u64) -> Option<RecordIndex> {
        let path = self
            .lake
            .path(&crate::delta::records::index_path(&self.dir, checkpoint));
        let bytes = match self.lake.store.get(&path).await {
            Ok(r) => r.bytes().await.ok()?,
            Err(object_store::Error::NotFound { .. }) => return None,
            Err(e) => {
                debug!(path = %path, error = %e, "the record index does not read; reading the checkpoint's records");
                return None;
            }
        };
        match RecordIndex::decode(bytes) {
            Ok(ix) if (checkpoint..=newest).contains(&ix.version) => Some(ix),
            Ok(ix) => {
                warn!(path = %path, version = ix.version, checkpoint, newest, "the record index is of a version the log does not have; reading the checkpoint's records");
                None
            }
            Err(why) => {
                warn!(path = %path, %why, "the record index does not read; reading the checkpoint's records");
                None
            }
        }
    }

    /// Writes the record index serving checkpoint `checkpoint`, with the records at the cached
    /// version, and takes it as the state's (the records it holds leave memory); removes the
    /// indexes of checkpoints older than the one before. A failure is logged: the index is
    /// never needed.
    async fn write_record_index(&mut self, checkpoint: u64) {
        let records = self.state.live_records();
        let table_id = match &self.state.metadata {
            Some(m) => m.id.clone(),
            None => return,
        };
        let version = self.state.version;
        let bytes = match RecordIndex::encode(version, &table_id, records) {
            Ok(b) => b,
            Err(e) => {
                warn!(table = %self.dir, error = %e, "could not make the record index");
                return;
            }
        };
        let dir = crate::delta::records::records_dir(&self.dir);
        let path = self
            .lake
            .path(&crate::delta::records::index_path(&self.dir, checkpoint));
        let bytes = bytes::Bytes::from(bytes);
        if let Err(e) = self
            .lake
            .store
            .put(&path, PutPayload::from(bytes.clone()))
            .await
        {
            warn!(path = %path, error = %e, "could not write the record index; the next start reads the records from the checkpoint");
            return;
        }
        match RecordIndex::decode(bytes) {
            Ok(ix) => {
                self.state.records_index = Some(Arc::new(ix));
                self.state.app_ids = HashMap::default();
            }
            Err(why) => warn!(path = %path, %why, "the record index written does not read"),
        }
        debug!(path = %path, version, "record index written");
        let listed: Vec<object_store::ObjectMeta> = match self
            .lake
            .store
            .list(Some(&self.lake.path(&dir)))
            .try_collect()
            .await
        {
            Ok(l) => l,
            Err(_) => return,
        };
        let mut older: Vec<(u64, object_store::path::Path)> = listed
            .into_iter()
            .filter_map(|m| {
                let v = crate::delta::records::checkpoint_of_index(m.location.filename()?)?;
                (v < checkpoint).then_some((v, m.location))
            })
            .collect();
        older.sort();
        // The one before stays for a writer that started from it a moment ago.
        older.pop();
        for (_, p) in older {
            let _ = self.lake.store.delete(&p).await;
        }
    }

    /// The version `_delta_log/_last_checkpoint` names, if the file is there and reads.
    async fn last_checkpoint_version(&self) -> Result<Option<u64>> {
        let path = self
            .lake
            .path(&format!("{}_last_checkpoint", self.log_dir()));
        match self.lake.store.get(&path).await {
            Ok(r) => {
                let bytes = r.bytes().await?;
                Ok(serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("version").and_then(Value::as_u64)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
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

    /// Applies the actions of version `v` (its JSON lines) to the cached state. Adds go last:
    /// a file whose deletion vector changes is removed and added again in one version, in any
    /// order, and its partition comes from the version's own metadata when it has one.
    fn apply_version(&mut self, v: u64, text: &str) -> Result<()> {
        let url = self.lake.url_of(&format!("{}{v:020}.json", self.log_dir()));
        let mut adds = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let action = Action::parse_line(line).map_err(|message| Error::CorruptLog {
                path: url.clone(),
                message: format!("line {}: {message}", i + 1),
            })?;
            match action {
                Some(Action::CommitInfo(c)) => {
                    if c.operation.as_deref() == Some("MERGE") {
                        self.state.last_data_change = v;
                    }
                    if let Some(id) = c.extra.get(COMMIT_ID_KEY).and_then(Value::as_str) {
                        self.state.commit_ids.insert(id.to_string(), v);
                    }
                    if let Some(t) = c.in_commit_timestamp {
                        self.state.in_commit_timestamp = Some((v, t));
                    }
                }
                Some(Action::Add(a)) => adds.push(a),
                Some(a) => {
                    if matches!(&a, Action::Remove(r) if r.data_change) {
                        self.state.last_data_change = v;
                    }
                    self.apply(a)
                }
                None => {}
            }
        }
        if adds.iter().any(|a| a.data_change) {
            self.state.last_data_change = v;
        }
        for a in adds {
            self.add_file(a);
        }
        self.state.version = v;
        self.state.exists = true;
        Ok(())
    }

    /// Applies one action (of a commit or a checkpoint) to the cached state.
    fn apply(&mut self, a: Action) {
        match a {
            Action::Add(add) => self.add_file(add),
            Action::Remove(r) => {
                let rel = self.lake_path(&r.path);
                self.state.files.remove(&rel);
                self.state.deletion_vectors.remove(&rel);
                self.state.removed.insert(rel);
            }
            Action::Txn(t) => {
                self.state
                    .app_ids
                    .insert(app_key(&t.app_id), t.last_updated.unwrap_or(i64::MAX));
            }
            Action::Protocol(p) => self.state.protocol = Some(p),
            Action::Metadata(m) => self.state.set_metadata(m),
            Action::DomainMetadata(d) => {
                if d.removed {
                    self.state.domains.remove(&d.domain);
                } else {
                    self.state.domains.insert(d.domain.clone(), d);
                }
            }
            Action::CommitInfo(_) | Action::Sidecar { .. } | Action::Unknown(..) => {}
        }
    }

    /// The path, relative to the lake root, of a Delta `path` (relative to the table, encoded).
    fn lake_path(&self, delta_path: &str) -> String {
        format!("{}{}", self.dir, decode_path(delta_path))
    }

    fn add_file(&mut self, add: Add) {
        let decoded = decode_path(&add.path);
        let rel = format!("{}{}", self.dir, decoded);
        let partition = self.partition_of(&decoded, &add.partition_values);
        let stats = add.stats;
        let rows = stats
            .as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .and_then(|v| v.get("numRecords").and_then(Value::as_u64))
            .unwrap_or(0)
            // Rows a deletion vector deletes are not the table's any more.
            .saturating_sub(
                add.deletion_vector
                    .as_ref()
                    .and_then(|d| d.get("cardinality"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            );
        if add.deletion_vector.is_some() {
            self.state.deletion_vectors.insert(rel.clone());
        } else {
            self.state.deletion_vectors.remove(&rel);
        }
        self.state.files.insert(
            rel.clone(),
            DataFile {
                path: rel,
                partition,
                rows,
                bytes: add.size.max(0) as u64,
                kind: self.kind,
                stats,
            },
        );
    }

    /// A file's partition directory (`year=2024`): its folder when that names the table's
    /// partition columns in order (every file sluice writes), else the Hive path of its
    /// `partitionValues` (other writers may put files anywhere, column mapping under random
    /// prefixes); empty for an unpartitioned table.
    fn partition_of(&self, decoded: &str, values: &BTreeMap<String, Option<String>>) -> String {
        let cols = &self.state.partition_columns;
        if cols.is_empty() {
            return String::new();
        }
        let dir = decoded.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let keys = crate::schema::partition::parse_partition_path(dir);
        if keys.len() == cols.len() && keys.iter().zip(cols).all(|((k, _), c)| k == c) {
            return dir.to_string();
        }
        cols.iter()
            .zip(&self.state.partition_keys)
            .map(|(c, key)| {
                let v = values
                    .get(key)
                    .cloned()
                    .flatten()
                    .filter(|v| !v.is_empty())
                    .map(|v| crate::schema::partition::escape_path_name(&v))
                    .unwrap_or_else(|| crate::schema::partition::DEFAULT_PARTITION.to_string());
                format!("{}={v}", crate::schema::partition::escape_path_name(c))
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Reads a checkpoint (classic in one file or several parts, or V2 in JSON or Parquet, with
    /// its sidecars): live files, transactions (unless `txn` is false: an index holds them),
    /// domains, protocol and metadata at its version. Files are applied last, once the
    /// partition columns are known.
    async fn read_checkpoint(
        &mut self,
        files: &[object_store::path::Path],
        txn: bool,
    ) -> Result<()> {
        let mut adds: Vec<Add> = Vec::new();
        let mut sidecars: Vec<String> = Vec::new();
        for path in files {
            if path.as_ref().ends_with(".json") {
                let bytes = self.lake.store.get(path).await?.bytes().await?;
                let text = String::from_utf8_lossy(&bytes);
                for (i, line) in text.lines().enumerate() {
                    let action = Action::parse_line(line).map_err(|m| Error::CorruptLog {
                        path: path.to_string(),
                        message: format!("line {}: {m}", i + 1),
                    })?;
                    match action {
                        Some(Action::Add(a)) => adds.push(a),
                        Some(Action::Sidecar { path }) => sidecars.push(path),
                        Some(a) => self.apply(a),
                        None => {}
                    }
                }
            } else {
                self.read_checkpoint_parquet(path, txn, &mut adds, &mut sidecars)
                    .await?;
            }
        }
        for s in std::mem::take(&mut sidecars) {
            let path = self
                .lake
                .path(&format!("{}_sidecars/{}", self.log_dir(), decode_path(&s)));
            self.read_checkpoint_parquet(&path, txn, &mut adds, &mut sidecars)
                .await?;
        }
        for a in adds {
            self.add_file(a);
        }
        Ok(())
    }

    async fn read_checkpoint_parquet(
        &mut self,
        path: &object_store::path::Path,
        txn: bool,
        adds: &mut Vec<Add>,
        sidecars: &mut Vec<String>,
    ) -> Result<()> {
        use parquet::arrow::ParquetRecordBatchStreamBuilder;
        use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
        let corrupt = |message: String| Error::CorruptLog {
            path: path.to_string(),
            message,
        };
        // Only the columns the state keeps (of a chunk part's row, most rows, its app id and
        // time, unless an index holds them), fetched by range: without them a checkpoint of a
        // million records is 80 KB to read instead of 60 MB.
        let mut reader =
            crate::lake::ranged::RangedParquet::new(self.lake.store.clone(), path.clone());
        let meta = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new()).await?;
        let leaves: Vec<usize> = meta
            .parquet_schema()
            .columns()
            .iter()
            .enumerate()
            .filter(|(_, c)| checkpoint_leaf_wanted(c.path().parts(), txn))
            .map(|(i, _)| i)
            .collect();
        let mask = parquet::arrow::ProjectionMask::leaves(meta.parquet_schema(), leaves);
        let rows = meta.metadata().file_metadata().num_rows().max(0) as usize;
        let selection = if txn {
            // Room for every row at once: growing the table by doubling would hold the old and
            // the new one together, half as much again at a million records.
            self.state.app_ids.reserve(rows);
            None
        } else {
            other_than_txn(reader.clone(), &meta).await?
        };
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta);
        if let Some(selection) = selection {
            builder = builder.with_row_selection(selection);
        }
        let mut stream = builder.with_projection(mask).build()?;
        while let Some(batch) = stream.try_next().await? {
            // Chunk parts are most of the rows: read column by column.
            if let Some(txn) = batch.column_by_name("txn") {
                let t = txn
                    .as_struct_opt()
                    .ok_or_else(|| corrupt("txn is not a struct".into()))?;
                if let Some(ids) = string_field(t, "appId") {
                    let updated = t.column_by_name("lastUpdated").and_then(|c| {
                        arrow::compute::cast(c, &arrow::datatypes::DataType::Int64).ok()
                    });
                    let updated = updated
                        .as_ref()
                        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>());
                    for i in 0..t.len() {
                        if t.is_null(i) || ids.is_null(i) {
                            continue;
                        }
                        let at = updated
                            .filter(|u| u.is_valid(i))
                            .map(|u| u.value(i))
                            .unwrap_or(i64::MAX);
                        self.state.app_ids.insert(app_key(ids.value(i)), at);
                    }
                }
            }
            let mut removed = Vec::new();
            for_each_string(&batch, "remove", "path", &corrupt, |p| {
                removed.push(self.lake_path(p))
            })?;
            self.state.removed.extend(removed);
            for (key, rows) in [
                ("protocol", actions_of(&batch, "protocol")?),
                ("metaData", actions_of(&batch, "metaData")?),
                ("domainMetadata", actions_of(&batch, "domainMetadata")?),
                ("add", actions_of(&batch, "add")?),
                ("sidecar", actions_of(&batch, "sidecar")?),
            ] {
                for v in rows {
                    let mut obj = serde_json::Map::with_capacity(1);
                    obj.insert(key.to_string(), v);
                    match Action::from_json(Value::Object(obj)).map_err(&corrupt)? {
                        Action::Add(a) => adds.push(a),
                        Action::Sidecar { path } => sidecars.push(path),
                        a => self.apply(a),
                    }
                }
            }
        }
        Ok(())
    }

    /// Commits a draft atomically, through the protocol gate. Fails with `Conflict` if any of
    /// its chunk parts was committed by someone else, or a file it removes is gone (or gained
    /// a deletion vector); with `TableChanged` if another writer changed the schema or
    /// partitioning this process wrote its files for; retries on the next version when another
    /// commit won the race and none of that happened.
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
        let op = if draft.rearrange {
            Operation::Compact
        } else {
            Operation::Append
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
            if let Some(m) = &draft.merge
                && self.state.last_data_change > m.read_version
            {
                return Err(Error::MergeStale {
                    table: self.url(),
                    read: m.read_version,
                    version: self.state.last_data_change,
                });
            }
            let rules = self.check(op)?;
            self.check_written_for()?;
            if op == Operation::Append {
                self.check_constraints_unchanged()?;
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
            if let Some(m) = &draft.merge
                && draft.remove.iter().any(|p| {
                    !self.state.files.contains_key(p) || self.state.deletion_vectors.contains(p)
                })
            {
                // Another writer rewrote a file the merge rewrites: planned again.
                return Err(Error::MergeStale {
                    table: self.url(),
                    read: m.read_version,
                    version: self.state.version,
                });
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
            if let Some(dv) = draft
                .remove
                .iter()
                .find(|p| self.state.deletion_vectors.contains(*p))
            {
                return Err(Error::Conflict(format!(
                    "file {dv} has a deletion vector now (another writer deleted rows from it)"
                )));
            }
            if rules.append_only && !draft.rearrange && !draft.remove.is_empty() {
                return Err(Error::UnsupportedFeature {
                    table: self.url(),
                    feature: "appendOnly".into(),
                    operation: "remove files from",
                    reason: "delta.appendOnly is true: only appends and compaction are allowed"
                        .into(),
                });
            }
            let commit = self.commit_of(&id, self.state.version + 1, &draft);
            let ict = self
                .next_in_commit_timestamp(&rules, commit.committed_at_ms)
                .await?;
            let body = self.render(&commit, &rules, ict)?;
            if self.put_version(commit.version, &body).await? {
                // The version is exactly what was written: apply it without reading it back.
                self.apply_version(commit.version, &body)?;
                self.after_commit(commit.version, &rules).await;
                return Ok(commit);
            }
            self.refresh().await?;
        }
    }

    /// Fails when the table's metadata is no longer what this process wrote its files for:
    /// another table under the same name (a new `metaData` id), other partition columns, or a
    /// column gone or retyped. Columns added by others are fine (absent from the files: NULL).
    fn check_written_for(&self) -> Result<()> {
        let (Some(base), Some(now)) = (&self.written_for, &self.state.metadata) else {
            return Ok(());
        };
        if base == now {
            return Ok(());
        }
        let changed = |message: String| Error::TableChanged {
            table: self.url(),
            version: self.state.version,
            message,
        };
        if base.id != now.id {
            return Err(changed(format!(
                "the table was replaced (metaData id {} is now {})",
                base.id, now.id
            )));
        }
        if base.partition_columns != now.partition_columns {
            return Err(changed(format!(
                "it was partitioned by [{}] and is now partitioned by [{}]",
                base.partition_columns.join(", "),
                now.partition_columns.join(", ")
            )));
        }
        let (Ok(was), Ok(is)) = (base.schema(), now.schema()) else {
            return Err(self.corrupt("a schemaString does not read"));
        };
        let ty = column_type_of_delta_value;
        for f in &was.fields {
            match is.fields.iter().find(|g| g.name == f.name) {
                None => return Err(changed(format!("column {} was dropped", f.name))),
                // Fields added inside a struct: files written for it read them as NULL.
                Some(g)
                    if g.ty != f.ty
                        && !matches!((ty(&g.ty), ty(&f.ty)), (Some(a), Some(b)) if a.widens(b)) =>
                {
                    return Err(changed(format!(
                        "column {} changed type from {} to {}",
                        f.name, f.ty, g.ty
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Fails when the table's constraints are not the ones the rows were checked against
    /// (another writer added or changed one since): rows checked against the old ones must not
    /// land under the new.
    fn check_constraints_unchanged(&self) -> Result<()> {
        if self.engine.is_none() {
            return Ok(());
        }
        let Some(meta) = &self.state.metadata else {
            return Ok(());
        };
        let now = crate::delta::constraints::of_metadata(meta)?;
        let checked = self
            .checks
            .as_ref()
            .map(|c| c.constraints.as_slice())
            .unwrap_or_default();
        if now != checked {
            let names = |c: &[crate::delta::constraints::Constraint]| {
                c.iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(Error::TableChanged {
                table: self.url(),
                version: self.state.version,
                message: format!(
                    "its constraints are now [{}], the rows were checked against [{}]",
                    names(&now),
                    names(checked)
                ),
            });
        }
        Ok(())
    }

    /// The `inCommitTimestamp` of the next commit when the table asks for one: later than the
    /// previous commit's (read from its file when not cached), and `now` otherwise.
    async fn next_in_commit_timestamp(
        &mut self,
        rules: &WriteRules,
        now: i64,
    ) -> Result<Option<i64>> {
        if !rules.in_commit_timestamps {
            return Ok(None);
        }
        let v = self.state.version;
        let previous = match self.state.in_commit_timestamp {
            Some((pv, t)) if pv == v => Some(t),
            _ => match self.lake.store.get(&self.version_path(v)).await {
                Ok(r) => {
                    let bytes = r.bytes().await?;
                    String::from_utf8_lossy(&bytes)
                        .lines()
                        .filter_map(|l| Action::parse_line(l).ok().flatten())
                        .find_map(|a| match a {
                            Action::CommitInfo(c) => c.in_commit_timestamp.or(c.timestamp),
                            _ => None,
                        })
                }
                // Cleaned up after a checkpoint: nothing to order after but the clock.
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            },
        };
        Ok(Some(previous.map_or(now, |p| now.max(p + 1))))
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
            merge: draft.merge.as_ref().map(|m| m.metrics),
        }
    }

    /// Writes a checkpoint when one is due and the table lets sluice write it. A failure is
    /// logged: the commit has landed.
    async fn after_commit(&mut self, version: u64, rules: &WriteRules) {
        let Some(c) = self.checkpointer.clone() else {
            return;
        };
        if rules.checkpoints && version.is_multiple_of(rules.checkpoint_interval.max(1)) {
            match c.checkpoint(&self.lake, &self.dir, version).await {
                Ok(()) => {
                    self.write_record_index(version).await;
                    self.index_due = None;
                    return;
                }
                Err(e) => {
                    warn!(table = %self.dir, version, error = %e, "checkpoint failed; the commit stands, readers replay more versions until the next checkpoint")
                }
            }
        }
        if let Some(checkpoint) = self.index_due.take() {
            self.write_record_index(checkpoint).await;
        }
    }

    /// Writes the record index serving the newest checkpoint when the records were read from
    /// it (as a commit does after it lands); for a writer that made a checkpoint itself.
    pub async fn index_records(&mut self) {
        if let Some(checkpoint) = self.index_due.take() {
            self.write_record_index(checkpoint).await;
        }
    }

    /// Delta `partitionValues` of a partition directory (`year=2024`), keyed as the table keys
    /// them (physical names under column mapping).
    fn partition_values(&self, partition: &str) -> BTreeMap<String, Option<String>> {
        let kv = crate::schema::partition::parse_partition_path(partition);
        self.state
            .partition_columns
            .iter()
            .zip(&self.state.partition_keys)
            .map(|(col, key)| {
                let v = kv
                    .iter()
                    .find(|(k, _)| k == col)
                    .and_then(|(_, v)| v.clone());
                (key.clone(), v)
            })
            .collect()
    }

    /// The `commitInfo` of a commit by this writer (first in its version, as in-commit
    /// timestamps require).
    fn commit_info(&self, now: i64, ict: Option<i64>, operation: &str, blind: bool) -> CommitInfo {
        let mut extra = serde_json::Map::new();
        extra.insert("sluiceWriter".into(), Value::String(self.writer.clone()));
        CommitInfo {
            in_commit_timestamp: ict,
            timestamp: Some(now),
            operation: Some(operation.to_string()),
            operation_parameters: None,
            operation_metrics: None,
            is_blind_append: Some(blind),
            engine_info: Some(format!("sluice/{}", env!("CARGO_PKG_VERSION"))),
            client_version: Some(format!("sluice-{}", env!("CARGO_PKG_VERSION"))),
            extra,
        }
    }

    fn render(&self, c: &Commit, rules: &WriteRules, ict: Option<i64>) -> Result<String> {
        let mut out = Vec::with_capacity(3 + c.add.len() + c.chunks.len() + c.remove.len());
        let rows: u64 = c.add.iter().map(|a| a.rows).sum();
        let bytes: u64 = c.add.iter().map(|a| a.bytes).sum();
        let (operation, parameters) = if c.rearrange {
            ("OPTIMIZE", json!({"targetSize": null}))
        } else if c.merge.is_some() {
            ("MERGE", json!({"predicate": "the table's merge key"}))
        } else {
            ("WRITE", json!({"mode": "Append"}))
        };
        // A blind append reads nothing: it only adds files. Compaction reads the files it
        // removes.
        let mut info = self.commit_info(
            c.committed_at_ms,
            ict,
            operation,
            c.remove.is_empty() && !c.rearrange && c.merge.is_none(),
        );
        info.operation_parameters = Some(parameters);
        info.operation_metrics = Some(match &c.merge {
            // The names Delta's own MERGE gives its metrics.
            Some(m) => json!({
                "numTargetRowsInserted": m.inserted.to_string(),
                "numTargetRowsUpdated": m.updated.to_string(),
                "numTargetRowsDeleted": m.deleted.to_string(),
                "numTargetRowsCopied": m.copied.to_string(),
                "numSourceRowsIgnored": m.ignored.to_string(),
                "numTargetFilesAdded": c.add.len().to_string(),
                "numTargetFilesRemoved": c.remove.len().to_string(),
                "numOutputRows": rows.to_string(),
                "numOutputBytes": bytes.to_string(),
            }),
            None => json!({
                "numFiles": c.add.len().to_string(),
                "numOutputRows": rows.to_string(),
                "numOutputBytes": bytes.to_string(),
            }),
        });
        info.extra
            .insert(COMMIT_ID_KEY.into(), Value::String(c.id.clone()));
        info.extra
            .insert("sluiceChunkParts".into(), json!(c.chunks.len()));
        out.push(Action::CommitInfo(info));
        for cp in &c.chunks {
            out.push(Action::Txn(Txn {
                app_id: cp.app_id(),
                version: 1,
                last_updated: Some(c.committed_at_ms),
            }));
        }
        let mut high_water = self.state.row_id_high_water_mark();
        for a in &c.add {
            let rel = a.path.strip_prefix(&self.dir).ok_or_else(|| {
                Error::Internal(format!(
                    "file {} is not in table directory {}",
                    a.path, self.dir
                ))
            })?;
            let (base_row_id, default_row_commit_version) = if rules.row_tracking {
                let base = high_water + 1;
                high_water += a.rows as i64;
                (Some(base), Some(c.version as i64))
            } else {
                (None, None)
            };
            out.push(Action::Add(Add {
                path: encode_path(rel),
                partition_values: self.partition_values(&a.partition),
                size: a.bytes as i64,
                modification_time: c.committed_at_ms,
                data_change: !c.rearrange,
                stats: Some(
                    a.stats
                        .clone()
                        .unwrap_or_else(|| json!({"numRecords": a.rows}).to_string()),
                ),
                tags: None,
                deletion_vector: None,
                base_row_id,
                default_row_commit_version,
                clustering_provider: None,
            }));
        }
        if rules.row_tracking && !c.add.is_empty() {
            out.push(Action::DomainMetadata(DomainMetadata {
                domain: ROW_TRACKING_DOMAIN.into(),
                configuration: json!({"rowIdHighWaterMark": high_water}).to_string(),
                removed: false,
            }));
        }
        for r in &c.remove {
            let rel = r.strip_prefix(&self.dir).unwrap_or(r);
            let f = self.state.files.get(r);
            out.push(Action::Remove(Remove {
                path: encode_path(rel),
                deletion_timestamp: Some(c.committed_at_ms),
                data_change: !c.rearrange,
                extended_file_metadata: f.map(|_| true),
                partition_values: f.map(|f| self.partition_values(&f.partition)),
                size: f.map(|f| f.bytes as i64),
                stats: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
            }));
        }
        Ok(actions::render(&out))
    }
}

/// The `_delta_log` files of one listing: JSON versions and checkpoints.
struct LogListing {
    jsons: Vec<u64>,
    /// Classic checkpoints by version: (parts expected, files found).
    classic: BTreeMap<u64, (u32, Vec<object_store::path::Path>)>,
    /// V2 checkpoints with a UUID in their name, by version.
    v2: BTreeMap<u64, object_store::path::Path>,
}

impl LogListing {
    fn of(listing: &[object_store::ObjectMeta]) -> Self {
        let mut l = LogListing {
            jsons: Vec::new(),
            classic: BTreeMap::new(),
            v2: BTreeMap::new(),
        };
        for m in listing {
            // Only files directly in `_delta_log/` (not `_sidecars/`, `_staged_commits/`).
            let Some(name) = m.location.filename() else {
                continue;
            };
            if m.location.as_ref().contains("/_delta_log/_") {
                continue;
            }
            if let Some(v) = version_of_json(name) {
                l.jsons.push(v);
            } else if let Some((v, _, parts)) = checkpoint_of(name) {
                let e = l.classic.entry(v).or_insert((parts, Vec::new()));
                e.1.push(m.location.clone());
            } else if let Some(v) = v2_checkpoint_of(name) {
                l.v2.insert(v, m.location.clone());
            }
        }
        l.jsons.sort_unstable();
        l
    }

    /// The newest complete checkpoint: its version and files (parts in order).
    fn newest_checkpoint(&self) -> Option<(u64, Vec<object_store::path::Path>)> {
        let classic = self
            .classic
            .iter()
            .rev()
            .find(|(_, (parts, files))| files.len() == *parts as usize)
            .map(|(v, (_, files))| {
                let mut files = files.clone();
                files.sort();
                (*v, files)
            });
        let v2 = self
            .v2
            .iter()
            .next_back()
            .map(|(v, p)| (*v, vec![p.clone()]));
        match (classic, v2) {
            (Some(c), Some(v)) => Some(if v.0 > c.0 { v } else { c }),
            (c, v) => c.or(v),
        }
    }
}

/// One version of a table's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The Delta version.
    pub version: u64,
    /// When it was committed, in milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The operation its commitInfo names (`WRITE`, `OPTIMIZE`, …).
    pub operation: String,
    /// Rows added, when the committer recorded them (`operationMetrics.numOutputRows`).
    pub rows: Option<u64>,
    /// Files it added.
    pub files_added: u64,
    /// Files it removed.
    pub files_removed: u64,
    /// Chunk parts it recorded.
    pub chunk_parts: u64,
    /// sluice's writer id, or the engine that committed (`engineInfo`).
    pub writer: Option<String>,
    /// What a merge did (`operationMetrics` under the names Delta's MERGE gives them), when
    /// the version is one.
    pub merge: Option<MergeMetrics>,
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
            merge: None,
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
                let metric = |name: &str| {
                    c.pointer(&format!("/operationMetrics/{name}"))
                        .and_then(|v| {
                            v.as_str()
                                .and_then(|s| s.parse().ok())
                                .or_else(|| v.as_u64())
                        })
                };
                if let Some(inserted) = metric("numTargetRowsInserted") {
                    e.merge = Some(MergeMetrics {
                        inserted,
                        updated: metric("numTargetRowsUpdated").unwrap_or(0),
                        deleted: metric("numTargetRowsDeleted").unwrap_or(0),
                        ignored: metric("numSourceRowsIgnored").unwrap_or(0),
                        copied: metric("numTargetRowsCopied").unwrap_or(0),
                    });
                }
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

/// The rows of a checkpoint that hold an action other than `txn`, found by reading only
/// `txn.version` (a column of one value): the other columns are then decoded for those rows
/// alone, where a million records would have each of them decode a million NULLs. `None`: no
/// `txn` column (every row is read).
async fn other_than_txn(
    reader: crate::lake::ranged::RangedParquet,
    meta: &parquet::arrow::arrow_reader::ArrowReaderMetadata,
) -> Result<Option<parquet::arrow::arrow_reader::RowSelection>> {
    use parquet::arrow::arrow_reader::RowSelector;
    let Some(leaf) = meta
        .parquet_schema()
        .columns()
        .iter()
        .position(|c| c.path().parts() == ["txn", "version"])
    else {
        return Ok(None);
    };
    let mask = parquet::arrow::ProjectionMask::leaves(meta.parquet_schema(), [leaf]);
    let mut stream =
        parquet::arrow::ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta.clone())
            .with_projection(mask)
            .with_batch_size(64 * 1024)
            .build()?;
    let mut selectors: Vec<RowSelector> = Vec::new();
    let mut push = |select: bool, n: usize| match selectors.last_mut() {
        Some(last) if last.skip != select => last.row_count += n,
        _ => selectors.push(if select {
            RowSelector::select(n)
        } else {
            RowSelector::skip(n)
        }),
    };
    while let Some(batch) = stream.try_next().await? {
        let Some(t) = batch.column_by_name("txn") else {
            return Ok(None);
        };
        match t.logical_nulls() {
            None => push(false, t.len()),
            Some(nulls) => {
                // Runs of records (valid) and of other actions (NULL).
                let mut at = 0;
                for (start, end) in nulls.valid_slices() {
                    if start > at {
                        push(true, start - at);
                    }
                    push(false, end - start);
                    at = end;
                }
                if t.len() > at {
                    push(true, t.len() - at);
                }
            }
        }
    }
    Ok(Some(selectors.into()))
}

/// Whether a checkpoint column (by its path) is one the log's state needs (`txn`'s only when
/// `txn`).
fn checkpoint_leaf_wanted(path: &[String], txn: bool) -> bool {
    match path.first().map(String::as_str) {
        Some("txn") => {
            txn && matches!(
                path.get(1).map(String::as_str),
                Some("appId" | "lastUpdated")
            )
        }
        Some("remove") => path.get(1).is_some_and(|p| p == "path"),
        Some("add") => !matches!(
            path.get(1).map(String::as_str),
            Some("stats_parsed" | "partitionValues_parsed")
        ),
        Some("metaData" | "protocol" | "domainMetadata" | "sidecar") => true,
        _ => false,
    }
}

/// The rows of a checkpoint batch that hold `action`, each as the JSON object the action has
/// in a commit file (nested maps, as `partitionValues`, become objects).
fn actions_of(batch: &arrow::array::RecordBatch, action: &str) -> Result<Vec<Value>> {
    let Some(col) = batch.column_by_name(action) else {
        return Ok(Vec::new());
    };
    if col.null_count() == col.len() {
        return Ok(Vec::new());
    }
    let present = arrow::compute::is_not_null(col)?;
    let rows = arrow::compute::filter(col, &present)?;
    let one = arrow::array::RecordBatch::try_from_iter([("a", rows)])?;
    let mut buf = Vec::new();
    let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
    w.write(&one)?;
    w.finish()?;
    buf.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut v: Value = serde_json::from_slice(l).map_err(|e| Error::CorruptLog {
                path: "checkpoint".into(),
                message: format!("a {action} action does not read as JSON: {e}"),
            })?;
            Ok(v.get_mut("a").map(Value::take).unwrap_or(Value::Null))
        })
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
