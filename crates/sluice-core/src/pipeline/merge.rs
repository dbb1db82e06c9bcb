//! Applying a keyed table's changes ([`crate::table::keyed`]), copy-on-write, so that every
//! reader (Athena, DuckDB, Polars, Spark, the `deltalake` package) reads the current rows with
//! no support of its own.
//!
//! ```text
//!  changes of one commit (the rows of its chunks, typed, with their partitions)
//!    ─► the last change of each key (by sequence, else as read)
//!    ─► the key columns (and sequence) of every live file, read by projection
//!    ─► per key: the table's rows of it; a change older than them is ignored
//!    ─► files holding a changed key: read whole, those rows dropped, the rest copied
//!    ─► new files per partition: the copied rows and the upserts
//!    ─► one Delta version: remove the rewritten files, add the new ones, record the chunks
//! ```
//!
//! Keys are compared in Arrow's row format (their exact bytes for their type), sequences too:
//! the row format orders as the values do. The version commits only if no other writer added
//! rows since the version the merge read (another writer may have inserted one of its keys)
//! and every file it rewrites is still live; otherwise the merge is planned again against the
//! newer version ([`crate::error::Error::MergeStale`]).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use object_store::ObjectStoreExt;

use futures::TryStreamExt;

use crate::delta::log::{FileKind, LedgerState, MergeMetrics};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::parquet::writer::conform;
use crate::table::TableLayout;
use crate::table::keyed::{Op, parse_op};

/// A map by key (a key's bytes in Arrow's row format), hashed by XXH3: a merge looks up every
/// key of every file it reads.
type ByKey<V> = HashMap<Box<[u8]>, V, xxhash_rust::xxh3::Xxh3DefaultBuilder>;

/// What a merge writes and removes.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Files rewritten (paths relative to the lake root).
    pub remove: Vec<String>,
    /// The rows to write, per partition, in the table's stored schema.
    pub write: Vec<(String, Vec<RecordBatch>)>,
    pub metrics: MergeMetrics,
    /// The keys this merge deletes, with their delete's sequence (the key's columns, the
    /// sequence, when), for the file that remembers them ([`DeletedKeys`]).
    pub deleted: Option<RecordBatch>,
}

/// The directory of a keyed table's deleted keys, in the table's directory.
pub(crate) const DELETED_KEYS_DIR: &str = "_sluice/deleted-keys/";

/// Key-value metadata of a deleted-keys file: the chunk parts of the merge that wrote it (JSON).
const CHUNK_PARTS: &str = "sluice.chunkParts";

/// The column of a deleted-keys file holding when the key was deleted (milliseconds since the
/// epoch), after the key's columns and the sequence column.
const DELETED_AT: &str = "_sluice_deleted_at_ms";

/// A deleted key: the greatest sequence of a delete of it, and when that delete was applied.
struct Deleted {
    seq: Box<[u8]>,
    at_ms: i64,
}

/// A keyed table's deleted keys (a table ordered by a sequence): a key deleted by a change of
/// sequence `s` ignores every change older than `s` that arrives after, so that a late update
/// never brings it back.
///
/// Each merge that deletes keys writes them, before it commits, to a Parquet file of its own
/// under `_sluice/deleted-keys/` (the key's columns, the delete's sequence, when) that names
/// the merge's chunk parts in its metadata. A file counts once every chunk part it names is
/// recorded in the table: then its deletes were applied, by this merge or by another writer of
/// the same chunks. A delete is a fact that does not depend on the table's rows: "key k was
/// deleted at sequence s" holds for every later change, so files need no order and no Delta
/// action names them. Nothing in the protocol changes, and every Delta writer can still write
/// the table. A delete is forgotten after the table's record retention
/// (`delta.setTransactionRetentionDuration`): its chunk parts expire then too, in the window
/// in which sluice also recognises a redelivered chunk.
#[derive(Default)]
pub(crate) struct DeletedKeys {
    /// The files whose keys are held (their object paths).
    loaded: std::collections::HashSet<String>,
    keys: ByKey<Deleted>,
}

impl DeletedKeys {
    /// Reads the files written since the last call whose chunk parts the table records.
    async fn load(
        &mut self,
        lake: &Lake,
        table_dir: &str,
        state: &LedgerState,
        keys: &Keys,
        seqs: &Keys,
    ) -> Result<()> {
        let dir = lake.path(&format!("{table_dir}{DELETED_KEYS_DIR}"));
        let listed: Vec<object_store::ObjectMeta> =
            lake.store.list(Some(&dir)).try_collect().await?;
        for meta in listed {
            let path = meta.location.to_string();
            if self.loaded.contains(&path) || !path.ends_with(".parquet") {
                continue;
            }
            let bytes = match lake.store.get(&meta.location).await {
                Ok(r) => r.bytes().await?,
                // Removed meanwhile (a merge that did not land).
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let corrupt = |message: String| Error::CorruptLog {
                path: path.clone(),
                message,
            };
            let builder =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?;
            // Not (yet) applied: a merge in flight, or one that lost and left its file.
            if !applied(&builder, state).map_err(corrupt)? {
                continue;
            }
            for batch in builder.build()? {
                let batch = batch?;
                let key_rows = keys.rows(&batch)?;
                let seq_rows = seqs.rows(&batch)?;
                let at = batch
                    .column_by_name(DELETED_AT)
                    .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>())
                    .ok_or_else(|| corrupt(format!("no column {DELETED_AT}")))?;
                for i in 0..batch.num_rows() {
                    let d = Deleted {
                        seq: seq_rows.row(i).as_ref().into(),
                        at_ms: at.value(i),
                    };
                    match self.keys.entry(key_rows.row(i).as_ref().into()) {
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(d);
                        }
                        std::collections::hash_map::Entry::Occupied(mut o) => {
                            if d.seq > o.get().seq {
                                o.insert(d);
                            }
                        }
                    }
                }
            }
            self.loaded.insert(path);
        }
        Ok(())
    }

    /// The sequence of the newest delete of `key` not older than the table's record retention.
    fn deleted_at(&self, key: &[u8], expired_before: Option<i64>) -> Option<&[u8]> {
        self.keys
            .get(key)
            .filter(|d| expired_before.is_none_or(|e| d.at_ms >= e))
            .map(|d| d.seq.as_ref())
    }
}

/// Whether every chunk part a deleted-keys file names is recorded in the table (`Err`: what is
/// wrong with its metadata).
fn applied<T>(
    file: &parquet::arrow::arrow_reader::ArrowReaderBuilder<T>,
    state: &LedgerState,
) -> std::result::Result<bool, String> {
    let parts: Vec<crate::delta::log::ChunkPart> = file
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == CHUNK_PARTS))
        .and_then(|k| k.value.as_deref())
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| format!("{CHUNK_PARTS}: {e}"))?
        .ok_or_else(|| format!("no {CHUNK_PARTS} in its metadata"))?;
    Ok(!parts.is_empty() && parts.iter().all(|p| state.has_part(&p.chunk, &p.partition)))
}

/// Deletes the deleted-keys files of the table in `table_dir` that count for nothing and are
/// older than `min_age`: those of merges that never landed, and those whose chunk parts expired
/// with the table's record retention (their deletes are forgotten then). Returns them (paths
/// relative to the table) with their sizes; `dry_run` only lists them.
pub async fn vacuum_deleted_keys(
    lake: &Lake,
    table_dir: &str,
    state: &LedgerState,
    min_age: std::time::Duration,
    dry_run: bool,
) -> Result<Vec<(String, u64)>> {
    let dir = lake.path(&format!("{table_dir}{DELETED_KEYS_DIR}"));
    let listed: Vec<object_store::ObjectMeta> = lake.store.list(Some(&dir)).try_collect().await?;
    let before =
        chrono::Utc::now() - chrono::Duration::from_std(min_age).unwrap_or(chrono::Duration::MAX);
    let mut gone = Vec::new();
    for meta in listed {
        if meta.last_modified > before {
            continue;
        }
        let bytes = match lake.store.get(&meta.location).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        // A file that does not read as one of these is not touched.
        let Ok(file) =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        else {
            continue;
        };
        if applied(&file, state) != Ok(false) {
            continue;
        }
        if !dry_run {
            lake.store.delete(&meta.location).await?;
        }
        let name = meta.location.filename().unwrap_or_default().to_string();
        gone.push((format!("{DELETED_KEYS_DIR}{name}"), meta.size));
    }
    Ok(gone)
}

/// The rows of a merge's deleted keys: the key's columns and the sequence of each winning,
/// applied delete, and when.
fn deleted_rows(
    keys: &Keys,
    seqs: &Keys,
    winners: &ByKey<Winner>,
    changes: &[(String, RecordBatch)],
) -> Result<Option<RecordBatch>> {
    let mut rows: Vec<(usize, usize)> = winners
        .values()
        .filter(|w| !w.stale && w.op == Op::Delete)
        .map(|w| (w.batch as usize, w.row as usize))
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    rows.sort_unstable();
    let schema = Arc::new(Schema::new(
        keys.schema
            .fields()
            .iter()
            .chain(seqs.schema.fields())
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let sources = changes
        .iter()
        .map(|(_, b)| conform(b.clone(), &schema))
        .collect::<Result<Vec<_>>>()?;
    let mut columns = Vec::with_capacity(schema.fields().len() + 1);
    for c in 0..schema.fields().len() {
        let arrays: Vec<&dyn Array> = sources.iter().map(|b| b.column(c).as_ref()).collect();
        columns.push(arrow::compute::interleave(&arrays, &rows)?);
    }
    let now = chrono::Utc::now().timestamp_millis();
    columns.push(Arc::new(arrow::array::Int64Array::from(vec![now; rows.len()])) as _);
    let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(arrow::datatypes::Field::new(
        DELETED_AT,
        arrow::datatypes::DataType::Int64,
        false,
    )));
    Ok(Some(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?))
}

/// Writes a merge's deleted keys to a file of their own, naming the merge's chunk parts.
/// Returns its path (relative to the lake root).
pub(crate) async fn write_deleted_keys(
    lake: &Lake,
    table_dir: &str,
    batch: &RecordBatch,
    parts: &[crate::delta::log::ChunkPart],
) -> Result<String> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            CHUNK_PARTS.to_string(),
            serde_json::to_string(parts).expect("chunk parts serialize"),
        )]))
        .build();
    let mut bytes = Vec::new();
    {
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))?;
        w.write(batch)?;
        w.close()?;
    }
    let path = format!(
        "{table_dir}{DELETED_KEYS_DIR}{}.parquet",
        uuid::Uuid::now_v7().simple()
    );
    lake.store
        .put(&lake.path(&path), bytes::Bytes::from(bytes).into())
        .await?;
    Ok(path)
}

/// The change that wins for a key.
struct Winner {
    batch: u32,
    row: u32,
    seq: Option<Box<[u8]>>,
    op: Op,
    /// Whether the table holds the key (in rows not newer than the change).
    found: bool,
    /// The change is older than the table's row of its key.
    stale: bool,
}

/// Converts the key (or sequence) columns of batches to comparable bytes.
struct Keys {
    converter: RowConverter,
    schema: SchemaRef,
}

impl Keys {
    fn new(layout: &TableLayout, columns: &[usize]) -> Result<Self> {
        let fields: Vec<_> = columns
            .iter()
            .map(|i| layout.file_schema.field(*i).clone())
            .collect();
        let converter = RowConverter::new(
            fields
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(Keys {
            converter,
            schema: Arc::new(Schema::new(fields)),
        })
    }

    /// The rows of `batch`'s key columns (by name, cast to the table's types; a column the
    /// batch lacks is NULL).
    fn rows(&self, batch: &RecordBatch) -> Result<arrow::row::Rows> {
        let cols = conform(batch.clone(), &self.schema)?;
        Ok(self.converter.convert_columns(cols.columns())?)
    }
}

/// Plans the merge of `changes` (batches of the layout's file schema, with their partitions)
/// into the table as `state` holds it.
pub(crate) async fn plan(
    lake: &Lake,
    table_dir: &str,
    state: &LedgerState,
    layout: &TableLayout,
    deleted: &mut DeletedKeys,
    changes: &[(String, RecordBatch)],
) -> Result<Plan> {
    let keyed = layout
        .keyed
        .as_ref()
        .ok_or_else(|| Error::Internal(format!("table {} is not keyed", layout.name)))?;
    let keys = Keys::new(layout, &keyed.key_files)?;
    let seqs = match keyed.sequence_file {
        Some(i) => Some(Keys::new(layout, &[i])?),
        None => None,
    };
    let mut metrics = MergeMetrics::default();
    let op_name = keyed
        .op_file
        .map(|i| layout.file_schema.field(i).name().clone());
    let mut winners = winners(
        op_name.as_deref(),
        &keys,
        seqs.as_ref(),
        changes,
        &mut metrics,
    )?;
    // A change older than its key's delete is ignored: the key stays deleted.
    if let Some(s) = &seqs {
        deleted.load(lake, table_dir, state, &keys, s).await?;
        let now = chrono::Utc::now().timestamp_millis();
        let expired_before = state.record_retention_ms().map(|r| now.saturating_sub(r));
        for (key, w) in winners.iter_mut() {
            if let (Some(change), Some(d)) = (&w.seq, deleted.deleted_at(key, expired_before))
                && d > change.as_ref()
            {
                w.stale = true;
            }
        }
    }

    // The table's rows of the changed keys: the key (and sequence) columns of every live file
    // that may hold one (by its key statistics), fetched by range, several files at once.
    let mut names: Vec<String> = keys
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    if let Some(s) = &seqs {
        names.push(s.schema.field(0).name().clone());
    }
    let bounds = KeyBounds::of(layout, &keyed.key_files, &winners, changes)?;
    let candidates: Vec<&String> = state
        .files
        .iter()
        .filter(|(_, f)| f.kind == FileKind::Data && !winners.is_empty() && bounds.may_hold(f))
        .map(|(p, _)| p)
        .collect();
    let mut scans: Vec<(String, Vec<Hit>)> = Vec::with_capacity(candidates.len());
    for group in candidates.chunks(SCANS_AT_ONCE) {
        let hits = futures::future::try_join_all(
            group
                .iter()
                .map(|path| scan(lake, path, &names, &keys, seqs.as_ref(), &winners)),
        )
        .await?;
        scans.extend(group.iter().map(|p| (*p).clone()).zip(hits));
    }
    let mut matched: Vec<(String, Vec<Hit>)> = Vec::new();
    for (path, hits) in scans {
        if hits.is_empty() {
            continue;
        }
        if state.deletion_vectors.contains(&path) {
            return Err(Error::UnsupportedFeature {
                table: layout.name.clone(),
                feature: "deletionVectors".into(),
                operation: "merge changes into",
                reason: format!(
                    "file {path} holds changed keys and has a deletion vector, which sluice does not apply when it rewrites a file yet"
                ),
            });
        }
        // A change older than the table's row of its key is ignored, and the row kept.
        for h in &hits {
            let w = winners.get_mut(&h.key).expect("a hit's key has a winner");
            if let (Some(change), Some(row)) = (&w.seq, &h.seq)
                && row.as_ref() > change.as_ref()
            {
                w.stale = true;
            }
        }
        matched.push((path, hits));
    }

    // Which of the table's rows go: those of keys whose change is not stale. A file none of
    // whose rows go stays as it is.
    let mut plan = Plan::default();
    let stored = keyed.stored_schema.clone();
    let mut rewrite: Vec<(String, Vec<u32>)> = Vec::new();
    for (path, hits) in matched {
        let mut drop = Vec::new();
        for h in hits {
            let w = winners.get_mut(&h.key).expect("a hit's key has a winner");
            if !w.stale {
                w.found = true;
                drop.push(h.row);
            }
        }
        if !drop.is_empty() {
            rewrite.push((path, drop));
        }
    }
    // The files rewritten: read whole, those rows dropped, the rest copied; several files at
    // once, one thread each.
    let mut fetched = Vec::with_capacity(rewrite.len());
    for (path, drop) in rewrite {
        let bytes = lake.store.get(&lake.path(&path)).await?.bytes().await?;
        fetched.push((path, drop, bytes));
    }
    let copy = |bytes: bytes::Bytes, drop: &[u32]| -> Result<(Vec<RecordBatch>, u64)> {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?
            .build()?;
        let (mut kept, mut copied, mut at) = (Vec::new(), 0u64, 0u32);
        let mut next = drop.iter().peekable();
        for batch in reader {
            let batch = batch?;
            let end = at + batch.num_rows() as u32;
            let mut keep = vec![true; batch.num_rows()];
            while let Some(r) = next.next_if(|r| **r < end) {
                keep[(*r - at) as usize] = false;
            }
            at = end;
            let b = arrow::compute::filter_record_batch(&batch, &BooleanArray::from(keep))?;
            copied += b.num_rows() as u64;
            if b.num_rows() > 0 {
                kept.push(conform(b, &stored)?);
            }
        }
        Ok((kept, copied))
    };
    let mut out: HashMap<String, Vec<RecordBatch>> = HashMap::new();
    let copies = in_parallel(&fetched, |(_, drop, bytes)| copy(bytes.clone(), drop));
    for ((path, _, _), r) in fetched.into_iter().zip(copies) {
        let (kept, copied) = r?;
        plan.metrics.copied += copied;
        out.entry(state.files[&path].partition.clone())
            .or_default()
            .extend(kept);
        plan.remove.push(path);
    }

    // The upserts, per partition of their change; deletes and stale changes counted.
    let mut take: HashMap<u32, Vec<u32>> = HashMap::new();
    for w in winners.values() {
        match (w.stale, w.op, w.found) {
            (true, _, _) => plan.metrics.ignored += 1,
            (false, Op::Delete, true) => plan.metrics.deleted += 1,
            (false, Op::Delete, false) => plan.metrics.ignored += 1,
            (false, Op::Upsert, found) => {
                if found {
                    plan.metrics.updated += 1;
                } else {
                    plan.metrics.inserted += 1;
                }
                take.entry(w.batch).or_default().push(w.row);
            }
        }
    }
    plan.metrics.ignored += metrics.ignored;
    let mut batches: Vec<u32> = take.keys().copied().collect();
    batches.sort_unstable();
    for b in batches {
        let mut rows = take.remove(&b).expect("listed");
        rows.sort_unstable();
        let (partition, batch) = &changes[b as usize];
        let picked = arrow::compute::take_record_batch(batch, &UInt32Array::from(rows))?;
        out.entry(partition.clone())
            .or_default()
            .push(conform(picked, &stored)?);
    }
    if let Some(s) = &seqs {
        plan.deleted = deleted_rows(&keys, s, &winners, changes)?;
    }
    let mut parts: Vec<String> = out.keys().cloned().collect();
    parts.sort();
    for p in parts {
        let batches = out.remove(&p).expect("listed");
        if batches.is_empty() {
            // A rewritten file whose every row went: nothing to write in its partition.
            continue;
        }
        plan.write.push((p, batches));
    }
    Ok(plan)
}

/// `f` of each item, on as many threads at once as there are cores (the caller's runtime
/// thread blocked meanwhile); a panic is an [`Error::Task`].
pub(crate) fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::task::block_in_place(|| {
        let mut out = Vec::with_capacity(items.len());
        for group in items.chunks(threads) {
            std::thread::scope(|scope| {
                let handles: Vec<_> = group.iter().map(|item| scope.spawn(|| f(item))).collect();
                out.extend(handles.into_iter().map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Task("a worker thread panicked".into())))
                }));
            });
        }
        out
    })
}

/// Files whose key columns are read at once.
const SCANS_AT_ONCE: usize = 4;

/// A row of a file whose key changed.
struct Hit {
    /// The row's position in the file.
    row: u32,
    key: Box<[u8]>,
    /// The row's sequence, when the table has one.
    seq: Option<Box<[u8]>>,
}

/// The rows of the file at `path` (relative to the lake root) whose key has a change in
/// `winners`: its key and sequence columns (`names`), fetched by range.
async fn scan(
    lake: &Lake,
    path: &str,
    names: &[String],
    keys: &Keys,
    seqs: Option<&Keys>,
    winners: &ByKey<Winner>,
) -> Result<Vec<Hit>> {
    use parquet::arrow::ParquetRecordBatchStreamBuilder;
    let reader = crate::lake::ranged::RangedParquet::new(lake.store.clone(), lake.path(path));
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
    let mask = parquet::arrow::ProjectionMask::columns(
        builder.parquet_schema(),
        names.iter().map(String::as_str),
    );
    let mut stream = builder.with_projection(mask).build()?;
    let mut hits = Vec::new();
    let mut at = 0u32;
    while let Some(batch) = stream.try_next().await? {
        let rows = keys.rows(&batch)?;
        let seq_rows = seqs.map(|s| s.rows(&batch)).transpose()?;
        for i in 0..batch.num_rows() {
            let key = rows.row(i);
            if winners.contains_key(key.as_ref()) {
                hits.push(Hit {
                    row: at + i as u32,
                    key: key.as_ref().into(),
                    seq: seq_rows.as_ref().map(|s| s.row(i).as_ref().into()),
                });
            }
        }
        at += batch.num_rows() as u32;
    }
    Ok(hits)
}

/// The changed keys of a table keyed by one integer or date column, sorted: a file whose
/// `minValues`/`maxValues` of the key hold none of them holds no changed key and is not read.
/// (Text keys are not pruned: other writers may truncate their statistics.)
struct KeyBounds {
    /// The key's name and the changed keys, when the key is one such column.
    keys: Option<(String, Vec<i64>)>,
}

impl KeyBounds {
    fn of(
        layout: &TableLayout,
        key_files: &[usize],
        winners: &ByKey<Winner>,
        changes: &[(String, RecordBatch)],
    ) -> Result<Self> {
        use arrow::datatypes::DataType;
        let none = KeyBounds { keys: None };
        let [k] = key_files else {
            return Ok(none);
        };
        let field = layout.file_schema.field(*k);
        if !(field.data_type().is_integer() || *field.data_type() == DataType::Date32) {
            return Ok(none);
        }
        let columns = changes
            .iter()
            .map(|(_, b)| match b.column_by_name(field.name()) {
                Some(c) => Ok(Some(arrow::compute::cast(c, &DataType::Int64)?)),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut values = Vec::with_capacity(winners.len());
        for w in winners.values() {
            match &columns[w.batch as usize] {
                Some(c) if c.is_valid(w.row as usize) => values.push(
                    c.as_primitive::<arrow::datatypes::Int64Type>()
                        .value(w.row as usize),
                ),
                _ => return Ok(none),
            }
        }
        values.sort_unstable();
        Ok(KeyBounds {
            keys: Some((field.name().clone(), values)),
        })
    }

    /// Whether `file` may hold a changed key: no statistics of the key, or a key in its range.
    fn may_hold(&self, file: &crate::delta::log::DataFile) -> bool {
        let Some((name, keys)) = &self.keys else {
            return true;
        };
        let Some(stats) = file
            .stats
            .as_deref()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
        else {
            return true;
        };
        let bound = |which: &str| -> Option<i64> {
            let v = stats.get(which)?.get(name)?;
            v.as_i64().or_else(|| {
                let d = chrono::NaiveDate::parse_from_str(v.as_str()?, "%Y-%m-%d").ok()?;
                Some((d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days())
            })
        };
        let (Some(lo), Some(hi)) = (bound("minValues"), bound("maxValues")) else {
            return true;
        };
        let first = keys.partition_point(|k| *k < lo);
        first < keys.len() && keys[first] <= hi
    }
}

/// The last change of each key: the one with the greatest sequence (the later one read of two
/// with the same), or the later one read when the table has no sequence. `metrics.ignored`
/// counts the changes superseded.
fn winners(
    op_name: Option<&str>,
    keys: &Keys,
    seqs: Option<&Keys>,
    changes: &[(String, RecordBatch)],
    metrics: &mut MergeMetrics,
) -> Result<ByKey<Winner>> {
    let mut winners: ByKey<Winner> = ByKey::default();
    for (b, (_, batch)) in changes.iter().enumerate() {
        let rows = keys.rows(batch)?;
        let seq_rows = seqs.map(|s| s.rows(batch)).transpose()?;
        let ops = op_name
            .and_then(|n| batch.column_by_name(n))
            .map(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8))
            .transpose()?;
        let ops = ops.as_ref().map(|c| c.as_string::<i32>());
        for i in 0..batch.num_rows() {
            let op = match ops {
                Some(o) if o.is_valid(i) => parse_op(o.value(i)).ok_or_else(|| {
                    Error::Internal(format!(
                        "operation {:?} passed the typing checks",
                        o.value(i)
                    ))
                })?,
                _ => Op::Upsert,
            };
            let seq: Option<Box<[u8]>> = seq_rows.as_ref().map(|s| s.row(i).as_ref().into());
            let w = Winner {
                batch: b as u32,
                row: i as u32,
                seq,
                op,
                found: false,
                stale: false,
            };
            match winners.entry(rows.row(i).as_ref().into()) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(w);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    metrics.ignored += 1;
                    if w.seq >= o.get().seq {
                        o.insert(w);
                    }
                }
            }
        }
    }
    Ok(winners)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::log::DataFile;

    fn file(stats: Option<&str>) -> DataFile {
        DataFile {
            path: "t/year=2020/part-1.parquet".into(),
            partition: "year=2020".into(),
            rows: 10,
            bytes: 100,
            kind: FileKind::Data,
            stats: stats.map(str::to_string),
        }
    }

    #[test]
    fn a_file_is_read_only_when_a_changed_key_is_within_its_key_range() {
        let b = KeyBounds {
            keys: Some(("id".into(), vec![5, 20, 40])),
        };
        let range = |lo: &str, hi: &str| {
            file(Some(&format!(
                r#"{{"numRecords":10,"minValues":{{"id":{lo}}},"maxValues":{{"id":{hi}}}}}"#
            )))
        };
        assert!(b.may_hold(&range("5", "5")), "the lowest key is the bound");
        assert!(b.may_hold(&range("0", "5")));
        assert!(
            b.may_hold(&range("40", "90")),
            "the highest key is the bound"
        );
        assert!(b.may_hold(&range("6", "20")));
        assert!(!b.may_hold(&range("6", "19")), "between two keys");
        assert!(!b.may_hold(&range("41", "90")), "above every key");
        assert!(!b.may_hold(&range("-9", "4")), "below every key");
        // Without statistics of the key, every file is read.
        assert!(b.may_hold(&file(None)));
        assert!(b.may_hold(&file(Some(r#"{"numRecords":10}"#))));
        assert!(KeyBounds { keys: None }.may_hold(&range("41", "90")));
    }

    #[tokio::test]
    async fn vacuum_removes_deleted_keys_files_whose_merge_is_not_recorded_once_old_enough() {
        let lake = Lake::from_url("memory:///lake/").unwrap();
        let schema = Arc::new(Schema::new(vec![
            arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
            arrow::datatypes::Field::new("ts", arrow::datatypes::DataType::Int64, true),
            arrow::datatypes::Field::new(DELETED_AT, arrow::datatypes::DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(arrow::array::Int64Array::from(vec![7])),
                Arc::new(arrow::array::Int64Array::from(vec![5])),
                Arc::new(arrow::array::Int64Array::from(vec![0])),
            ],
        )
        .unwrap();
        let parts = [crate::delta::log::ChunkPart {
            chunk: "c1".into(),
            partition: String::new(),
        }];
        let path = write_deleted_keys(&lake, "t/", &batch, &parts)
            .await
            .unwrap();
        // A table that records no chunk part: the file's merge never landed.
        let state = LedgerState::default();
        let hour = std::time::Duration::from_secs(3_600);
        let young = vacuum_deleted_keys(&lake, "t/", &state, hour, false)
            .await
            .unwrap();
        assert!(young.is_empty(), "younger than the minimum age: kept");
        let listed = vacuum_deleted_keys(&lake, "t/", &state, std::time::Duration::ZERO, true)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert!(path.ends_with(&listed[0].0), "{path} {listed:?}");
        assert!(
            lake.store.head(&lake.path(&path)).await.is_ok(),
            "a dry run"
        );
        vacuum_deleted_keys(&lake, "t/", &state, std::time::Duration::ZERO, false)
            .await
            .unwrap();
        assert!(lake.store.head(&lake.path(&path)).await.is_err(), "removed");
    }

    #[test]
    fn date_keys_are_bounded_by_their_days() {
        // 2020-01-02 is day 18263.
        let b = KeyBounds {
            keys: Some(("d".into(), vec![18263])),
        };
        let range = |lo: &str, hi: &str| {
            file(Some(&format!(
                r#"{{"minValues":{{"d":"{lo}"}},"maxValues":{{"d":"{hi}"}}}}"#
            )))
        };
        assert!(b.may_hold(&range("2020-01-01", "2020-01-02")));
        assert!(!b.may_hold(&range("2020-01-03", "2020-12-31")));
        assert!(!b.may_hold(&range("2019-01-01", "2020-01-01")));
    }
}
