//! `convert`: files and objects straight into a table, without a queue, under the same
//! exactly-once commit protocol as the consumer.
//!
//! ```text
//!  reader (one blocking thread): for each source, in order
//!      skip it if its "source done" record is in the log
//!      open ─► decompress ─► cut into pieces of 8 MiB of whole records (CSV, or JSON lines;
//!      Parquet rows are read as JSON lines) with deterministic chunk ids  ──► bounded channel
//!  typing (blocking pool, one piece per core at once, order kept) ─► DecodedChunk
//!  TableWriter: spool per partition ─► rotate by rows/bytes ─► upload (staged) ─► Delta commit
//!  a source is atomic: its rows become visible in one commit, after its end, with its "source
//!  done" record; a later run skips it without reading it
//! ```
//!
//! A piece's chunk id is `<source fingerprint>-<index>-<content hash>`, and each commit records
//! the chunk parts it holds, as the consumer's do. Run twice, or again after a crash, a source
//! already committed adds nothing.
//!
//! Files that fill up while a source is being read are uploaded but not committed (staged);
//! the first source end after that commits every file written so far: small sources share
//! files, and a large one is committed whole. A source that fails part-way (a truncated gzip,
//! an unterminated quote at its end, an unreadable object) contributes no rows: every file not
//! committed is discarded (staged uploads are removed), the sources whose rows shared those
//! files are read again in the same run, the other sources are converted, and the run fails at
//! the end naming it. A stop (or crash) part-way through a source likewise commits nothing of
//! it: the files it staged stay, recorded in its spool (`staged.log`), and the next run on the
//! same home takes them over (committed as they are, their whole pieces not typed again) and
//! reads the rest; finished sources are not read at all.
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

use crate::catalog::Catalog;
use crate::decode::rows::{
    CsvRecords, DecodedChunk, OnFrozen, RowTyper, add_csv_records, add_csv_spans,
};
use crate::delta::log::{Checkpointer, ChunkPart};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::pipeline::setup::{TableSettings, ensure_table_for};
use crate::pipeline::table_writer::{Flushed, TableWriter, WriteStats, WriterOptions};
use crate::schema::Column;
use crate::source::csv::CsvFormat;
use crate::source::{Format, Source};
use crate::table::TableLayout;

mod pieces;

pub(crate) use pieces::{Item, Pieces, Reading};

/// Partition key of the "source done" records in the Delta log.
pub(crate) const SOURCE_PART: &str = "__source__";
/// Partition key of the "piece done" records: every row of the piece is committed, so a run
/// after a crash reads the piece (to find where the next one starts) but neither types nor
/// writes it.
pub(crate) const PIECE_PART: &str = "__piece__";

/// Bytes of CSV or JSON-lines records (Parquet rows are JSON lines) per piece. Part of every
/// chunk id: changing it would make a half-done conversion convert its sources again.
const PIECE_BYTES: usize = 8 << 20;

/// `convert` settings.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The table, its CSV dialect, partitioning and (declared) columns, as for the producer.
    pub table: TableSettings,
    /// Files: rotation, memory, Parquet settings, spool directory, retries.
    pub write: WriterOptions,
    /// Who commits (recorded in the Delta log).
    pub writer_id: String,
    /// Writes checkpoints (`sluice-delta` has one); none without.
    pub checkpointer: Option<Arc<dyn Checkpointer>>,
    /// Evaluates the table's CHECK constraints and invariants (none: a table that has any is
    /// refused).
    pub constraints: Option<Arc<dyn crate::delta::constraints::ConstraintEngine>>,
    /// Pieces typed at once (default: the number of cores).
    pub parallelism: usize,
    /// Memory for rows in flight: pieces being read and typed, and buffered row groups
    /// (default 256 MiB; see [`ConvertOptions::with_memory_limit`]).
    pub memory_limit: usize,
    /// Once this turns true, `convert` takes no more pieces: it commits what it has written,
    /// with the records of the pieces it finished, and returns ([`Converted::stopped`]); a
    /// later run resumes where it stopped.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// Records of the files an earlier `convert` of this table staged and never committed
    /// ([`crate::pipeline::startup::Startup::staged`]): those of this run's sources are taken
    /// over, and the pieces they hold whole are not typed again.
    pub resume: Vec<String>,
}

impl ConvertOptions {
    /// Options for converting into `table`, spooling in `spool_dir`, with the defaults.
    pub fn new(table: TableSettings, spool_dir: PathBuf) -> Self {
        ConvertOptions {
            table,
            write: WriterOptions::new(spool_dir),
            writer_id: crate::writer_id(),
            checkpointer: None,
            constraints: None,
            parallelism: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            memory_limit: DEFAULT_MEMORY_LIMIT,
            stop: None,
            resume: Vec::new(),
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
pub(crate) const DEFAULT_MEMORY_LIMIT: usize = 256 << 20;

/// What a conversion did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConvertStats {
    /// Sources given.
    pub sources: u64,
    /// Sources a previous run finished: not read again.
    pub sources_skipped: u64,
    /// Sources that failed (named in [`Converted::failed`]).
    pub sources_failed: u64,
    /// Bytes read from the sources as stored (compressed).
    pub bytes_read: u64,
    /// Rows read.
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
    /// What the conversion did.
    pub stats: ConvertStats,
    /// Sources that failed, each with why; what they gave before is committed.
    pub failed: Vec<(String, Error)>,
    /// The run was stopped ([`ConvertOptions::stop`]) before every source was read.
    pub stopped: bool,
}

/// Progress: (source bytes read, rows read) so far, over all sources.
pub type ConvertProgress = Arc<dyn Fn(u64, u64) + Send + Sync>;

#[derive(Default)]
struct SourceState {
    /// Partitions whose open file holds rows of this source.
    pending: HashSet<String>,
    /// Rows of it were written in this pass.
    started: bool,
    read: bool,
    done: bool,
    failed: bool,
}

/// Converts `sources` into the table named in `opts` (created from the first source if
/// missing). The Delta logs are opened (and created) here; start-up recovery of uploads that an
/// earlier run never committed is `crate::pipeline::startup::recover`'s, as for the consumer.
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
    let (ledger, quarantine) = crate::delta::open::open_logs(
        &lake,
        &def,
        &opts.writer_id,
        opts.checkpointer.clone(),
        opts.constraints.clone(),
    )
    .await?;
    let defaults = ledger.column_defaults()?;
    let layout = Arc::new(TableLayout::from_def(&def)?.with_defaults(&defaults));
    let table = def.name.clone();
    let mut writer =
        TableWriter::new(opts.write.clone(), lake, layout.clone(), ledger, quarantine)?;
    let fingerprints = sources
        .iter()
        .map(|s| s.fingerprint(&table))
        .collect::<Result<Vec<_>>>()?;
    let bytes_read = Arc::new(AtomicU64::new(0));
    let evolver = Arc::new(crate::delta::evolve::Evolver {
        catalog: catalog.clone(),
        lake: writer.lake().clone(),
        database: def.database.clone(),
        table: def.name.clone(),
        writer_id: opts.writer_id.clone(),
        defaults,
    });
    let mut state: Vec<SourceState> = sources.iter().map(|_| SourceState::default()).collect();
    let mut stats = ConvertStats {
        sources: sources.len() as u64,
        ..Default::default()
    };
    let mut failed = Vec::new();
    let mut stop = opts.stop.clone();
    let mut stopped = false;
    // Pieces earlier runs committed, per source, as the last pass that read it counted them.
    let mut pieces_skipped = vec![0u64; sources.len()];
    // What was counted when the last commit landed: rows of a pass that is discarded are
    // neither read nor written.
    let mut at_commit = (0u64, writer.stats().clone());
    // What an earlier run staged of these sources: taken over, its whole pieces not typed.
    let prefixes: Vec<String> = fingerprints.iter().map(|fp| format!("{fp}-")).collect();
    let mut resumed = writer
        .adopt_staged(&opts.resume, |chunk| {
            prefixes.iter().any(|p| chunk.starts_with(p.as_str()))
        })
        .await?;
    // Passes over the sources: a source that fails part-way discards every row not committed
    // (its own, and those of sources read before it whose rows shared its files), and the
    // sources not finished are read again without it. At most one pass more per failed source.
    loop {
        let mut finished = Finished::of(&writer, &fingerprints);
        for (i, st) in state.iter().enumerate() {
            finished.sources[i] |= st.failed;
        }
        for c in &resumed {
            finished
                .pieces
                .insert(crate::delta::log::part_key(c, PIECE_PART));
        }
        let reading = Reading {
            sources: sources.clone(),
            fingerprints: fingerprints.clone(),
            finished,
            format: opts.table.format.clone(),
            spool: opts.write.spool_dir.clone(),
            bytes_read: bytes_read.clone(),
        };
        let mut pieces = Pieces::start(
            reading,
            writer.layout().clone(),
            evolver.clone(),
            opts.pieces_in_flight(),
        );
        let mut piece_state = PieceState::default();
        let mut again = false;
        let result: Result<()> = async {
            let mut current = None;
            loop {
                // Between pieces: a stop asked for ends the reading here.
                let next = match &mut stop {
                    Some(rx) if *rx.borrow() => {
                        stopped = true;
                        break;
                    }
                    Some(rx) => tokio::select! {
                        biased;
                        changed = rx.changed() => {
                            if changed.is_err() {
                                stop = None;
                            }
                            continue;
                        }
                        next = pieces.next() => next?,
                    },
                    None => pieces.next().await?,
                };
                let Some((s, item)) = next else {
                    break;
                };
                if current != Some(s) {
                    current = Some(s);
                    pieces_skipped[s] = 0;
                }
                // Staged files are held while the source is read: their lease is kept fresh.
                writer.renew_lease().await?;
                match item {
                    Item::Chunk(d) => {
                        state[s].started = true;
                        stats.rows_in += d.rows_in;
                        let chunk = d.chunk.clone();
                        let written = writer.write_rows(d).await?;
                        piece_state.written(chunk, &written.waiting);
                        state[s].pending.extend(written.waiting);
                        if let Some(p) = &progress {
                            p(bytes_read.load(Ordering::Relaxed), stats.rows_in);
                        }
                        // Full files are uploaded, not committed: the source's rows become
                        // visible together, in the commit after its end.
                        if !written.due.is_empty() {
                            let whole = piece_state.staged(&written.due);
                            writer.stage(written.due).await?;
                            writer.note_staged_pieces(whole)?;
                        }
                    }
                    Item::PieceDone => {
                        // Its rows are committed, or in files taken over: part of this source
                        // all the same.
                        state[s].started = true;
                        pieces_skipped[s] += 1;
                    }
                    Item::Evolved(layout) => {
                        stats.columns_added += 1;
                        writer.set_layout(layout).await?;
                    }
                    Item::Skipped => {
                        if !state[s].done && !state[s].failed {
                            stats.sources_skipped += 1;
                            state[s].done = true;
                            info!(source = %sources[s].name, "converted by an earlier run; skipped");
                        }
                    }
                    Item::End => {
                        state[s].read = true;
                        // Every row not committed is of a source read to its end: commit them
                        // all once files were staged (small sources share files until then).
                        if writer.has_staged() {
                            let all = writer.open_partitions();
                            flush(&mut writer, &mut state, &mut piece_state, &fingerprints, all, true)
                                .await?;
                            at_commit = (stats.rows_in, writer.stats().clone());
                        }
                    }
                    Item::Failed(e) => {
                        warn!(source = %sources[s].name, error = %e, "source failed: none of its rows is committed");
                        state[s].failed = true;
                        failed.push((sources[s].name.clone(), e));
                        // Nothing of it is committed, nor anything that shared its files.
                        writer.discard_all();
                        writer.discard_staged().await;
                        resumed.clear();
                        stats.rows_in = at_commit.0;
                        writer.restore_stats(at_commit.1.clone());
                        for st in state.iter_mut().filter(|st| !st.done) {
                            st.read = false;
                            st.started = false;
                            st.pending.clear();
                        }
                        again = true;
                        break;
                    }
                }
            }
            if again {
                return Ok(());
            }
            // A stop part-way through a source: its rows, and those sharing its files, are
            // not committed. The files staged stay, for the next run to take over; the rows
            // of open files are read again.
            let partway = state
                .iter()
                .any(|st| st.started && !st.read && !st.done && !st.failed);
            if stopped && partway {
                writer.discard_all();
                stats.rows_in = at_commit.0;
                writer.restore_stats(at_commit.1.clone());
                return Ok(());
            }
            let all = writer.open_partitions();
            flush(&mut writer, &mut state, &mut piece_state, &fingerprints, all, true).await?;
            at_commit = (stats.rows_in, writer.stats().clone());
            Ok(())
        }
        .await;
        if result.is_err() {
            // Drop what was not committed.
            writer.discard_all();
            writer.discard_staged().await;
        }
        let read = pieces.finish().await;
        result?;
        read?;
        if !again {
            break;
        }
    }
    stats.pieces_skipped = pieces_skipped.iter().sum();
    stats.bytes_read = bytes_read.load(Ordering::Relaxed);
    stats.sources_failed = failed.len() as u64;
    stats.write = writer.stats().clone();
    if let Some(p) = &progress {
        p(stats.bytes_read, stats.rows_in);
    }
    if stopped {
        info!("convert stopped: a later run resumes where it stopped");
    }
    Ok(Converted {
        stats,
        failed,
        stopped,
    })
}

/// What earlier runs finished: whole sources (by index), and pieces (by chunk id).
pub(crate) struct Finished {
    pub sources: Vec<bool>,
    /// Keys of committed chunk parts ([`crate::delta::log::part_key`]): a piece is done when
    /// `part_key(piece, PIECE_PART)` is among them.
    pub pieces: crate::delta::log::Records,
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
            pieces: writer.ledger().state().records(),
        }
    }
}

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

    /// `parts` were staged: the pieces whose rows are now all in staged files (no longer
    /// waiting in open ones).
    fn staged(&mut self, parts: &[String]) -> Vec<String> {
        let mut whole = Vec::new();
        self.pending.retain(|chunk, waiting| {
            waiting.retain(|p| !parts.contains(p));
            if waiting.is_empty() {
                whole.push(chunk.clone());
                false
            } else {
                true
            }
        });
        whole
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
