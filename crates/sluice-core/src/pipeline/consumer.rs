//! The consumer: a pipeline of small stages.
//!
//! ```text
//!  receive (long poll, 10/call) ─► decode (blocking pool, in parallel, order kept)
//!    ─► drop chunk parts already committed or already pending here
//!    ─► append to the partition's spool file (Parquet, zstd)
//!    ─► rotate a file by rows, bytes or age: close ─► statistics ─► upload
//!       ─► Delta commit (data table, then quarantine table)
//!    ─► delete every message whose parts are all committed
//!  heartbeat: extend visibility of held messages every timeout/3
//! ```
//!
//! A message is deleted only after every partition its rows fall into is committed. On a
//! commit conflict (another consumer committed one of our chunk parts first) every open file
//! is discarded and every held message is released, to be delivered again and deduplicated.
//!
//! The library owns the delivery policy: [`Consumer::new`] opens (and creates) the table's Delta
//! logs with retries, refuses a table still on an earlier sluice's log, and holds messages for
//! the queue's own visibility timeout unless told otherwise; `crate::pipeline::startup::recover` is the
//! start-up recovery of uploads that dead consumers never committed.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::catalog::Catalog;
use crate::decode::rows::DecodedChunk;
use crate::delta::log::{Checkpointer, ChunkPart};
use crate::delta::open::open_logs;
use crate::error::retry::{Backoff, retry, transient};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::spool::{SpoolClaim, Spools};
use crate::metrics::{MESSAGES_CONSUMED, MESSAGES_DELETED, MESSAGES_FAILED, ROWS_IN, count};
use crate::pipeline::health::{Dependency, Health};
use crate::pipeline::table_writer::{Flushed, TableWriter, WriteStats, WriterOptions};
use crate::queue::{Queue, QueueExt, ReceiveOptions, ReceivedMessage};
use crate::table::TableLayout;

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The table the consumer writes.
    pub table: String,
    /// The table's catalog database.
    pub database: String,
    /// Files: rotation, memory, Parquet settings, spool directory, retries.
    pub write: WriterOptions,
    /// Close a partition's file this long after it was opened.
    pub rotate_age: Duration,
    /// Visibility timeout of received messages (default: the queue's).
    pub visibility_timeout: Option<Duration>,
    /// Stop once the queue is drained.
    pub once: bool,
    /// Long-poll wait per receive.
    pub wait: Duration,
    /// Identifies this consumer in commits.
    pub writer_id: String,
    /// Where to record why a message could not be processed (see `crate::queue::failures::record_failure`).
    pub dead_letter_log: Option<PathBuf>,
    /// Writes Delta checkpoints every 100 versions (none: readers replay every version).
    pub checkpointer: Option<Arc<dyn Checkpointer>>,
    /// Evaluates the table's CHECK constraints and invariants (none: a table that has any is
    /// refused).
    pub constraints: Option<Arc<dyn crate::delta::constraints::ConstraintEngine>>,
    /// Compacts partitions in the background while following (never with `once`).
    pub auto_compact: bool,
    /// A partition is compacted once it holds more than this many small files.
    pub compact_small_files: usize,
    /// Files below this size are small; compaction writes files of about this size.
    pub compact_target_bytes: u64,
    /// How often to look for partitions to compact.
    pub compact_every: Duration,
    /// The store of an S3 bucket, for queues that carry S3 event notifications (none: such
    /// messages cannot be processed and are dead-lettered with the reason).
    pub object_stores: Option<Arc<dyn BucketStores>>,
    /// Memory for rows in flight (see [`ConsumerOptions::with_memory_limit`]).
    pub memory_limit: usize,
    /// Read the queue's depth every few seconds into the metrics (one more request each time,
    /// billed on SQS): visible and in-flight messages, and the age of the oldest.
    pub report_queue_depth: bool,
    /// The queue's dead-letter queue, whose depth is reported with the queue's
    /// (`report_queue_depth`).
    pub dead_letter_queue: Option<Arc<dyn Queue>>,
    /// Where the consumer records that its queue, lake and catalog answered, and that it is
    /// stopping (for readiness probes); the catalog is then asked every 30 s.
    pub health: Option<Arc<Health>>,
    /// Bytes of message bodies received and not yet committed, above which every open file is
    /// committed: the queue keeps those bodies until then (the embedded queue on disk), and a
    /// crash replays them.
    pub max_uncommitted_bytes: u64,
}

/// Default of [`ConsumerOptions::max_uncommitted_bytes`]: 2 GiB.
pub(crate) const DEFAULT_MAX_UNCOMMITTED_BYTES: u64 = 2 << 30;

/// Opens the object store of a bucket by name (S3 event notifications name their bucket).
///
/// # Contract
/// `store` returns a store whose paths are the bucket's keys; it may be called once per
/// object, so it should be cheap (no request).
pub trait BucketStores: Send + Sync + std::fmt::Debug {
    /// The object store of `bucket`.
    fn store(&self, bucket: &str) -> Result<Arc<dyn object_store::ObjectStore>>;
}

impl ConsumerOptions {
    /// Bounds the rows in flight by `bytes`: 3/8 for buffered row groups, 3/8 for decoded
    /// messages waiting to be written (a message of 8 MiB, the claim-check default, takes about
    /// 32 MiB decoded), the rest for the program and the encoders' own buffers.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self.write.memory_budget = bytes / 8 * 3;
        self
    }

    /// Decoded messages waiting to be written, within the memory limit (2 to 6).
    fn decode_ahead(&self) -> usize {
        (self.memory_limit / 8 * 3 / (32 << 20)).clamp(2, 6)
    }

    /// Options for a consumer of `table` writing in `spool_dir` (which [`Consumer::start`]
    /// replaces with the spool it claims), with the defaults.
    pub fn new(table: &str, spool_dir: PathBuf) -> Self {
        ConsumerOptions {
            table: table.to_string(),
            database: crate::DEFAULT_DATABASE.to_string(),
            write: WriterOptions::new(spool_dir),
            rotate_age: Duration::from_secs(300),
            visibility_timeout: None,
            once: false,
            wait: Duration::from_secs(5),
            writer_id: crate::writer_id(),
            dead_letter_log: None,
            checkpointer: None,
            constraints: None,
            auto_compact: false,
            report_queue_depth: false,
            dead_letter_queue: None,
            health: None,
            compact_small_files: 32,
            compact_target_bytes: 128 << 20,
            compact_every: Duration::from_secs(60),
            object_stores: None,
            memory_limit: crate::pipeline::convert::DEFAULT_MEMORY_LIMIT,
            max_uncommitted_bytes: DEFAULT_MAX_UNCOMMITTED_BYTES,
        }
        .with_memory_limit(crate::pipeline::convert::DEFAULT_MEMORY_LIMIT)
    }
}

/// What a consumer did; printed as its summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerStats {
    /// Messages received.
    pub messages: u64,
    /// Messages that could not be decoded (dead-lettered after the queue's receive count).
    pub undecodable_messages: u64,
    /// Bytes of the message bodies received.
    pub received_bytes: u64,
    /// Rows in the messages.
    pub rows_in: u64,
    /// Rows, files and commits of the writing stage.
    #[serde(flatten)]
    pub write: WriteStats,
    /// Messages deleted (all their rows committed).
    pub deleted: u64,
    /// Background compactions that committed.
    pub compactions: u64,
    /// Messages given back to the queue unfinished because a stop was cut short (its deadline
    /// passed, or it was asked for again): they are delivered again, nothing is lost.
    pub released_unfinished: u64,
}

struct Held {
    receipt: String,
    /// Size of the message's body.
    bytes: u64,
    /// (chunk, partition) parts holding rows of this message that are not yet committed.
    waiting: HashSet<(String, String)>,
    /// Every row of the message was written (a notification's objects are read piece by
    /// piece: until the last one, an empty `waiting` does not mean done).
    complete: bool,
    /// "Source done" records of the message's objects, committed once it is done.
    markers: Vec<String>,
    /// When the message's chunk was produced, if its producer said.
    produced_at_ms: Option<i64>,
}

impl Held {
    /// Records the message's freshness as it is deleted: production to commit.
    fn observe_done(&self) {
        if let Some(t) = self.produced_at_ms {
            let secs = (chrono::Utc::now().timestamp_millis() - t).max(0) as f64 / 1000.0;
            metrics::histogram!(crate::metrics::COMMIT_LATENCY).record(secs);
        }
    }
}

enum Incoming {
    /// An S3 event notification: objects to read.
    Objects(
        ReceivedMessage,
        Result<crate::source::s3_events::Notification>,
    ),
    /// A message, its body moved into the task decoding it (and handed back with the result:
    /// a body is megabytes, not copied).
    Message(
        ReceivedMessage,
        tokio::task::JoinHandle<(String, Result<DecodedChunk>)>,
    ),
    Empty,
    Failed(Error),
}

/// A running consumer of one table.
pub struct Consumer {
    opts: ConsumerOptions,
    queue: Arc<dyn Queue>,
    writer: TableWriter,
    held: HashMap<String, Held>,
    stats: ConsumerStats,
    visibility: Duration,
    producer_done: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// "Source done" records of finished notification messages, for the next commit.
    pending_markers: Vec<String>,
    /// Adds the columns of sources that have more than the table (policy `evolve`).
    evolver: Arc<crate::delta::evolve::Evolver>,
    /// The table's layout, for the decoding stage (it changes when the table gains columns).
    layout_tx: watch::Sender<Arc<TableLayout>>,
    /// The spool this consumer claimed ([`Consumer::start`]), held while it lives.
    _spool: Option<SpoolClaim>,
}

/// A consumer that has started, and what its start-up recovered.
pub struct Started {
    /// The consumer, ready to [`Consumer::run`].
    pub consumer: Consumer,
    /// Files that writers before it uploaded and never committed, removed, per table.
    pub recovered: Vec<(String, Vec<String>)>,
}

impl Consumer {
    /// In `once` mode, do not consider the queue drained before `done` is set (a producer
    /// running alongside may not have sent anything yet).
    pub fn hold_until(mut self, done: Option<Arc<std::sync::atomic::AtomicBool>>) -> Self {
        self.producer_done = done;
        self
    }

    /// Starts a consumer as a process should: resolves the visibility timeout once (the
    /// options', else the queue's), claims a private spool among `spools` (its path replaces
    /// `opts.write.spool_dir`), removes the uploads that writers before it left uncommitted
    /// (`crate::pipeline::startup::recover`), then prepares it ([`Consumer::new`]).
    pub async fn start(
        mut opts: ConsumerOptions,
        spools: &Spools,
        queue: Arc<dyn Queue>,
        catalog: Arc<dyn Catalog>,
        lake: Lake,
    ) -> Result<Started> {
        let visibility = opts
            .visibility_timeout
            .unwrap_or_else(|| queue.visibility_timeout());
        opts.visibility_timeout = Some(visibility);
        let startup = crate::pipeline::startup::start(
            spools,
            &lake,
            &opts.table,
            &opts.writer_id,
            Some(visibility),
        )
        .await?;
        opts.write.spool_dir = startup.spool.path().to_path_buf();
        let mut consumer = Consumer::new(opts, queue, catalog, lake).await?;
        consumer._spool = Some(startup.spool);
        Ok(Started {
            consumer,
            recovered: startup.recovered,
        })
    }

    /// Prepares a consumer that writes in `opts.write.spool_dir` (a spool the caller holds):
    /// reads the table and its Delta logs (creating them if missing).
    pub async fn new(
        opts: ConsumerOptions,
        queue: Arc<dyn Queue>,
        catalog: Arc<dyn Catalog>,
        lake: Lake,
    ) -> Result<Self> {
        let def = catalog.get_table(&opts.database, &opts.table).await?;
        if let Some(h) = &opts.health {
            h.answered(Dependency::Catalog);
        }
        let (ledger, quarantine) = retry(
            "open the table's Delta logs",
            Backoff::steps(opts.write.retry_base),
            transient,
            || {
                open_logs(
                    &lake,
                    &def,
                    &opts.writer_id,
                    opts.checkpointer.clone(),
                    opts.constraints.clone(),
                )
            },
        )
        .await?;
        let defaults = ledger.column_defaults()?;
        let layout = Arc::new(TableLayout::from_def(&def)?.with_defaults(&defaults));
        // Unless told otherwise, hold messages for the queue's own visibility timeout.
        let visibility = opts
            .visibility_timeout
            .unwrap_or_else(|| queue.visibility_timeout());
        let evolver = Arc::new(crate::delta::evolve::Evolver {
            catalog,
            lake: lake.clone(),
            database: def.database.clone(),
            table: def.name.clone(),
            writer_id: opts.writer_id.clone(),
            defaults,
        });
        let (layout_tx, _) = watch::channel(layout.clone());
        let writer = TableWriter::new(opts.write.clone(), lake, layout, ledger, quarantine)?;
        Ok(Consumer {
            evolver,
            layout_tx,
            opts,
            queue,
            writer,
            held: HashMap::new(),
            stats: ConsumerStats::default(),
            visibility,
            producer_done: None,
            pending_markers: Vec::new(),
            _spool: None,
        })
    }

    /// Runs until the queue is drained (`once`) or `shutdown` completes; then commits what it
    /// holds and deletes the committed messages.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<ConsumerStats> {
        self.run_until(shutdown, std::future::pending()).await
    }

    /// [`Consumer::run`], with a stop that can be cut short: once `cut_short` completes (a
    /// deadline passed, or the stop was asked for again), the consumer stops at once, as a
    /// process killed would, but tidily: open files are discarded, what it uploaded and did not
    /// commit is left for recovery, and the messages it holds are made visible again
    /// ([`ConsumerStats::released_unfinished`]), to be delivered again. Nothing is lost.
    pub async fn run_until(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
        cut_short: impl std::future::Future<Output = ()>,
    ) -> Result<ConsumerStats> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (tx, mut rx) = mpsc::channel::<Incoming>(self.opts.decode_ahead());
        let receiver = tokio::spawn(receive_loop(
            self.queue.clone(),
            self.layout_tx.subscribe(),
            ReceiveOptions {
                // Received bodies wait for their decoding in memory: a few megabytes of them.
                max_messages: (RECEIVED_BYTES / self.queue.max_message_bytes().max(1))
                    .clamp(1, crate::queue::MAX_BATCH),
                // Draining: short waits, so that the end is noticed quickly.
                wait: if self.opts.once {
                    self.opts.wait.min(Duration::from_millis(250))
                } else {
                    self.opts.wait
                },
                visibility_timeout: Some(self.visibility),
            },
            // Following an idle queue: after three empty long polls, wait longer between
            // polls (up to 30 s more), so an idle consumer costs a few requests a minute.
            if self.opts.once {
                Duration::ZERO
            } else {
                Duration::from_secs(30)
            },
            tx,
            stop_rx,
            self.opts.health.clone(),
        ));
        let mut cut = false;
        let result = tokio::select! {
            r = self.main_loop(&mut rx, &stop_tx, shutdown) => r,
            _ = cut_short => {
                cut = true;
                Ok(())
            }
        };
        let _ = stop_tx.send(true);
        // After an error the main loop no longer reads the channel: close it (so the receiver
        // cannot block on a full channel) and give back what is still in it.
        rx.close();
        let mut unprocessed = Vec::new();
        while let Some(item) = rx.recv().await {
            if let Incoming::Message(m, _) | Incoming::Objects(m, _) = item {
                unprocessed.push(m.receipt);
            }
        }
        self.release(&unprocessed).await;
        if let Err(e) = receiver.await {
            return Err(e.into());
        }

        match result {
            Ok(()) if cut => {
                let held = self.held.len() as u64;
                warn!(
                    messages = held,
                    "the stop was cut short: giving the messages held back to the queue"
                );
                self.abort_all().await;
                self.stats.write = self.writer.stats().clone();
                self.stats.released_unfinished = held + unprocessed.len() as u64;
                Ok(self.stats)
            }
            Ok(()) => {
                self.stats.write = self.writer.stats().clone();
                Ok(self.stats)
            }
            Err(e) => {
                self.abort_all().await;
                Err(e)
            }
        }
    }

    async fn main_loop(
        &mut self,
        rx: &mut mpsc::Receiver<Incoming>,
        stop_tx: &watch::Sender<bool>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        tokio::pin!(shutdown);
        let mut stopping = false;
        // Extend visibility three times per timeout, checked often enough to never miss one.
        let heartbeat_every = (self.visibility / 3).max(Duration::from_millis(100));
        let tick_every =
            (self.visibility / 6).clamp(Duration::from_millis(50), Duration::from_millis(500));
        let mut tick = tokio::time::interval(tick_every);
        let mut last_heartbeat = Instant::now();
        let mut last_compact = Instant::now();
        let mut compaction: Option<tokio::task::JoinHandle<Result<()>>> = None;
        // Other consumers commit too: re-read the logs now and then, so that chunks they
        // committed are dropped on arrival rather than found as a conflict at commit time.
        let mut last_refresh = Instant::now();
        let mut last_depth: Option<Instant> = None;
        let mut last_catalog = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown, if !stopping => {
                    info!("shutting down: committing what is held");
                    if let Some(h) = &self.opts.health {
                        h.stopping();
                    }
                    stopping = true;
                    let _ = stop_tx.send(true);
                }
                item = rx.recv() => match item {
                    None => break,
                    Some(Incoming::Objects(m, n)) => self.ingest_objects(m, n).await?,
                    Some(Incoming::Message(mut m, handle)) => {
                        let (body, decoded) = handle.await?;
                        m.body = body;
                        self.ingest(m, decoded).await?;
                    }
                    Some(Incoming::Empty) => {
                        if self.opts.once && !stopping && self.drained().await? {
                            stopping = true;
                            let _ = stop_tx.send(true);
                        }
                    }
                    Some(Incoming::Failed(e)) => return Err(e),
                },
                _ = tick.tick() => {
                    if last_heartbeat.elapsed() >= heartbeat_every {
                        self.heartbeat().await;
                        last_heartbeat = Instant::now();
                    }
                    if last_refresh.elapsed() >= Duration::from_secs(5) {
                        match self.writer.refresh().await {
                            Ok(()) => {
                                if let Some(h) = &self.opts.health {
                                    h.answered(Dependency::Lake);
                                }
                            }
                            Err(e) => {
                                warn!(error = %e, "could not re-read the commit log; will retry")
                            }
                        }
                        last_refresh = Instant::now();
                    }
                    if let Some(h) = compaction.take_if(|h| h.is_finished()) {
                        self.compaction_done(h).await;
                    }
                    if !self.opts.once
                        && !stopping
                        && compaction.is_none()
                        && last_compact.elapsed() >= self.opts.compact_every
                    {
                        last_compact = Instant::now();
                        compaction = self.start_compaction();
                    }
                    metrics::gauge!(crate::metrics::HELD_MESSAGES).set(self.held.len() as f64);
                    metrics::gauge!(crate::metrics::OPEN_FILES)
                        .set(self.writer.open_file_count() as f64);
                    metrics::gauge!(crate::metrics::BUFFERED_BYTES)
                        .set(self.writer.buffered_bytes() as f64);
                    if let Some(h) = &self.opts.health
                        && last_catalog.elapsed() >= Duration::from_secs(30)
                    {
                        last_catalog = Instant::now();
                        match self.evolver.catalog.get_table(&self.opts.database, &self.opts.table).await {
                            Ok(_) => h.answered(Dependency::Catalog),
                            Err(e) => warn!(error = %e, "the catalog did not answer"),
                        }
                    }
                    if self.opts.report_queue_depth
                        && last_depth.is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
                    {
                        self.report_depth().await;
                        last_depth = Some(Instant::now());
                    }
                    let aged = self.writer.aged(self.opts.rotate_age);
                    if !aged.is_empty() {
                        self.flush(aged).await?;
                    }
                }
            }
        }
        let all = self.writer.open_partitions();
        self.flush(all).await?;
        if let Some(h) = compaction {
            // Let a running compaction finish: stopping it half-way would only waste its work.
            self.compaction_done(h).await;
        }
        Ok(())
    }

    /// Sets the queue's gauges: visible and in-flight messages, and the age of the oldest message
    /// not yet consumed (the queue's own figure when it has one; else the oldest held message's
    /// production time; 0 when nothing is waiting).
    async fn report_depth(&self) {
        let s = match self.queue.stats().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "could not read the queue's depth for the metrics");
                return;
            }
        };
        let q = self.queue.name().to_string();
        metrics::gauge!(crate::metrics::QUEUE_DEPTH, "queue" => q.clone(), "state" => "visible")
            .set(s.visible as f64);
        metrics::gauge!(crate::metrics::QUEUE_DEPTH, "queue" => q.clone(), "state" => "in_flight")
            .set(s.in_flight as f64);
        let now = chrono::Utc::now().timestamp_millis();
        let held_oldest = self
            .held
            .values()
            .filter_map(|h| h.produced_at_ms)
            .min()
            .map(|t| (now - t).max(0) as f64 / 1000.0);
        let age = match s.oldest_age {
            Some(a) => a.as_secs_f64(),
            None if s.visible == 0 && self.held.is_empty() => 0.0,
            None => held_oldest.unwrap_or(0.0),
        };
        metrics::gauge!(crate::metrics::OLDEST_MESSAGE_AGE, "queue" => q.clone()).set(age);
        if let Some(dlq) = &self.opts.dead_letter_queue {
            match dlq.stats().await {
                Ok(d) => metrics::gauge!(
                    crate::metrics::QUEUE_DEPTH,
                    "queue" => q,
                    "state" => "dead_letter"
                )
                .set((d.visible + d.in_flight) as f64),
                Err(e) => warn!(error = %e, "could not read the dead-letter queue's depth"),
            }
        }
    }

    /// Counts or reports a finished background compaction; a failed one is tried again at the
    /// next look.
    async fn compaction_done(&mut self, h: tokio::task::JoinHandle<Result<()>>) {
        match h.await {
            Ok(Ok(())) => {
                self.stats.compactions += 1;
            }
            Ok(Err(e)) => {
                warn!(error = %e, "background compaction failed; it is tried again later")
            }
            Err(e) => warn!(error = %e, "background compaction task failed"),
        }
    }

    /// Starts compacting the partition with the most small files, if it has more than the
    /// threshold. It runs beside the consumer: receiving, committing and deleting go on.
    fn start_compaction(&self) -> Option<tokio::task::JoinHandle<Result<()>>> {
        if !self.opts.auto_compact {
            return None;
        }
        let small = self.opts.compact_target_bytes / 2;
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for f in self.writer.ledger().state().files.values() {
            if f.bytes < small {
                *counts.entry(f.partition.as_str()).or_default() += 1;
            }
        }
        let (partition, n) = counts.into_iter().max_by_key(|(_, n)| *n)?;
        if n <= self.opts.compact_small_files {
            return None;
        }
        info!(table = %self.opts.table, partition, small_files = n, "compacting in the background");
        let mut copts = crate::delta::compact::CompactOptions::new(
            self.opts.write.spool_dir.clone(),
            self.opts.writer_id.clone(),
        );
        copts.target_bytes = self.opts.compact_target_bytes;
        copts.partition = Some(partition.to_string());
        copts.parquet = self.opts.write.parquet.clone();
        // Beside the consumer's own row groups: an eighth of its memory.
        copts.memory_budget = (self.opts.memory_limit / 8).max(8 << 20);
        let (lake, table) = (self.writer.lake().clone(), self.opts.table.clone());
        Some(tokio::spawn(async move {
            let r = crate::delta::compact::compact(&lake, &table, &copts).await?;
            info!(
                table = %table,
                files_removed = r.files_removed,
                files_added = r.files_added,
                version = ?r.version,
                "background compaction committed"
            );
            Ok(())
        }))
    }

    /// Whether nothing is left to receive: no visible message and no message in flight except
    /// the ones this consumer holds.
    ///
    /// When nothing is visible, it first commits what it holds: other `--once` consumers may be
    /// waiting for exactly those messages to leave the queue.
    async fn drained(&mut self) -> Result<bool> {
        if self
            .producer_done
            .as_ref()
            .is_some_and(|d| !d.load(std::sync::atomic::Ordering::SeqCst))
        {
            return Ok(false);
        }
        if self.queue.stats().await?.visible > 0 {
            return Ok(false);
        }
        let all = self.writer.open_partitions();
        self.flush(all).await?;
        let s = self.queue.stats().await?;
        Ok(s.visible == 0 && s.in_flight <= self.held.len() as u64)
    }

    async fn ingest(
        &mut self,
        mut m: ReceivedMessage,
        decoded: Result<DecodedChunk>,
    ) -> Result<()> {
        count(&mut self.stats.messages, MESSAGES_CONSUMED, 1);
        self.stats.received_bytes += m.body.len() as u64;
        let d = match decoded {
            Ok(d) if !d.new_columns.is_empty() => match self.evolve(&m, d).await {
                Ok(d) => d,
                Err(e @ (Error::InvalidInput { .. } | Error::Undecodable(_))) => {
                    self.poison(&m, &e).await;
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
            Ok(d) => d,
            Err(e) => {
                self.poison(&m, &e).await;
                return Ok(());
            }
        };
        // The body is decoded: its buffer can carry another.
        let body_bytes = m.body.len() as u64;
        crate::chunk::bufpool::give_string(std::mem::take(&mut m.body));
        count(&mut self.stats.rows_in, ROWS_IN, d.rows_in);
        let chunk = d.chunk.clone();
        let produced_at_ms = d.produced_at_ms;
        let written = match self.writer.write_rows(d).await {
            Ok(w) => w,
            // Rows the table's constraints refuse: never writable, dead-lettered with the reason.
            Err(e @ Error::ConstraintViolated { .. }) => {
                self.poison(&m, &e).await;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let held = self.hold(&m);
        held.bytes = body_bytes;
        held.complete = true;
        held.produced_at_ms = produced_at_ms;
        held.waiting
            .extend(written.waiting.into_iter().map(|p| (chunk.clone(), p)));
        if held.waiting.is_empty() {
            let h = self.held.remove(&m.message_id).expect("held");
            h.observe_done();
            self.delete(vec![h.receipt]).await?;
        }
        if !written.due.is_empty() {
            self.flush(written.due).await?;
        }
        let uncommitted: u64 = self.held.values().map(|h| h.bytes).sum();
        if uncommitted > self.opts.max_uncommitted_bytes {
            info!(
                bytes = uncommitted,
                messages = self.held.len(),
                "committing every open file: the messages held reach the uncommitted limit"
            );
            let all = self.writer.open_partitions();
            self.flush(all).await?;
        }
        Ok(())
    }

    /// A message with columns the table lacks (policy `evolve`): adds them (unless another
    /// message or consumer did) and decodes the message again.
    async fn evolve(&mut self, m: &ReceivedMessage, d: DecodedChunk) -> Result<DecodedChunk> {
        let missing = self.writer.layout().changes(d.new_columns);
        if !missing.is_empty() {
            let source = if d.new_columns_source.is_empty() {
                format!("message {}", m.message_id)
            } else {
                d.new_columns_source
            };
            let layout = self.evolver.add_columns(&missing, &source).await?;
            self.take_layout(layout).await?;
        }
        let layout = self.writer.layout().clone();
        let again = tokio::task::block_in_place(|| {
            crate::decode::message::decode_message(&layout, &m.body, &m.message_id)
        })?;
        if !again.new_columns.is_empty() {
            return Err(Error::Internal(format!(
                "message {}: the table still lacks columns after adding them",
                m.message_id
            )));
        }
        Ok(again)
    }

    /// Writes from now on for `layout` (the table gained columns); messages received from now
    /// on are decoded for it.
    async fn take_layout(&mut self, layout: Arc<TableLayout>) -> Result<()> {
        self.layout_tx.send_replace(layout.clone());
        self.writer.set_layout(layout).await
    }

    /// The held entry of a message (a new one on first delivery; the receipt of the newest).
    fn hold(&mut self, m: &ReceivedMessage) -> &mut Held {
        let held = self
            .held
            .entry(m.message_id.clone())
            .or_insert_with(|| Held {
                receipt: m.receipt.clone(),
                bytes: m.body.len() as u64,
                waiting: HashSet::new(),
                complete: false,
                markers: Vec::new(),
                produced_at_ms: None,
            });
        held.receipt = m.receipt.clone();
        held
    }

    /// Lands the objects an S3 event notification names: each read and typed like a
    /// `convert` source, its rows written piece by piece. The message is deleted once every
    /// row is committed. An object that cannot be read leaves the message to be delivered again
    /// (and dead-lettered after maxReceiveCount), its reason recorded; an object deleted or
    /// replaced since the notification is left out (a replacement has a notification of its own).
    async fn ingest_objects(
        &mut self,
        m: ReceivedMessage,
        n: Result<crate::source::s3_events::Notification>,
    ) -> Result<()> {
        use crate::source::s3_events::Notification;
        count(&mut self.stats.messages, MESSAGES_CONSUMED, 1);
        self.stats.received_bytes += m.body.len() as u64;
        let objects = match n {
            Ok(Notification::Test) => return self.delete(vec![m.receipt]).await,
            Ok(Notification::Objects(o)) => o,
            Err(e) => {
                self.undecodable(&m, &e);
                return Ok(());
            }
        };
        let Some(stores) = self.opts.object_stores.clone() else {
            let e = Error::Undecodable(
                "an S3 event notification, but this consumer has no S3 access to read objects with"
                    .into(),
            );
            self.undecodable(&m, &e);
            return Ok(());
        };
        let mut sources = Vec::new();
        for o in objects {
            let name = format!("s3://{}/{}", o.bucket, o.key);
            let Some((format, compression)) = crate::source::kind_of(&o.key, None) else {
                warn!(object = %name, "not CSV, JSON lines or Parquet by its name; left out");
                continue;
            };
            let store = match stores.store(&o.bucket) {
                Ok(s) => s,
                Err(e) => {
                    self.undecodable(&m, &e);
                    return Ok(());
                }
            };
            let path = object_store::path::Path::from(o.key.as_str());
            match object_store::ObjectStoreExt::head(&store, &path).await {
                Ok(meta)
                    if o.etag.is_none()
                        || meta.e_tag.as_deref().map(|e| e.trim_matches('"'))
                            == o.etag.as_deref() => {}
                Ok(_) => {
                    warn!(object = %name, "replaced since the notification; its new version has a notification of its own");
                    continue;
                }
                Err(object_store::Error::NotFound { .. }) => {
                    warn!(object = %name, "deleted since the notification; nothing to land");
                    continue;
                }
                Err(e) => return Err(Error::from_store(&name, e)),
            }
            sources.push(crate::source::Source {
                name,
                location: crate::source::Location::Object { store, path },
                size: o.size,
                version: o.etag.map(|e| format!("\"{e}\"")),
                format,
                compression,
            });
        }
        let table = self.opts.table.clone();
        let fps = sources
            .iter()
            .map(|s| s.fingerprint(&table))
            .collect::<Result<Vec<_>>>()?;
        let finished = crate::pipeline::convert::Finished::of(&self.writer, &fps);
        let held = self.hold(&m);
        held.markers = fps
            .iter()
            .zip(&finished.sources)
            .filter(|(_, d)| !**d)
            .map(|(fp, _)| crate::pipeline::convert::marker(fp))
            .collect();
        let reading = crate::pipeline::convert::Reading {
            sources,
            fingerprints: fps,
            finished,
            format: crate::source::csv::CsvFormat::default(),
            spool: self.opts.write.spool_dir.clone(),
            bytes_read: Arc::default(),
        };
        let mut pieces = crate::pipeline::convert::Pieces::start(
            reading,
            self.writer.layout().clone(),
            self.evolver.clone(),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        );
        let result = self.land_pieces(&m, &mut pieces).await;
        let finished = pieces.finish().await;
        let failure = result?;
        finished?;
        let Some(held) = self.held.get_mut(&m.message_id) else {
            // Released by a conflict: it is delivered again.
            return Ok(());
        };
        if let Some(e) = failure {
            // Not deleted and no longer kept visible: delivered again after its timeout.
            self.held.remove(&m.message_id);
            self.undecodable(&m, &e);
            return Ok(());
        }
        held.complete = true;
        if held.waiting.is_empty() {
            let h = self.held.remove(&m.message_id).expect("held");
            h.observe_done();
            self.pending_markers.extend(h.markers);
            self.delete(vec![h.receipt]).await?;
        }
        Ok(())
    }

    /// Writes the pieces of a notification's objects; returns the first object that failed.
    async fn land_pieces(
        &mut self,
        m: &ReceivedMessage,
        pieces: &mut crate::pipeline::convert::Pieces,
    ) -> Result<Option<Error>> {
        use crate::pipeline::convert::Item;
        let heartbeat_every = (self.visibility / 3).max(Duration::from_millis(100));
        let mut last_heartbeat = Instant::now();
        let mut failure = None;
        while let Some((_, item)) = pieces.next().await? {
            match item {
                Item::Chunk(d) => {
                    count(&mut self.stats.rows_in, ROWS_IN, d.rows_in);
                    let chunk = d.chunk.clone();
                    let written = self.writer.write_rows(d).await?;
                    let Some(held) = self.held.get_mut(&m.message_id) else {
                        return Ok(None);
                    };
                    held.waiting
                        .extend(written.waiting.into_iter().map(|p| (chunk.clone(), p)));
                    if !written.due.is_empty() {
                        self.flush(written.due).await?;
                    }
                }
                Item::Evolved(layout) => self.take_layout(layout).await?,
                Item::Skipped | Item::PieceDone | Item::End => {}
                Item::Failed(e) => {
                    warn!(message_id = %m.message_id, error = %e, "object of a notification cannot be read");
                    failure.get_or_insert(e);
                }
            }
            // A large object takes long: keep every held message (this one too) in flight.
            if last_heartbeat.elapsed() >= heartbeat_every {
                self.heartbeat().await;
                last_heartbeat = Instant::now();
            }
            if !self.held.contains_key(&m.message_id) {
                return Ok(None);
            }
        }
        Ok(failure)
    }

    /// A message whose body this consumer can never write (decoding is deterministic): recorded
    /// as [`Self::undecodable`], and made visible again at once, so that its receives run out
    /// and the queue dead-letters it in moments instead of after `maxReceiveCount` visibility
    /// timeouts (25 minutes with the defaults, while `--once` waits).
    async fn poison(&mut self, m: &ReceivedMessage, e: &Error) {
        self.undecodable(m, e);
        self.release(std::slice::from_ref(&m.receipt)).await;
    }

    /// Records why a message cannot be processed; unless released ([`Self::poison`]), it stays
    /// in flight, is delivered again after its visibility timeout, and moves to the dead-letter
    /// queue after maxReceiveCount.
    fn undecodable(&mut self, m: &ReceivedMessage, e: &Error) {
        warn!(message_id = %m.message_id, receive_count = m.receive_count, error = %e, "message cannot be processed");
        count(&mut self.stats.undecodable_messages, MESSAGES_FAILED, 1);
        if let Some(log) = &self.opts.dead_letter_log
            && let Err(le) = crate::queue::failures::record_failure(
                log,
                self.queue.name(),
                &m.message_id,
                m.receive_count,
                &e.to_string(),
            )
        {
            warn!(error = %le, "could not record the failure reason");
        }
    }

    /// Commits the files of `parts`, then deletes the messages that are complete. On a
    /// conflict every held message is released, to be delivered again and deduplicated.
    async fn flush(&mut self, parts: Vec<String>) -> Result<()> {
        let markers = std::mem::take(&mut self.pending_markers)
            .into_iter()
            .map(|chunk| ChunkPart {
                chunk,
                partition: crate::pipeline::convert::SOURCE_PART.to_string(),
            })
            .collect();
        let committed = match self.writer.flush(parts, markers).await? {
            Flushed::Committed(c) => c,
            Flushed::Conflict => {
                let receipts: Vec<String> = self.held.drain().map(|(_, h)| h.receipt).collect();
                self.release(&receipts).await;
                return Ok(());
            }
        };
        let mut done = Vec::new();
        for (p, chunks) in &committed {
            for (id, h) in self.held.iter_mut() {
                h.waiting
                    .retain(|(c, part)| part != p || !chunks.contains(c));
                if h.complete && h.waiting.is_empty() {
                    done.push(id.clone());
                }
            }
        }
        done.sort();
        done.dedup();
        let mut receipts = Vec::new();
        for h in done.iter().filter_map(|id| self.held.remove(id)) {
            h.observe_done();
            self.pending_markers.extend(h.markers);
            receipts.push(h.receipt);
        }
        self.delete(receipts).await
    }

    async fn delete(&mut self, receipts: Vec<String>) -> Result<()> {
        if receipts.is_empty() {
            return Ok(());
        }
        let n = receipts.len() as u64;
        let q = self.queue.clone();
        let failed = retry(
            "delete",
            Backoff::steps(self.opts.write.retry_base),
            transient,
            || q.delete_all(&receipts),
        )
        .await?;
        count(
            &mut self.stats.deleted,
            MESSAGES_DELETED,
            n - failed.len() as u64,
        );
        for f in failed {
            warn!(code = %f.code, message = %f.message, "delete failed; the message will be delivered again and deduplicated");
        }
        Ok(())
    }

    async fn heartbeat(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let receipts: Vec<String> = self.held.values().map(|h| h.receipt.clone()).collect();
        match self
            .queue
            .change_visibility_all(&receipts, self.visibility)
            .await
        {
            Ok(failed) => {
                for f in &failed {
                    debug!(code = %f.code, "heartbeat: message no longer held");
                }
            }
            Err(e) => warn!(error = %e, "heartbeat failed"),
        }
    }

    /// Discards every open file and makes every held message visible again.
    async fn abort_all(&mut self) {
        self.writer.discard_all();
        let receipts: Vec<String> = self.held.drain().map(|(_, h)| h.receipt).collect();
        self.release(&receipts).await;
    }

    /// Makes messages visible again at once. Best effort: a message that cannot be released
    /// returns after its visibility timeout anyway.
    async fn release(&self, receipts: &[String]) {
        if !receipts.is_empty()
            && let Err(e) = self
                .queue
                .change_visibility_all(receipts, Duration::ZERO)
                .await
        {
            warn!(error = %e, count = receipts.len(), "could not release messages; they return after their visibility timeout");
        }
    }
}

/// Bytes of messages one receive asks for at most (as whole messages, at least one): with
/// the embedded queue's 4 MiB messages, two.
const RECEIVED_BYTES: usize = 8 << 20;

/// Retries of a failing receive: 8, after 0.1–0.2 s, …, 12.8–25.6 s.
const RECEIVE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), 8);

async fn receive_loop(
    queue: Arc<dyn Queue>,
    layout: watch::Receiver<Arc<TableLayout>>,
    opts: ReceiveOptions,
    idle_backoff_max: Duration,
    tx: mpsc::Sender<Incoming>,
    mut stop: watch::Receiver<bool>,
    health: Option<Arc<Health>>,
) {
    let mut idle = 0u32;
    while !*stop.borrow() {
        let received = retry("receive", RECEIVE_BACKOFF, Error::is_retryable, || {
            queue.receive(opts)
        })
        .await;
        match received {
            Ok(msgs) if msgs.is_empty() => {
                if let Some(h) = &health {
                    h.answered(Dependency::Queue);
                }
                idle += 1;
                if tx.send(Incoming::Empty).await.is_err() {
                    break;
                }
                if idle > 3 && !idle_backoff_max.is_zero() {
                    let pause = Duration::from_secs(1 << (idle - 3).min(5)).min(idle_backoff_max);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            Ok(msgs) => {
                if let Some(h) = &health {
                    h.answered(Dependency::Queue);
                }
                idle = 0;
                for mut m in msgs {
                    if let Some(n) = crate::source::s3_events::parse(&m.body) {
                        if tx.send(Incoming::Objects(m, n)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    // The newest layout: the table may have gained columns.
                    let layout = layout.borrow().clone();
                    let (body, id) = (std::mem::take(&mut m.body), m.message_id.clone());
                    let h = tokio::task::spawn_blocking(move || {
                        let decoded = crate::decode::message::decode_message(&layout, &body, &id);
                        (body, decoded)
                    });
                    if tx.send(Incoming::Message(m, h)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Incoming::Failed(e)).await;
                break;
            }
        }
    }
}
