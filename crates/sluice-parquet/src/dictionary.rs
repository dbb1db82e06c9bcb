//! Dictionary-encoded Parquet column chunks, encoded by sluice rather than by arrow-rs.
//!
//! arrow-rs interns every value of a dictionary column in a general-purpose hash table, and
//! takes page statistics value by value (a `memcmp` call per text value, twice). On TPC-H
//! lineitem that was about a fifth of `convert`'s CPU. Here a column chunk's dictionary is a
//! small open-addressing table keyed by a value's bits (numbers, dates, timestamps) or bytes
//! (text); a page's statistics are taken over the distinct entries it uses, not over its
//! values; and indices are bit-packed eight at a time, or run-length encoded where eight or
//! more repeat.
//!
//! A chunk is handed to its row group whole (`SerializedRowGroupWriter::append_column`) with
//! the metadata arrow-rs writes for the same column: chunk statistics (text truncated to 64
//! bytes), the page index (column index and offset index), page encoding stats, definition
//! level histograms and unencoded byte-array sizes; data pages of at most 20,000 rows
//! (`data_page_row_count_limit`), the dictionary page PLAIN-encoded and first. A dictionary
//! that passes its page limit falls back to PLAIN pages for the rest of the chunk, as arrow-rs
//! does.

use std::hash::BuildHasher;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use bytes::Bytes;
use parquet::basic::{
    BoundaryOrder, Compression, Encoding, EncodingMask, PageType, Type as PhysicalType,
};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::file::metadata::{
    ColumnChunkMetaData, ColumnIndexBuilder, LevelHistogram, OffsetIndexBuilder, PageEncodingStats,
};
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

use crate::{Error, Result};

/// Bytes of a statistic of text at most, in the chunk's statistics and its column index (the
/// default of arrow-rs, whose files readers already know).
const TRUNCATE_STATS: usize = 64;

/// How a column's values are keyed and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// INT32: dates, 32-bit integers.
    I32,
    /// INT64: integers, timestamps in microseconds.
    I64,
    /// DOUBLE.
    F64,
    /// BYTE_ARRAY: UTF-8 text.
    Bytes,
}

impl Kind {
    /// The kind of an Arrow type this module encodes, if it is one, and the Parquet physical
    /// type it is written as.
    pub fn of(dt: &DataType) -> Option<(Kind, PhysicalType)> {
        Some(match dt {
            DataType::Date32 | DataType::Int32 => (Kind::I32, PhysicalType::INT32),
            DataType::Int64 | DataType::Timestamp(TimeUnit::Microsecond, _) => {
                (Kind::I64, PhysicalType::INT64)
            }
            DataType::Float64 => (Kind::F64, PhysicalType::DOUBLE),
            DataType::Utf8 => (Kind::Bytes, PhysicalType::BYTE_ARRAY),
            _ => return None,
        })
    }

    /// `a < b` for two PLAIN-encoded values (never NaN).
    fn less(self, a: &[u8], b: &[u8]) -> bool {
        match self {
            Kind::I32 => le_i32(a) < le_i32(b),
            Kind::I64 => le_i64(a) < le_i64(b),
            Kind::F64 => le_f64(a) < le_f64(b),
            Kind::Bytes => a < b,
        }
    }
}

fn le_i32(b: &[u8]) -> i32 {
    i32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

fn le_i64(b: &[u8]) -> i64 {
    i64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

fn le_f64(b: &[u8]) -> f64 {
    f64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

/// Mixes 64 bits (a folded multiply: the high and low halves of a 128-bit product).
#[inline(always)]
fn mix(x: u64) -> u64 {
    let m = u128::from(x).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    (m as u64) ^ ((m >> 64) as u64)
}

#[inline]
fn read8(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[inline]
fn read4(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(
        b[at..at + 4].try_into().expect("4 bytes"),
    ))
}

/// Hashes text: whole words, then the last eight bytes (overlapping), or for short text two
/// overlapping 4-byte reads or three bytes; no copy of a partial word (a copy through the
/// stack stalled the load that followed it).
#[inline]
fn hash_bytes(b: &[u8], seed: u64) -> u64 {
    let n = b.len();
    let mut h = seed ^ ((n as u64) << 56);
    let last = if n >= 8 {
        let mut at = 0;
        while at + 8 < n {
            h = mix(h ^ read8(b, at));
            at += 8;
        }
        read8(b, n - 8)
    } else if n >= 4 {
        (read4(b, 0) << 32) | read4(b, n - 4)
    } else if n > 0 {
        (u64::from(b[0]) << 16) | (u64::from(b[n / 2]) << 8) | u64::from(b[n - 1])
    } else {
        0
    };
    mix(h ^ last)
}

fn less_i32(a: u64, b: u64) -> bool {
    (a as u32 as i32) < (b as u32 as i32)
}

fn less_i64(a: u64, b: u64) -> bool {
    (a as i64) < (b as i64)
}

fn less_f64(a: u64, b: u64) -> bool {
    f64::from_bits(a) < f64::from_bits(b)
}

fn no_nan(_: u64) -> bool {
    false
}

/// A finished data page and what the page index says of it.
struct DonePage {
    page: CompressedPage,
    rows: usize,
    nulls: usize,
    /// PLAIN min and max of the page's values (NaN left out); `None` when it has none.
    min_max: Option<(Vec<u8>, Vec<u8>)>,
    /// Bytes of the page's text values, unencoded.
    text_bytes: i64,
}

/// One column chunk being encoded.
pub(crate) struct DictColumn {
    descr: ColumnDescPtr,
    kind: Kind,
    nullable: bool,
    compression: Compression,
    compressor: zstd::bulk::Compressor<'static>,
    page_rows_limit: usize,
    page_bytes_limit: usize,
    dict_bytes_limit: usize,
    // The dictionary: entries in index order, and a table of index + 1 (0: empty slot).
    seed: u64,
    table: Vec<u32>,
    hashes: Vec<u64>,
    /// Numbers' bits, by index.
    bits: Vec<u64>,
    /// Text entries PLAIN-encoded (4-byte length, then the bytes): the dictionary page itself.
    text: Vec<u8>,
    /// Where each text entry's bytes start in `text`, and their length.
    spans: Vec<(u32, u32)>,
    /// The dictionary page's size, unencoded.
    dict_bytes: usize,
    /// The dictionary passed its limit: the rest of the chunk is written PLAIN.
    plain_mode: bool,
    // The page being filled.
    indices: Vec<u32>,
    plain: Vec<u8>,
    page_rows: usize,
    /// Row offsets in the page of its nulls.
    page_nulls: Vec<u32>,
    /// Bounds of the current page's numbers (bits; NaN left out).
    page_bounds: Option<(u64, u64)>,
    /// The page each text entry was last used on (+1), and the entries the current page uses.
    mark: Vec<u32>,
    used: Vec<u32>,
    page_no: u32,
    page_text_bytes: i64,
    done: Vec<DonePage>,
    done_bytes: usize,
    rows: u64,
}

impl DictColumn {
    /// An encoder for the column `descr` (a flat column: no repetition) of `kind`, with the
    /// page limits, dictionary limit and compression of `props`.
    pub fn new(descr: ColumnDescPtr, kind: Kind, props: &WriterProperties) -> Result<Self> {
        if descr.max_rep_level() > 0 || descr.max_def_level() > 1 {
            return Err(Error::Internal(format!(
                "column {} is nested; only flat columns are dictionary-encoded by sluice",
                descr.path()
            )));
        }
        let compression = props.compression(descr.path());
        let Compression::ZSTD(level) = compression else {
            return Err(Error::Internal(format!(
                "column {}: sluice encodes dictionary columns with zstd only",
                descr.path()
            )));
        };
        let compressor = zstd::bulk::Compressor::new(level.compression_level()).map_err(|e| {
            Error::Compression {
                what: "zstd".into(),
                source: e,
            }
        })?;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        Ok(DictColumn {
            nullable: descr.max_def_level() == 1,
            page_rows_limit: props.data_page_row_count_limit().max(1),
            page_bytes_limit: props.column_data_page_size_limit(descr.path()).max(1),
            dict_bytes_limit: props.column_dictionary_page_size_limit(descr.path()),
            descr,
            kind,
            compression,
            compressor,
            seed,
            table: vec![0; 64],
            hashes: Vec::new(),
            bits: Vec::new(),
            text: Vec::new(),
            spans: Vec::new(),
            dict_bytes: 0,
            plain_mode: false,
            indices: Vec::new(),
            plain: Vec::new(),
            page_rows: 0,
            page_nulls: Vec::new(),
            page_bounds: None,
            mark: Vec::new(),
            used: Vec::new(),
            page_no: 1,
            page_text_bytes: 0,
            done: Vec::new(),
            done_bytes: 0,
            rows: 0,
        })
    }

    /// Estimated size of the chunk once encoded: finished pages compressed, the page being
    /// filled and the dictionary unencoded.
    pub fn estimated_bytes(&self) -> usize {
        self.done_bytes + self.indices.len() * 2 + self.plain.len() + self.dict_bytes
    }

    /// Memory held.
    pub fn memory_size(&self) -> usize {
        self.done_bytes
            + self.indices.capacity() * 4
            + self.plain.capacity()
            + self.text.capacity()
            + self.spans.capacity() * 8
            + self.bits.capacity() * 8
            + self.hashes.capacity() * 8
            + self.table.capacity() * 4
            + self.mark.capacity() * 4
    }

    /// Appends the values of `array` (of this column's type).
    pub fn write(&mut self, array: &ArrayRef) -> Result<()> {
        let n = array.len();
        let nulls = array.logical_nulls();
        if array.null_count() > 0 && !self.nullable {
            return Err(Error::Internal(format!(
                "column {} is required but has nulls",
                self.descr.path()
            )));
        }
        let mut at = 0;
        while at < n {
            let take = (self.page_rows_limit - self.page_rows).min(n - at);
            self.write_range(array, nulls.as_ref(), at, take)?;
            at += take;
            if self.page_rows >= self.page_rows_limit {
                self.flush_page()?;
            }
        }
        self.rows += n as u64;
        Ok(())
    }

    fn write_range(
        &mut self,
        array: &ArrayRef,
        nulls: Option<&arrow::buffer::NullBuffer>,
        at: usize,
        len: usize,
    ) -> Result<()> {
        let valid = |i: usize| nulls.is_none_or(|b| b.is_valid(i));
        match (self.kind, array.data_type()) {
            (Kind::Bytes, DataType::Utf8) => {
                let a = array.as_string::<i32>();
                for i in at..at + len {
                    if valid(i) {
                        self.put_bytes(a.value(i).as_bytes())?;
                    } else {
                        self.put_null();
                    }
                }
            }
            (Kind::I32, DataType::Date32) => {
                let v = array.as_primitive::<Date32Type>().values();
                self.put_all(at, len, valid, |i| v[i] as u32 as u64, less_i32, no_nan)?
            }
            (Kind::I32, DataType::Int32) => {
                let v = array.as_primitive::<Int32Type>().values();
                self.put_all(at, len, valid, |i| v[i] as u32 as u64, less_i32, no_nan)?
            }
            (Kind::I64, DataType::Int64) => {
                let v = array.as_primitive::<Int64Type>().values();
                self.put_all(at, len, valid, |i| v[i] as u64, less_i64, no_nan)?
            }
            (Kind::I64, DataType::Timestamp(TimeUnit::Microsecond, _)) => {
                let v = array.as_primitive::<TimestampMicrosecondType>().values();
                self.put_all(at, len, valid, |i| v[i] as u64, less_i64, no_nan)?
            }
            (Kind::F64, DataType::Float64) => {
                let v = array.as_primitive::<Float64Type>().values();
                self.put_all(
                    at,
                    len,
                    valid,
                    |i| v[i].to_bits(),
                    less_f64,
                    |b| f64::from_bits(b).is_nan(),
                )?
            }
            (kind, dt) => {
                return Err(Error::Internal(format!(
                    "column {}: {dt} given to a {kind:?} dictionary encoder",
                    self.descr.path()
                )));
            }
        }
        Ok(())
    }

    /// Appends numbers (their bits; `less` orders them, `nan` tells a NaN) at `at..at+len`.
    #[inline(always)]
    fn put_all(
        &mut self,
        at: usize,
        len: usize,
        valid: impl Fn(usize) -> bool,
        bits: impl Fn(usize) -> u64,
        less: impl Fn(u64, u64) -> bool,
        nan: impl Fn(u64) -> bool,
    ) -> Result<()> {
        self.indices.reserve(len);
        for i in at..at + len {
            if !valid(i) {
                self.put_null();
                continue;
            }
            let b = bits(i);
            self.page_rows += 1;
            if !nan(b) {
                self.page_bounds = Some(match self.page_bounds {
                    None => (b, b),
                    Some((lo, hi)) => (
                        if less(b, lo) { b } else { lo },
                        if less(hi, b) { b } else { hi },
                    ),
                });
            }
            if self.plain_mode {
                match self.kind {
                    Kind::I32 => self.plain.extend_from_slice(&(b as u32).to_le_bytes()),
                    _ => self.plain.extend_from_slice(&b.to_le_bytes()),
                }
                self.plain_written()?;
                continue;
            }
            let e = self.lookup_bits(b);
            self.indices.push(e);
            if self.dict_bytes >= self.dict_bytes_limit {
                self.fall_back()?;
            }
        }
        Ok(())
    }

    fn put_null(&mut self) {
        self.page_nulls.push(self.page_rows as u32);
        self.page_rows += 1;
    }

    /// The dictionary index of a number, added if new.
    #[inline(always)]
    fn lookup_bits(&mut self, b: u64) -> u32 {
        let h = mix(b ^ self.seed);
        let mask = self.table.len() - 1;
        let mut s = h as usize & mask;
        loop {
            let e = self.table[s];
            if e == 0 {
                let i = self.bits.len() as u32;
                self.bits.push(b);
                self.dict_bytes += if self.kind == Kind::I32 { 4 } else { 8 };
                self.inserted(s, h);
                return i;
            }
            if self.bits[(e - 1) as usize] == b {
                return e - 1;
            }
            s = (s + 1) & mask;
        }
    }

    /// The dictionary passed its limit: the page so far keeps its indices, the rest of the
    /// chunk is PLAIN.
    fn fall_back(&mut self) -> Result<()> {
        self.flush_page()?;
        self.plain_mode = true;
        Ok(())
    }

    #[inline]
    fn put_bytes(&mut self, v: &[u8]) -> Result<()> {
        self.page_rows += 1;
        self.page_text_bytes += v.len() as i64;
        if self.plain_mode {
            self.plain
                .extend_from_slice(&(v.len() as u32).to_le_bytes());
            self.plain.extend_from_slice(v);
            return self.plain_written();
        }
        let h = hash_bytes(v, self.seed);
        let mask = self.table.len() - 1;
        let mut s = h as usize & mask;
        let i = loop {
            let e = self.table[s];
            if e == 0 {
                let i = self.spans.len() as u32;
                self.text.extend_from_slice(&(v.len() as u32).to_le_bytes());
                self.spans.push((self.text.len() as u32, v.len() as u32));
                self.text.extend_from_slice(v);
                self.dict_bytes += 4 + v.len();
                self.inserted(s, h);
                break i;
            }
            let (start, len) = self.spans[(e - 1) as usize];
            if self.hashes[(e - 1) as usize] == h
                && &self.text[start as usize..(start + len) as usize] == v
            {
                break e - 1;
            }
            s = (s + 1) & mask;
        };
        self.use_entry(i)
    }

    /// A PLAIN page closes at its byte limit.
    fn plain_written(&mut self) -> Result<()> {
        if self.plain.len() >= self.page_bytes_limit {
            self.flush_page()?;
        }
        Ok(())
    }

    /// An entry was added at table slot `s`; the table grows at half full.
    fn inserted(&mut self, s: usize, h: u64) {
        let i = self.hashes.len() as u32;
        self.table[s] = i + 1;
        self.hashes.push(h);
        if self.kind == Kind::Bytes {
            self.mark.push(0);
        }
        if self.hashes.len() * 2 > self.table.len() {
            let cap = self.table.len() * 2;
            let mask = cap - 1;
            let mut table = vec![0u32; cap];
            for (k, h) in self.hashes.iter().enumerate() {
                let mut s = *h as usize & mask;
                while table[s] != 0 {
                    s = (s + 1) & mask;
                }
                table[s] = k as u32 + 1;
            }
            self.table = table;
        }
    }

    #[inline]
    fn use_entry(&mut self, i: u32) -> Result<()> {
        self.indices.push(i);
        let m = &mut self.mark[i as usize];
        if *m != self.page_no {
            *m = self.page_no;
            self.used.push(i);
        }
        if self.dict_bytes >= self.dict_bytes_limit {
            self.fall_back()?;
        }
        Ok(())
    }

    /// Text entry `i`.
    fn entry(&self, i: u32) -> &[u8] {
        let (start, len) = self.spans[i as usize];
        &self.text[start as usize..(start + len) as usize]
    }

    fn plain_of_bits(&self, b: u64) -> Vec<u8> {
        match self.kind {
            Kind::I32 => (b as u32).to_le_bytes().to_vec(),
            _ => b.to_le_bytes().to_vec(),
        }
    }

    /// Min and max of the current page (PLAIN), NaN left out.
    fn page_min_max(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        if self.kind != Kind::Bytes {
            // Numbers' bounds are kept as they come (NaN already left out).
            let (lo, hi) = self.page_bounds?;
            let (mut min, mut max) = (self.plain_of_bits(lo), self.plain_of_bits(hi));
            if self.kind == Kind::F64 {
                // As arrow-rs and the Parquet spec: a zero minimum is -0.0, a zero maximum +0.0.
                if le_f64(&min) == 0.0 {
                    min = (-0.0f64).to_le_bytes().to_vec();
                }
                if le_f64(&max) == 0.0 {
                    max = 0.0f64.to_le_bytes().to_vec();
                }
            }
            return Some((min, max));
        }
        // Text: over the PLAIN values after a fall back, else over the entries the page used.
        let mut values: Box<dyn Iterator<Item = &[u8]>> = if self.plain_mode {
            let mut p = &self.plain[..];
            Box::new(std::iter::from_fn(move || {
                if p.is_empty() {
                    return None;
                }
                let len = le_i32(p) as u32 as usize;
                let (v, rest) = p[4..].split_at(len);
                p = rest;
                Some(v)
            }))
        } else {
            Box::new(self.used.iter().map(|&i| self.entry(i)))
        };
        let first = values.next()?;
        let (min, max) = values.fold((first, first), |(lo, hi), v| {
            (if v < lo { v } else { lo }, if v > hi { v } else { hi })
        });
        Some((min.to_vec(), max.to_vec()))
    }

    /// Closes the page being filled (if it has rows): levels, values, compression.
    fn flush_page(&mut self) -> Result<()> {
        if self.page_rows == 0 {
            return Ok(());
        }
        let mut body = Vec::with_capacity(
            16 + self.indices.len() * 2 + self.plain.len() + self.page_nulls.len() * 4,
        );
        if self.nullable {
            let mut levels = Vec::new();
            if self.page_nulls.is_empty() {
                run(1, self.page_rows, 1, &mut levels);
            } else {
                let mut defs = vec![1u32; self.page_rows];
                for &r in &self.page_nulls {
                    defs[r as usize] = 0;
                }
                hybrid(&defs, 1, &mut levels);
            }
            body.extend_from_slice(&(levels.len() as u32).to_le_bytes());
            body.extend_from_slice(&levels);
        }
        let encoding = if self.plain_mode {
            body.extend_from_slice(&self.plain);
            Encoding::PLAIN
        } else {
            let entries = self.hashes.len() as u32;
            let width = 32 - entries.saturating_sub(1).leading_zeros();
            body.push(width as u8);
            hybrid(&self.indices, width, &mut body);
            Encoding::RLE_DICTIONARY
        };
        let min_max = self.page_min_max();
        let compressed = self
            .compressor
            .compress(&body)
            .map_err(|e| Error::Compression {
                what: "zstd".into(),
                source: e,
            })?;
        let page = Page::DataPage {
            buf: Bytes::from(compressed),
            num_values: self.page_rows as u32,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        self.done_bytes += page.buffer().len();
        self.done.push(DonePage {
            page: CompressedPage::new(page, body.len()),
            rows: self.page_rows,
            nulls: self.page_nulls.len(),
            min_max,
            text_bytes: self.page_text_bytes,
        });
        self.indices.clear();
        self.plain.clear();
        self.page_nulls.clear();
        self.used.clear();
        self.page_bounds = None;
        self.page_rows = 0;
        self.page_text_bytes = 0;
        self.page_no += 1;
        Ok(())
    }

    /// Finishes the chunk: its bytes (dictionary page, then data pages) and what the row
    /// group needs to append them.
    pub fn close(mut self) -> Result<(Bytes, ColumnCloseResult)> {
        self.flush_page()?;
        let dict_body = match self.kind {
            Kind::Bytes => std::mem::take(&mut self.text),
            Kind::I32 => self
                .bits
                .iter()
                .flat_map(|b| (*b as u32).to_le_bytes())
                .collect(),
            Kind::I64 | Kind::F64 => self.bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
        };
        let dict_page = Page::DictionaryPage {
            buf: Bytes::from(self.compressor.compress(&dict_body).map_err(|e| {
                Error::Compression {
                    what: "zstd".into(),
                    source: e,
                }
            })?),
            num_values: self.hashes.len() as u32,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };

        let mut sink = TrackedWrite::new(Vec::with_capacity(self.done_bytes + dict_body.len()));
        let mut pages = SerializedPageWriter::new(&mut sink);
        let (mut compressed, mut uncompressed) = (0i64, 0i64);
        let spec = pages.write_page(CompressedPage::new(dict_page, dict_body.len()))?;
        compressed += spec.compressed_size as i64;
        uncompressed += spec.uncompressed_size as i64;
        let mut data_offset = None;
        let mut stats = vec![PageEncodingStats {
            page_type: PageType::DICTIONARY_PAGE,
            encoding: Encoding::PLAIN,
            count: 1,
        }];
        let mut encodings = vec![Encoding::PLAIN, Encoding::RLE];
        let mut offsets = OffsetIndexBuilder::new();
        let mut index = ColumnIndexBuilder::new(self.descr.physical_type());
        let (mut ascending, mut descending) = (true, true);
        let mut last: Option<(Vec<u8>, Vec<u8>)> = None;
        let (mut chunk_min, mut chunk_max): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
        let (mut nulls, mut text_bytes) = (0i64, 0i64);
        let kind = self.kind;
        let is_text = kind == Kind::Bytes;
        for p in std::mem::take(&mut self.done) {
            let encoding = p.page.encoding();
            if !encodings.contains(&encoding) {
                encodings.push(encoding);
            }
            match stats.last_mut() {
                Some(s) if s.page_type == PageType::DATA_PAGE && s.encoding == encoding => {
                    s.count += 1
                }
                _ => stats.push(PageEncodingStats {
                    page_type: PageType::DATA_PAGE,
                    encoding,
                    count: 1,
                }),
            }
            let spec = pages.write_page(p.page)?;
            data_offset.get_or_insert(spec.offset as i64);
            compressed += spec.compressed_size as i64;
            uncompressed += spec.uncompressed_size as i64;
            offsets.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
            offsets.append_row_count(p.rows as i64);
            if is_text {
                offsets.append_unencoded_byte_array_data_bytes(Some(p.text_bytes));
            }
            nulls += p.nulls as i64;
            text_bytes += p.text_bytes;
            if p.nulls == p.rows {
                index.append(true, vec![], vec![], p.nulls as i64);
            } else if let Some((min, max)) = p.min_max {
                if let Some((lmin, lmax)) = &last {
                    if kind.less(&min, lmin) || kind.less(&max, lmax) {
                        ascending = false;
                    }
                    if kind.less(lmin, &min) || kind.less(lmax, &max) {
                        descending = false;
                    }
                }
                if chunk_min.as_deref().is_none_or(|m| kind.less(&min, m)) {
                    chunk_min = Some(min.clone());
                }
                if chunk_max.as_deref().is_none_or(|m| kind.less(m, &max)) {
                    chunk_max = Some(max.clone());
                }
                let (imin, imax) = if is_text {
                    (truncate_min(&min).0, truncate_max(&max).0)
                } else {
                    (min.clone(), max.clone())
                };
                index.append(false, imin, imax, p.nulls as i64);
                last = Some((min, max));
            } else {
                // Only NaN (and nulls): no bounds for this page, so no column index.
                index.to_invalid();
            }
            if self.nullable {
                let hist = LevelHistogram::from(vec![p.nulls as i64, (p.rows - p.nulls) as i64]);
                index.append_histograms(&None, &Some(hist));
            }
        }
        let bytes_written = sink.bytes_written() as u64;
        let buf = sink.into_inner()?;

        index.set_boundary_order(match (ascending, descending) {
            (true, _) => BoundaryOrder::ASCENDING,
            (false, true) => BoundaryOrder::DESCENDING,
            (false, false) => BoundaryOrder::UNORDERED,
        });
        let column_index = if index.valid() {
            Some(index.build()?)
        } else {
            None
        };
        let statistics = self.statistics(chunk_min, chunk_max, nulls);
        let mut meta = ColumnChunkMetaData::builder(self.descr.clone())
            .set_compression(self.compression)
            .set_encodings_mask(EncodingMask::new_from_encodings(encodings.iter()))
            .set_page_encoding_stats(stats)
            .set_total_compressed_size(compressed)
            .set_total_uncompressed_size(uncompressed)
            .set_num_values(self.rows as i64)
            .set_data_page_offset(data_offset.unwrap_or(0))
            .set_dictionary_page_offset(Some(0))
            .set_statistics(statistics)
            .set_unencoded_byte_array_data_bytes(is_text.then_some(text_bytes));
        if self.nullable {
            meta = meta.set_definition_level_histogram(Some(LevelHistogram::from(vec![
                nulls,
                self.rows as i64 - nulls,
            ])));
        }
        let close = ColumnCloseResult {
            bytes_written,
            rows_written: self.rows,
            metadata: meta.build()?,
            bloom_filter: None,
            column_index,
            offset_index: Some(offsets.build()),
        };
        Ok((Bytes::from(buf), close))
    }

    fn statistics(&self, min: Option<Vec<u8>>, max: Option<Vec<u8>>, nulls: i64) -> Statistics {
        let nulls = Some(nulls as u64);
        // Numbers sort signed, so their deprecated min/max fields are written too (as
        // arrow-rs does); text sorts as unsigned bytes, and they are left out.
        macro_rules! numbers {
            ($variant:ident, $read:expr) => {
                Statistics::$variant(
                    ValueStatistics::new(
                        min.map(|v| $read(&v)),
                        max.map(|v| $read(&v)),
                        None,
                        nulls,
                        false,
                    )
                    .with_backwards_compatible_min_max(true),
                )
            };
        }
        match self.kind {
            Kind::I32 => numbers!(Int32, le_i32),
            Kind::I64 => numbers!(Int64, le_i64),
            Kind::F64 => numbers!(Double, le_f64),
            Kind::Bytes => {
                let cut = |v: Option<Vec<u8>>, bound: fn(&[u8]) -> (Vec<u8>, bool)| match v {
                    Some(v) => {
                        let (t, cut) = bound(&v);
                        (Some(ByteArray::from(t)), cut)
                    }
                    None => (None, false),
                };
                let ((min, min_cut), (max, max_cut)) =
                    (cut(min, truncate_min), cut(max, truncate_max));
                Statistics::ByteArray(
                    ValueStatistics::new(min, max, None, nulls, false)
                        .with_min_is_exact(!min_cut)
                        .with_max_is_exact(!max_cut),
                )
            }
        }
    }
}

/// A lower bound of at most [`TRUNCATE_STATS`] bytes for UTF-8 text `v` (cut at a character
/// boundary), and whether it was cut.
fn truncate_min(v: &[u8]) -> (Vec<u8>, bool) {
    if v.len() <= TRUNCATE_STATS {
        return (v.to_vec(), false);
    }
    let cut = match std::str::from_utf8(v) {
        Ok(s) => (1..=TRUNCATE_STATS).rev().find(|&i| s.is_char_boundary(i)),
        Err(_) => Some(TRUNCATE_STATS),
    };
    match cut {
        Some(i) => (v[..i].to_vec(), true),
        None => (v.to_vec(), false),
    }
}

/// An upper bound of at most [`TRUNCATE_STATS`] bytes for UTF-8 text `v`: cut, then its last
/// character incremented (as arrow-rs does); `v` whole when no such bound exists.
fn truncate_max(v: &[u8]) -> (Vec<u8>, bool) {
    if v.len() <= TRUNCATE_STATS {
        return (v.to_vec(), false);
    }
    let bound = match std::str::from_utf8(v) {
        Ok(s) => (TRUNCATE_STATS.saturating_sub(3)..=TRUNCATE_STATS)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .and_then(|i| {
                let s = &s[..i];
                s.char_indices().rev().find_map(|(at, c)| {
                    let next = char::from_u32(c as u32 + 1)?;
                    (next.len_utf8() == c.len_utf8()).then(|| {
                        let mut out = s.as_bytes()[..at + c.len_utf8()].to_vec();
                        next.encode_utf8(&mut out[at..]);
                        out
                    })
                })
            }),
        Err(_) => {
            let mut out = v[..TRUNCATE_STATS].to_vec();
            loop {
                match out.last_mut() {
                    None => break None,
                    Some(b) if *b == u8::MAX => {
                        out.pop();
                    }
                    Some(b) => {
                        *b += 1;
                        break Some(out);
                    }
                }
            }
        }
    };
    match bound {
        Some(b) => (b, true),
        None => (v.to_vec(), false),
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// An RLE run of `count` times `value`, `width` bits wide.
fn run(value: u32, count: usize, width: u32, out: &mut Vec<u8>) {
    varint((count as u64) << 1, out);
    out.extend_from_slice(&value.to_le_bytes()[..width.div_ceil(8) as usize]);
}

/// Bit-packed groups of eight of `values` (the last group padded with zeros).
fn packed(values: &[u32], width: u32, out: &mut Vec<u8>) {
    let groups = values.len().div_ceil(8);
    varint(((groups as u64) << 1) | 1, out);
    let w = width as usize;
    let mut group = [0u32; 8];
    for g in values.chunks(8) {
        group[..g.len()].copy_from_slice(g);
        group[g.len()..].fill(0);
        if w <= 8 {
            let mut acc = 0u64;
            for (j, v) in group.iter().enumerate() {
                acc |= u64::from(*v) << (j * w);
            }
            out.extend_from_slice(&acc.to_le_bytes()[..w]);
        } else if w <= 16 {
            let mut acc = 0u128;
            for (j, v) in group.iter().enumerate() {
                acc |= u128::from(*v) << (j * w);
            }
            out.extend_from_slice(&acc.to_le_bytes()[..w]);
        } else {
            let (mut acc, mut bits) = (0u64, 0usize);
            for v in group {
                acc |= u64::from(v) << bits;
                bits += w;
                while bits >= 8 {
                    out.push(acc as u8);
                    acc >>= 8;
                    bits -= 8;
                }
            }
        }
    }
}

/// Groups of eight values one bit-packed run holds at most.
const MAX_GROUPS_PER_PACKED_RUN: usize = 63;

/// The RLE / bit-packing hybrid encoding of `values`, `width` bits each (no length prefix):
/// eight or more equal values from a group boundary on are a run, the rest bit-packed in runs
/// of at most [`MAX_GROUPS_PER_PACKED_RUN`] groups, as arrow-rs writes them.
fn hybrid(values: &[u32], width: u32, out: &mut Vec<u8>) {
    let n = values.len();
    let mut literal: Option<usize> = None;
    let mut i = 0;
    while i + 8 <= n {
        let x = values[i];
        if values[i + 1..i + 8].iter().all(|&y| y == x) {
            let mut j = i + 8;
            while j < n && values[j] == x {
                j += 1;
            }
            if let Some(s) = literal.take() {
                packed(&values[s..i], width, out);
            }
            run(x, j - i, width, out);
            i = j;
        } else {
            let s = *literal.get_or_insert(i);
            i += 8;
            // A bit-packed run holds 63 groups at most (its header then fits one byte), as
            // arrow-rs's encoder writes it.
            if (i - s) / 8 == MAX_GROUPS_PER_PACKED_RUN {
                packed(&values[s..i], width, out);
                literal = None;
            }
        }
    }
    let tail = &values[i..];
    match literal {
        // The last literal run takes the tail, padded.
        Some(s) => packed(&values[s..], width, out),
        None if tail.is_empty() => {}
        None if tail.iter().all(|&y| y == tail[0]) => run(tail[0], tail.len(), width, out),
        None => packed(tail, width, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes the hybrid encoding (the reader's side, after the Parquet spec).
    fn unhybrid(mut b: &[u8], width: u32, n: usize) -> Vec<u32> {
        let mut out = Vec::new();
        while out.len() < n {
            let (mut h, mut shift) = (0u64, 0);
            loop {
                let byte = b[0];
                b = &b[1..];
                h |= u64::from(byte & 0x7f) << shift;
                shift += 7;
                if byte < 0x80 {
                    break;
                }
            }
            if h & 1 == 1 {
                let values = (h >> 1) as usize * 8;
                let bytes = values * width as usize / 8;
                let (packed, rest) = b.split_at(bytes);
                for k in 0..values {
                    let mut v = 0u32;
                    for bit in 0..width as usize {
                        let at = k * width as usize + bit;
                        v |= u32::from((packed[at / 8] >> (at % 8)) & 1) << bit;
                    }
                    out.push(v);
                }
                b = rest;
            } else {
                let count = (h >> 1) as usize;
                let vb = width.div_ceil(8) as usize;
                let mut v = [0u8; 4];
                v[..vb].copy_from_slice(&b[..vb]);
                b = &b[vb..];
                out.extend(std::iter::repeat_n(u32::from_le_bytes(v), count));
            }
        }
        assert!(b.is_empty(), "bytes left after {n} values");
        out.truncate(n);
        out
    }

    proptest::proptest! {
        #[test]
        fn hybrid_encoding_decodes_to_its_values(
            width in 0u32..=20,
            runs in proptest::collection::vec((0u32..1 << 20, 1usize..30), 0..40),
        ) {
            let mask = if width == 0 { 0 } else { u32::MAX >> (32 - width) };
            let values: Vec<u32> = runs
                .iter()
                .flat_map(|(v, n)| std::iter::repeat_n(v & mask, *n))
                .collect();
            let mut out = Vec::new();
            hybrid(&values, width, &mut out);
            proptest::prop_assert_eq!(unhybrid(&out, width, values.len()), values);
        }
    }

    /// The columns the differential suite writes too.
    fn batch(seed: u64, rows: usize, distinct: u64, nulls: u64) -> arrow::array::RecordBatch {
        crate::testdata::batch(seed, rows, distinct, nulls, false)
    }

    use arrow::array::RecordBatch;

    fn read(
        path: &std::path::Path,
    ) -> (Vec<RecordBatch>, parquet::file::metadata::ParquetMetaData) {
        use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
        let b = ParquetRecordBatchReaderBuilder::try_new_with_options(
            std::fs::File::open(path).unwrap(),
            ArrowReaderOptions::new()
                .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required),
        )
        .unwrap();
        let meta = b.metadata().as_ref().clone();
        (b.build().unwrap().map(|b| b.unwrap()).collect(), meta)
    }

    /// PLAIN bytes of row `r` of `a` (None: null).
    fn plain_at(a: &ArrayRef, r: usize) -> Option<Vec<u8>> {
        if a.is_null(r) {
            return None;
        }
        Some(match a.data_type() {
            DataType::Date32 => a
                .as_primitive::<Date32Type>()
                .value(r)
                .to_le_bytes()
                .to_vec(),
            DataType::Int32 => a
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(r)
                .to_le_bytes()
                .to_vec(),
            DataType::Int64 => a
                .as_primitive::<Int64Type>()
                .value(r)
                .to_le_bytes()
                .to_vec(),
            DataType::Timestamp(..) => a
                .as_primitive::<TimestampMicrosecondType>()
                .value(r)
                .to_le_bytes()
                .to_vec(),
            DataType::Float64 => a
                .as_primitive::<Float64Type>()
                .value(r)
                .to_le_bytes()
                .to_vec(),
            _ => a.as_string::<i32>().value(r).as_bytes().to_vec(),
        })
    }

    fn index_bounds(
        ci: &parquet::file::page_index::column_index::ColumnIndexMetaData,
        p: usize,
    ) -> (Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>) {
        use parquet::file::page_index::column_index::ColumnIndexMetaData as C;
        match ci {
            C::INT32(x) => (
                x.min_value(p).map(|v| v.to_le_bytes().to_vec()),
                x.max_value(p).map(|v| v.to_le_bytes().to_vec()),
                x.null_count(p),
            ),
            C::INT64(x) => (
                x.min_value(p).map(|v| v.to_le_bytes().to_vec()),
                x.max_value(p).map(|v| v.to_le_bytes().to_vec()),
                x.null_count(p),
            ),
            C::DOUBLE(x) => (
                x.min_value(p).map(|v| v.to_le_bytes().to_vec()),
                x.max_value(p).map(|v| v.to_le_bytes().to_vec()),
                x.null_count(p),
            ),
            C::BYTE_ARRAY(x) => (
                x.min_value(p).map(|v| v.to_vec()),
                x.max_value(p).map(|v| v.to_vec()),
                x.null_count(p),
            ),
            other => panic!("unexpected column index {other:?}"),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

        /// The same rows written by `FileWriter` (dictionary columns encoded here) and by
        /// arrow-rs's `ArrowWriter`: both read back to the rows; the chunk statistics are
        /// arrow-rs's; every page's column index bounds and null count are those of its rows.
        #[test]
        fn dictionary_chunks_read_back_with_arrow_rs_statistics_and_exact_page_bounds(
            seed in 0u64..1_000_000,
            rows in 1usize..45_000,
            distinct in 1u64..400,
            nulls in 0u64..40,
            small_dictionary in proptest::bool::ANY,
            batches in 1usize..4,
        ) {
            let data = batch(seed, rows, distinct, nulls);
            let mut props = crate::properties::writer_properties(&crate::properties::ParquetOptions {
                row_group_rows: 30_000,
                ..Default::default()
            })
            .unwrap()
            .into_builder();
            if small_dictionary {
                // Forces the fall back to PLAIN part-way.
                props = props.set_dictionary_page_size_limit(600);
            }
            let props = props.build();
            let dir = tempfile::tempdir().unwrap();
            let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
            let mut w = crate::file::FileWriter::try_new(
                std::fs::File::create(&ours).unwrap(),
                data.schema(),
                props.clone(),
            )
            .unwrap();
            let step = rows.div_ceil(batches);
            for at in (0..rows).step_by(step) {
                w.write(&data.slice(at, step.min(rows - at))).unwrap();
            }
            w.close().unwrap();
            let mut a = parquet::arrow::ArrowWriter::try_new(
                std::fs::File::create(&theirs).unwrap(),
                data.schema(),
                Some(props),
            )
            .unwrap();
            a.write(&data).unwrap();
            a.close().unwrap();

            let (got, meta) = read(&ours);
            let (_, arrow_meta) = read(&theirs);
            let got = arrow::compute::concat_batches(&data.schema(), &got).unwrap();
            proptest::prop_assert_eq!(&got, &data);

            proptest::prop_assert_eq!(meta.num_row_groups(), arrow_meta.num_row_groups());
            let (cis, ois) = (meta.column_index().unwrap(), meta.offset_index().unwrap());
            let mut first_row = 0;
            for (g, rg) in meta.row_groups().iter().enumerate() {
                for (c, col) in rg.columns().iter().enumerate() {
                    let theirs = arrow_meta.row_group(g).column(c);
                    proptest::prop_assert_eq!(col.statistics(), theirs.statistics(), "column {}", c);
                    proptest::prop_assert_eq!(col.num_values(), theirs.num_values());
                    proptest::prop_assert!(col.dictionary_page_offset().is_some());
                    if !small_dictionary {
                        // PLAIN (the dictionary page), RLE (levels), RLE_DICTIONARY.
                        proptest::prop_assert_eq!(col.encodings_mask(), theirs.encodings_mask());
                    }
                    let pages = &ois[g][c].page_locations;
                    let kind = Kind::of(data.schema().field(c).data_type()).unwrap().0;
                    for (p, loc) in pages.iter().enumerate() {
                        let start = first_row + loc.first_row_index as usize;
                        let end = pages
                            .get(p + 1)
                            .map_or(first_row + rg.num_rows() as usize, |n| {
                                first_row + n.first_row_index as usize
                            });
                        proptest::prop_assert!(end - start <= 20_000);
                        let values: Vec<Option<Vec<u8>>> =
                            (start..end).map(|r| plain_at(data.column(c), r)).collect();
                        let nulls = values.iter().filter(|v| v.is_none()).count() as i64;
                        let present: Vec<&Vec<u8>> = values
                            .iter()
                            .flatten()
                            .filter(|v| kind != Kind::F64 || !le_f64(v).is_nan())
                            .collect();
                        let Some(ci) = cis[g].get(c) else { continue };
                        if matches!(ci, parquet::file::page_index::column_index::ColumnIndexMetaData::NONE) {
                            // No index: a page with values, only NaN.
                            proptest::prop_assert!(kind == Kind::F64);
                            continue;
                        }
                        let (min, max, n) = index_bounds(ci, p);
                        proptest::prop_assert_eq!(n, Some(nulls));
                        if present.is_empty() {
                            proptest::prop_assert!(min.is_none() && max.is_none());
                            continue;
                        }
                        let (min, max) = (min.unwrap(), max.unwrap());
                        for v in &present {
                            proptest::prop_assert!(!kind.less(v, &min) || kind == Kind::Bytes);
                            proptest::prop_assert!(!kind.less(&max, v));
                        }
                        let lo = present.iter().copied().reduce(|a, b| if kind.less(b, a) { b } else { a }).unwrap();
                        let hi = present.iter().copied().reduce(|a, b| if kind.less(a, b) { b } else { a }).unwrap();
                        let zero = |v: &[u8]| kind == Kind::F64 && le_f64(v) == 0.0;
                        if kind == Kind::Bytes {
                            proptest::prop_assert_eq!(&min, &truncate_min(lo).0);
                            proptest::prop_assert_eq!(&max, &truncate_max(hi).0);
                        } else {
                            proptest::prop_assert!(&min == lo || (zero(lo) && zero(&min)));
                            proptest::prop_assert!(&max == hi || (zero(hi) && zero(&max)));
                        }
                    }
                }
                first_row += rg.num_rows() as usize;
            }
        }
    }

    #[test]
    fn text_bounds_are_cut_at_characters_and_the_upper_one_raised() {
        let short = "é".repeat(10);
        assert_eq!(
            truncate_min(short.as_bytes()),
            (short.as_bytes().to_vec(), false)
        );
        let long = "é".repeat(40); // 80 bytes
        let (min, cut) = truncate_min(long.as_bytes());
        assert!(cut);
        assert_eq!(min, "é".repeat(32).as_bytes());
        let (max, cut) = truncate_max(long.as_bytes());
        assert!(cut);
        assert!(max.as_slice() > long.as_bytes() && max.len() <= TRUNCATE_STATS);
        assert_eq!(
            std::str::from_utf8(&max).unwrap(),
            format!("{}ê", "é".repeat(31))
        );
    }
}
