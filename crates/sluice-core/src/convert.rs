//! `convert`: files and objects straight into a table, without a queue, under the same
//! exactly-once commit protocol as the consumer.
//!
//! ```text
//!  reader (one blocking thread): for each source, in order
//!      skip it if its "source done" record is in the log
//!      open ─► decompress ─► cut into pieces of 8 MiB of whole records (CSV, or JSON lines;
//!      Parquet rows are read as JSON lines) with deterministic chunk ids  ──► bounded channel
//!  typing (blocking pool, one piece per core at once, order kept) ─► DecodedChunk
//!  TableWriter: spool per partition ─► rotate by rows/bytes ─► upload ─► Delta commit
//!  a source is done when its last rows are committed: its "source done" record rides in that
//!  commit, and a later run skips it without reading it
//! ```
//!
//! A piece's chunk id is `<source fingerprint>-<index>-<content hash>`, and each commit records
//! the chunk parts it holds, as the consumer's do. Run twice, or again after a crash, a piece
//! already committed adds nothing: only what is missing is written. A source that fails (a
//! truncated gzip, a header that does not match the table) is reported; what it gave before the
//! error is committed, the other sources are converted, and the run fails at the end.
//!
//! A source that changed (another size or first 64 KiB for a file, another version for an
//! object) is a new source: its rows are converted again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::catalog::{Catalog, TableDef};
use crate::csv::CsvFormat;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::ledger::{Checkpointer, ChunkPart};
use crate::producer::{ProducerOptions, ensure_table, infer_csv, read_header};
use crate::rows::{DecodedChunk, OnFrozen, RowTyper, add_csv_spans};
use crate::schema::{Column, ColumnType, SchemaInference};
use crate::source::{Format, Location, Source};
use crate::table::TableLayout;
use crate::table_writer::{Flushed, TableWriter, WriteStats, WriterOptions};

/// Partition key of the "source done" records in the Delta log.
pub const SOURCE_PART: &str = "__source__";
/// Partition key of the "piece done" records: every row of the piece is committed, so a run
/// after a crash reads the piece (to find where the next one starts) but neither types nor
/// writes it.
pub const PIECE_PART: &str = "__piece__";

/// Bytes of CSV or JSON-lines records (Parquet rows are JSON lines) per piece. Part of every
/// chunk id: changing it would make a half-done conversion convert its sources again.
const PIECE_BYTES: usize = 8 << 20;
/// Rows of a Parquet source read at once.
const PARQUET_BATCH_ROWS: usize = 65_536;

/// `convert` settings.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The table, its CSV dialect, partitioning and (declared) columns, as for the producer.
    pub table: ProducerOptions,
    /// Files: rotation, memory, Parquet settings, spool directory, retries.
    pub write: WriterOptions,
    pub writer_id: String,
    pub checkpointer: Option<Arc<dyn Checkpointer>>,
    /// Pieces typed at once (default: the number of cores).
    pub parallelism: usize,
    /// Memory for rows in flight: pieces being read and typed, and buffered row groups
    /// (default 256 MiB; see [`ConvertOptions::with_memory_limit`]).
    pub memory_limit: usize,
}

impl ConvertOptions {
    pub fn new(table: ProducerOptions, spool_dir: PathBuf) -> Self {
        ConvertOptions {
            table,
            write: WriterOptions::new(spool_dir),
            writer_id: crate::writer_id(),
            checkpointer: None,
            parallelism: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            memory_limit: DEFAULT_MEMORY_LIMIT,
        }
        .with_memory_limit(DEFAULT_MEMORY_LIMIT)
    }

    /// Bounds the rows in flight by `bytes`: 3/8 for buffered row groups, 3/8 for pieces being
    /// read and typed (a piece of 8 MiB takes about 32 MiB once typed and split), the rest for
    /// the program and the encoders' own buffers. At least one piece is always in flight.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self.write.memory_budget = bytes / 8 * 3;
        self
    }

    /// Pieces read or typed at once within the memory limit.
    fn pieces_in_flight(&self) -> usize {
        (self.memory_limit / 8 * 3 / (4 * PIECE_BYTES)).clamp(1, self.parallelism.max(1))
    }
}

/// Memory for rows in flight unless told otherwise.
pub const DEFAULT_MEMORY_LIMIT: usize = 256 << 20;

/// What a conversion did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConvertStats {
    pub sources: u64,
    /// Sources a previous run finished: not read again.
    pub sources_skipped: u64,
    pub sources_failed: u64,
    /// Bytes read from the sources as stored (compressed).
    pub bytes_read: u64,
    pub rows_in: u64,
    /// Pieces a previous run committed whole: read, not typed.
    pub pieces_skipped: u64,
    /// Schema changes: sources whose new columns this run added to the table.
    pub columns_added: u64,
    /// Rows, files and commits of the writing stage (`rows_duplicate`: rows of pieces a
    /// previous run already committed).
    #[serde(flatten)]
    pub write: WriteStats,
}

/// The outcome of a conversion: what it did, and the sources that failed with why.
#[derive(Debug)]
pub struct Converted {
    pub stats: ConvertStats,
    pub failed: Vec<(String, Error)>,
}

/// Progress: (source bytes read, rows read) so far, over all sources.
pub type ConvertProgress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Creates the table from the first source if it does not exist; returns its definition.
pub async fn ensure_table_for(
    catalog: &dyn Catalog,
    opts: &ProducerOptions,
    first: &Source,
    spool: &std::path::Path,
) -> Result<TableDef> {
    match catalog.get_table(&opts.database, &opts.table).await {
        Err(Error::NotFound { .. }) => {}
        other => return other,
    }
    let columns = match &opts.columns {
        Some(c) => Ok(c.clone()),
        None => {
            let rt = tokio::runtime::Handle::current();
            let (first, o, spool) = (first.clone(), opts.clone(), spool.to_path_buf());
            tokio::task::spawn_blocking(move || infer_columns(&rt, &first, &o, &spool)).await?
        }
    };
    ensure_table(catalog, opts, || columns).await
}

/// The columns of a new table from its first source: Parquet's own schema, or inferred from a
/// sample of CSV records or JSON objects.
fn infer_columns(
    rt: &tokio::runtime::Handle,
    src: &Source,
    opts: &ProducerOptions,
    spool: &std::path::Path,
) -> Result<Vec<Column>> {
    match src.format {
        Format::Csv => {
            let input = src.open(rt, Arc::default())?;
            let (mut reader, header) = read_header(input, &src.name, &opts.format)?;
            infer_csv(
                &mut reader,
                header,
                &opts.format,
                opts.sample_rows,
                opts.date_format.as_deref(),
            )
        }
        Format::JsonLines => {
            let input = BufReader::new(src.open(rt, Arc::default())?);
            infer_json(input, &src.name, opts)
        }
        Format::Parquet => {
            let schema = parquet_schema(rt, src, spool)?;
            schema
                .fields()
                .iter()
                .map(|f| Ok(Column::new(f.name(), column_type_of(f.data_type()))))
                .collect()
        }
    }
}

fn infer_json(input: impl BufRead, name: &str, opts: &ProducerOptions) -> Result<Vec<Column>> {
    let mut names: Vec<String> = Vec::new();
    let mut values: Vec<(usize, String)> = Vec::new();
    let mut seen = 0;
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| read_error(name, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(OrderedObject(obj)) = serde_json::from_str(&line) else {
            if seen == 0 {
                return Err(Error::invalid_at(
                    name,
                    Some(i as u64 + 1),
                    "not a JSON object: JSON lines need one object per line",
                ));
            }
            continue;
        };
        for (k, v) in obj {
            let idx = match names.iter().position(|n| *n == k) {
                Some(p) => p,
                None => {
                    names.push(k);
                    names.len() - 1
                }
            };
            match v {
                serde_json::Value::Null => {}
                serde_json::Value::String(s) => values.push((idx, s)),
                other => values.push((idx, other.to_string())),
            }
        }
        seen += 1;
        if seen >= opts.sample_rows {
            break;
        }
    }
    if names.is_empty() {
        return Err(Error::invalid_at(
            name,
            None,
            "no JSON object to take columns from",
        ));
    }
    let mut inf = SchemaInference::new(names, opts.date_format.clone());
    for (i, v) in &values {
        inf.observe(*i, v);
    }
    Ok(inf.finish())
}

/// A JSON object's members in the order they are written (`serde_json::Map` sorts them).
struct OrderedObject(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for OrderedObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<OrderedObject, A::Error> {
                let mut members = Vec::new();
                while let Some(kv) = map.next_entry::<String, serde_json::Value>()? {
                    members.push(kv);
                }
                Ok(OrderedObject(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// The type a Parquet column lands as: integers as int64, floats and decimals as float64,
/// dates, timestamps (with a zone or without), booleans; anything else as its text.
fn column_type_of(t: &arrow::datatypes::DataType) -> ColumnType {
    use arrow::datatypes::DataType as D;
    match t {
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
            ColumnType::Int64
        }
        D::Float16 | D::Float32 | D::Float64 | D::Decimal32(..) | D::Decimal64(..) => {
            ColumnType::Float64
        }
        D::Decimal128(..) | D::Decimal256(..) => ColumnType::Float64,
        D::Boolean => ColumnType::Boolean,
        D::Date32 | D::Date64 => ColumnType::Date,
        D::Timestamp(_, None) => ColumnType::Timestamp,
        D::Timestamp(_, Some(_)) => ColumnType::TimestampTz,
        _ => ColumnType::String,
    }
}

fn read_error(name: &str, e: std::io::Error) -> Error {
    Error::invalid_at(name, None, format!("cannot read: {e}"))
}

fn parquet_schema(
    rt: &tokio::runtime::Handle,
    src: &Source,
    spool: &std::path::Path,
) -> Result<arrow::datatypes::SchemaRef> {
    let (f, _local) = open_parquet(rt, src, spool, &Arc::default())?;
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| parquet_error(&src.name, e))?;
    Ok(b.schema().clone())
}

/// A Parquet source's rows as JSON lines (one object per row, NULLs left out), for pieces and
/// chunk messages, with the file's columns as sluice types them (the types of columns the table
/// lacks, for schema evolution). A local file counts its progress into `bytes_read` in
/// proportion to the rows read (an object counts its download).
pub(crate) fn parquet_as_json_lines(
    rt: &tokio::runtime::Handle,
    src: &Source,
    spool: &std::path::Path,
    bytes_read: &Arc<AtomicU64>,
) -> Result<(Box<dyn std::io::Read + Send>, Vec<Column>)> {
    let (f, copy) = open_parquet(rt, src, spool, bytes_read)?;
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| parquet_error(&src.name, e))?
        .with_batch_size(PARQUET_BATCH_ROWS);
    let columns = b
        .schema()
        .fields()
        .iter()
        .map(|f| Column::new(f.name(), column_type_of(f.data_type())))
        .collect();
    let total_rows = b.metadata().file_metadata().num_rows().max(0) as u64;
    let batches = b.build().map_err(|e| parquet_error(&src.name, e))?;
    let progress = matches!(src.location, Location::Local(_))
        .then(|| (bytes_read.clone(), src.size, total_rows.max(1)));
    let reader = Box::new(ParquetJsonLines {
        batches,
        buf: Vec::new(),
        pos: 0,
        name: src.name.clone(),
        progress,
        _copy: copy,
    });
    Ok((reader, columns))
}

struct ParquetJsonLines {
    batches: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    buf: Vec<u8>,
    pos: usize,
    name: String,
    /// (counter, file bytes, file rows) for a local file's progress.
    progress: Option<(Arc<AtomicU64>, u64, u64)>,
    _copy: Option<LocalCopy>,
}

impl std::io::Read for ParquetJsonLines {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(batch) = self.batches.next() else {
                return Ok(0);
            };
            let batch = batch.map_err(|e| {
                std::io::Error::other(format!("{}: cannot read as Parquet: {e}", self.name))
            })?;
            if let Some((read, size, rows)) = &self.progress {
                read.fetch_add(size * batch.num_rows() as u64 / rows, Ordering::Relaxed);
            }
            self.buf.clear();
            self.pos = 0;
            let mut w = arrow::json::LineDelimitedWriter::new(&mut self.buf);
            w.write(&batch).map_err(std::io::Error::other)?;
            w.finish().map_err(std::io::Error::other)?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A local copy of an object, removed when dropped.
struct LocalCopy(PathBuf);

impl Drop for LocalCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Opens a Parquet source for reading: a local file as it is; an object is first copied to
/// the spool directory (Parquet is read from its end: the footer first), in ranged reads.
fn open_parquet(
    rt: &tokio::runtime::Handle,
    src: &Source,
    spool: &std::path::Path,
    bytes_read: &Arc<AtomicU64>,
) -> Result<(std::fs::File, Option<LocalCopy>)> {
    match &src.location {
        Location::Local(p) => Ok((
            std::fs::File::open(p).map_err(|e| read_error(&src.name, e))?,
            None,
        )),
        Location::Object { .. } => {
            std::fs::create_dir_all(spool).map_err(|e| Error::io(spool, e))?;
            let copy = LocalCopy(spool.join(format!("source-{}.parquet", uuid::Uuid::now_v7())));
            let mut out = std::fs::File::create(&copy.0).map_err(|e| Error::io(&copy.0, e))?;
            let mut input = src.open_raw(rt, bytes_read.clone())?;
            std::io::copy(&mut input, &mut out).map_err(|e| read_error(&src.name, e))?;
            let f = std::fs::File::open(&copy.0).map_err(|e| Error::io(&copy.0, e))?;
            Ok((f, Some(copy)))
        }
    }
}

fn parquet_error(name: &str, e: parquet::errors::ParquetError) -> Error {
    Error::invalid_at(name, None, format!("cannot read as Parquet: {e}"))
}

/// A piece of a source, ready to be typed.
enum Piece {
    Csv {
        raw: Vec<u8>,
        /// (line, length) of each record in `raw`, as the reader found them.
        spans: Vec<(u64, usize)>,
        /// The source's header: mapped to the table when typed (the table may gain columns
        /// while its pieces are in flight).
        header: Arc<Vec<String>>,
        format: CsvFormat,
    },
    Json {
        raw: Vec<u8>,
        first_line: u64,
        /// The columns of a Parquet source: the types its columns get if the table adds them.
        types: Option<Arc<Vec<Column>>>,
    },
}

impl Piece {
    fn into_raw(self) -> Vec<u8> {
        match self {
            Piece::Csv { raw, .. } | Piece::Json { raw, .. } => raw,
        }
    }
}

/// Piece buffers given back once typed, for the reader to fill again: a fresh 8 MiB buffer
/// costs 2,048 page faults (and zeroed pages) each time, a reused one none.
#[derive(Clone, Default)]
struct Buffers(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl Buffers {
    /// Buffers kept at most (the pieces in flight are bounded anyway).
    const KEPT: usize = 8;

    fn take(&self) -> Vec<u8> {
        let reused = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match reused {
            Some(mut b) => {
                b.clear();
                b
            }
            None => Vec::with_capacity(PIECE_BYTES + 64 * 1024),
        }
    }

    fn give(&self, buf: Vec<u8>) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < Self::KEPT && buf.capacity() >= PIECE_BYTES {
            kept.push(buf);
        }
    }
}

/// What the reader sends, in source order.
enum Event {
    Piece {
        source: usize,
        chunk: String,
        piece: Piece,
    },
    /// The source was converted by an earlier run.
    Skipped(usize),
    /// A piece an earlier run committed whole.
    PieceDone(usize),
    /// Everything of the source was read.
    End(usize),
    Failed(usize, Error),
}

/// A typed piece, with the piece when it must be typed again (the table lacks its columns).
type Typed = (Result<DecodedChunk>, Option<Piece>);

/// What the main loop waits on, in order.
enum Pending {
    Typed(usize, tokio::task::JoinHandle<Typed>),
    /// A piece typed again after the table gained its columns.
    Ready(usize, DecodedChunk),
    Event(Event),
}

#[derive(Default)]
struct SourceState {
    /// Partitions whose open file holds rows of this source.
    pending: HashSet<String>,
    read: bool,
    done: bool,
    failed: bool,
}

/// Converts `sources` into the table named in `opts` (created from the first source if
/// missing). The Delta logs are opened (and created) here; start-up recovery of uploads that an
/// earlier run never committed is [`crate::repair::recover`]'s, as for the consumer.
pub async fn convert(
    sources: Vec<Source>,
    catalog: Arc<dyn Catalog>,
    lake: Lake,
    opts: ConvertOptions,
    progress: Option<ConvertProgress>,
) -> Result<Converted> {
    let first = sources
        .first()
        .ok_or_else(|| Error::invalid("no sources to convert"))?;
    let def = ensure_table_for(&*catalog, &opts.table, first, &opts.write.spool_dir).await?;
    let layout = Arc::new(TableLayout::from_def(&def)?);
    let (ledger, quarantine) =
        crate::consumer::open_logs(&lake, &def, &opts.writer_id, opts.checkpointer.clone()).await?;
    let table = def.name.clone();
    let mut writer =
        TableWriter::new(opts.write.clone(), lake, layout.clone(), ledger, quarantine)?;
    let fingerprints = sources
        .iter()
        .map(|s| s.fingerprint(&table))
        .collect::<Result<Vec<_>>>()?;
    let bytes_read = Arc::new(AtomicU64::new(0));
    let evolver = Arc::new(crate::evolve::Evolver {
        catalog: catalog.clone(),
        lake: writer.lake().clone(),
        database: def.database.clone(),
        table: def.name.clone(),
        writer_id: opts.writer_id.clone(),
    });
    let mut pieces = Pieces::start(
        sources.clone(),
        fingerprints.clone(),
        Finished::of(&writer, &fingerprints),
        layout.clone(),
        evolver,
        opts.table.format.clone(),
        opts.write.spool_dir.clone(),
        opts.pieces_in_flight(),
        bytes_read.clone(),
    );
    let mut state: Vec<SourceState> = sources.iter().map(|_| SourceState::default()).collect();
    let mut stats = ConvertStats {
        sources: sources.len() as u64,
        ..Default::default()
    };
    let mut failed = Vec::new();
    let mut piece_state = PieceState::default();
    let result: Result<()> = async {
        while let Some((s, item)) = pieces.next().await? {
            match item {
                Item::Chunk(d) => {
                    stats.rows_in += d.rows_in;
                    let chunk = d.chunk.clone();
                    let written = tokio::task::block_in_place(|| writer.write(d))?;
                    piece_state.written(chunk, &written.waiting);
                    state[s].pending.extend(written.waiting);
                    if let Some(p) = &progress {
                        p(bytes_read.load(Ordering::Relaxed), stats.rows_in);
                    }
                    if !written.due.is_empty() {
                        flush(
                            &mut writer,
                            &mut state,
                            &mut piece_state,
                            &fingerprints,
                            written.due,
                            false,
                        )
                        .await?;
                    }
                }
                Item::PieceDone => stats.pieces_skipped += 1,
                Item::Evolved(layout) => {
                    stats.columns_added += 1;
                    tokio::task::block_in_place(|| writer.set_layout(layout))?;
                }
                Item::Skipped => {
                    stats.sources_skipped += 1;
                    state[s].done = true;
                    info!(source = %sources[s].name, "converted by an earlier run; skipped");
                }
                Item::End => state[s].read = true,
                Item::Failed(e) => {
                    warn!(source = %sources[s].name, error = %e, "source failed");
                    if !state[s].failed {
                        state[s].failed = true;
                        failed.push((sources[s].name.clone(), e));
                    }
                }
            }
        }
        let all = writer.open_partitions();
        flush(
            &mut writer,
            &mut state,
            &mut piece_state,
            &fingerprints,
            all,
            true,
        )
        .await?;
        // A failed source is read again by the next run: record the pieces the last commit
        // finished, so that it neither types nor writes them.
        if state.iter().any(|s| s.failed) && !piece_state.done.is_empty() {
            flush(
                &mut writer,
                &mut state,
                &mut piece_state,
                &fingerprints,
                Vec::new(),
                true,
            )
            .await?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        // Drop what was not committed.
        writer.discard_all();
    }
    let read = pieces.finish().await;
    result?;
    read?;
    stats.bytes_read = bytes_read.load(Ordering::Relaxed);
    stats.sources_failed = failed.len() as u64;
    stats.write = writer.stats().clone();
    if let Some(p) = &progress {
        p(stats.bytes_read, stats.rows_in);
    }
    Ok(Converted { stats, failed })
}

/// What earlier runs finished: whole sources (by index), and pieces (by chunk id).
pub(crate) struct Finished {
    pub sources: Vec<bool>,
    pub pieces: HashSet<String>,
}

impl Finished {
    /// Read from the writer's log: the "source done" records of `fingerprints`, every
    /// "piece done" record.
    pub(crate) fn of(writer: &TableWriter, fingerprints: &[String]) -> Self {
        Finished {
            sources: fingerprints
                .iter()
                .map(|fp| writer.is_committed(&marker(fp), SOURCE_PART))
                .collect(),
            pieces: writer.ledger().state().chunks_in(PIECE_PART),
        }
    }
}

/// What [`Pieces::next`] gives for a source, in source order.
pub(crate) enum Item {
    /// Typed rows of one piece.
    Chunk(DecodedChunk),
    /// The source was converted by an earlier run.
    Skipped,
    /// A piece an earlier run committed whole: not typed.
    PieceDone,
    /// Everything of the source was read.
    End,
    /// The source could not be read further.
    Failed(Error),
    /// The table gained columns (a source has them, and the policy is `evolve`): rows that
    /// follow are typed for this layout, which the writer takes before them.
    Evolved(Arc<TableLayout>),
}

/// Sources read in order on one blocking thread, cut into pieces typed on the blocking pool
/// (`parallelism` at once), given back in order. Memory is bounded by the pieces in flight.
pub(crate) struct Pieces {
    buffers: Buffers,
    rx: mpsc::Receiver<Event>,
    queue: VecDeque<Pending>,
    typing: usize,
    parallelism: usize,
    input_open: bool,
    layout: Arc<TableLayout>,
    evolver: Arc<crate::evolve::Evolver>,
    names: Vec<String>,
    reader: tokio::task::JoinHandle<Result<()>>,
}

impl Pieces {
    /// Starts reading. Sources and pieces in `finished` are not typed ([`Item::Skipped`],
    /// [`Item::PieceDone`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        sources: Vec<Source>,
        fingerprints: Vec<String>,
        finished: Finished,
        layout: Arc<TableLayout>,
        evolver: Arc<crate::evolve::Evolver>,
        format: CsvFormat,
        spool: PathBuf,
        parallelism: usize,
        bytes_read: Arc<AtomicU64>,
    ) -> Self {
        let parallelism = parallelism.max(1);
        let (tx, rx) = mpsc::channel::<Event>(parallelism);
        let names = sources.iter().map(|s| s.name.clone()).collect();
        let buffers = Buffers::default();
        let reader = {
            let (layout, reader_buffers) = (layout.clone(), buffers.clone());
            let rt = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                read_sources(
                    &rt,
                    &sources,
                    &fingerprints,
                    &finished,
                    &layout,
                    &format,
                    &spool,
                    &bytes_read,
                    &reader_buffers,
                    &tx,
                )
            })
        };
        Pieces {
            buffers,
            rx,
            queue: VecDeque::new(),
            typing: 0,
            parallelism,
            input_open: true,
            layout,
            evolver,
            names,
            reader,
        }
    }

    /// The next item, in source order; `None` when every source is through.
    pub(crate) async fn next(&mut self) -> Result<Option<(usize, Item)>> {
        while self.input_open && self.typing < self.parallelism {
            match self.rx.recv().await {
                None => self.input_open = false,
                Some(Event::Piece {
                    source,
                    chunk,
                    piece,
                }) => {
                    self.typing += 1;
                    let (layout, name) = (self.layout.clone(), self.names[source].clone());
                    let buffers = self.buffers.clone();
                    let h = tokio::task::spawn_blocking(move || {
                        let d = type_piece(&layout, &piece, &name, &chunk);
                        // Kept only to be typed again once the table has new columns.
                        if matches!(&d, Ok(d) if !d.new_columns.is_empty()) {
                            (d, Some(piece))
                        } else {
                            buffers.give(piece.into_raw());
                            (d, None)
                        }
                    });
                    self.queue.push_back(Pending::Typed(source, h));
                }
                Some(e) => self.queue.push_back(Pending::Event(e)),
            }
        }
        Ok(match self.queue.pop_front() {
            None => None,
            Some(Pending::Typed(s, h)) => {
                self.typing -= 1;
                let (d, piece) = h.await?;
                let d = d?;
                match piece {
                    Some(piece) => self.evolve(s, d, piece).await?,
                    None => Some((s, Item::Chunk(d))),
                }
            }
            Some(Pending::Ready(s, d)) => Some((s, Item::Chunk(d))),
            Some(Pending::Event(Event::Skipped(s))) => Some((s, Item::Skipped)),
            Some(Pending::Event(Event::PieceDone(s))) => Some((s, Item::PieceDone)),
            Some(Pending::Event(Event::End(s))) => Some((s, Item::End)),
            Some(Pending::Event(Event::Failed(s, e))) => Some((s, Item::Failed(e))),
            Some(Pending::Event(Event::Piece { .. })) => unreachable!("pieces are typed"),
        })
    }

    /// A piece with columns the table lacks (policy `evolve`): adds them (unless another
    /// piece or writer did), and types the piece again.
    async fn evolve(
        &mut self,
        s: usize,
        d: DecodedChunk,
        piece: Piece,
    ) -> Result<Option<(usize, Item)>> {
        let name = self.names[s].clone();
        let missing: Vec<Column> = d
            .new_columns
            .into_iter()
            .filter(|c| !self.layout.source_columns.iter().any(|t| t.name == c.name))
            .collect();
        let mut evolved = None;
        if !missing.is_empty() {
            match self.evolver.add_columns(&missing, &name).await {
                Ok(layout) => {
                    self.layout = layout.clone();
                    evolved = Some(layout);
                }
                Err(e @ Error::InvalidInput { .. }) => return Ok(Some((s, Item::Failed(e)))),
                Err(e) => return Err(e),
            }
        }
        let layout = self.layout.clone();
        let chunk = d.chunk;
        let buffers = self.buffers.clone();
        let again = tokio::task::spawn_blocking(move || {
            let d = type_piece(&layout, &piece, &name, &chunk);
            buffers.give(piece.into_raw());
            d
        })
        .await??;
        if !again.new_columns.is_empty() {
            return Err(Error::Task(format!(
                "{}: the table still lacks columns after adding them",
                self.names[s]
            )));
        }
        Ok(Some(match evolved {
            Some(layout) => {
                self.queue.push_front(Pending::Ready(s, again));
                (s, Item::Evolved(layout))
            }
            None => (s, Item::Chunk(again)),
        }))
    }

    /// Stops reading (if not done) and waits for the reader.
    pub(crate) async fn finish(mut self) -> Result<()> {
        self.rx.close();
        while self.rx.recv().await.is_some() {}
        match self.reader.await? {
            // Stopped early on purpose.
            Err(Error::Task(m)) if m == STOPPED => Ok(()),
            other => other,
        }
    }
}

const STOPPED: &str = "convert stopped";

pub(crate) fn marker(fp: &str) -> String {
    format!("src-{fp}")
}

/// Commits `parts`, with the "source done" record of every source whose last rows are in
/// them (`last`: every open file is in `parts`, so every source read to its end is done).
/// Pieces whose rows wait in open files, and pieces whose rows are all committed.
#[derive(Default)]
struct PieceState {
    /// Chunk → partitions whose open file holds its rows.
    pending: HashMap<String, HashSet<String>>,
    /// Pieces done, to be recorded in the next commit.
    done: Vec<String>,
}

impl PieceState {
    fn written(&mut self, chunk: String, waiting: &HashSet<String>) {
        if waiting.is_empty() {
            // Every part was committed before (a run that stopped before recording the piece).
            self.done.push(chunk);
        } else {
            self.pending.insert(chunk, waiting.clone());
        }
    }

    fn committed(&mut self, committed: &[(String, HashSet<String>)]) {
        for (p, chunks) in committed {
            for c in chunks {
                if let Some(w) = self.pending.get_mut(c) {
                    w.remove(p);
                    if w.is_empty() {
                        self.pending.remove(c);
                        self.done.push(c.clone());
                    }
                }
            }
        }
    }
}

/// Commits `parts`, with the "source done" record of every source whose last rows are in
/// them (`last`: every open file is in `parts`, so every source read to its end is done), and
/// the "piece done" records of pieces committed whole by earlier flushes.
async fn flush(
    writer: &mut TableWriter,
    state: &mut [SourceState],
    pieces: &mut PieceState,
    fps: &[String],
    parts: Vec<String>,
    last: bool,
) -> Result<()> {
    let set: HashSet<&String> = parts.iter().collect();
    let finishing: Vec<usize> = state
        .iter()
        .enumerate()
        .filter(|(_, s)| s.read && !s.done && !s.failed)
        .filter(|(_, s)| last || s.pending.iter().all(|p| set.contains(p)))
        .map(|(i, _)| i)
        .collect();
    let piece_markers = std::mem::take(&mut pieces.done);
    let markers = finishing
        .iter()
        .map(|i| ChunkPart {
            chunk: marker(&fps[*i]),
            partition: SOURCE_PART.to_string(),
        })
        .chain(piece_markers.into_iter().map(|chunk| ChunkPart {
            chunk,
            partition: PIECE_PART.to_string(),
        }))
        .collect();
    match writer.flush(parts.clone(), markers).await? {
        Flushed::Committed(c) => {
            for s in state.iter_mut() {
                s.pending.retain(|p| !set.contains(p));
            }
            for i in finishing {
                state[i].done = true;
            }
            pieces.committed(&c);
            Ok(())
        }
        Flushed::Conflict => Err(Error::Conflict(
            "another process committed rows of these sources at the same time (two conversions of the same files?); what this run committed stays committed: run it again to finish".into(),
        )),
    }
}

/// Reads every source in order and sends its pieces. Returns an error only when the receiver
/// is gone; a source that fails is reported as [`Event::Failed`].
#[allow(clippy::too_many_arguments)]
fn read_sources(
    rt: &tokio::runtime::Handle,
    sources: &[Source],
    fps: &[String],
    finished: &Finished,
    layout: &TableLayout,
    format: &CsvFormat,
    spool: &std::path::Path,
    bytes_read: &Arc<AtomicU64>,
    buffers: &Buffers,
    tx: &mpsc::Sender<Event>,
) -> Result<()> {
    let send = |e: Event| tx.blocking_send(e).map_err(|_| Error::Task(STOPPED.into()));
    for (i, src) in sources.iter().enumerate() {
        if finished.sources[i] {
            bytes_read.fetch_add(src.size, Ordering::Relaxed);
            send(Event::Skipped(i))?;
            continue;
        }
        let mut pieces = |chunk: String, piece: Piece| {
            if finished.pieces.contains(&chunk) {
                return send(Event::PieceDone(i));
            }
            send(Event::Piece {
                source: i,
                chunk,
                piece,
            })
        };
        let r = match src.format {
            Format::Csv => read_csv(
                rt,
                src,
                &fps[i],
                layout,
                format,
                bytes_read,
                buffers,
                &mut pieces,
            ),
            Format::JsonLines => src
                .open(rt, bytes_read.clone())
                .and_then(|input| read_json(input, src, &fps[i], None, buffers, &mut pieces)),
            // Parquet rows travel as JSON lines, as they do through the queue: one way to type
            // them.
            Format::Parquet => {
                parquet_as_json_lines(rt, src, spool, bytes_read).and_then(|(input, types)| {
                    let names: Vec<String> = types.iter().map(|c| c.name.clone()).collect();
                    layout.check_partition_columns(&names, &src.name, None, "the file")?;
                    read_json(
                        input,
                        src,
                        &fps[i],
                        Some(Arc::new(types)),
                        buffers,
                        &mut pieces,
                    )
                })
            }
        };
        match r {
            Ok(()) => send(Event::End(i))?,
            // The receiver is gone: stop.
            Err(Error::Task(m)) if m == STOPPED => return Err(Error::Task(m)),
            Err(e) => send(Event::Failed(i, e))?,
        }
    }
    Ok(())
}

fn chunk_id(fp: &str, index: u64, raw: &[u8]) -> String {
    format!("{fp}-{index}-{:016x}", xxhash_rust::xxh3::xxh3_64(raw))
}

#[allow(clippy::too_many_arguments)]
fn read_csv(
    rt: &tokio::runtime::Handle,
    src: &Source,
    fp: &str,
    layout: &TableLayout,
    format: &CsvFormat,
    bytes_read: &Arc<AtomicU64>,
    buffers: &Buffers,
    send: &mut dyn FnMut(String, Piece) -> Result<()>,
) -> Result<()> {
    let input = src.open(rt, bytes_read.clone())?;
    let (mut reader, header) = read_header(input, &src.name, format)?;
    // Refused here (a name twice, no partition column); what the table lacks is the policy's.
    layout.map_header(&header, &src.name)?;
    let header = Arc::new(header);
    let mut buf: Vec<u8> = buffers.take();
    let mut spans: Vec<(u64, usize)> = Vec::new();
    let mut index = 0u64;
    let mut emit = |buf: &mut Vec<u8>, spans: &mut Vec<(u64, usize)>| -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let raw = std::mem::replace(buf, buffers.take());
        let chunk = chunk_id(fp, index, &raw);
        index += 1;
        send(
            chunk,
            Piece::Csv {
                raw,
                spans: std::mem::take(spans),
                header: header.clone(),
                format: format.clone(),
            },
        )
    };
    let mut records = 0u64;
    loop {
        match reader.next_into(&mut buf) {
            Ok(Some(span)) => {
                records += 1;
                spans.push((span.line, span.len));
                if buf.len() >= PIECE_BYTES {
                    emit(&mut buf, &mut spans)?;
                }
            }
            Ok(None) => break,
            Err(e) => {
                // What was read before the error is converted; then the error is reported.
                emit(&mut buf, &mut spans)?;
                return Err(e);
            }
        }
    }
    if records == 0 {
        return Err(Error::invalid_at(
            &src.name,
            Some(1),
            "the file has a header but no rows",
        ));
    }
    emit(&mut buf, &mut spans)
}

/// Cuts JSON lines (a JSON-lines source, or a Parquet source's rows as JSON) into pieces.
fn read_json(
    input: Box<dyn std::io::Read + Send>,
    src: &Source,
    fp: &str,
    types: Option<Arc<Vec<Column>>>,
    buffers: &Buffers,
    send: &mut dyn FnMut(String, Piece) -> Result<()>,
) -> Result<()> {
    let piece = |raw: Vec<u8>, first_line: u64| Piece::Json {
        raw,
        first_line,
        types: types.clone(),
    };
    let mut input = BufReader::with_capacity(1 << 20, input);
    let mut buf: Vec<u8> = buffers.take();
    let (mut line, mut first_line, mut index) = (0u64, 1u64, 0u64);
    loop {
        let before = buf.len();
        let n = input
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::invalid_at(&src.name, Some(line + 1), format!("cannot read: {e}")));
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(before);
                if !buf.is_empty() {
                    let raw = std::mem::take(&mut buf);
                    send(chunk_id(fp, index, &raw), piece(raw, first_line))?;
                }
                return Err(e);
            }
        };
        if n > 0 {
            line += 1;
        }
        if (n == 0 && !buf.is_empty()) || buf.len() >= PIECE_BYTES {
            let raw = std::mem::replace(&mut buf, buffers.take());
            send(chunk_id(fp, index, &raw), piece(raw, first_line))?;
            index += 1;
            first_line = line + 1;
        }
        if n == 0 {
            if line == 0 {
                return Err(Error::invalid_at(&src.name, None, "the file has no rows"));
            }
            return Ok(());
        }
    }
}

/// Types a piece: the same rules as the consumer's (a row is taken whole or quarantined whole
/// with its source, line and reason).
fn type_piece(
    layout: &TableLayout,
    piece: &Piece,
    source: &str,
    chunk: &str,
) -> Result<DecodedChunk> {
    match piece {
        Piece::Csv {
            raw,
            spans,
            header,
            format,
        } => {
            let map = layout.map_header(header, source)?;
            let mut typer = RowTyper::new(layout, spans.len());
            add_csv_spans(
                &mut typer,
                raw,
                spans,
                format,
                &map,
                OnFrozen::Quarantine,
                source,
                chunk,
            )?;
            typer.finish(chunk)
        }
        Piece::Json {
            raw,
            first_line,
            types,
        } => {
            let mut typer = RowTyper::new(layout, raw.len() / 128);
            let docs = raw
                .split(|b| *b == b'\n')
                .enumerate()
                .map(|(i, l)| (first_line + i as u64, l))
                .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace));
            let mut texts = Vec::new();
            for (line, l) in docs {
                match std::str::from_utf8(l) {
                    Ok(t) => texts.push((line, t)),
                    Err(e) => typer.reject(crate::rows::QuarantineRow {
                        source: source.to_string(),
                        line,
                        raw: String::from_utf8_lossy(l).into_owned(),
                        reason: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                        chunk: chunk.to_string(),
                    }),
                }
            }
            crate::decode::add_json_docs(&mut typer, layout, texts, source, chunk);
            let mut d = typer.finish(chunk)?;
            // A Parquet source's new columns keep their own types.
            if let Some(types) = types {
                for c in &mut d.new_columns {
                    if let Some(t) = types.iter().find(|t| t.name == c.name) {
                        c.ty = t.ty;
                    }
                }
            }
            Ok(d)
        }
    }
}
