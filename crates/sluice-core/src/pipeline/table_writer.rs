//! Writing typed rows into a table: the stage the consumer and `convert` share.
//!
//! ```text
//!  DecodedChunk ─► drop chunk parts already committed or already in an open file
//!    ─► append to the partition's spool file (Parquet, zstd)
//!    ─► rotate a file by rows or bytes (the caller decides age): close ─► statistics
//!    ─► upload ─► Delta commit (quarantine table, then data table)
//! ```
//!
//! The writer knows nothing of queues: it tells its caller which partitions hold a chunk's
//! rows (`Written::waiting`) and, after a flush, which chunk parts are now committed
//! (`Flushed::Committed`); the consumer turns that into message deletions, `convert` into
//! "this source is done".
//!
//! A chunk part that a commit finds already committed by someone else is a conflict: the
//! files of that flush are removed and the caller decides (the consumer releases its messages
//! to be delivered again; `convert` stops and is run again).

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStoreExt;
use tracing::{info, warn};

use crate::decode::rows::DecodedChunk;
use crate::delta::log::{ChunkPart, Commit, CommitDraft, DataFile, FileKind, Ledger};
use crate::error::retry::{Attempts, Backoff, retry, transient};
use crate::error::{Error, Result};
use crate::lake::pending::Pending;
use crate::lake::{Lake, QUARANTINE_PART};
use crate::metrics::{
    BYTES_WRITTEN, COMMIT_CONFLICTS, COMMITS, FILES_WRITTEN, ROWS_DUPLICATE, ROWS_QUARANTINED,
    ROWS_WRITTEN, count, count_labelled,
};
use crate::parquet::writer::{
    FinishedFile, ParquetOptions, SpoolFile, conform, dictionary_misfits, quarantine_batch,
    quarantine_schema, upload, writer_properties, writer_properties_for,
};
use crate::table::TableLayout;

/// Settings of a `TableWriter`.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Close a partition's file at this many rows.
    pub rotate_rows: u64,
    /// Close a partition's file at this many bytes.
    pub rotate_bytes: u64,
    /// Memory for buffered row groups across all open files.
    pub memory_budget: usize,
    /// How the files are written.
    pub parquet: ParquetOptions,
    /// Private spool directory (also where uploads are recorded for recovery).
    pub spool_dir: PathBuf,
    /// First back-off of a retried step; it doubles on each of 6 retries.
    pub retry_base: Duration,
}

impl WriterOptions {
    /// Files of up to 50 M rows or 128 MiB, 96 MiB of buffered row groups, zstd Parquet,
    /// retries from 0.1 s.
    pub fn new(spool_dir: PathBuf) -> Self {
        WriterOptions {
            rotate_rows: 50_000_000,
            rotate_bytes: 128 << 20,
            memory_budget: 96 << 20,
            parquet: ParquetOptions::default(),
            spool_dir,
            retry_base: Duration::from_millis(100),
        }
    }
}

/// What writing did; part of the consumer's and `convert`'s summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteStats {
    /// Rows committed to the table.
    pub rows_written: u64,
    /// Rows committed to the quarantine.
    pub rows_quarantined: u64,
    /// Rows left out because the table already has them (a chunk delivered again).
    pub rows_duplicate: u64,
    /// Files committed.
    pub files: u64,
    /// Bytes of those files.
    pub bytes_written: u64,
    /// Delta commits.
    pub commits: u64,
    /// Commits lost to another writer (their rows were then committed by it, or again).
    pub conflicts: u64,
}

/// Where one chunk's rows went.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Partitions (or [`QUARANTINE_PART`]) whose open file holds rows of the chunk: the chunk is
    /// durable once these are committed. Empty: everything was committed before.
    pub waiting: HashSet<String>,
    /// Partitions whose files reached the rotation size: flush them.
    pub due: Vec<String>,
}

/// The outcome of a flush.
#[derive(Debug)]
pub(crate) enum Flushed {
    /// Committed chunk parts: (partition, chunks whose rows in it are now committed).
    Committed(Vec<(String, HashSet<String>)>),
    /// Another writer committed some of these chunk parts first; this flush's files were
    /// removed and every open file was discarded.
    Conflict,
}

struct OpenFile {
    spool: SpoolFile,
    chunks: HashSet<String>,
    kind: FileKind,
}

struct Closed {
    partition: String,
    file: FinishedFile,
    chunks: HashSet<String>,
    kind: FileKind,
    stats: String,
}

/// Writes one table's rows into Parquet files and commits them to its Delta logs.
pub(crate) struct TableWriter {
    opts: WriterOptions,
    lake: Lake,
    layout: Arc<TableLayout>,
    ledger: Ledger,
    /// The quarantine's own Delta table.
    quarantine: Ledger,
    /// Properties of quarantine files, and of data files until `data_props` is known.
    props: parquet::file::properties::WriterProperties,
    /// Properties of data files, once the rows showed which columns to write without a
    /// dictionary (see [`crate::parquet::writer::dictionary_misfits`]).
    data_props: Option<parquet::file::properties::WriterProperties>,
    files: HashMap<String, OpenFile>,
    /// The schema data files are written in: the layout's file schema, under column mapping's
    /// physical names and field ids when the table maps its columns.
    physical: arrow::datatypes::SchemaRef,
    /// Files closed when the schema changed, committed with their partition's next flush.
    retired: Vec<Closed>,
    /// Files uploaded and not committed yet ([`TableWriter::stage`]): the next flush commits
    /// them, whatever its partitions.
    staged: Vec<Staged>,
    /// The lease on this writer's uploads not committed yet, which recovery on every machine
    /// respects.
    pending: Pending,
    stats: WriteStats,
    /// The table's identity columns, with the values this writer has claimed and not given out.
    identities: Vec<Claimed>,
    /// A keyed table's deleted keys, as last read.
    deleted_keys: crate::pipeline::merge::DeletedKeys,
}

/// Identity values claimed in the log ([`crate::delta::log::Ledger::reserve_identity`]) and not
/// given out yet.
#[derive(Debug, Clone)]
struct Claimed {
    identity: crate::delta::identity::Identity,
    next: i64,
    left: u64,
}

/// The error of rows that bring values of an identity column that takes none.
fn identity_given(table: &str, chunk: &str, c: &Claimed, rows: u64) -> Error {
    Error::ConstraintViolated {
        table: table.to_string(),
        chunk: chunk.to_string(),
        constraint: format!("identity column {}", c.identity.column),
        expression: "GENERATED ALWAYS AS IDENTITY (values are the table's to give)".into(),
        rows: rows as usize,
    }
}

/// A file uploaded to the lake and not yet committed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Staged {
    kind: FileKind,
    add: DataFile,
    partition: String,
    chunks: HashSet<String>,
}

/// A record of the spool's staged-upload log.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum StagedRecord {
    /// A staged file.
    File(Staged),
    /// A piece whose rows are all in staged files.
    Piece(String),
}

/// The files staged-upload `records` name.
pub(crate) fn staged_paths(records: &[String]) -> HashSet<String> {
    records
        .iter()
        .filter_map(|r| match serde_json::from_str::<StagedRecord>(r) {
            Ok(StagedRecord::File(st)) => Some(st.add.path),
            _ => None,
        })
        .collect()
}

impl StagedRecord {
    fn line(&self) -> String {
        serde_json::to_string(self).expect("a staged record serializes")
    }
}

impl TableWriter {
    pub fn new(
        opts: WriterOptions,
        lake: Lake,
        layout: Arc<TableLayout>,
        ledger: Ledger,
        quarantine: Ledger,
    ) -> Result<Self> {
        let props = writer_properties(&opts.parquet)?;
        std::fs::create_dir_all(&opts.spool_dir).map_err(|e| Error::io(&opts.spool_dir, e))?;
        let physical = ledger.state().physical_file_schema(&layout.file_schema)?;
        if layout.keyed.is_some() && ledger.state().column_mapping()?.is_some() {
            return Err(Error::UnsupportedFeature {
                table: ledger.url(),
                feature: "columnMapping".into(),
                operation: "merge changes into",
                reason: "keyed tables are written by logical column names; sluice does not merge into a column-mapped table yet".into(),
            });
        }
        let pending = Pending::new(lake.clone(), &layout.name).with_retry_base(opts.retry_base);
        let identities = match &ledger.state().metadata {
            Some(m) => crate::delta::identity::identities_of_metadata(m)?
                .into_iter()
                .map(|identity| Claimed {
                    identity,
                    next: 0,
                    left: 0,
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(TableWriter {
            identities,
            pending,
            physical,
            opts,
            lake,
            layout,
            ledger,
            quarantine,
            props,
            data_props: None,
            files: HashMap::new(),
            retired: Vec::new(),
            staged: Vec::new(),
            stats: WriteStats::default(),
            deleted_keys: Default::default(),
        })
    }

    pub fn layout(&self) -> &Arc<TableLayout> {
        &self.layout
    }

    /// The data table's log, at the version this writer last saw.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn stats(&self) -> &WriteStats {
        &self.stats
    }

    /// `batch` with its identity columns' NULLs given the next claimed values; a value a row
    /// brings refuses the chunk unless the column takes explicit values.
    fn fill_identities(
        &mut self,
        batch: arrow::array::RecordBatch,
        chunk: &str,
    ) -> Result<arrow::array::RecordBatch> {
        use arrow::array::{Array, AsArray};
        let mut columns = batch.columns().to_vec();
        for c in &mut self.identities {
            let Ok(i) = batch.schema().index_of(&c.identity.column) else {
                continue;
            };
            let have = arrow::compute::cast(&columns[i], &arrow::datatypes::DataType::Int64)?;
            let have = have.as_primitive::<arrow::datatypes::Int64Type>();
            let given = have.len() - have.null_count();
            if given > 0 && !c.identity.explicit {
                return Err(identity_given(&self.layout.name, chunk, c, given as u64));
            }
            let missing = have.null_count() as u64;
            if missing > c.left {
                return Err(Error::Internal(format!(
                    "identity column {}: {missing} values needed, {} claimed",
                    c.identity.column, c.left
                )));
            }
            let filled: arrow::array::Int64Array = have
                .iter()
                .map(|v| {
                    Some(v.unwrap_or_else(|| {
                        let x = c.next;
                        c.next = c.next.wrapping_add(c.identity.step);
                        c.left -= 1;
                        x
                    }))
                })
                .collect();
            let ty = batch.schema().field(i).data_type().clone();
            columns[i] = arrow::compute::cast(&filled, &ty)?;
        }
        Ok(arrow::array::RecordBatch::try_new(batch.schema(), columns)?)
    }

    /// Sets the counts back to `stats` (taken when the last commit landed), when what was
    /// written since is discarded.
    pub fn restore_stats(&mut self, stats: WriteStats) {
        self.stats = stats;
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Whether `chunk`'s rows in `partition` are committed (in the data or quarantine log).
    pub fn is_committed(&self, chunk: &str, partition: &str) -> bool {
        let log = if partition == QUARANTINE_PART {
            &self.quarantine
        } else {
            &self.ledger
        };
        log.state().has_part(chunk, partition)
    }

    /// Files written and not yet committed (open, closed by a schema change, or staged).
    pub fn open_file_count(&self) -> usize {
        self.files.len() + self.retired.len() + self.staged.len()
    }

    /// Whether files were staged ([`TableWriter::stage`]) and not committed yet.
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Closes the files of `parts` and uploads them without committing them: the next
    /// [`TableWriter::flush`] commits them with its own (`convert` holds a source's rows back
    /// until the source has been read to its end). Rotation keeps the memory bounded meanwhile.
    pub async fn stage(&mut self, parts: Vec<String>) -> Result<()> {
        let closed = self.close_parts(parts)?;
        let (uploaded, mut failed) = match self.lease_and_upload(&closed).await {
            Ok(r) => r,
            Err(e) => {
                discard(closed);
                return Err(e);
            }
        };
        let mut records = Vec::with_capacity(uploaded.len());
        for (c, add) in closed.iter().zip(uploaded) {
            let st = Staged {
                kind: c.kind,
                add,
                partition: c.partition.clone(),
                chunks: c.chunks.clone(),
            };
            records.push(StagedRecord::File(st.clone()).line());
            self.staged.push(st);
        }
        discard(closed);
        if let Err(e) =
            crate::lake::spool::record_staged(&self.opts.spool_dir, &self.layout.name, &records)
        {
            failed = failed.or(Some(e));
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Records that every row of the pieces `chunks` is in staged files: a later `convert`
    /// that takes those files over does not type them again.
    pub fn note_staged_pieces(&self, chunks: Vec<String>) -> Result<()> {
        let lines: Vec<String> = chunks
            .into_iter()
            .map(|c| StagedRecord::Piece(c).line())
            .collect();
        crate::lake::spool::record_staged(&self.opts.spool_dir, &self.layout.name, &lines)
    }

    /// Takes over the files a `convert` that died staged (`records` of its spool's staged log
    /// for this table): those whose every chunk `ours` accepts (the sources of this run), that
    /// no commit holds and that still exist are staged here as if written now; the others are
    /// removed. Returns the pieces whose rows are all in the files taken over.
    pub async fn adopt_staged(
        &mut self,
        records: &[String],
        ours: impl Fn(&str) -> bool,
    ) -> Result<HashSet<String>> {
        let mut pieces = HashSet::new();
        let mut lost_chunks = HashSet::new();
        let mut taken = Vec::new();
        for r in records {
            // A record cut short by a crash names nothing whole.
            match serde_json::from_str::<StagedRecord>(r) {
                Ok(StagedRecord::Piece(c)) => {
                    pieces.insert(c);
                }
                Ok(StagedRecord::File(st)) => {
                    let committed = st
                        .chunks
                        .iter()
                        .any(|c| self.is_committed(c, &st.partition));
                    let exists = self
                        .lake
                        .store
                        .head(&self.lake.path(&st.add.path))
                        .await
                        .is_ok();
                    if exists && !committed && st.chunks.iter().all(|c| ours(c)) {
                        taken.push(st);
                    } else {
                        lost_chunks.extend(st.chunks.iter().cloned());
                        if exists && !self.ledger.state().files.contains_key(&st.add.path) {
                            let _ = self.lake.store.delete(&self.lake.path(&st.add.path)).await;
                        }
                    }
                }
                Err(_) => {}
            }
        }
        pieces.retain(|c| ours(c) && !lost_chunks.contains(c));
        if taken.is_empty() {
            return Ok(HashSet::new());
        }
        let paths: Vec<String> = taken.iter().map(|st| st.add.path.clone()).collect();
        self.pending.add(paths.iter().cloned()).await?;
        for p in &paths {
            crate::lake::spool::record_upload(&self.opts.spool_dir, &self.layout.name, p)?;
        }
        let mut lines: Vec<String> = taken
            .iter()
            .map(|st| StagedRecord::File(st.clone()).line())
            .collect();
        lines.extend(pieces.iter().map(|c| StagedRecord::Piece(c.clone()).line()));
        crate::lake::spool::record_staged(&self.opts.spool_dir, &self.layout.name, &lines)?;
        info!(table = %self.layout.name, files = taken.len(), pieces = pieces.len(), "took over the files an earlier convert staged");
        self.staged.extend(taken);
        Ok(pieces)
    }

    /// Renews the lease on this writer's uploads not committed yet, when due (`convert` calls
    /// it as it reads; a flush renews it between its uploads).
    pub async fn renew_lease(&mut self) -> Result<()> {
        self.pending.renew().await
    }

    /// Removes the staged uploads from the lake and forgets them (their rows are not to be
    /// committed). An upload whose removal fails is left to `repair`.
    pub async fn discard_staged(&mut self) {
        let mut removed = Vec::new();
        for st in std::mem::take(&mut self.staged) {
            match self.lake.store.delete(&self.lake.path(&st.add.path)).await {
                Ok(()) => removed.push(st.add.path),
                Err(e) => {
                    warn!(path = %st.add.path, error = %e, "could not remove a staged upload; repair removes it")
                }
            }
        }
        // Those not removed stay leased until this writer ends: repair then removes them.
        if let Err(e) = self.pending.remove(&removed).await {
            warn!(error = %e, "could not update the lease on this writer's uploads");
        }
        if let Err(e) = crate::lake::spool::clear_staged(&self.opts.spool_dir) {
            warn!(error = %e, "could not clear the staged-upload log");
        }
    }

    /// Memory held by the open files' buffered row groups.
    pub fn buffered_bytes(&self) -> usize {
        self.files.values().map(|f| f.spool.buffered()).sum()
    }

    /// Partitions with an open file (or a file closed by a schema change) to commit.
    pub fn open_partitions(&self) -> Vec<String> {
        let mut parts: Vec<String> = self.files.keys().cloned().collect();
        for r in &self.retired {
            if !parts.contains(&r.partition) {
                parts.push(r.partition.clone());
            }
        }
        parts
    }

    /// Partitions whose file was opened at least `age` ago (and those holding a file closed by
    /// a schema change).
    pub fn aged(&self, age: Duration) -> Vec<String> {
        let mut parts: Vec<String> = self
            .files
            .iter()
            .filter(|(_, f)| f.spool.opened.elapsed() >= age)
            .map(|(p, _)| p.clone())
            .collect();
        for r in &self.retired {
            if !parts.contains(&r.partition) {
                parts.push(r.partition.clone());
            }
        }
        parts
    }

    /// Takes the table's new layout (its schema gained columns). Open data files keep the
    /// schema they were opened with: they are closed now and committed with their partition's
    /// next flush; rows typed for the earlier layout get the new columns as NULL.
    pub async fn set_layout(&mut self, layout: Arc<TableLayout>) -> Result<()> {
        if layout.file_schema == self.layout.file_schema {
            self.layout = layout;
            return Ok(());
        }
        // Under column mapping the new columns' physical names are in the version that added
        // them, which this writer's log has not read yet.
        if self.ledger.state().column_mapping()?.is_some() {
            self.ledger.refresh().await?;
        }
        let physical = self
            .ledger
            .state()
            .physical_file_schema(&layout.file_schema)?;
        let data: Vec<String> = self
            .files
            .iter()
            .filter(|(_, f)| f.kind == FileKind::Data)
            .map(|(p, _)| p.clone())
            .collect();
        for p in data {
            let f = self.files.remove(&p).expect("open file");
            let closed = tokio::task::block_in_place(|| close(p, f))?;
            self.retired.push(closed);
        }
        self.layout = layout;
        self.physical = physical;
        Ok(())
    }

    /// Re-reads both logs (other writers commit too).
    pub async fn refresh(&mut self) -> Result<()> {
        self.ledger.refresh().await?;
        self.quarantine.refresh().await
    }

    /// Appends a decoded chunk's rows to the open files of their partitions, skipping parts
    /// that are committed or already held in an open file (a chunk delivered twice). A table
    /// with identity columns first gets enough values claimed for the chunk's rows (a version
    /// of the log, at most once per [`crate::delta::identity::BLOCK`] rows).
    pub async fn write_rows(&mut self, d: DecodedChunk) -> Result<Written> {
        use arrow::array::Array;
        for k in 0..self.identities.len() {
            let c = &self.identities[k];
            // The rows without a value, and those with one (refused before anything is
            // claimed, unless the column takes them).
            let (mut missing, mut given) = (0u64, 0u64);
            for (_, b) in &d.parts {
                match b.column_by_name(&c.identity.column) {
                    Some(col) => {
                        missing += col.null_count() as u64;
                        given += (col.len() - col.null_count()) as u64;
                    }
                    None => missing += b.num_rows() as u64,
                }
            }
            if given > 0 && !c.identity.explicit {
                return Err(identity_given(&self.layout.name, &d.chunk, c, given));
            }
            if c.left >= missing {
                continue;
            }
            let count = missing.max(crate::delta::identity::BLOCK);
            let column = c.identity.column.clone();
            let first = self.ledger.reserve_identity(&column, count).await?;
            let c = &mut self.identities[k];
            c.next = first;
            c.left = count;
        }
        tokio::task::block_in_place(|| self.write(d))
    }

    /// [`TableWriter::write_rows`] without claiming identity values (they must be claimed).
    fn write(&mut self, d: DecodedChunk) -> Result<Written> {
        let chunk = d.chunk;
        let mut parts: Vec<(String, FileKind, arrow::array::RecordBatch)> = d
            .parts
            .into_iter()
            .map(|(p, b)| (p, FileKind::Data, b))
            .collect();
        if !d.quarantine.is_empty() {
            parts.push((
                QUARANTINE_PART.to_string(),
                FileKind::Quarantine,
                quarantine_batch(&self.layout.name, &d.quarantine)?,
            ));
        }
        if self.data_props.is_none() {
            let data: Vec<&arrow::array::RecordBatch> = parts
                .iter()
                .filter(|(_, kind, _)| *kind == FileKind::Data)
                .map(|(_, _, b)| b)
                .collect();
            if let Some(plain) = dictionary_misfits(&data, self.opts.parquet.row_group_rows) {
                if !plain.is_empty() {
                    info!(table = %self.layout.name, columns = ?plain, "columns written without a dictionary");
                }
                let plain = crate::delta::mapping::physical_names(
                    &self.layout.file_schema,
                    &self.physical,
                    plain,
                );
                self.data_props = Some(writer_properties_for(
                    &self.opts.parquet,
                    &self.physical,
                    &plain,
                )?);
            }
        }
        // Identity values for the rows that have none (all of them, unless the column takes
        // values a source gives: a row with one is refused then).
        if !self.identities.is_empty() {
            for (part, kind, batch) in parts.iter_mut() {
                if *kind == FileKind::Data && !self.is_committed(&chunk, part) {
                    let typed = conform(batch.clone(), &self.layout.file_schema)?;
                    *batch = self.fill_identities(typed, &chunk)?;
                }
            }
        }
        // Every row against the table's constraints before any is written: a chunk is refused
        // whole.
        if let Some(checks) = self.ledger.checks() {
            // Generated columns first: the rows are checked, and written, with their values.
            if checks.generator.is_some() {
                for (part, kind, batch) in parts.iter_mut() {
                    if *kind == FileKind::Data {
                        let typed = conform(batch.clone(), &self.layout.file_schema)?;
                        *batch = checks.fill_generated(typed, part)?;
                    }
                }
            }
            for (part, kind, batch) in &parts {
                if *kind != FileKind::Data || self.is_committed(&chunk, part) {
                    continue;
                }
                if let Some((c, rows)) = checks.first_violation(batch, part)? {
                    return Err(Error::ConstraintViolated {
                        table: self.layout.name.clone(),
                        chunk: chunk.clone(),
                        constraint: c.name,
                        expression: c.expression,
                        rows,
                    });
                }
            }
        }
        let mut out = Written::default();
        let mut batches: HashMap<String, arrow::array::RecordBatch> = HashMap::new();
        for (part, kind, batch) in parts {
            let n = batch.num_rows() as u64;
            if self.is_committed(&chunk, &part) {
                count(&mut self.stats.rows_duplicate, ROWS_DUPLICATE, n);
                continue;
            }
            if self
                .files
                .get(&part)
                .is_some_and(|f| f.chunks.contains(&chunk))
                || self
                    .retired
                    .iter()
                    .any(|r| r.partition == part && r.chunks.contains(&chunk))
                || self
                    .staged
                    .iter()
                    .any(|st| st.partition == part && st.chunks.contains(&chunk))
            {
                // Delivered again while its rows wait in our open file.
                count(&mut self.stats.rows_duplicate, ROWS_DUPLICATE, n);
                out.waiting.insert(part);
                continue;
            }
            out.waiting.insert(part.clone());
            if !self.files.contains_key(&part) {
                let (schema, props) = match (kind, &self.data_props) {
                    (FileKind::Data, Some(props)) => (self.physical.clone(), props),
                    (FileKind::Data, None) => (self.physical.clone(), &self.props),
                    (FileKind::Quarantine, _) => (quarantine_schema(), &self.props),
                };
                let spool = SpoolFile::create(
                    &self.opts.spool_dir,
                    schema,
                    props.clone(),
                    &self.opts.parquet,
                )?;
                self.files.insert(
                    part.clone(),
                    OpenFile {
                        spool,
                        chunks: HashSet::new(),
                        kind,
                    },
                );
            }
            let batch = match kind {
                FileKind::Data => {
                    count(&mut self.stats.rows_written, ROWS_WRITTEN, n);
                    crate::delta::mapping::to_physical(
                        conform(batch, &self.layout.file_schema)?,
                        &self.physical,
                    )?
                }
                FileKind::Quarantine => {
                    count(&mut self.stats.rows_quarantined, ROWS_QUARANTINED, n);
                    batch
                }
            };
            batches.insert(part, batch);
        }
        // Encoding is most of the work: the partitions' files are encoded at once, one thread
        // each.
        let mut jobs: Vec<(&mut OpenFile, &arrow::array::RecordBatch)> = self
            .files
            .iter_mut()
            .filter_map(|(p, f)| batches.get(p).map(|b| (f, b)))
            .collect();
        let results: Vec<Result<()>> = if jobs.len() <= 1 {
            jobs.iter_mut().map(|(f, b)| f.spool.write(b)).collect()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = jobs
                    .into_iter()
                    .map(|(f, b)| scope.spawn(move || f.spool.write(b)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::Task("a Parquet encoder panicked".into()))
                        })
                    })
                    .collect()
            })
        };
        results.into_iter().collect::<Result<()>>()?;
        let touched: Vec<String> = batches.into_keys().collect();
        for p in &touched {
            self.files
                .get_mut(p)
                .expect("open file")
                .chunks
                .insert(chunk.clone());
        }
        out.due = touched
            .into_iter()
            .filter(|p| {
                let f = &self.files[p];
                f.spool.rows >= self.opts.rotate_rows || f.spool.size() >= self.opts.rotate_bytes
            })
            .collect();
        self.enforce_memory_budget()?;
        Ok(out)
    }

    fn enforce_memory_budget(&mut self) -> Result<()> {
        loop {
            let total: usize = self.files.values().map(|f| f.spool.buffered()).sum();
            if total <= self.opts.memory_budget {
                return Ok(());
            }
            let Some(f) = self.files.values_mut().max_by_key(|f| f.spool.buffered()) else {
                return Ok(());
            };
            f.spool.flush_row_group()?;
        }
    }

    /// Closes, uploads and commits the files of `parts`: one commit for the quarantine, then
    /// one for the data. `markers` are chunk parts recorded in the data commit beside the
    /// files' own (a data commit with no file is made for them if needed).
    pub async fn flush(&mut self, parts: Vec<String>, markers: Vec<ChunkPart>) -> Result<Flushed> {
        let closed = self.close_parts(parts)?;
        let had_staged = !self.staged.is_empty();
        if closed.is_empty() && markers.is_empty() && self.staged.is_empty() {
            return Ok(Flushed::Committed(Vec::new()));
        }
        let mut committed: Vec<(String, HashSet<String>)> = Vec::new();
        let mut markers = Some(markers);
        for kind in [FileKind::Quarantine, FileKind::Data] {
            let group: Vec<&Closed> = closed.iter().filter(|c| c.kind == kind).collect();
            let staged: Vec<Staged> = {
                let (mine, rest) = std::mem::take(&mut self.staged)
                    .into_iter()
                    .partition(|st| st.kind == kind);
                self.staged = rest;
                mine
            };
            let extra = if kind == FileKind::Data {
                markers.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            if group.is_empty() && extra.is_empty() && staged.is_empty() {
                continue;
            }
            let staged_parts: Vec<(String, HashSet<String>)> = staged
                .iter()
                .map(|st| (st.partition.clone(), st.chunks.clone()))
                .collect();
            match self.commit_group(kind, &group, staged, extra).await {
                Ok(true) => committed.extend(
                    group
                        .iter()
                        .map(|c| (c.partition.clone(), c.chunks.clone()))
                        .chain(staged_parts),
                ),
                Ok(false) => {
                    discard(closed);
                    self.discard_all();
                    self.refresh().await?;
                    return Ok(Flushed::Conflict);
                }
                Err(e) => {
                    discard(closed);
                    return Err(e);
                }
            }
        }
        discard(closed);
        if had_staged {
            crate::lake::spool::clear_staged(&self.opts.spool_dir)?;
        }
        Ok(Flushed::Committed(committed))
    }

    /// The files of `parts` (and those a schema change closed in them), closed.
    fn close_parts(&mut self, parts: Vec<String>) -> Result<Vec<Closed>> {
        let (mut closed, kept): (Vec<Closed>, Vec<Closed>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|r| parts.contains(&r.partition));
        self.retired = kept;
        for p in parts {
            let Some(f) = self.files.remove(&p) else {
                continue;
            };
            match tokio::task::block_in_place(|| close(p, f)) {
                Ok(c) => closed.push(c),
                Err(e) => {
                    discard(closed);
                    return Err(e);
                }
            }
        }
        Ok(closed)
    }

    /// A new name for a closed file, relative to the lake root.
    fn dest_of(&self, c: &Closed) -> String {
        let name = format!("part-{}.parquet", uuid::Uuid::now_v7());
        match c.kind {
            FileKind::Quarantine => format!("{}{name}", Lake::quarantine_dir(&self.layout.name)),
            FileKind::Data => crate::lake::data_file_path(
                &Lake::table_dir(&self.layout.name),
                &c.partition,
                &name,
            ),
        }
    }

    /// Uploads a closed file to `dest` (leased, and recorded first for start-up recovery); its
    /// add action.
    /// Counts a commit that landed in the log `log` (`data` or `quarantine`): the commit, its
    /// files and their bytes.
    fn count_commit(&mut self, log: &'static str, commit: &Commit) {
        count_labelled(&mut self.stats.commits, COMMITS, ("log", log), 1);
        count(
            &mut self.stats.files,
            FILES_WRITTEN,
            commit.add.len() as u64,
        );
        count(
            &mut self.stats.bytes_written,
            BYTES_WRITTEN,
            commit.add.iter().map(|a| a.bytes).sum(),
        );
    }

    /// Leases the uploads of `closed` ([`Pending`]) and uploads them in order, up to the first
    /// that fails: the files uploaded, and that failure.
    async fn lease_and_upload<C: std::borrow::Borrow<Closed>>(
        &mut self,
        closed: &[C],
    ) -> Result<(Vec<DataFile>, Option<Error>)> {
        let dests: Vec<String> = closed.iter().map(|c| self.dest_of(c.borrow())).collect();
        self.pending.add(dests.iter().cloned()).await?;
        let mut uploaded = Vec::with_capacity(closed.len());
        for (c, dest) in closed.iter().zip(dests) {
            match self.upload_closed(c.borrow(), dest).await {
                Ok(add) => uploaded.push(add),
                Err(e) => return Ok((uploaded, Some(e))),
            }
        }
        Ok((uploaded, None))
    }

    /// Before a commit names `added`: when this writer's lease may have lapsed (another
    /// machine's recovery may have removed files since), renews it and checks that each is
    /// still there. A commit must not name a file that is gone.
    async fn check_uploads_alive(&mut self, added: &[String]) -> Result<()> {
        if self.pending.must_check() && !added.is_empty() {
            self.pending.renew().await?;
            for path in added {
                if let Err(e) = self.lake.store.head(&self.lake.path(path)).await {
                    return Err(Error::Internal(format!(
                        "upload {path} is gone before its commit ({e}): this writer's lease lapsed while it was stalled; nothing was committed"
                    )));
                }
            }
        }
        Ok(())
    }

    async fn upload_closed(&mut self, c: &Closed, dest: String) -> Result<DataFile> {
        self.pending.renew().await?;
        crate::lake::spool::record_upload(&self.opts.spool_dir, &self.layout.name, &dest)?;
        retry(
            "upload",
            Backoff::steps(self.opts.retry_base),
            transient,
            || upload(&self.lake, &c.file.local, &dest),
        )
        .await?;
        Ok(DataFile {
            path: dest,
            partition: if c.kind == FileKind::Data {
                c.partition.clone()
            } else {
                String::new()
            },
            rows: c.file.rows,
            bytes: c.file.bytes,
            kind: c.kind,
            stats: Some(c.stats.clone()),
        })
    }

    /// Uploads one table's closed files and commits them with the `staged` uploads of that
    /// table. `Ok(false)`: a conflict (another writer committed one of these chunk parts
    /// first); the uploads were removed.
    async fn commit_group(
        &mut self,
        kind: FileKind,
        group: &[&Closed],
        staged: Vec<Staged>,
        markers: Vec<ChunkPart>,
    ) -> Result<bool> {
        if kind == FileKind::Data && self.layout.keyed.is_some() {
            return self.merge_group(group, staged, markers).await;
        }
        let mut draft = CommitDraft {
            id: uuid::Uuid::now_v7().to_string(),
            chunks: markers,
            ..Default::default()
        };
        for st in staged {
            draft.chunks.extend(st.chunks.iter().map(|ch| ChunkPart {
                chunk: ch.clone(),
                partition: st.partition.clone(),
            }));
            draft.add.push(st.add);
        }
        let (uploaded, failed) = self.lease_and_upload(group).await?;
        if let Some(e) = failed {
            // Remove what this flush uploaded (not what was staged before: the caller decides
            // about those): no commit will name it.
            for a in &uploaded {
                let _ = self.lake.store.delete(&self.lake.path(&a.path)).await;
            }
            return Err(e);
        }
        for c in group {
            draft.chunks.extend(c.chunks.iter().map(|ch| ChunkPart {
                chunk: ch.clone(),
                partition: c.partition.clone(),
            }));
        }
        draft.add.extend(uploaded);
        let added: Vec<String> = draft.add.iter().map(|a| a.path.clone()).collect();
        self.check_uploads_alive(&added).await?;
        let outcome = self.commit_with_retry(kind, draft).await;
        // Committed, refused or unknown: the lease ends either way. Files of a commit that may
        // not have landed are in uploads.log, for start-up recovery.
        if let Err(e) = self.pending.remove(&added).await {
            warn!(error = %e, "could not update the lease on this writer's uploads");
        }
        let commit = match outcome {
            Ok(c) => c,
            Err(Error::Conflict(why)) => {
                warn!(reason = %why, "commit conflict: another writer committed some of these rows first");
                count(&mut self.stats.conflicts, COMMIT_CONFLICTS, 1);
                for path in &added {
                    let _ = self.lake.store.delete(&self.lake.path(path)).await;
                }
                return Ok(false);
            }
            // The commit may or may not have landed (a lost reply): leave the files; if it did
            // not land, recovery removes them (they are in uploads.log).
            Err(e) => return Err(e),
        };
        let log = if kind == FileKind::Data {
            "data"
        } else {
            "quarantine"
        };
        self.count_commit(log, &commit);
        let rows: u64 = commit.add.iter().map(|a| a.rows).sum();
        info!(
            table = %self.layout.name,
            log,
            version = commit.version,
            files = commit.add.len(),
            rows,
            chunk_parts = commit.chunks.len(),
            "committed"
        );
        Ok(true)
    }

    /// Merges the changes of a keyed table's closed files and staged uploads
    /// ([`crate::pipeline::merge`]) in one version that also records their chunk parts,
    /// planned again whenever another writer changed rows first. `Ok(false)`: a conflict
    /// (another writer committed one of these chunk parts first). The staged change files are
    /// removed once the merge landed (they were never the table's).
    async fn merge_group(
        &mut self,
        group: &[&Closed],
        staged: Vec<Staged>,
        markers: Vec<ChunkPart>,
    ) -> Result<bool> {
        let mut chunks = markers;
        let mut changes: Vec<(String, arrow::array::RecordBatch)> = Vec::new();
        let schema = self.layout.file_schema.clone();
        for c in group {
            chunks.extend(c.chunks.iter().map(|ch| ChunkPart {
                chunk: ch.clone(),
                partition: c.partition.clone(),
            }));
            let file =
                std::fs::File::open(&c.file.local).map_err(|e| Error::io(&c.file.local, e))?;
            for b in parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
                .build()?
            {
                changes.push((c.partition.clone(), conform(b?, &schema)?));
            }
        }
        let staged_paths: Vec<String> = staged.iter().map(|st| st.add.path.clone()).collect();
        for st in &staged {
            chunks.extend(st.chunks.iter().map(|ch| ChunkPart {
                chunk: ch.clone(),
                partition: st.partition.clone(),
            }));
            let bytes = self
                .lake
                .store
                .get(&self.lake.path(&st.add.path))
                .await?
                .bytes()
                .await?;
            for b in parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?
                .build()?
            {
                changes.push((st.partition.clone(), conform(b?, &schema)?));
            }
        }
        let stored = self
            .layout
            .keyed
            .as_ref()
            .expect("a keyed table")
            .stored_schema
            .clone();
        let props = writer_properties(&self.opts.parquet)?;
        let table_dir = self.ledger.dir().to_string();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let read_version = self.ledger.state().version;
            let plan = match crate::pipeline::merge::plan(
                &self.lake,
                &table_dir,
                self.ledger.state(),
                &self.layout,
                &mut self.deleted_keys,
                &changes,
            )
            .await
            {
                Ok(p) => p,
                Err(Error::MergeStale { .. }) if attempts < MERGE_ATTEMPTS => {
                    self.ledger.refresh().await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // The deleted keys' file, named after the chunk parts: it counts once they land.
            let deleted_file = match &plan.deleted {
                Some(batch) => Some(
                    crate::pipeline::merge::write_deleted_keys(
                        &self.lake, &table_dir, batch, &chunks,
                    )
                    .await?,
                ),
                None => None,
            };
            // The new files, closed with their statistics (rotated at the writer's size, the
            // partitions encoded at once, one thread each), then uploaded under the lease.
            let (spool_dir, parquet_opts) = (&self.opts.spool_dir, &self.opts.parquet);
            let (rotate_rows, rotate_bytes) = (self.opts.rotate_rows, self.opts.rotate_bytes);
            let encode = |partition: String, batches: Vec<arrow::array::RecordBatch>| {
                let mut done: Vec<Closed> = Vec::new();
                let new_file = || -> Result<OpenFile> {
                    Ok(OpenFile {
                        spool: SpoolFile::create(
                            spool_dir,
                            stored.clone(),
                            props.clone(),
                            parquet_opts,
                        )?,
                        chunks: HashSet::new(),
                        kind: FileKind::Data,
                    })
                };
                let r = (|| -> Result<()> {
                    let mut open = new_file()?;
                    for batch in &batches {
                        let mut at = 0;
                        while at < batch.num_rows() {
                            if open.spool.rows >= rotate_rows || open.spool.size() >= rotate_bytes {
                                let full = std::mem::replace(&mut open, new_file()?);
                                done.push(close(partition.clone(), full)?);
                            }
                            let room = rotate_rows.saturating_sub(open.spool.rows).max(1);
                            let n = MERGE_WRITE_ROWS
                                .min(batch.num_rows() - at)
                                .min(usize::try_from(room).unwrap_or(usize::MAX));
                            open.spool.write(&batch.slice(at, n))?;
                            at += n;
                        }
                    }
                    done.push(close(partition.clone(), open)?);
                    Ok(())
                })();
                match r {
                    Ok(()) => Ok(done),
                    Err(e) => {
                        discard(done);
                        Err(e)
                    }
                }
            };
            // Each partition's batches go to one encoder; they are moved out once there.
            let work: Vec<(String, std::sync::Mutex<Vec<arrow::array::RecordBatch>>)> = plan
                .write
                .into_iter()
                .map(|(p, b)| (p, std::sync::Mutex::new(b)))
                .collect();
            let results = crate::pipeline::merge::in_parallel(&work, |(p, b)| {
                let batches = std::mem::take(&mut *b.lock().unwrap_or_else(|e| e.into_inner()));
                encode(p.clone(), batches)
            });
            let mut closed = Vec::new();
            let mut failed = None;
            for r in results {
                match r {
                    Ok(c) => closed.extend(c),
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            if let Some(e) = failed {
                discard(closed);
                return Err(e);
            }
            let refs: Vec<&Closed> = closed.iter().collect();
            let (add, failed) = match self.lease_and_upload(&refs).await {
                Ok(r) => r,
                Err(e) => {
                    discard(closed);
                    return Err(e);
                }
            };
            discard(closed);
            let added: Vec<String> = add.iter().map(|a| a.path.clone()).collect();
            let remove_uploads = |lake: Lake, paths: Vec<String>| async move {
                for p in paths {
                    let _ = lake.store.delete(&lake.path(&p)).await;
                }
            };
            // The deleted keys' file goes with the merge's files when the merge does not land.
            let mut added_and_deleted = added.clone();
            added_and_deleted.extend(deleted_file.iter().cloned());
            if let Some(e) = failed {
                remove_uploads(self.lake.clone(), added_and_deleted).await;
                let _ = self.pending.remove(&added).await;
                return Err(e);
            }
            if let Err(e) = self.check_uploads_alive(&added).await {
                remove_uploads(self.lake.clone(), deleted_file.into_iter().collect()).await;
                return Err(e);
            }
            let draft = CommitDraft {
                id: uuid::Uuid::now_v7().to_string(),
                add,
                remove: plan.remove,
                chunks: chunks.clone(),
                rearrange: false,
                merge: Some(crate::delta::log::MergeDraft {
                    read_version,
                    metrics: plan.metrics,
                }),
            };
            let outcome = self.commit_with_retry(FileKind::Data, draft).await;
            if let Err(e) = self.pending.remove(&added).await {
                warn!(error = %e, "could not update the lease on this writer's uploads");
            }
            match outcome {
                Ok(commit) => {
                    self.count_commit("data", &commit);
                    let m = plan.metrics;
                    info!(
                        table = %self.layout.name,
                        version = commit.version,
                        inserted = m.inserted,
                        updated = m.updated,
                        deleted = m.deleted,
                        ignored = m.ignored,
                        files_removed = commit.remove.len(),
                        files_added = commit.add.len(),
                        chunk_parts = commit.chunks.len(),
                        "merged"
                    );
                    // The change files were never the table's.
                    remove_uploads(self.lake.clone(), staged_paths).await;
                    return Ok(true);
                }
                Err(Error::MergeStale { read, version, .. }) if attempts < MERGE_ATTEMPTS => {
                    info!(table = %self.layout.name, read, version, "another writer changed rows first: merging again");
                    count(&mut self.stats.conflicts, COMMIT_CONFLICTS, 1);
                    remove_uploads(self.lake.clone(), added_and_deleted).await;
                    self.ledger.refresh().await?;
                }
                Err(Error::Conflict(why)) => {
                    warn!(reason = %why, "merge conflict: another writer committed some of these changes first");
                    count(&mut self.stats.conflicts, COMMIT_CONFLICTS, 1);
                    remove_uploads(self.lake.clone(), added_and_deleted).await;
                    remove_uploads(self.lake.clone(), staged_paths).await;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn commit_with_retry(&mut self, kind: FileKind, draft: CommitDraft) -> Result<Commit> {
        let log = match kind {
            FileKind::Data => &mut self.ledger,
            FileKind::Quarantine => &mut self.quarantine,
        };
        // The same draft (same commit id) on every attempt: see `Ledger::commit`.
        let mut attempts = Attempts::new("commit", Backoff::steps(self.opts.retry_base), transient);
        loop {
            if let ControlFlow::Break(r) = attempts.judge(log.commit(draft.clone()).await).await {
                return r;
            }
        }
    }

    /// Discards every open file (their rows are not committed).
    pub fn discard_all(&mut self) {
        for (_, f) in self.files.drain() {
            f.spool.discard();
        }
        discard(std::mem::take(&mut self.retired));
    }
}

/// Plans of one merge before it gives up on writers that keep changing rows first.
const MERGE_ATTEMPTS: u32 = 20;

/// Rows a merge encodes at a time, between checks of the file's size.
const MERGE_WRITE_ROWS: usize = 65_536;

/// Closes an open file: its Parquet footer, then its Delta statistics.
fn close(partition: String, f: OpenFile) -> Result<Closed> {
    let OpenFile {
        spool,
        chunks,
        kind,
    } = f;
    let file = spool.finish()?;
    let stats = match crate::parquet::writer::delta_stats(&file.local) {
        Ok(s) => s,
        Err(e) => {
            file.discard();
            return Err(e);
        }
    };
    Ok(Closed {
        partition,
        file,
        chunks,
        kind,
        stats,
    })
}

fn discard(closed: Vec<Closed>) {
    for c in closed {
        c.file.discard();
    }
}
