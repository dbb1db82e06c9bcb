//! Compaction: per partition, small files rewritten into files of a target size, under the
//! delivery guarantee.
//!
//! ```text
//!  Delta log ─► live data files per partition ─► the ones under the target size (≥ 2)
//!    ─► read in commit order, streamed by row group, typed for the table's newest schema
//!    ─► spool file, closed at the target size (as written, compressed) ─► upload
//!    ─► one Delta version per partition: remove the read files, add the new ones
//!       (dataChange false: the same rows, rearranged)
//! ```
//!
//! A partition's version is committed only if every file it removes is still live and has no
//! deletion vector (another compaction, or a delete by another engine, may have taken it first:
//! then this partition is left as it is and its uploads deleted); a commit that fails otherwise
//! (a timeout, a lost reply) may have landed, so its uploads are left for `repair` and `vacuum`,
//! which remove them only if no version names them. Files with deletion vectors are never
//! compacted (their deleted rows would come back), and the protocol gate refuses tables whose
//! features compaction does not honour. Appends racing with it do not conflict, they add other
//! files. The exactly-once
//! records (`txn`) are never touched, so a chunk delivered again after compaction is still
//! recognised. Rows keep their order (files in commit order), every column keeps its type, and
//! the new files have statistics like every file sluice writes. The removed files stay on
//! storage for readers of earlier versions until `vacuum`; a compaction killed before its
//! commit leaves uploads no version names, which `vacuum` and `repair` remove.
//!
//! Files under 3/4 of the target are rewritten, when that gives fewer files. A new file is
//! closed once its written row groups reach the target (row groups are closed early as the file
//! nears it: a buffered row group's size is only an estimate, and many tiny files shrink several
//! times when written together), so every new file but the last of a partition holds at least
//! the target, and a partition ends with at most ceil(bytes / target) + 1 files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use tracing::{info, warn};

use crate::delta::Operation;
use crate::delta::log::{
    CommitDraft, DataFile, FileKind, Ledger, column_type_of_delta, is_delta_type,
};
use crate::error::retry::{Backoff, retry, transient};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::parquet::writer::{
    ParquetOptions, SpoolFile, delta_stats, dictionary_misfits, upload, writer_properties_for,
};
use crate::schema::{Column, arrow_schema};

/// Rows read from a file at once: the first file's first batch holds enough rows to judge
/// which columns to write without a dictionary; later batches are the reader's usual size, so a
/// table of wide rows does not hold thousands of them at once.
const FIRST_BATCH_ROWS: usize = crate::parquet::writer::DICTIONARY_SAMPLE_MIN;
const BATCH_ROWS: usize = 1024;

/// Settings of a compaction.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Files smaller than this are rewritten, into files of about this size.
    pub target_bytes: u64,
    /// Only partitions with these `(key, value)` partition values (all when empty).
    pub filter: Vec<(String, String)>,
    /// Only this partition directory (`year=2024`), if given.
    pub partition: Option<String>,
    /// How the new files are written.
    pub parquet: ParquetOptions,
    /// Private spool directory for the files being written (and the uploads log).
    pub spool_dir: PathBuf,
    /// Memory for the row group being written.
    pub memory_budget: usize,
    /// Who commits (recorded in the Delta log).
    pub writer_id: String,
    /// First back-off of a retried upload.
    pub retry_base: Duration,
}

impl CompactOptions {
    /// 128 MiB files, every partition, zstd Parquet as sluice writes it, 64 MiB of row group.
    pub fn new(spool_dir: PathBuf, writer_id: impl Into<String>) -> Self {
        CompactOptions {
            target_bytes: 128 << 20,
            filter: Vec::new(),
            partition: None,
            parquet: ParquetOptions::default(),
            spool_dir,
            memory_budget: 64 << 20,
            writer_id: writer_id.into(),
            retry_base: Duration::from_millis(100),
        }
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompactReport {
    /// The newest version it committed (`None`: nothing to compact).
    pub version: Option<u64>,
    /// Versions committed (one per partition).
    pub versions: u64,
    /// Files the compaction replaced.
    pub files_removed: u64,
    /// Files it wrote.
    pub files_added: u64,
    /// Partitions compacted.
    pub partitions: u64,
    /// Bytes of the files replaced.
    pub bytes_removed: u64,
    /// Bytes of the files written.
    pub bytes_added: u64,
    /// Partitions left as they were because another compaction took some of their files first.
    pub conflicts: u64,
}

/// Compacts the partitions of `table` that hold two or more files under the target size.
pub async fn compact(lake: &Lake, table: &str, opts: &CompactOptions) -> Result<CompactReport> {
    std::fs::create_dir_all(&opts.spool_dir).map_err(|e| Error::io(&opts.spool_dir, e))?;
    let mut ledger = Ledger::open(lake, table, &opts.writer_id).await?;
    if !ledger.state().exists {
        return Err(Error::NotFound {
            what: "Delta table",
            name: lake.url_of(&Lake::table_dir(table)),
        });
    }
    // Compaction rewrites the files it reads: the table must allow it (rows of files with
    // deletion vectors are partly deleted: those files are left as they are).
    ledger.check(Operation::Compact)?;
    let columns = file_columns(&ledger)?;
    let schema = arrow_schema(&columns);
    // Files of a column-mapped table name their columns by physical names: read them so, and
    // write so.
    let mapping = ledger.state().column_mapping()?;
    let physical = ledger.state().physical_file_schema(&schema)?;
    let shape = Shape {
        logical: &schema,
        physical: &physical,
        mapping: mapping.as_ref(),
    };
    let mut by_partition: BTreeMap<String, Vec<DataFile>> = BTreeMap::new();
    for f in ledger.state().files.values() {
        if f.bytes >= opts.target_bytes / 4 * 3
            || ledger.state().deletion_vectors.contains(&f.path)
            || !matches_filter(&f.partition, &opts.filter)
            || opts.partition.as_ref().is_some_and(|p| *p != f.partition)
        {
            continue;
        }
        by_partition
            .entry(f.partition.clone())
            .or_default()
            .push(f.clone());
    }
    let mut report = CompactReport::default();
    // Its uploads are leased until committed: recovery elsewhere leaves them alone however
    // long a partition takes.
    let mut lease =
        crate::lake::pending::Pending::new(lake.clone(), table).with_retry_base(opts.retry_base);
    for (partition, mut files) in by_partition {
        // Only when fewer files would come out: files near the target stay as they are.
        let bytes: u64 = files.iter().map(|f| f.bytes).sum();
        if files.len() < 2 || bytes.div_ceil(opts.target_bytes.max(1)) >= files.len() as u64 {
            continue;
        }
        // Paths are `part-<UUIDv7>`: by name is by the time they were written.
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let written = rewrite(lake, table, &partition, &files, &shape, opts, &mut lease).await?;
        let paths: Vec<String> = written.iter().map(|f| f.path.clone()).collect();
        if lease.must_check() {
            lease.renew().await?;
            for p in &paths {
                lake.store.head(&lake.path(p)).await.map_err(|e| {
                    Error::Internal(format!(
                        "compaction's upload {p} is gone before its commit ({e}): its lease lapsed while it was stalled; nothing was committed"
                    ))
                })?;
            }
        }
        let draft = CommitDraft {
            id: uuid::Uuid::now_v7().to_string(),
            add: written.clone(),
            remove: files.iter().map(|f| f.path.clone()).collect(),
            chunks: Vec::new(),
            rearrange: true,
            merge: None,
        };
        let outcome = ledger.commit(draft).await;
        if let Err(e) = lease.remove(&paths).await {
            warn!(table, error = %e, "could not update the lease on compaction's uploads");
        }
        match outcome {
            Ok(c) => {
                let removed: u64 = files.iter().map(|f| f.bytes).sum();
                let added: u64 = written.iter().map(|f| f.bytes).sum();
                info!(
                    table,
                    partition = %partition,
                    version = c.version,
                    files_removed = files.len(),
                    files_added = written.len(),
                    "compacted"
                );
                metrics::counter!(crate::metrics::COMPACTIONS).increment(1);
                report.version = Some(c.version);
                report.versions += 1;
                report.partitions += 1;
                report.files_removed += files.len() as u64;
                report.files_added += written.len() as u64;
                report.bytes_removed += removed;
                report.bytes_added += added;
            }
            // Refused before anything was written: the uploads are no version's, delete them.
            Err(Error::Conflict(why)) => {
                delete_uploads(lake, &written).await;
                warn!(table, partition = %partition, reason = %why, "another writer changed these files first; partition left as it is");
                report.conflicts += 1;
                ledger.refresh().await?;
            }
            Err(e @ (Error::UnsupportedFeature { .. } | Error::TableChanged { .. })) => {
                delete_uploads(lake, &written).await;
                return Err(e);
            }
            // Anything else (a timeout, a lost reply) may have landed the version: its files
            // stay. `repair` and `vacuum` remove them if no version names them.
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// Deletes uploads that no version names (the commit was refused before it was written).
async fn delete_uploads(lake: &Lake, written: &[DataFile]) {
    for f in written {
        let _ = lake.store.delete(&lake.path(&f.path)).await;
    }
}

/// The table's file columns (its Delta schema without the partition columns).
fn file_columns(ledger: &Ledger) -> Result<Vec<Column>> {
    let state = ledger.state();
    state
        .schema_fields()
        .into_iter()
        .filter(|(n, _)| !state.partition_columns.contains(n))
        .map(|(name, ty)| {
            // Exactly the table's type: a file of longs in an `integer` column is one readers
            // refuse.
            match column_type_of_delta(&ty) {
                Some(t) if is_delta_type(t, &ty) => Ok(Column::new(name, t)),
                _ => Err(Error::UnsupportedType {
                    table: ledger.url(),
                    column: name.to_string(),
                    ty: ty.to_string(),
                    operation: "write, so it does not compact the table",
                }),
            }
        })
        .collect()
}

fn matches_filter(partition: &str, filter: &[(String, String)]) -> bool {
    if filter.is_empty() {
        return true;
    }
    let values = crate::schema::partition::parse_partition_path(partition);
    filter.iter().all(|(k, v)| {
        values
            .iter()
            .any(|(pk, pv)| pk == k && pv.as_deref() == Some(v.as_str()))
    })
}

/// The schemas a compaction reads and writes in.
struct Shape<'a> {
    /// The table's file columns by their names.
    logical: &'a arrow::datatypes::SchemaRef,
    /// The same as the files name them (physical names under column mapping).
    physical: &'a arrow::datatypes::SchemaRef,
    mapping: Option<&'a crate::delta::mapping::ColumnMapping>,
}

/// Reads `files` in order and writes their rows into new files of about the target size,
/// uploaded into the partition; returns them (not yet committed).
async fn rewrite(
    lake: &Lake,
    table: &str,
    partition: &str,
    files: &[DataFile],
    shape: &Shape<'_>,
    opts: &CompactOptions,
    lease: &mut crate::lake::pending::Pending,
) -> Result<Vec<DataFile>> {
    let schema = shape.logical;
    // Decided from the first rows read (see `dictionary_misfits`).
    let mut props = None;
    let mut done: Vec<DataFile> = Vec::new();
    let mut open: Option<SpoolFile> = None;
    let result: Result<()> = async {
        for f in files {
            // Read from a local copy (Parquet is read footer first), streamed to disk.
            lease.renew().await?;
            let copy = download(lake, &f.path, &opts.spool_dir).await?;
            let input = std::fs::File::open(&copy.0).map_err(|e| Error::io(&copy.0, e))?;
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(input)?
                    .with_batch_size(if props.is_none() {
                        FIRST_BATCH_ROWS
                    } else {
                        BATCH_ROWS
                    })
                    .build()?;
            for batch in reader {
                let batch = match shape.mapping {
                    Some(m) => m.to_logical(batch?)?,
                    None => batch?,
                };
                let batch = crate::parquet::writer::conform(batch, schema)?;
                let spool = match open.as_mut() {
                    Some(s) => s,
                    None => {
                        let props = match &props {
                            Some(p) => p,
                            None => {
                                let plain = crate::delta::mapping::physical_names(
                                    schema,
                                    shape.physical,
                                    dictionary_misfits(&[&batch], opts.parquet.row_group_rows)
                                        .unwrap_or_default(),
                                );
                                props.insert(writer_properties_for(
                                    &opts.parquet,
                                    shape.physical,
                                    &plain,
                                )?)
                            }
                        };
                        open.insert(SpoolFile::create(
                            &opts.spool_dir,
                            shape.physical.clone(),
                            props.clone(),
                            &opts.parquet,
                        )?)
                    }
                };
                let target = opts.target_bytes;
                let batch = crate::delta::mapping::to_physical(batch, shape.physical)?;
                tokio::task::block_in_place(|| -> Result<()> {
                    spool.write(&batch)?;
                    // A buffered row group's size is an estimate (pages not yet compressed count
                    // whole): close it once it could fill the file, and measure what it took.
                    let remaining = target.saturating_sub(spool.written());
                    if spool.in_progress() >= remaining.max(target / 8)
                        || spool.buffered() > opts.memory_budget
                    {
                        spool.flush_row_group()?;
                    }
                    Ok(())
                })?;
                if spool.written() >= target {
                    let s = open.take().expect("open file");
                    done.push(finish(lake, table, partition, s, opts, lease).await?);
                }
            }
        }
        if let Some(s) = open.take() {
            done.push(finish(lake, table, partition, s, opts, lease).await?);
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(done),
        Err(e) => {
            if let Some(s) = open {
                s.discard();
            }
            for f in &done {
                let _ = lake.store.delete(&lake.path(&f.path)).await;
            }
            let paths: Vec<String> = done.iter().map(|f| f.path.clone()).collect();
            let _ = lease.remove(&paths).await;
            Err(e)
        }
    }
}

/// A local copy of a lake file, removed when dropped.
struct Copy(PathBuf);

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn download(lake: &Lake, path: &str, dir: &std::path::Path) -> Result<Copy> {
    use tokio::io::AsyncWriteExt;
    let copy = Copy(dir.join(format!("compact-{}.parquet", uuid::Uuid::now_v7())));
    let mut out = tokio::fs::File::create(&copy.0)
        .await
        .map_err(|e| Error::io(&copy.0, e))?;
    let mut stream = lake.store.get(&lake.path(path)).await?.into_stream();
    while let Some(bytes) = stream.try_next().await? {
        out.write_all(&bytes)
            .await
            .map_err(|e| Error::io(&copy.0, e))?;
    }
    out.flush().await.map_err(|e| Error::io(&copy.0, e))?;
    Ok(copy)
}

/// Closes a spool file and uploads it into the partition (recorded first, so that recovery
/// removes it if no version ever names it).
async fn finish(
    lake: &Lake,
    table: &str,
    partition: &str,
    spool: SpoolFile,
    opts: &CompactOptions,
    lease: &mut crate::lake::pending::Pending,
) -> Result<DataFile> {
    let (file, stats) = tokio::task::block_in_place(|| -> Result<_> {
        let file = spool.finish()?;
        let stats = delta_stats(&file.local)?;
        Ok((file, stats))
    })?;
    let dest = crate::lake::data_file_path(
        &Lake::table_dir(table),
        partition,
        &format!("part-{}.parquet", uuid::Uuid::now_v7()),
    );
    if let Err(e) = lease.add([dest.clone()]).await {
        file.discard();
        return Err(e);
    }
    let uploaded = match crate::lake::spool::record_upload(&opts.spool_dir, table, &dest) {
        Ok(()) => {
            retry("upload", Backoff::steps(opts.retry_base), transient, || {
                upload(lake, &file.local, &dest)
            })
            .await
        }
        Err(e) => Err(e),
    };
    let (rows, bytes) = (file.rows, file.bytes);
    file.discard();
    uploaded?;
    Ok(DataFile {
        path: dest,
        partition: partition.to_string(),
        rows,
        bytes,
        kind: FileKind::Data,
        stats: Some(stats),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_partition_values() {
        let f = vec![("year".to_string(), "2024".to_string())];
        assert!(matches_filter("year=2024", &f));
        assert!(matches_filter("year=2024/month=1", &f));
        assert!(!matches_filter("year=2023", &f));
        assert!(!matches_filter("year=__HIVE_DEFAULT_PARTITION__", &f));
        assert!(matches_filter("anything", &[]));
    }
}
