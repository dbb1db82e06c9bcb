//! Sources read in order and cut into pieces with deterministic chunk ids, typed in parallel
//! and given back in order.

use super::*;
use crate::source::csv::read_header;
use crate::source::parquet::parquet_as_json_lines;

/// A piece of a source, ready to be typed.
enum Piece {
    Csv {
        raw: Vec<u8>,
        /// Where the records of `raw` are, as the reader found them.
        records: crate::source::csv::PieceRecords,
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

/// What [`Pieces`] reads: sources in order, with their fingerprints, what of them is finished
/// already, and how to read them.
pub(crate) struct Reading {
    pub sources: Vec<Source>,
    pub fingerprints: Vec<String>,
    pub finished: Finished,
    pub format: CsvFormat,
    /// Where objects that are read whole (Parquet) are copied first.
    pub spool: PathBuf,
    /// Counts the bytes read, for progress.
    pub bytes_read: Arc<AtomicU64>,
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
    evolver: Arc<crate::delta::evolve::Evolver>,
    names: Vec<String>,
    reader: tokio::task::JoinHandle<Result<()>>,
}

impl Pieces {
    /// Starts reading. Sources and pieces in `finished` are not typed ([`Item::Skipped`],
    /// [`Item::PieceDone`]).
    pub(crate) fn start(
        reading: Reading,
        layout: Arc<TableLayout>,
        evolver: Arc<crate::delta::evolve::Evolver>,
        parallelism: usize,
    ) -> Self {
        let parallelism = parallelism.max(1);
        // The reader keeps one piece ready (and fills the next): a piece queued per typing
        // thread cost 8 MiB more at the peak (TPC-H SF1: 291–295 MB against 281–288 MB, three
        // runs each) and no measurable time.
        let (tx, rx) = mpsc::channel::<Event>(1);
        let names = reading.sources.iter().map(|s| s.name.clone()).collect();
        let buffers = Buffers::default();
        let reader = {
            let (layout, reader_buffers) = (layout.clone(), buffers.clone());
            let rt = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                read_sources(&rt, &reading, &layout, &reader_buffers, &tx)
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
        let missing = self.layout.changes(d.new_columns);
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
            return Err(Error::Internal(format!(
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
            Err(Error::Stopped(_)) => Ok(()),
            other => other,
        }
    }
}

/// Reads every source in order and sends its pieces. Returns an error only when the receiver
/// is gone; a source that fails is reported as [`Event::Failed`].
fn read_sources(
    rt: &tokio::runtime::Handle,
    reading: &Reading,
    layout: &TableLayout,
    buffers: &Buffers,
    tx: &mpsc::Sender<Event>,
) -> Result<()> {
    let Reading {
        sources,
        fingerprints: fps,
        finished,
        spool,
        bytes_read,
        ..
    } = reading;
    let send = |e: Event| {
        tx.blocking_send(e)
            .map_err(|_| Error::Stopped("convert's reader: typing stopped".into()))
    };
    for (i, src) in sources.iter().enumerate() {
        if finished.sources[i] {
            bytes_read.fetch_add(src.size, Ordering::Relaxed);
            send(Event::Skipped(i))?;
            continue;
        }
        let mut pieces = |chunk: String, piece: Piece| {
            if finished
                .pieces
                .contains(&crate::delta::log::part_key(&chunk, super::PIECE_PART))
            {
                return send(Event::PieceDone(i));
            }
            send(Event::Piece {
                source: i,
                chunk,
                piece,
            })
        };
        let r = match src.format {
            Format::Csv => read_csv(rt, src, &fps[i], layout, reading, buffers, &mut pieces),
            Format::JsonLines => src
                .open(rt, bytes_read.clone())
                .and_then(|input| read_json(input, src, &fps[i], None, buffers, &mut pieces)),
            // Parquet rows travel as JSON lines, as they do through the queue: one way to type
            // them.
            Format::Parquet => {
                parquet_as_json_lines(rt, src, spool, bytes_read).and_then(|(input, types)| {
                    // Named as the table names them (its rows' keys are, when typed).
                    let types: Vec<Column> = types
                        .into_iter()
                        .map(|mut c| -> Result<Column> {
                            let name = layout.names.apply(&c.name).into_owned();
                            if name != c.name {
                                c.source_name = Some(std::mem::replace(&mut c.name, name));
                            }
                            c.ty = c.ty.named(layout.names)?;
                            Ok(c)
                        })
                        .collect::<Result<_>>()?;
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
            Err(e @ Error::Stopped(_)) => return Err(e),
            Err(e) => send(Event::Failed(i, e))?,
        }
    }
    Ok(())
}

fn chunk_id(fp: &str, index: u64, raw: &[u8]) -> String {
    format!("{fp}-{index}-{:016x}", xxhash_rust::xxh3::xxh3_64(raw))
}

fn read_csv(
    rt: &tokio::runtime::Handle,
    src: &Source,
    fp: &str,
    layout: &TableLayout,
    reading: &Reading,
    buffers: &Buffers,
    send: &mut dyn FnMut(String, Piece) -> Result<()>,
) -> Result<()> {
    let (format, bytes_read) = (&reading.format, &reading.bytes_read);
    let input = src.open(rt, bytes_read.clone())?;
    let (mut reader, header) = read_header(input, &src.name, format)?;
    // Refused here (a name twice, no partition column); what the table lacks is the policy's.
    layout.map_header(&header, &src.name)?;
    let header = Arc::new(header);
    let mut index = 0u64;
    let mut records = 0u64;
    loop {
        let mut buf: Vec<u8> = buffers.take();
        let mut recs = crate::source::csv::PieceRecords::default();
        let read = reader.next_piece(&mut buf, PIECE_BYTES, &mut recs);
        let full = buf.len() >= PIECE_BYTES;
        records += recs.len() as u64;
        // What was read before an error is converted; then the error is reported.
        if !buf.is_empty() {
            let chunk = chunk_id(fp, index, &buf);
            index += 1;
            send(
                chunk,
                Piece::Csv {
                    raw: buf,
                    records: recs,
                    header: header.clone(),
                    format: format.clone(),
                },
            )?;
        }
        read?;
        if !full {
            break;
        }
    }
    if records == 0 {
        return Err(Error::invalid_at(
            &src.name,
            Some(1),
            "the file has a header but no rows",
        ));
    }
    Ok(())
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
            records,
            header,
            format,
        } => {
            let map = layout.map_header(header, source)?;
            let mut typer = RowTyper::new(layout, records.len());
            let recs = CsvRecords {
                raw,
                format,
                map: &map,
                frozen: OnFrozen::Quarantine,
                source,
                chunk,
            };
            if records.spans.is_empty() {
                // One record a line: no quote character in the piece.
                add_csv_records(&mut typer, &recs, records.first_line)?;
            } else {
                add_csv_spans(&mut typer, &recs, &records.spans)?;
            }
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
                    Err(e) => typer.reject(crate::decode::rows::QuarantineRow {
                        source: source.to_string(),
                        line,
                        raw: String::from_utf8_lossy(l).into_owned(),
                        reason: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                        chunk: chunk.to_string(),
                    }),
                }
            }
            crate::decode::json::add_json_docs(&mut typer, layout, texts, source, chunk);
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
