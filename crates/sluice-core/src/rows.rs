//! Typing rows: source fields (bytes) to Arrow columns, one partition per row, and the
//! quarantine for rows that do not parse. A row is taken whole or quarantined whole.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder, UInt32Array,
};
use arrow::compute::take_record_batch;
use chrono::NaiveTime;

use crate::chunk::ChunkHeader;
use crate::csv::{CsvFormat, FieldSplitter, Records};
use crate::error::Result;
use crate::evolve::SchemaPolicy;
use crate::partition::Transform;
use crate::schema::{
    Column, ColumnType, SchemaInference, Temporal, date_to_days, parse_bool, parse_f64, parse_i64,
    parse_temporal,
};
use crate::table::{HeaderMap, TableLayout};

/// Values sampled to infer the type of a new column.
const NEW_COLUMN_SAMPLE: usize = 10_000;

/// Longest raw text kept for a quarantined row.
pub const MAX_QUARANTINE_RAW: usize = 64 * 1024;

/// A row that could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineRow {
    pub source: String,
    pub line: u64,
    pub raw: String,
    pub reason: String,
    pub chunk: String,
}

/// The rows of one chunk (or foreign message), typed and split by partition.
#[derive(Debug)]
pub struct DecodedChunk {
    pub chunk: String,
    /// (partition directory, rows), in order of first appearance.
    pub parts: Vec<(String, RecordBatch)>,
    pub quarantine: Vec<QuarantineRow>,
    /// Rows read (taken + quarantined).
    pub rows_in: u64,
    /// Columns the source has and the table lacks, with types inferred from the rows, when the
    /// table's policy is `evolve`: the rows are not typed (`parts` and `quarantine` are not to
    /// be written); type them again once the table has the columns.
    pub new_columns: Vec<Column>,
    /// The file, object or message that has `new_columns` (for the schema's history).
    pub new_columns_source: String,
    /// When the chunk was produced (ms since the epoch), if its producer said.
    pub produced_at_ms: Option<i64>,
}

/// What a source whose columns the table lacks does under the `freeze` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFrozen {
    /// Each row goes to the quarantine with the reason (`convert`: no queue to leave it in).
    Quarantine,
    /// The whole source is refused (a queue message: dead-lettered with the reason).
    Refuse,
}

enum Col {
    Bool(BooleanBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Str(StringBuilder),
}

/// A field value as the typer receives it: text already known to be UTF-8, or bytes to check.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Field<'a> {
    fn text(self) -> Result<&'a str, std::str::Utf8Error> {
        match self {
            Field::Text(s) => Ok(s),
            Field::Bytes(b) => std::str::from_utf8(b),
        }
    }
}

/// A typed value; strings are referred to by source column and fetched again when pushed.
#[derive(Clone, Copy)]
enum Val {
    Null,
    Bool(bool),
    I64(i64),
    F64(f64),
    Date(i32),
    Ts(i64),
    Str,
}

fn days_to_datetime(days: i32) -> chrono::NaiveDateTime {
    chrono::DateTime::from_timestamp(days as i64 * 86_400, 0)
        .map(|t| t.naive_utc())
        .unwrap_or_default()
}

fn naive_micros(t: Temporal) -> i64 {
    match t {
        Temporal::Date(d) => d.and_time(NaiveTime::MIN).and_utc().timestamp_micros(),
        Temporal::Naive(n) => n.and_utc().timestamp_micros(),
        Temporal::Zoned(us) => us,
    }
}

/// Builds typed batches from rows of one table.
pub struct RowTyper<'l> {
    layout: &'l TableLayout,
    cols: Vec<Col>,
    /// Partition index of each taken row.
    part_of_row: Vec<u32>,
    parts: Vec<String>,
    part_ids: HashMap<String, u32>,
    quarantine: Vec<QuarantineRow>,
    rows_in: u64,
    path_buf: String,
    vals: Vec<Val>,
    /// Per source column: whether a date transform partitions by it (an unparseable value
    /// then sends the row to the default partition instead of the quarantine).
    date_source: Vec<bool>,
    /// Partition of a day (`2 × days`) or hour (`2 × hours + 1`), for one-date-field specs.
    fast_keys: HashMap<i64, u32>,
    /// Columns the source has and the table lacks (policy `evolve`), with sampled values.
    new_columns: Option<SchemaInference>,
    new_samples: usize,
    new_source: String,
}

impl<'l> RowTyper<'l> {
    pub fn new(layout: &'l TableLayout, capacity: usize) -> Self {
        let cols = layout
            .file_columns
            .iter()
            .map(|c| match c.ty {
                ColumnType::Boolean => Col::Bool(BooleanBuilder::with_capacity(capacity)),
                ColumnType::Int64 => Col::I64(Int64Builder::with_capacity(capacity)),
                ColumnType::Float64 => Col::F64(Float64Builder::with_capacity(capacity)),
                ColumnType::Date => Col::Date(Date32Builder::with_capacity(capacity)),
                ColumnType::Timestamp => {
                    Col::Ts(TimestampMicrosecondBuilder::with_capacity(capacity))
                }
                ColumnType::TimestampTz => Col::Ts(
                    TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone("UTC"),
                ),
                ColumnType::String => {
                    Col::Str(StringBuilder::with_capacity(capacity, capacity * 8))
                }
            })
            .collect();
        RowTyper {
            layout,
            cols,
            part_of_row: Vec::with_capacity(capacity),
            parts: Vec::new(),
            part_ids: HashMap::new(),
            quarantine: Vec::new(),
            rows_in: 0,
            path_buf: String::new(),
            vals: Vec::new(),
            date_source: (0..layout.source_columns.len())
                .map(|i| {
                    layout
                        .spec
                        .fields
                        .iter()
                        .zip(&layout.partition_sources)
                        .any(|(f, s)| *s == i && f.transform != Transform::Identity)
                })
                .collect(),
            fast_keys: HashMap::new(),
            new_columns: None,
            new_samples: 0,
            new_source: String::new(),
        }
    }

    /// The table's layout this typer types for.
    pub fn layout(&self) -> &'l TableLayout {
        self.layout
    }

    /// Records a value (`None`: NULL) of a column the table lacks, in `source`, for its type.
    pub fn observe_new(&mut self, name: &str, value: Option<&str>, source: &str) {
        if self.new_source.is_empty() {
            self.new_source = source.to_string();
        }
        let date_format = self.layout.date_format.clone();
        let inf = self
            .new_columns
            .get_or_insert_with(|| SchemaInference::new(Vec::new(), date_format));
        let value = value.filter(|_| self.new_samples < NEW_COLUMN_SAMPLE);
        if value.is_some() {
            self.new_samples += 1;
        }
        inf.observe_named(name, value);
    }

    /// Adds a quarantined row directly.
    pub fn reject(&mut self, q: QuarantineRow) {
        self.rows_in += 1;
        self.quarantine.push(q);
    }

    /// Adds one row. `field(i)` gives the value of source column `i` (`None` = NULL or absent).
    /// On a bad value the row is quarantined with `raw` and the reason.
    pub fn add_row<'f>(
        &mut self,
        field: impl Fn(usize) -> Option<Field<'f>>,
        line: u64,
        raw: &[u8],
        source: &str,
        chunk: &str,
    ) {
        self.rows_in += 1;
        match self.type_row(&field) {
            Ok(part) => {
                for i in 0..self.vals.len() {
                    if let Some(fi) = self.layout.file_index[i] {
                        let v = self.vals[i];
                        let text = match v {
                            Val::Str => field(i).and_then(|f| f.text().ok()),
                            _ => None,
                        };
                        push_val(&mut self.cols[fi], v, text);
                    }
                }
                self.part_of_row.push(part);
            }
            Err(reason) => self.quarantine.push(QuarantineRow {
                source: source.to_string(),
                line,
                raw: truncate_raw(raw),
                reason,
                chunk: chunk.to_string(),
            }),
        }
    }

    /// Types a row into `self.vals` and returns its partition directory index.
    fn type_row<'f>(&mut self, field: &impl Fn(usize) -> Option<Field<'f>>) -> Result<u32, String> {
        let layout = self.layout;
        self.vals.clear();
        self.vals.resize(layout.source_columns.len(), Val::Null);
        for (i, col) in layout.source_columns.iter().enumerate() {
            let Some(f) = field(i) else { continue };
            let s = f.text().map_err(|e| {
                format!(
                    "column {:?}: invalid UTF-8 at byte {}",
                    col.name,
                    e.valid_up_to()
                )
            })?;
            let bad = |what: &str| {
                format!(
                    "column {:?}: cannot parse {:?} as {what}",
                    col.name,
                    clip(s)
                )
            };
            let v = match col.ty {
                ColumnType::String => Val::Str,
                ColumnType::Int64 => Val::I64(parse_i64(trim(s)).ok_or_else(|| bad("int64"))?),
                ColumnType::Float64 => Val::F64(parse_f64(trim(s)).ok_or_else(|| bad("float64"))?),
                ColumnType::Boolean => {
                    Val::Bool(parse_bool(trim(s)).ok_or_else(|| bad("boolean"))?)
                }
                ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz => {
                    match parse_temporal(s, layout.date_format.as_deref()) {
                        Some(t) => match col.ty {
                            ColumnType::Date => match t {
                                Temporal::Date(d) => Val::Date(date_to_days(d)),
                                _ => return Err(bad("date (it has a time)")),
                            },
                            ColumnType::TimestampTz => Val::Ts(naive_micros(t)),
                            _ => Val::Ts(match t {
                                Temporal::Zoned(us) => us,
                                other => naive_micros(other),
                            }),
                        },
                        // An unparseable partition date sends the row to the default partition.
                        None if self.date_source[i] => Val::Null,
                        None => return Err(bad(col.ty.name())),
                    }
                }
            };
            self.vals[i] = v;
        }
        // One date field (the usual spec): rows of the same day (or hour, for timestamps) share
        // a partition, found by number without building its path again.
        let fast_key = match (
            layout.spec.fields.as_slice(),
            layout.partition_sources.as_slice(),
        ) {
            ([pf], [i]) if pf.transform != Transform::Identity => match self.vals[*i] {
                Val::Date(d) => Some(i64::from(d) * 2),
                Val::Ts(us) => Some(us.div_euclid(3_600_000_000) * 2 + 1),
                _ => None,
            },
            _ => None,
        };
        if let Some(id) = fast_key.and_then(|k| self.fast_keys.get(&k)) {
            return Ok(*id);
        }
        let mut path = std::mem::take(&mut self.path_buf);
        path.clear();
        for (k, pf) in layout.spec.fields.iter().enumerate() {
            if k > 0 {
                path.push('/');
            }
            let i = layout.partition_sources[k];
            let text = || field(i).and_then(|f| f.text().ok());
            if pf.transform == Transform::Identity {
                let owned;
                let value = match self.vals[i] {
                    Val::Str => text(),
                    Val::I64(n) => {
                        owned = n.to_string();
                        Some(owned.as_str())
                    }
                    Val::Bool(b) => Some(if b { "true" } else { "false" }),
                    Val::Date(_) | Val::Ts(_) => text().map(str::trim),
                    _ => None,
                };
                if let Err(e) = pf.push_value_path(value, &mut path) {
                    self.path_buf = path;
                    return Err(e.to_string());
                }
            } else {
                let t = match self.vals[i] {
                    Val::Date(d) => Some(days_to_datetime(d)),
                    Val::Ts(us) => {
                        chrono::DateTime::from_timestamp_micros(us).map(|t| t.naive_utc())
                    }
                    Val::Str => text()
                        .and_then(|s| parse_temporal(s, layout.date_format.as_deref()))
                        .map(Temporal::datetime),
                    _ => None,
                };
                pf.push_date_path(t, &mut path);
            }
        }
        let id = match self.part_ids.get(&path) {
            Some(id) => *id,
            None => {
                let id = self.parts.len() as u32;
                self.parts.push(path.clone());
                self.part_ids.insert(path.clone(), id);
                id
            }
        };
        if let Some(k) = fast_key {
            self.fast_keys.insert(k, id);
        }
        self.path_buf = path;
        Ok(id)
    }

    /// Finishes: one batch per partition.
    pub fn finish(mut self, chunk: &str) -> Result<DecodedChunk> {
        let arrays: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    Col::Bool(b) => Arc::new(b.finish()),
                    Col::I64(b) => Arc::new(b.finish()),
                    Col::F64(b) => Arc::new(b.finish()),
                    Col::Date(b) => Arc::new(b.finish()),
                    Col::Ts(b) => Arc::new(b.finish()),
                    Col::Str(b) => Arc::new(b.finish()),
                }
            })
            .collect();
        let batch = RecordBatch::try_new_with_options(
            self.layout.file_schema.clone(),
            arrays,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(self.part_of_row.len())),
        )?;
        let parts = if self.parts.len() <= 1 {
            self.parts.into_iter().map(|p| (p, batch.clone())).collect()
        } else {
            let mut idx: Vec<Vec<u32>> = vec![Vec::new(); self.parts.len()];
            for (row, p) in self.part_of_row.iter().enumerate() {
                idx[*p as usize].push(row as u32);
            }
            let mut out = Vec::with_capacity(self.parts.len());
            for (p, rows) in self.parts.into_iter().zip(idx) {
                let b = take_record_batch(&batch, &UInt32Array::from(rows))?;
                out.push((p, b));
            }
            out
        };
        Ok(DecodedChunk {
            chunk: chunk.to_string(),
            parts,
            quarantine: self.quarantine,
            rows_in: self.rows_in,
            new_columns: self
                .new_columns
                .map(SchemaInference::finish)
                .unwrap_or_default(),
            new_columns_source: self.new_source,
            produced_at_ms: None,
        })
    }
}

fn push_val(col: &mut Col, v: Val, text: Option<&str>) {
    match (col, v) {
        (Col::Bool(b), Val::Bool(x)) => b.append_value(x),
        (Col::I64(b), Val::I64(x)) => b.append_value(x),
        (Col::F64(b), Val::F64(x)) => b.append_value(x),
        (Col::Date(b), Val::Date(x)) => b.append_value(x),
        (Col::Ts(b), Val::Ts(x)) => b.append_value(x),
        (Col::Str(b), Val::Str) => b.append_option(text),
        (Col::Bool(b), _) => b.append_null(),
        (Col::I64(b), _) => b.append_null(),
        (Col::F64(b), _) => b.append_null(),
        (Col::Date(b), _) => b.append_null(),
        (Col::Ts(b), _) => b.append_null(),
        (Col::Str(b), _) => b.append_null(),
    }
}

/// `s.trim()`, without looking at every character when the ends are plain ASCII (the usual
/// number).
#[inline]
fn trim(s: &str) -> &str {
    match s.as_bytes() {
        [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => s,
        [only] if only.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn truncate_raw(raw: &[u8]) -> String {
    let mut r = raw;
    if let [head @ .., b'\n'] = r {
        r = head;
    }
    if let [head @ .., b'\r'] = r {
        r = head;
    }
    let r = &r[..r.len().min(MAX_QUARANTINE_RAW)];
    String::from_utf8_lossy(r).into_owned()
}

/// Decodes the records of a sluice chunk.
pub fn decode_chunk(
    layout: &TableLayout,
    header: &ChunkHeader,
    raw: &[u8],
) -> Result<DecodedChunk> {
    let mut typer = RowTyper::new(layout, header.rows as usize);
    for r in &header.rejects {
        typer.reject(QuarantineRow {
            source: header.source.clone(),
            line: r.line,
            raw: r.raw.clone(),
            reason: r.reason.clone(),
            chunk: header.chunk.clone(),
        });
    }
    match header.payload {
        crate::chunk::Payload::JsonLines => {
            let text = std::str::from_utf8(raw).map_err(|e| {
                crate::error::Error::invalid(format!("JSON-lines payload is not UTF-8: {e}"))
            })?;
            let docs = text
                .split('\n')
                .enumerate()
                .map(|(i, l)| (header.first_line + i as u64, l))
                .filter(|(_, l)| !l.trim().is_empty());
            crate::decode::add_json_docs(&mut typer, layout, docs, &header.source, &header.chunk);
        }
        crate::chunk::Payload::Csv => {
            let map = layout.map_header(&header.columns, &header.source)?;
            add_csv_records(
                &mut typer,
                raw,
                &header.format,
                header.first_line,
                &map,
                OnFrozen::Refuse,
                &header.source,
                &header.chunk,
            )?;
        }
    }
    let mut d = typer.finish(&header.chunk)?;
    d.produced_at_ms = header.produced_at_ms;
    Ok(d)
}

/// Types CSV records (`raw`, as a [`crate::csv::RecordReader`] produces them) whose header
/// maps to the table as `map` says; columns the table lacks are handled by its policy (see
/// [`DecodedChunk::new_columns`] and [`OnFrozen`]).
///
/// The payload is checked for UTF-8 once; its fields are then used in place, without copies.
#[allow(clippy::too_many_arguments)]
pub fn add_csv_records(
    typer: &mut RowTyper<'_>,
    raw: &[u8],
    format: &CsvFormat,
    first_line: u64,
    map: &HeaderMap,
    frozen: OnFrozen,
    source: &str,
    chunk: &str,
) -> Result<()> {
    let records = Records::new(raw, format).map(|r| {
        r.map(|(before, start, end)| (first_line + before, start, end))
            .map_err(|newlines| first_line + newlines)
    });
    type_csv_records(typer, raw, format, records, map, frozen, source, chunk)
}

/// Types CSV records whose places the reader already found: `spans` are (line, length) of the
/// records that follow each other in `raw` (see [`crate::csv::RecordReader::next_into`]), so
/// they are not scanned for again.
#[allow(clippy::too_many_arguments)]
pub fn add_csv_spans(
    typer: &mut RowTyper<'_>,
    raw: &[u8],
    spans: &[(u64, usize)],
    format: &CsvFormat,
    map: &HeaderMap,
    frozen: OnFrozen,
    source: &str,
    chunk: &str,
) -> Result<()> {
    let mut at = 0;
    let records = spans.iter().map(|(line, len)| {
        let start = at;
        at += len;
        Ok((*line, start, at))
    });
    type_csv_records(typer, raw, format, records, map, frozen, source, chunk)
}

/// Types records given as `Ok((line, start, end))` in `raw`, or `Err(line)` where a quoted
/// field never closes (the end of the records).
#[allow(clippy::too_many_arguments)]
fn type_csv_records(
    typer: &mut RowTyper<'_>,
    raw: &[u8],
    format: &CsvFormat,
    records: impl Iterator<Item = std::result::Result<(u64, usize, usize), u64>>,
    map: &HeaderMap,
    frozen: OnFrozen,
    source: &str,
    chunk: &str,
) -> Result<()> {
    let layout = typer.layout();
    let frozen_reason = match layout.policy {
        _ if map.unknown.is_empty() => None,
        SchemaPolicy::DiscardColumns => None,
        SchemaPolicy::Freeze => {
            let reason = layout.frozen_reason(&map.unknown_names());
            if frozen == OnFrozen::Refuse {
                return Err(crate::Error::invalid_at(source, Some(1), reason));
            }
            Some(reason)
        }
        SchemaPolicy::Evolve => {
            infer_new_csv_columns(typer, raw, format, records, map, source);
            return Ok(());
        }
    };
    let pos_of_col = &map.pos_of_col;
    let expected = map.fields;
    let mut sp = FieldSplitter::default();
    let text = std::str::from_utf8(raw).ok();
    for r in records {
        let (rec_line, start, end) = match r {
            Ok(r) => r,
            Err(line) => {
                // Only a message from another program can end inside a quoted field.
                typer.reject(QuarantineRow {
                    source: source.to_string(),
                    line,
                    raw: String::new(),
                    reason: "unterminated quoted field".into(),
                    chunk: chunk.to_string(),
                });
                break;
            }
        };
        let rec = &raw[start..end];
        if rec.iter().all(|b| *b == b'\n' || *b == b'\r') {
            continue;
        }
        if let Some(reason) = &frozen_reason {
            typer.reject(QuarantineRow {
                source: source.to_string(),
                line: rec_line,
                raw: truncate_raw(rec),
                reason: reason.clone(),
                chunk: chunk.to_string(),
            });
            continue;
        }
        sp.split(rec, format.delimiter, format.quote);
        if sp.len() != expected {
            typer.reject(QuarantineRow {
                source: source.to_string(),
                line: rec_line,
                raw: truncate_raw(rec),
                reason: format!("expected {expected} fields, found {}", sp.len()),
                chunk: chunk.to_string(),
            });
            continue;
        }
        let rec_text = text.and_then(|t| t.get(start..end));
        let sp_ref = &sp;
        typer.add_row(
            |i| {
                let p = pos_of_col[i];
                if p == usize::MAX {
                    return None;
                }
                let f = sp_ref.field(rec, p);
                if format.is_null(f) {
                    return None;
                }
                Some(match rec_text.and_then(|t| sp_ref.field_str(t, p)) {
                    Some(s) => Field::Text(s),
                    None => Field::Bytes(f),
                })
            },
            rec_line,
            rec,
            source,
            chunk,
        );
    }
    Ok(())
}

/// Samples the values of the header columns the table lacks, for their types.
fn infer_new_csv_columns(
    typer: &mut RowTyper<'_>,
    raw: &[u8],
    format: &CsvFormat,
    records: impl Iterator<Item = std::result::Result<(u64, usize, usize), u64>>,
    map: &HeaderMap,
    source: &str,
) {
    for (_, name) in &map.unknown {
        typer.observe_new(name, None, source);
    }
    let mut sp = FieldSplitter::default();
    for (start, end) in records
        .map_while(|r| r.ok())
        .map(|(_, s, e)| (s, e))
        .take(NEW_COLUMN_SAMPLE)
    {
        let rec = &raw[start..end];
        sp.split(rec, format.delimiter, format.quote);
        if sp.len() != map.fields {
            continue;
        }
        for (pos, name) in &map.unknown {
            let f = sp.field(rec, *pos);
            if format.is_null(f) {
                continue;
            }
            if let Ok(v) = std::str::from_utf8(f) {
                typer.observe_new(name, Some(v), source);
            }
        }
    }
}
