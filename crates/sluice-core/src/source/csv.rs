//! CSV record scanning, shared by the producer (which finds record boundaries) and the consumer
//! (which splits records into fields), so both sides agree on every byte.
//!
//! The dialect is RFC 4180 with a configurable delimiter and quote:
//! - a quote opens a quoted section only at the start of a field; inside it, a doubled quote is a
//!   literal quote and the section may span lines;
//! - a record ends at `\n` outside a quoted section; a `\r` before it is dropped (CRLF files);
//! - a UTF-8 byte order mark at the start of a file is skipped;
//! - a last record without a final newline is a record.

use std::io::Read;

use memchr::{memchr, memchr_iter, memchr2, memrchr};

use crate::error::{Error, Result};

/// How a CSV source is written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvFormat {
    /// Field delimiter, one ASCII byte.
    #[serde(default = "default_delimiter")]
    pub delimiter: u8,
    /// Quote character, one ASCII byte.
    #[serde(default = "default_quote")]
    pub quote: u8,
    /// Field values that mean NULL. The empty field always does.
    #[serde(default)]
    pub null_values: Vec<String>,
}

fn default_delimiter() -> u8 {
    b','
}
fn default_quote() -> u8 {
    b'"'
}

impl Default for CsvFormat {
    fn default() -> Self {
        CsvFormat {
            delimiter: b',',
            quote: b'"',
            null_values: Vec::new(),
        }
    }
}

impl CsvFormat {
    /// Whether a field value means NULL.
    #[inline]
    pub fn is_null(&self, field: &[u8]) -> bool {
        field.is_empty() || self.null_values.iter().any(|n| n.as_bytes() == field)
    }

    /// Checks that delimiter and quote are usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |b: u8| !b.is_ascii() || b == b'\n' || b == b'\r';
        if bad(self.delimiter) || bad(self.quote) || self.delimiter == self.quote {
            return Err(Error::Config(format!(
                "delimiter {:?} and quote {:?} must be two different ASCII characters other than newline",
                self.delimiter as char, self.quote as char
            )));
        }
        Ok(())
    }
}

/// Where the next record ends in a buffer.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// The record is `buf[..end]` (newline included) and holds `newlines` line breaks.
    Complete { end: usize, newlines: u64 },
    /// The buffer ends inside the record; `in_quote` says whether inside a quoted section, which
    /// opened after `quote_newlines` line breaks.
    Incomplete { in_quote: bool, quote_newlines: u64 },
}

fn scan_record(buf: &[u8], delimiter: u8, quote: u8) -> Scan {
    let mut i = 0;
    let mut newlines = 0u64;
    loop {
        let Some(off) = memchr2(quote, b'\n', &buf[i..]) else {
            return Scan::Incomplete {
                in_quote: false,
                quote_newlines: 0,
            };
        };
        let j = i + off;
        if buf[j] == b'\n' {
            return Scan::Complete {
                end: j + 1,
                newlines: newlines + 1,
            };
        }
        // A quote: it opens a quoted section only at the start of a field.
        let at_field_start = j == 0 || buf[j - 1] == delimiter;
        if !at_field_start {
            i = j + 1;
            continue;
        }
        let opened_at = newlines;
        let mut k = j + 1;
        loop {
            // The closing quote, counting the line breaks before it (rarely any).
            let Some(q) = memchr2(quote, b'\n', &buf[k..]).map(|o| k + o) else {
                return Scan::Incomplete {
                    in_quote: true,
                    quote_newlines: opened_at,
                };
            };
            if buf[q] == b'\n' {
                newlines += 1;
                k = q + 1;
                continue;
            }
            if q + 1 >= buf.len() {
                // Cannot tell a closing quote from the first half of a doubled one yet.
                return Scan::Incomplete {
                    in_quote: true,
                    quote_newlines: opened_at,
                };
            }
            if buf[q + 1] == quote {
                k = q + 2;
            } else {
                i = q + 1;
                break;
            }
        }
    }
}

/// Reads whole records from a byte stream in constant memory (plus the largest record).
pub(crate) struct RecordReader<R> {
    inner: R,
    name: String,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    line: u64,
    delimiter: u8,
    quote: u8,
    first: bool,
}

/// One record as it stands in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordSpan {
    /// 1-based line on which the record starts.
    pub line: u64,
    /// Length of the bytes appended to the caller's buffer (always ends with `\n`).
    pub len: usize,
}

const READ_SIZE: usize = 1 << 20;

impl<R: Read> RecordReader<R> {
    /// A reader over `inner`; `name` is used in error messages.
    pub fn new(inner: R, name: impl Into<String>, format: &CsvFormat) -> Self {
        RecordReader {
            inner,
            name: name.into(),
            buf: vec![0; READ_SIZE],
            start: 0,
            end: 0,
            eof: false,
            line: 1,
            delimiter: format.delimiter,
            quote: format.quote,
            first: true,
        }
    }

    fn fill(&mut self) -> Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let new_len = self.buf.len() * 2;
            self.buf.resize(new_len, 0);
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&self.name, e)),
            }
        }
    }

    /// Appends the next record to `out` (with a trailing `\n`) and returns where it stood, or
    /// `None` at the end of the input. An unterminated quoted field is an error naming the line
    /// on which the quote opened.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> Result<Option<RecordSpan>> {
        loop {
            if self.first && (self.end - self.start >= 3 || self.eof) {
                self.first = false;
                if self.buf[self.start..self.end].starts_with(b"\xEF\xBB\xBF") {
                    self.start += 3;
                }
            }
            if !self.first {
                match scan_record(&self.buf[self.start..self.end], self.delimiter, self.quote) {
                    Scan::Complete { end, newlines } => {
                        let rec = &self.buf[self.start..self.start + end];
                        out.extend_from_slice(rec);
                        let span = RecordSpan {
                            line: self.line,
                            len: end,
                        };
                        self.line += newlines;
                        self.start += end;
                        return Ok(Some(span));
                    }
                    Scan::Incomplete {
                        in_quote,
                        quote_newlines,
                    } if self.eof => {
                        if self.start == self.end {
                            return Ok(None);
                        }
                        if in_quote {
                            return Err(Error::invalid_at(
                                &self.name,
                                Some(self.line + quote_newlines),
                                "unterminated quoted field: the quote opened here is never closed",
                            ));
                        }
                        let rec = &self.buf[self.start..self.end];
                        out.extend_from_slice(rec);
                        out.push(b'\n');
                        let span = RecordSpan {
                            line: self.line,
                            len: rec.len() + 1,
                        };
                        self.line += 1;
                        self.start = self.end;
                        return Ok(Some(span));
                    }
                    Scan::Incomplete { .. } => {}
                }
            }
            if self.eof {
                return Ok(None);
            }
            self.fill()?;
        }
    }
}

/// The records of a piece read by [`RecordReader::next_piece`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PieceRecords {
    /// (line, length) of each record, when the piece has a quote character. Empty otherwise:
    /// then the piece holds `lines` records of one line each, the first on `first_line`.
    pub spans: Vec<(u64, usize)>,
    pub first_line: u64,
    pub lines: u64,
}

impl PieceRecords {
    /// Records in the piece.
    pub fn len(&self) -> usize {
        self.spans.len() + self.lines as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties it, for the next piece.
    pub fn clear(&mut self) {
        self.spans.clear();
        self.lines = 0;
    }

    /// Appends (line, length) of every record of `piece` to `spans`.
    pub fn append_spans(&mut self, piece: &[u8], spans: &mut Vec<(u64, usize)>) {
        self.lines_to_spans(piece);
        spans.append(&mut self.spans);
    }

    /// The lines read so far as spans: each ends at a newline of `piece`.
    fn lines_to_spans(&mut self, piece: &[u8]) {
        let (mut start, mut line) = (0, self.first_line);
        for nl in memchr_iter(b'\n', piece).take(self.lines as usize) {
            self.spans.push((line, nl + 1 - start));
            start = nl + 1;
            line += 1;
        }
        self.lines = 0;
    }
}

/// What [`RecordReader::plain_lines`] stopped at.
enum Plain {
    /// The piece is full, or the input ended.
    Done,
    /// The next stretch has a quote character: records must be scanned one at a time.
    Quoted,
}

impl<R: Read> RecordReader<R> {
    /// Appends whole records to the empty `piece` until it holds at least `target` bytes or the
    /// input ends, and says in `records` (empty too) where they are. The records, and where
    /// the piece ends, are those of calling [`RecordReader::next_into`] until the piece holds
    /// `target` bytes; but a stretch without a quote character is taken as lines, whole
    /// buffers at a time, without looking at each record. On an error, `piece` and `records`
    /// hold the records read before it.
    pub fn next_piece(
        &mut self,
        piece: &mut Vec<u8>,
        target: usize,
        records: &mut PieceRecords,
    ) -> Result<()> {
        debug_assert!(piece.is_empty() && records.is_empty());
        // Lines, until a quote character (then records scanned one by one, to the piece's end;
        // and before the byte order mark is looked for).
        if !self.first {
            match self.plain_lines(piece, target, records)? {
                Plain::Done => return Ok(()),
                Plain::Quoted => records.lines_to_spans(piece),
            }
        }
        self.scanned_records(piece, target, records)
    }

    /// Takes records into `piece`, scanning each, up to the first record end at or past
    /// `target` bytes or the end of the input; the records of a buffer are copied at once.
    fn scanned_records(
        &mut self,
        piece: &mut Vec<u8>,
        target: usize,
        records: &mut PieceRecords,
    ) -> Result<()> {
        loop {
            if piece.len() >= target {
                return Ok(());
            }
            if !self.first {
                let region = &self.buf[self.start..self.end];
                let (mut at, mut line) = (0, self.line);
                while piece.len() + at < target {
                    match scan_record(&region[at..], self.delimiter, self.quote) {
                        Scan::Complete { end, newlines } => {
                            records.spans.push((line, end));
                            line += newlines;
                            at += end;
                        }
                        Scan::Incomplete { .. } => break,
                    }
                }
                piece.extend_from_slice(&region[..at]);
                self.start += at;
                self.line = line;
                if piece.len() >= target {
                    return Ok(());
                }
            }
            // The record the buffer ends in (or the byte order mark): read with more input.
            match self.next_into(piece)? {
                Some(span) => records.spans.push((span.line, span.len)),
                None => return Ok(()),
            }
        }
    }

    /// Takes whole lines without a quote character into `piece`, up to the first line end at or
    /// past `target` bytes.
    fn plain_lines(
        &mut self,
        piece: &mut Vec<u8>,
        target: usize,
        records: &mut PieceRecords,
    ) -> Result<Plain> {
        loop {
            if piece.len() >= target {
                return Ok(Plain::Done);
            }
            let region = &self.buf[self.start..self.end];
            let need = target - piece.len();
            // The first line end that fills the piece, or the last one buffered.
            let end = region
                .get(need - 1..)
                .and_then(|rest| memchr(b'\n', rest))
                .map(|o| need + o)
                .or_else(|| memrchr(b'\n', region).map(|p| p + 1));
            let (take, last_unterminated) = match end {
                Some(e) => (e, false),
                None if self.eof && region.is_empty() => return Ok(Plain::Done),
                // A last record without a final newline.
                None if self.eof => (region.len(), true),
                None => {
                    self.fill()?;
                    continue;
                }
            };
            let bytes = &region[..take];
            if memchr(self.quote, bytes).is_some() {
                return Ok(Plain::Quoted);
            }
            let n = if last_unterminated {
                1
            } else {
                memchr_iter(b'\n', bytes).count() as u64
            };
            if records.lines == 0 {
                records.first_line = self.line;
            }
            records.lines += n;
            self.line += n;
            piece.extend_from_slice(bytes);
            if last_unterminated {
                piece.push(b'\n');
            }
            self.start += take;
        }
    }
}

/// A record without its `\n` and the `\r` before it.
fn without_line_end(record: &[u8]) -> &[u8] {
    let mut rec = record;
    if let [head @ .., b'\n'] = rec {
        rec = head;
    }
    if let [head @ .., b'\r'] = rec {
        rec = head;
    }
    rec
}

/// Splits records into fields, reusing its buffers across records.
///
/// A field is a slice of the record when it can be (unquoted, or quoted without doubled quotes
/// inside: the text between the quotes); only a field with `""` escapes (or text after its
/// closing quote) is copied, unescaped, into a buffer of the splitter.
#[derive(Debug, Default)]
pub struct FieldSplitter {
    data: Vec<u8>,
    /// (start, end, in `data`) of each field: in the record itself, or in `data`.
    bounds: Vec<(usize, usize, bool)>,
}

impl FieldSplitter {
    /// Splits one record (as produced by `RecordReader`, trailing newline optional).
    pub fn split(&mut self, record: &[u8], delimiter: u8, quote: u8) {
        self.data.clear();
        self.bounds.clear();
        let rec = without_line_end(record);
        let Some(first_quote) = memchr(quote, rec) else {
            // Fast path: no quoting anywhere; fields are slices of the record.
            self.split_at_delimiters(rec, delimiter);
            return;
        };
        // The fields before the first quote hold none: split in one pass (a quoted comment at
        // the end of each record is the usual case); the field with the quote and the rest
        // follow the rules below.
        let mut i = 0;
        for d in memchr_iter(delimiter, &rec[..first_quote]) {
            self.bounds.push((i, d, false));
            i = d + 1;
        }
        loop {
            if i < rec.len() && rec[i] == quote {
                if let Some(close) = plain_close(rec, i, rec.len(), delimiter, quote) {
                    self.bounds.push((i + 1, close, false));
                    if close + 1 == rec.len() {
                        return;
                    }
                    i = close + 2;
                    continue;
                }
                if !self.unescape_field(rec, &mut i, delimiter, quote) {
                    return;
                }
                continue;
            }
            match memchr(delimiter, &rec[i..]) {
                Some(off) => {
                    self.bounds.push((i, i + off, false));
                    i += off + 1;
                }
                None => {
                    self.bounds.push((i, rec.len(), false));
                    return;
                }
            }
        }
    }

    fn split_at_delimiters(&mut self, rec: &[u8], delimiter: u8) {
        let mut start = 0;
        for d in memchr_iter(delimiter, rec) {
            self.bounds.push((start, d, false));
            start = d + 1;
        }
        self.bounds.push((start, rec.len(), false));
    }

    /// Copies the quoted field at `*i` into `data`, unescaping `""`, with whatever follows its
    /// closing quote up to the delimiter; returns false at the end of the record.
    fn unescape_field(&mut self, rec: &[u8], i: &mut usize, delimiter: u8, quote: u8) -> bool {
        let field_start = self.data.len();
        *i += 1;
        loop {
            match memchr(quote, &rec[*i..]) {
                None => {
                    self.data.extend_from_slice(&rec[*i..]);
                    *i = rec.len();
                    break;
                }
                Some(off) => {
                    self.data.extend_from_slice(&rec[*i..*i + off]);
                    *i += off + 1;
                    if *i < rec.len() && rec[*i] == quote {
                        self.data.push(quote);
                        *i += 1;
                    } else {
                        break;
                    }
                }
            }
        }
        match memchr(delimiter, &rec[*i..]) {
            Some(off) => {
                self.data.extend_from_slice(&rec[*i..*i + off]);
                self.bounds.push((field_start, self.data.len(), true));
                *i += off + 1;
                true
            }
            None => {
                self.data.extend_from_slice(&rec[*i..]);
                self.bounds.push((field_start, self.data.len(), true));
                false
            }
        }
    }

    /// Number of fields in the last split record.
    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    /// Whether the last split record had no fields (never true after a split).
    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }

    /// Field `i` of the last split record, which was `record`.
    #[inline]
    pub fn field<'a>(&'a self, record: &'a [u8], i: usize) -> &'a [u8] {
        let (start, end, in_data) = self.bounds[i];
        if in_data {
            &self.data[start..end]
        } else {
            &record[start..end]
        }
    }

    /// Where field `i` of the last split record is: `Ok((start, end))` in the record, or
    /// `Err(bytes)` copied (a quoted field with `""` escapes, unescaped).
    #[inline]
    pub fn place(&self, i: usize) -> std::result::Result<(usize, usize), &[u8]> {
        let (start, end, in_data) = self.bounds[i];
        if in_data {
            Err(&self.data[start..end])
        } else {
            Ok((start, end))
        }
    }

    /// Field `i` as text without validating it again, when it is a slice of `record` and
    /// `record_text` is the same bytes already known to be UTF-8.
    #[inline]
    pub fn field_str<'a>(&'a self, record_text: &'a str, i: usize) -> Option<&'a str> {
        let (start, end) = self.place(i).ok()?;
        record_text.get(start..end)
    }
}

/// Splits the records of one buffer into fields without a call per field: a delimiter is
/// looked for eight bytes at a time, in a word (fields are short; most are found in one).
pub(crate) struct BufferSplitter<'a> {
    buf: &'a [u8],
    delimiter: u8,
    quote: u8,
    /// The delimiter in every byte of a word.
    pattern: u64,
}

impl<'a> BufferSplitter<'a> {
    pub fn new(buf: &'a [u8], delimiter: u8, quote: u8) -> Self {
        BufferSplitter {
            buf,
            delimiter,
            quote,
            pattern: u64::from(delimiter) * 0x0101_0101_0101_0101,
        }
    }

    /// Splits the record `start..end` of the buffer (line end optional) as
    /// [`FieldSplitter::split`] does, into the places of its fields in the buffer. Returns
    /// false, with `places` unspecified, for a record whose split needs copying (a quoted
    /// field with an escaped quote, or text after its closing quote, or no closing quote):
    /// the caller splits that one with a [`FieldSplitter`].
    #[inline]
    pub fn split(&self, start: usize, end: usize, places: &mut Vec<(u32, u32)>) -> bool {
        places.clear();
        let end = start + without_line_end(&self.buf[start..end]).len();
        let mut i = start;
        loop {
            if i < end && self.buf[i] == self.quote {
                let Some(close) = plain_close(self.buf, i, end, self.delimiter, self.quote) else {
                    return false;
                };
                places.push(((i + 1) as u32, close as u32));
                if close + 1 == end {
                    return true;
                }
                i = close + 2;
                continue;
            }
            match self.find_delimiter(i, end) {
                Some(d) => {
                    places.push((i as u32, d as u32));
                    i = d + 1;
                }
                None => {
                    places.push((i as u32, end as u32));
                    return true;
                }
            }
        }
    }

    /// The first delimiter in `from..to`.
    #[inline]
    fn find_delimiter(&self, from: usize, to: usize) -> Option<usize> {
        let mut i = from;
        while i < to {
            let Some(word) = self.buf.get(i..i + 8) else {
                return memchr(self.delimiter, &self.buf[i..to]).map(|o| i + o);
            };
            let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            let found = zero_bytes(x ^ self.pattern);
            if found != 0 {
                let p = i + (found.trailing_zeros() / 8) as usize;
                return (p < to).then_some(p);
            }
            i += 8;
        }
        None
    }
}

/// Where the quoted field opening at `open` in `buf[..end]` (a record without its line end)
/// closes, when the closing quote is followed by the delimiter or the end: the field is then
/// the text between the quotes, as it stands. `None` when it must be copied (an escaped quote,
/// text after the closing quote) or never closes.
#[inline]
fn plain_close(buf: &[u8], open: usize, end: usize, delimiter: u8, quote: u8) -> Option<usize> {
    let close = open + 1 + memchr(quote, &buf[open + 1..end])?;
    (close + 1 == end || buf[close + 1] == delimiter).then_some(close)
}

/// The high bit of each zero byte of `t`, exactly: `(t & 0x7f) + 0x7f` carries into the high
/// bit of a byte, and never out of it, unless the byte's low seven bits are zero.
#[inline]
fn zero_bytes(t: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((t & LOW7) + LOW7) | t | LOW7)
}

/// Complete records in an in-memory buffer (a chunk payload): `(newlines before the record,
/// start, end)`, without copying. A last record without a newline is a record; an
/// unterminated quoted field ends the iteration with an error.
pub struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
    newlines: u64,
    delimiter: u8,
    quote: u8,
    /// No quote character in `buf`: every line is a record.
    lines: bool,
}

impl<'a> Records<'a> {
    /// The records of `buf` in `format`.
    pub fn new(buf: &'a [u8], format: &CsvFormat) -> Self {
        Records {
            buf,
            pos: 0,
            newlines: 0,
            delimiter: format.delimiter,
            quote: format.quote,
            lines: memchr(format.quote, buf).is_none(),
        }
    }
}

impl Iterator for Records<'_> {
    type Item = std::result::Result<(u64, usize, usize), u64>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let before = self.newlines;
        if self.lines {
            let end = memchr(b'\n', &self.buf[start..]).map_or(self.buf.len(), |o| start + o + 1);
            self.pos = end;
            self.newlines += 1;
            return Some(Ok((before, start, end)));
        }
        match scan_record(&self.buf[start..], self.delimiter, self.quote) {
            Scan::Complete { end, newlines } => {
                self.pos += end;
                self.newlines += newlines;
                Some(Ok((before, start, start + end)))
            }
            Scan::Incomplete {
                in_quote: false, ..
            } => {
                self.pos = self.buf.len();
                Some(Ok((before, start, self.buf.len())))
            }
            Scan::Incomplete {
                in_quote: true,
                quote_newlines,
            } => {
                self.pos = self.buf.len();
                Some(Err(before + quote_newlines))
            }
        }
    }
}

/// Reads and validates a header record: UTF-8, non-empty, unique names.
pub(crate) fn parse_header(record: &[u8], format: &CsvFormat, file: &str) -> Result<Vec<String>> {
    let mut sp = FieldSplitter::default();
    sp.split(record, format.delimiter, format.quote);
    let mut names = Vec::with_capacity(sp.len());
    for i in 0..sp.len() {
        let name = std::str::from_utf8(sp.field(record, i))
            .map_err(|_| {
                Error::invalid_at(
                    file,
                    Some(1),
                    format!("header field {} is not valid UTF-8", i + 1),
                )
            })?
            .trim()
            .to_string();
        if name.is_empty() {
            return Err(Error::invalid_at(
                file,
                Some(1),
                format!("header field {} is empty", i + 1),
            ));
        }
        if names.contains(&name) {
            return Err(Error::invalid_at(
                file,
                Some(1),
                format!("header names column {name:?} twice"),
            ));
        }
        names.push(name);
    }
    Ok(names)
}

/// Reads the header of the CSV data `inner` (named `name` in errors); the reader is left at
/// the first data record.
pub(crate) fn read_header<R: Read>(
    inner: R,
    name: &str,
    format: &CsvFormat,
) -> Result<(RecordReader<R>, Vec<String>)> {
    let mut reader = RecordReader::new(inner, name, format);
    let mut rec = Vec::new();
    if reader.next_into(&mut rec)?.is_none() {
        return Err(Error::invalid_at(
            name,
            Some(1),
            "file is empty: expected a header line",
        ));
    }
    let header = parse_header(&rec, format, name)?;
    Ok((reader, header))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(input: &[u8], read_size: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut r = RecordReader::new(Slow(input, read_size), "t.csv", &CsvFormat::default());
        let mut out = Vec::new();
        let mut recs = Vec::new();
        while let Some(span) = r.next_into(&mut out)? {
            recs.push((span.line, out[out.len() - span.len..].to_vec()));
        }
        Ok(recs)
    }

    fn fields(rec: &[u8]) -> Vec<String> {
        let mut sp = FieldSplitter::default();
        sp.split(rec, b',', b'"');
        (0..sp.len())
            .map(|i| String::from_utf8(sp.field(rec, i).to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn quoted_fields_newlines_crlf_bom() {
        let input = b"\xEF\xBB\xBFa,b\r\n1,\"x,\"\"y\"\"\nz\"\r\n2,plain\r\n3,last";
        for rs in [1, 2, 3, 7, 1 << 20] {
            let recs = records(input, rs).unwrap();
            assert_eq!(recs.len(), 4, "read size {rs}");
            assert_eq!(recs[0], (1, b"a,b\r\n".to_vec()));
            assert_eq!(recs[1].0, 2);
            assert_eq!(fields(&recs[1].1), vec!["1", "x,\"y\"\nz"]);
            assert_eq!(recs[2].0, 4);
            assert_eq!(fields(&recs[2].1), vec!["2", "plain"]);
            assert_eq!(recs[3], (5, b"3,last\n".to_vec()));
        }
    }

    #[test]
    fn quote_inside_unquoted_field_is_literal() {
        let recs = records(b"a,b\n5'10\",x\n", 4).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(fields(&recs[1].1), vec!["5'10\"", "x"]);
    }

    #[test]
    fn unterminated_quote_names_the_opening_line() {
        let err = records(b"a,b\n1,2\n3,\"open\nmore\n", 5).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("t.csv:3: unterminated quoted field"),
            "{msg}"
        );
    }

    #[test]
    fn empty_fields_and_trailing_delimiter() {
        assert_eq!(fields(b",,\n"), vec!["", "", ""]);
        assert_eq!(fields(b"\"\",a\n"), vec!["", "a"]);
        assert_eq!(fields(b"\n"), vec![""]);
    }

    /// The splitting rules, written plainly: every field copied, `""` unescaped, text after a
    /// closing quote kept.
    fn reference_fields(rec: &[u8]) -> Vec<Vec<u8>> {
        let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
        let rec = rec.strip_suffix(b"\r").unwrap_or(rec);
        let mut out = Vec::new();
        let mut i = 0;
        loop {
            let mut f = Vec::new();
            if i < rec.len() && rec[i] == b'"' {
                i += 1;
                while i < rec.len() {
                    if rec[i] == b'"' {
                        if rec.get(i + 1) == Some(&b'"') {
                            f.push(b'"');
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    f.push(rec[i]);
                    i += 1;
                }
            }
            while i < rec.len() && rec[i] != b',' {
                f.push(rec[i]);
                i += 1;
            }
            out.push(f);
            if i >= rec.len() {
                return out;
            }
            i += 1;
        }
    }

    /// A source that gives at most `.1` bytes a read.
    struct Slow<'a>(&'a [u8], usize);
    impl Read for Slow<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// (piece, (line, record) of each record) until the end or an error, with its line.
    type Pieces = (Vec<(Vec<u8>, Vec<(u64, Vec<u8>)>)>, Option<u64>);

    fn error_line(e: Error) -> Option<u64> {
        match e {
            Error::InvalidInput { line, .. } => line,
            other => panic!("{other}"),
        }
    }

    /// Pieces of at least `target` bytes, a record at a time with `next_into`.
    fn pieces_by_record(input: &[u8], read_size: usize, target: usize) -> Pieces {
        let mut r = RecordReader::new(Slow(input, read_size), "t.csv", &CsvFormat::default());
        let (mut pieces, mut piece, mut recs) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            match r.next_into(&mut piece) {
                Ok(Some(span)) => {
                    recs.push((span.line, piece[piece.len() - span.len..].to_vec()));
                    if piece.len() >= target {
                        pieces.push((std::mem::take(&mut piece), std::mem::take(&mut recs)));
                    }
                }
                end => {
                    if !piece.is_empty() {
                        pieces.push((piece, recs));
                    }
                    return (pieces, end.err().and_then(error_line));
                }
            }
        }
    }

    /// The same with `next_piece`, its records expanded from lines or spans.
    fn pieces_by_piece(input: &[u8], read_size: usize, target: usize) -> Pieces {
        let mut r = RecordReader::new(Slow(input, read_size), "t.csv", &CsvFormat::default());
        let mut pieces = Vec::new();
        loop {
            let (mut piece, mut recs) = (Vec::new(), PieceRecords::default());
            let read = r.next_piece(&mut piece, target, &mut recs);
            let full = piece.len() >= target;
            let expanded: Vec<(u64, Vec<u8>)> = if recs.spans.is_empty() {
                assert!(memchr(b'"', &piece).is_none());
                Records::new(&piece, &CsvFormat::default())
                    .map(|x| {
                        let (k, s, e) = x.unwrap();
                        (recs.first_line + k, piece[s..e].to_vec())
                    })
                    .collect()
            } else {
                let mut at = 0;
                recs.spans
                    .iter()
                    .map(|(line, len)| {
                        at += len;
                        (*line, piece[at - len..at].to_vec())
                    })
                    .collect()
            };
            assert_eq!(expanded.len(), recs.len());
            if !piece.is_empty() {
                pieces.push((piece, expanded));
            }
            match read {
                Err(e) => return (pieces, error_line(e)),
                Ok(()) if !full => return (pieces, None),
                Ok(()) => {}
            }
        }
    }

    #[test]
    fn pieces_of_lines_and_of_quoted_records() {
        let input = b"a,b\n1,x\n2,\"y\nz\"\n3,w\n4,v";
        let got = pieces_by_piece(input, 3, 6);
        assert_eq!(got, pieces_by_record(input, 3, 6));
        assert_eq!(got.0.len(), 3, "{got:?}");
        assert_eq!(got.0[1].1, vec![(3, b"2,\"y\nz\"\n".to_vec())]);
        assert_eq!(
            got.0[2].1,
            vec![(5, b"3,w\n".to_vec()), (6, b"4,v\n".to_vec())]
        );
        // An unterminated quote: the records before it, then the error naming its line.
        let bad = b"h\n1\n2\n\"3\n4\n";
        let got = pieces_by_piece(bad, 2, 100);
        assert_eq!(got, pieces_by_record(bad, 2, 100));
        assert_eq!(got.1, Some(4));
    }

    proptest::proptest! {
        #[test]
        fn pieces_are_the_records_read_one_at_a_time(
            chars in proptest::collection::vec(proptest::sample::select(vec![b'a', b',', b'"', b'\n', b'\n', b'\r', b'a']), 0..80),
            read_size in 1usize..12,
            target in 1usize..30,
        ) {
            let mut input = b"h,i\n".to_vec();
            input.extend(&chars);
            proptest::prop_assert_eq!(
                pieces_by_piece(&input, read_size, target),
                pieces_by_record(&input, read_size, target)
            );
        }

        /// Records cut anywhere in a buffer longer than a few 64-byte words: the buffer
        /// splitter gives the places of the record splitter exactly when those are all slices
        /// of the record, and declines otherwise.
        #[test]
        fn buffer_splitter_agrees_with_the_record_splitter(
            chars in proptest::collection::vec(proptest::sample::select(vec![b'a', b'a', b',', b',', b'"', b' ', b'\r', b'\n', 0xff, 0xac, 0x2d]), 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..40),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= chars.len()).collect();
            cuts.extend([0, chars.len()]);
            cuts.sort_unstable();
            cuts.dedup();
            let fast = BufferSplitter::new(&chars, b',', b'"');
            let mut sp = FieldSplitter::default();
            let mut places = Vec::new();
            for w in cuts.windows(2) {
                let (start, end) = (w[0], w[1]);
                let rec = &chars[start..end];
                sp.split(rec, b',', b'"');
                let slow: Option<Vec<(u32, u32)>> = (0..sp.len())
                    .map(|i| sp.place(i).ok().map(|(s, e)| ((start + s) as u32, (start + e) as u32)))
                    .collect();
                let split = fast.split(start, end, &mut places);
                proptest::prop_assert_eq!(split, slow.is_some(), "record {:?}", rec);
                if let Some(slow) = slow {
                    proptest::prop_assert_eq!(&places, &slow, "record {:?}", rec);
                }
            }
        }

        #[test]
        fn split_matches_the_plain_rules(chars in proptest::collection::vec(proptest::sample::select(vec![b'a', b',', b'"', b' ', b'\r']), 0..24)) {
            let mut rec = chars.clone();
            rec.push(b'\n');
            let mut sp = FieldSplitter::default();
            sp.split(&rec, b',', b'"');
            let got: Vec<Vec<u8>> = (0..sp.len()).map(|i| sp.field(&rec, i).to_vec()).collect();
            proptest::prop_assert_eq!(&got, &reference_fields(&rec));
            let text = std::str::from_utf8(&rec).unwrap();
            for i in 0..sp.len() {
                if let Some(s) = sp.field_str(text, i) {
                    proptest::prop_assert_eq!(s.as_bytes(), sp.field(&rec, i));
                }
            }
        }
    }

    #[test]
    fn quoted_fields_without_escapes_are_slices_of_the_record() {
        let rec = b"1,\"a, b\",\"x\"\"y\",\"q\"tail,z\n";
        let mut sp = FieldSplitter::default();
        sp.split(rec, b',', b'"');
        let text = std::str::from_utf8(rec).unwrap();
        assert_eq!(sp.field_str(text, 1), Some("a, b"));
        assert_eq!(sp.field_str(text, 2), None);
        assert_eq!(sp.field(rec, 2), b"x\"y");
        assert_eq!(sp.field(rec, 3), b"qtail");
        assert_eq!(sp.field_str(text, 4), Some("z"));
    }

    #[test]
    fn header_errors() {
        let f = CsvFormat::default();
        assert!(
            parse_header(b"a,,b\n", &f, "x.csv")
                .unwrap_err()
                .to_string()
                .contains("x.csv:1: header field 2 is empty")
        );
        assert!(
            parse_header(b"a,b,a\n", &f, "x.csv")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert_eq!(
            parse_header(b"a, b \n", &f, "x.csv").unwrap(),
            vec!["a", "b"]
        );
    }
}
