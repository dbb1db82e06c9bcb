//! The producer: streams CSV files into chunk messages, in constant memory.
//!
//! ```text
//!  file ─► RecordReader (boundaries, line numbers) ─► chunk (raw records, ≤ message size
//!  after zstd + base64, adaptive) ─► channel ─► sender (10 per call, ≤ 1 MiB per call,
//!  bounded concurrency)
//! ```
//! A file's chunk ids are `<source fingerprint>-<index>-<content hash>`; the same file produced
//! again with the same settings yields the same ids, which the consumer deduplicates.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::catalog::{Catalog, TableDef};
use crate::chunk::{
    ChunkHeader, Codec, Compressor, Payload, Reject, encode, encode_text, encoded_len,
    encoded_text_len,
};
use crate::error::{Error, Result};
use crate::metrics::{CHUNKS_SENT, count};
use crate::pipeline::setup::TableSettings;
use crate::queue::{MAX_BATCH, Queue};
use crate::source::csv::read_header;
use crate::source::{Compression, Format, Location, Source};
use crate::table::TableLayout;

/// Bytes of messages a producer lets wait in a queue on this machine's disk while the consumer
/// in the same process catches up: it pauses above them.
pub(crate) const LOCAL_BACKLOG_BYTES: usize = 128 << 20;

/// The backlog (in messages) a producer should keep to when its consumer runs in the same
/// process (`sluice run`): about `LOCAL_BACKLOG_BYTES` on a queue that keeps its messages on
/// this machine's disk, so that neither the input nor its backlog piles up there; `None`
/// (send as fast as it reads) on any other queue.
pub fn backlog_beside_consumer(queue: &dyn Queue) -> Option<u64> {
    queue
        .on_local_disk()
        .then(|| (LOCAL_BACKLOG_BYTES / queue.max_message_bytes().max(1)).clamp(4, 1024) as u64)
}

/// Producer settings: the table, and how chunks are sent.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// The table, and how its sources read.
    pub table: TableSettings,
    /// zstd level of the chunks; `None`: 1 where speed matters (a queue not billed by size, as
    /// the embedded one), 7 on a queue billed per 64 KiB (SQS: about 14% fewer billed units than
    /// level 1 for lineitem rows, at twice the compression time).
    pub zstd_level: Option<i32>,
    /// Send calls in flight at once.
    pub send_concurrency: usize,
    /// Waits before sending while the queue holds this many visible messages (`run`, whose
    /// consumer is in the same process: the backlog stays a few chunks deep, not the whole
    /// input on disk). `None`: sends as fast as it reads, as a producer feeding a queue should.
    pub max_backlog: Option<u64>,
}

impl ProducerOptions {
    /// Settings for `table` with the defaults for sending.
    pub fn new(table: TableSettings) -> Self {
        ProducerOptions {
            table,
            zstd_level: None,
            send_concurrency: 4,
            max_backlog: None,
        }
    }
}

/// What producing did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProduceStats {
    /// Sources produced.
    pub files: u64,
    /// Records read from the sources (the refused ones included: they travel to the quarantine
    /// in their chunk's header).
    pub rows: u64,
    /// Bytes of the sources read.
    pub csv_bytes: u64,
    /// Chunk messages sent.
    pub chunks: u64,
    /// Bytes of the messages sent.
    pub message_bytes: u64,
    /// Records refused before sending (too large for any message), sent to the quarantine.
    pub rejected_rows: u64,
}

impl ProduceStats {
    fn add(&mut self, o: &ProduceStats) {
        self.files += o.files;
        self.rows += o.rows;
        self.csv_bytes += o.csv_bytes;
        self.chunks += o.chunks;
        self.message_bytes += o.message_bytes;
        self.rejected_rows += o.rejected_rows;
    }
}

/// Progress callback: (CSV bytes read, rows) so far in the current file.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Produces CSV files into a queue.
pub struct Producer {
    queue: Arc<dyn Queue>,
    catalog: Arc<dyn Catalog>,
    opts: ProducerOptions,
    /// Chunks travel as plain text (the queue prefers it and no zstd level was asked for).
    text: bool,
}

impl Producer {
    /// A producer sending to `queue` the rows of the table `opts` names (created in `catalog`
    /// if missing).
    pub fn new(
        queue: Arc<dyn Queue>,
        catalog: Arc<dyn Catalog>,
        opts: ProducerOptions,
    ) -> Result<Self> {
        opts.table.format.validate()?;
        crate::schema::validate_name("table", &opts.table.name)?;
        let mut opts = opts;
        let text = opts.zstd_level.is_none() && queue.prefers_text_chunks();
        if opts.zstd_level.is_none() {
            opts.zstd_level = Some(if queue.billing_unit_bytes().is_some() {
                7
            } else {
                1
            });
        }
        Ok(Producer {
            queue,
            catalog,
            opts,
            text,
        })
    }

    /// Returns the table, creating it from `first_file` (declared or inferred schema) if needed.
    pub async fn ensure_table(&self, first_file: &Path) -> Result<TableDef> {
        self.ensure_table_for(&Source::local_file(first_file)?)
            .await
    }

    /// Returns the table, creating it from `first` (declared, Parquet's own, or inferred
    /// schema) if needed.
    pub async fn ensure_table_for(&self, first: &Source) -> Result<TableDef> {
        crate::pipeline::setup::ensure_table_for(
            &*self.catalog,
            &self.opts.table,
            first,
            &std::env::temp_dir(),
        )
        .await
    }

    /// Produces local files in order (CSV unless the name says otherwise). Stops at the first
    /// file with an error; everything sent before the error stays sent.
    pub async fn produce(
        &self,
        files: &[impl AsRef<Path>],
        progress: Option<Progress>,
    ) -> Result<ProduceStats> {
        let sources = files
            .iter()
            .map(|f| Source::local_file(f.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        self.produce_sources(&sources, progress).await
    }

    /// Produces sources in order: local files or objects, CSV (also `.gz`, `.zst`), JSON lines
    /// or Parquet. Stops at the first source with an error; everything sent before the error
    /// stays sent.
    pub async fn produce_sources(
        &self,
        sources: &[Source],
        progress: Option<Progress>,
    ) -> Result<ProduceStats> {
        let first = sources
            .first()
            .ok_or_else(|| Error::invalid("no input files"))?;
        let def = self.ensure_table_for(first).await?;
        let layout = TableLayout::from_def(&def)?;
        let mut total = ProduceStats::default();
        for src in sources {
            let s = self.produce_file(&layout, src, progress.clone()).await?;
            total.add(&s);
        }
        Ok(total)
    }

    async fn produce_file(
        &self,
        layout: &TableLayout,
        src: &Source,
        progress: Option<Progress>,
    ) -> Result<ProduceStats> {
        let limit = self.queue.max_message_bytes();
        let batch_limit = self.queue.max_batch_bytes();
        // A source that fails part-way (a cut gzip, an unterminated quote, an unreadable object)
        // sends nothing. A local file that is not compressed is checked whole first (a CSV's
        // records to its end; JSON lines cannot fail part-way but by an I/O error), then its
        // messages go as they are made, which keeps the queue's backlog bounded.
        let streams = matches!(src.location, Location::Local(_))
            && src.compression == Compression::None
            && src.format != Format::Parquet;
        if streams && src.format == Format::Csv {
            let (src, format) = (src.clone(), self.opts.table.format.clone());
            let rt = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || check_csv_whole(&rt, &src, &format)).await??;
        }
        // Chunks made ahead of their sending: a few megabytes of them.
        let (tx, mut rx) = mpsc::channel::<String>(((8 << 20) / limit.max(1)).clamp(2, 8));
        let name = src.name.clone();
        let reader = {
            let (layout, src, opts) = (layout.clone(), src.clone(), self.opts.clone());
            let rt = tokio::runtime::Handle::current();
            let text = self.text;
            tokio::task::spawn_blocking(move || {
                chunk_source(
                    &rt,
                    &layout,
                    &src,
                    &opts,
                    Messages { limit, text },
                    tx,
                    progress,
                )
            })
        };
        let mut stats = ProduceStats {
            files: 1,
            ..Default::default()
        };
        // Any other source is read to its end before its first message is delivered: a queue
        // that holds messages itself (the embedded one) stores them undelivered as they come;
        // for another, they are kept aside and sent once the source is read.
        if !streams && self.queue.holds_messages() {
            return self.produce_held(rx, reader, &name, stats).await;
        }
        let (mut bodies, read) = if streams {
            (Bodies::Stream(rx), Read::Pending(reader))
        } else {
            let mut held = Held::default();
            let mut hold_error = None;
            while let Some(body) = rx.recv().await {
                // Memory, or a buffered write: brief enough for this task.
                if let Err(e) = held.push(body) {
                    hold_error = Some(e);
                    break;
                }
            }
            drop(rx);
            let read = reader.await?;
            if let Some(e) = hold_error {
                return Err(e);
            }
            (
                Bodies::Held(Box::new(held.into_bodies()?)),
                Read::Done(read?),
            )
        };
        let mut inflight = FuturesUnordered::new();
        let mut batch = Batch::new(batch_limit);
        let mut send_error = None;
        let queue = self.queue.clone();
        let send = |bodies: Vec<String>| {
            let q = queue.clone();
            async move { q.send_batch(bodies).await.map(|_| ()) }
        };
        loop {
            let next = bodies.next().await?;
            if batch.full_before(next.as_ref()) {
                while inflight.len() >= self.opts.send_concurrency.max(1) {
                    match inflight.next().await {
                        Some(Ok(())) => {}
                        Some(Err(e)) => {
                            send_error = Some(e);
                            break;
                        }
                        None => break,
                    }
                }
                if send_error.is_some() {
                    break;
                }
                if let Some(max) = self.opts.max_backlog
                    && let Err(e) = wait_for_backlog(&*queue, max).await
                {
                    send_error = Some(e);
                    break;
                }
                inflight.push(send(batch.take()));
            }
            match next {
                Some(body) => batch.push(body, &mut stats),
                None => break,
            }
        }
        while let Some(r) = inflight.next().await {
            match r {
                Ok(()) => {}
                Err(e) => send_error = send_error.or(Some(e)),
            }
        }
        drop(bodies);
        let read = match read {
            Read::Done(r) => Ok(r),
            Read::Pending(reader) => reader.await?,
        };
        if let Some(e) = send_error {
            return Err(e);
        }
        Ok(produced(stats, &name, read?))
    }
}

impl Producer {
    /// [`Producer::produce_file`] on a queue that holds messages: each batch is stored held
    /// as it comes, and released at once when the source has been read to its end (dropped
    /// if it fails).
    async fn produce_held(
        &self,
        mut rx: mpsc::Receiver<String>,
        reader: tokio::task::JoinHandle<Result<(u64, u64, u64)>>,
        name: &str,
        mut stats: ProduceStats,
    ) -> Result<ProduceStats> {
        let group = uuid::Uuid::now_v7().to_string();
        let mut batch = Batch::new(self.queue.max_batch_bytes());
        let mut send_error = None;
        loop {
            let next = rx.recv().await;
            if batch.full_before(next.as_ref())
                && let Err(e) = self.queue.send_held(&group, batch.take()).await
            {
                send_error = Some(e);
                break;
            }
            match next {
                Some(body) => batch.push(body, &mut stats),
                None => break,
            }
        }
        drop(rx);
        let read = reader.await;
        let outcome = match (send_error, read) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e.into()),
            (None, Ok(Err(e))) => Err(e),
            (None, Ok(Ok(r))) => Ok(r),
        };
        let (rows, bytes, rejected) = match outcome {
            Ok(r) => r,
            Err(e) => {
                if let Err(d) = self.queue.drop_held(&group).await {
                    warn!(file = %name, error = %d, "could not remove the messages held for a failed source");
                }
                return Err(e);
            }
        };
        if let Some(max) = self.opts.max_backlog {
            wait_for_backlog(&*self.queue, max).await?;
        }
        self.queue.release_held(&group).await?;
        Ok(produced(stats, name, (rows, bytes, rejected)))
    }
}

/// A source's counts once it is read and sent: (rows, source bytes, rows rejected).
fn produced(
    mut stats: ProduceStats,
    name: &str,
    (rows, bytes, rejected): (u64, u64, u64),
) -> ProduceStats {
    stats.rows = rows;
    stats.csv_bytes = bytes;
    stats.rejected_rows = rejected;
    info!(file = %name, rows, chunks = stats.chunks, "produced");
    stats
}

/// The messages of the next send: at most [`MAX_BATCH`] of them, and at most the queue's
/// batch size in bytes (a message larger than that goes alone).
struct Batch {
    bodies: Vec<String>,
    bytes: usize,
    limit: usize,
}

impl Batch {
    fn new(limit: usize) -> Self {
        Batch {
            bodies: Vec::new(),
            bytes: 0,
            limit,
        }
    }

    /// Whether the batch is to be sent before `next` (`None`: the source is through) joins it.
    fn full_before(&self, next: Option<&String>) -> bool {
        !self.bodies.is_empty()
            && next
                .is_none_or(|b| self.bodies.len() == MAX_BATCH || self.bytes + b.len() > self.limit)
    }

    /// Adds a message, counting it as sent.
    fn push(&mut self, body: String, stats: &mut ProduceStats) {
        count(&mut stats.chunks, CHUNKS_SENT, 1);
        stats.message_bytes += body.len() as u64;
        self.bytes += body.len();
        self.bodies.push(body);
    }

    fn take(&mut self) -> Vec<String> {
        self.bytes = 0;
        std::mem::take(&mut self.bodies)
    }
}

/// A source's reading: finished (its messages were held aside), or still making them.
enum Read {
    Done((u64, u64, u64)),
    Pending(tokio::task::JoinHandle<Result<(u64, u64, u64)>>),
}

/// Where the messages to send come from: as the reader makes them, or held aside until the
/// source was read to its end.
enum Bodies {
    Stream(mpsc::Receiver<String>),
    Held(Box<dyn Iterator<Item = Result<String>> + Send>),
}

impl Bodies {
    async fn next(&mut self) -> Result<Option<String>> {
        match self {
            Bodies::Stream(rx) => Ok(rx.recv().await),
            Bodies::Held(it) => it.next().transpose(),
        }
    }
}

/// Reads a local CSV file's records to its end, sending nothing: an unterminated quote, invalid
/// framing or an I/O error fails it before any of its messages is made.
fn check_csv_whole(
    rt: &tokio::runtime::Handle,
    src: &Source,
    format: &crate::source::csv::CsvFormat,
) -> Result<()> {
    let (mut reader, _) = read_header(src.open(rt, Arc::default())?, &src.name, format)?;
    let mut buf = Vec::with_capacity(8 << 20);
    let mut records = crate::source::csv::PieceRecords::default();
    loop {
        buf.clear();
        records.clear();
        reader.next_piece(&mut buf, 8 << 20, &mut records)?;
        if buf.len() < 8 << 20 {
            return Ok(());
        }
    }
}

/// Messages of a source held until it has been read to its end: in memory up to
/// [`Held::IN_MEMORY`] bytes, the rest in a file of the temporary directory (length-prefixed
/// bodies, removed when dropped).
struct Held {
    memory: Vec<String>,
    memory_bytes: usize,
    /// Bytes held in memory at most.
    limit: usize,
    spill: Option<Spill>,
}

impl Default for Held {
    fn default() -> Self {
        Held {
            memory: Vec::new(),
            memory_bytes: 0,
            limit: Self::IN_MEMORY,
            spill: None,
        }
    }
}

struct Spill {
    path: std::path::PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Held {
    /// Message bytes held in memory at most; a source with more spills the rest to disk.
    const IN_MEMORY: usize = 64 << 20;

    fn push(&mut self, body: String) -> Result<()> {
        use std::io::Write;
        if self.spill.is_none() && self.memory_bytes + body.len() <= self.limit {
            self.memory_bytes += body.len();
            self.memory.push(body);
            return Ok(());
        }
        if self.spill.is_none() {
            let path = std::env::temp_dir().join(format!("sluice-held-{}", uuid::Uuid::now_v7()));
            let f = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
            self.spill = Some(Spill {
                path,
                out: std::io::BufWriter::with_capacity(1 << 20, f),
            });
        }
        let spill = self.spill.as_mut().expect("a spill file");
        let len = u32::try_from(body.len())
            .map_err(|_| Error::Internal("a message body over 4 GiB".into()))?;
        spill
            .out
            .write_all(&len.to_le_bytes())
            .and_then(|()| spill.out.write_all(body.as_bytes()))
            .map_err(|e| Error::io(&spill.path, e))
    }

    /// The bodies in the order they were held.
    fn into_bodies(self) -> Result<impl Iterator<Item = Result<String>>> {
        use std::io::Read;
        let spilled = match self.spill {
            None => None,
            Some(mut spill) => {
                use std::io::Write;
                spill.out.flush().map_err(|e| Error::io(&spill.path, e))?;
                let f = std::fs::File::open(&spill.path).map_err(|e| Error::io(&spill.path, e))?;
                Some((spill, std::io::BufReader::with_capacity(1 << 20, f)))
            }
        };
        let mut spilled = spilled;
        let from_disk = std::iter::from_fn(move || {
            let (spill, input) = spilled.as_mut()?;
            let mut len = [0u8; 4];
            match input.read_exact(&mut len) {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
                Err(e) => return Some(Err(Error::io(&spill.path, e))),
                Ok(()) => {}
            }
            let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
            Some(
                input
                    .read_exact(&mut body)
                    .map_err(|e| Error::io(&spill.path, e))
                    .and_then(|()| {
                        String::from_utf8(body)
                            .map_err(|_| Error::Internal("a held message is not UTF-8".into()))
                    }),
            )
        });
        Ok(self.memory.into_iter().map(Ok).chain(from_disk))
    }
}

/// Waits while `queue` holds `max` or more visible messages.
async fn wait_for_backlog(queue: &dyn Queue, max: u64) -> Result<()> {
    let mut pause = Duration::from_millis(5);
    while queue.stats().await?.visible >= max {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    Ok(())
}

/// A chunk's records as they go into its message.
enum Records<'b> {
    /// Compressed (or not) by the chunker's compressor; base64 in the message.
    Packed(&'b [u8]),
    /// As they are ([`Codec::Text`]).
    Text(&'b str),
}

struct Chunker<'a> {
    header: ChunkHeader,
    header_len: usize,
    limit: usize,
    /// Chunks as plain text where the records are UTF-8 and fit; else compressed.
    text: bool,
    compressor: Compressor,
    /// The last chunk's payload (a buffer reused).
    out: Vec<u8>,
    fp: String,
    index: u64,
    /// Raw bytes per chunk to aim for; adapted to the compression ratio seen.
    target: usize,
    tx: &'a mpsc::Sender<String>,
    rejected: u64,
}

impl Chunker<'_> {
    /// Largest compressed payload whose message fits the limit, with 128 bytes of room for the
    /// header's chunk id and line numbers.
    fn max_compressed(&self) -> usize {
        let room = self
            .limit
            .saturating_sub(crate::chunk::MAGIC.len() + self.header_len + 1 + 128);
        let c = room / 4 * 3;
        debug_assert!(encoded_len(self.header_len + 128, c) <= self.limit);
        c
    }

    /// Largest text of records whose message fits the limit, with the same room as
    /// [`Chunker::max_compressed`].
    fn max_text(&self) -> usize {
        let n = self
            .limit
            .saturating_sub(crate::chunk::MAGIC.len() + self.header_len + 1 + 128);
        debug_assert!(n == 0 || encoded_text_len(self.header_len + 128, n) <= self.limit);
        n
    }

    /// Raw bytes per chunk to aim for in text mode: a record past the target still fits.
    fn text_target(&self) -> usize {
        (self.max_text() / 16 * 15).max(1)
    }

    /// Emits records `buf` (with `spans` (line, len)) as one or more messages.
    fn emit(&mut self, buf: &[u8], spans: &[(u64, usize)]) -> Result<()> {
        if spans.is_empty() {
            return Ok(());
        }
        if self.text
            && let Ok(text) = std::str::from_utf8(buf)
        {
            if text.len() <= self.max_text() {
                let id_hash = xxhash_rust::xxh3::xxh3_64(buf);
                self.header.chunk = format!("{}-{}-{id_hash:016x}", self.fp, self.index);
                return self.send(
                    spans[0].0,
                    spans.len() as u64,
                    Records::Text(text),
                    Vec::new(),
                );
            }
            if spans.len() > 1 {
                return self.emit_halves(buf, spans);
            }
            // One record larger than a message as text: it may fit compressed.
        }
        let mut out = std::mem::take(&mut self.out);
        self.compressor.compress_into(buf, &mut out);
        let sent = self.emit_compressed(buf, spans, &out);
        self.out = out;
        sent
    }

    /// Emits records `buf` as two halves of `spans`, each as [`Chunker::emit`] does.
    fn emit_halves(&mut self, buf: &[u8], spans: &[(u64, usize)]) -> Result<()> {
        let mid = spans.len() / 2;
        let split: usize = spans[..mid].iter().map(|s| s.1).sum();
        self.emit(&buf[..split], &spans[..mid])?;
        self.emit(&buf[split..], &spans[mid..])
    }

    /// Emits records `buf` whose payload is `compressed`, split in halves if it is too large.
    fn emit_compressed(
        &mut self,
        buf: &[u8],
        spans: &[(u64, usize)],
        compressed: &[u8],
    ) -> Result<()> {
        if compressed.len() > self.max_compressed() {
            if spans.len() == 1 {
                let (line, _) = spans[0];
                let raw = String::from_utf8_lossy(&buf[..buf.len().min(4096)]).into_owned();
                let reason = format!(
                    "record of {} bytes does not fit in a message of {} bytes",
                    buf.len(),
                    self.limit
                );
                let mut empty = Vec::new();
                self.compressor.compress_into(b"", &mut empty);
                return self.send(
                    line,
                    0,
                    Records::Packed(&empty),
                    vec![Reject { line, raw, reason }],
                );
            }
            return self.emit_halves(buf, spans);
        }
        // Aim the next chunk at 90% of the room, given this chunk's ratio (text chunks keep
        // theirs: a chunk compressed because it was not UTF-8 says nothing about the next).
        if !self.text {
            let ratio = buf.len() as f64 / compressed.len().max(1) as f64;
            self.target =
                ((self.max_compressed() as f64 * ratio * 0.9) as usize).clamp(64 * 1024, 64 << 20);
        }
        let id_hash = xxhash_rust::xxh3::xxh3_64(buf);
        self.header.chunk = format!("{}-{}-{id_hash:016x}", self.fp, self.index);
        self.send(
            spans[0].0,
            spans.len() as u64,
            Records::Packed(compressed),
            Vec::new(),
        )
    }

    fn send(
        &mut self,
        first_line: u64,
        rows: u64,
        records: Records<'_>,
        rejects: Vec<Reject>,
    ) -> Result<()> {
        if !rejects.is_empty() {
            self.rejected += rejects.len() as u64;
            let id_hash = xxhash_rust::xxh3::xxh3_64(rejects[0].raw.as_bytes());
            self.header.chunk = format!("{}-{}-{id_hash:016x}", self.fp, self.index);
        }
        self.index += 1;
        self.header.first_line = first_line;
        self.header.rows = rows;
        self.header.codec = match records {
            Records::Packed(_) => self.compressor.codec(),
            Records::Text(_) => Codec::Text,
        };
        self.header.rejects = rejects;
        // Same width as the value the header's length was measured with.
        self.header.produced_at_ms = Some(chrono::Utc::now().timestamp_millis());
        metrics::counter!(crate::metrics::ROWS_PRODUCED).increment(rows);
        let body = match records {
            Records::Packed(payload) => encode(&self.header, payload),
            Records::Text(text) => encode_text(&self.header, text),
        };
        debug_assert!(body.len() <= self.limit || !self.header.rejects.is_empty());
        self.tx
            .blocking_send(body)
            .map_err(|_| Error::Stopped("the sender of chunk messages stopped".into()))
    }
}

/// What the chunks of a source are sent as.
struct Messages {
    /// Largest message.
    limit: usize,
    /// Text where it can be ([`Codec::Text`]), else compressed.
    text: bool,
}

/// Reads a source and sends its chunks; returns (rows, bytes read, rejected rows).
///
/// CSV records travel as they stood in the source; JSON lines as lines; Parquet rows as JSON
/// lines (their values then typed by the same rules as every other source's).
fn chunk_source(
    rt: &tokio::runtime::Handle,
    layout: &TableLayout,
    src: &Source,
    opts: &ProducerOptions,
    Messages { limit, text }: Messages,
    tx: mpsc::Sender<String>,
    progress: Option<Progress>,
) -> Result<(u64, u64, u64)> {
    let name = src.name.clone();
    let fp = src.fingerprint(&opts.table.name)?;
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut header = ChunkHeader {
        table: opts.table.name.clone(),
        schema: layout.fingerprint.clone(),
        chunk: String::new(),
        source: name.clone(),
        first_line: 0,
        rows: 0,
        codec: Codec::Zstd,
        format: opts.table.format.clone(),
        columns: Vec::new(),
        payload: Payload::Csv,
        rejects: Vec::new(),
        produced_at_ms: Some(chrono::Utc::now().timestamp_millis()),
    };
    // Each call appends whole records to the empty buffer until it holds `target` bytes or the
    // input ends, and their (line, length) to the spans.
    type NextPiece = Box<dyn FnMut(&mut Vec<u8>, usize, &mut Vec<(u64, usize)>) -> Result<()>>;
    let mut next: NextPiece = match src.format {
        Format::Csv => {
            let (mut reader, columns) =
                read_header(src.open(rt, read.clone())?, &name, &opts.table.format)?;
            // Refused here: a name twice, no partition column. Columns the table lacks are its
            // schema policy's, applied by the consumer.
            layout.map_header(&columns, &name)?;
            header.columns = columns;
            let mut records = crate::source::csv::PieceRecords::default();
            Box::new(move |buf, target, spans| {
                records.clear();
                let read = reader.next_piece(buf, target, &mut records);
                records.append_spans(buf, spans);
                read
            })
        }
        Format::JsonLines | Format::Parquet => {
            let input = if src.format == Format::Parquet {
                crate::source::parquet::parquet_as_json_lines(
                    rt,
                    src,
                    &std::env::temp_dir(),
                    &read,
                )?
                .0
            } else {
                src.open(rt, read.clone())?
            };
            header.payload = Payload::JsonLines;
            let mut input = std::io::BufReader::with_capacity(1 << 20, input);
            let mut line = 0u64;
            let name = name.clone();
            Box::new(move |buf, target, spans| {
                while buf.len() < target {
                    let before = buf.len();
                    let n = std::io::BufRead::read_until(&mut input, b'\n', buf).map_err(|e| {
                        // A line cut short by the error is not sent.
                        buf.truncate(before);
                        Error::invalid_at(&name, Some(line + 1), format!("cannot read: {e}"))
                    })?;
                    if n == 0 {
                        break;
                    }
                    line += 1;
                    spans.push((line, n));
                }
                Ok(())
            })
        }
    };
    let header_len = serde_json::to_string(&header).map(|s| s.len()).unwrap_or(0);
    let mut ch = Chunker {
        header,
        header_len,
        limit,
        text,
        compressor: Compressor::new(Codec::Zstd, opts.zstd_level.unwrap_or(1)),
        out: Vec::new(),
        fp,
        index: 0,
        target: 0,
        tx: &tx,
        rejected: 0,
    };
    ch.target = if text {
        ch.text_target()
    } else {
        (ch.max_compressed() * 4).max(64 * 1024)
    };
    if ch.max_compressed() < 1024 {
        return Err(Error::Config(format!(
            "queue message limit of {limit} bytes is too small for a chunk of table {}",
            opts.table.name
        )));
    }
    let bytes = || read.load(std::sync::atomic::Ordering::Relaxed);
    let mut buf: Vec<u8> = Vec::with_capacity(ch.target + 4096);
    let mut spans: Vec<(u64, usize)> = Vec::new();
    let mut rows = 0u64;
    loop {
        let read = next(&mut buf, ch.target, &mut spans);
        rows += spans.len() as u64;
        let full = buf.len() >= ch.target;
        // What was read before an error is held back with the rest: the error is reported, and
        // the producer sends nothing of the source.
        ch.emit(&buf, &spans)?;
        buf.clear();
        spans.clear();
        if let Some(p) = &progress {
            p(bytes(), rows);
        }
        read?;
        if !full {
            break;
        }
    }
    Ok((rows, bytes(), ch.rejected))
}

#[cfg(test)]
mod tests {
    #[test]
    fn held_messages_come_back_in_order_from_memory_and_from_disk() {
        let mut held = super::Held {
            limit: 100,
            ..Default::default()
        };
        let bodies: Vec<String> = (0..50)
            .map(|i| format!("body {i} {}", "x".repeat(i)))
            .collect();
        for b in &bodies {
            held.push(b.clone()).unwrap();
        }
        let path = held.spill.as_ref().unwrap().path.clone();
        assert!(path.exists());
        let back: Vec<String> = held
            .into_bodies()
            .unwrap()
            .collect::<crate::error::Result<_>>()
            .unwrap();
        assert_eq!(back, bodies);
        // The spill file is gone with the bodies.
        assert!(!path.exists());
    }
}
