//! Typing rows: source fields (bytes) to Arrow columns, one partition per row, and the
//! quarantine for rows that do not parse. A row is taken whole or quarantined whole.
//!
//! CSV records are typed in blocks, a column at a time (`add_csv_records`,
//! `add_csv_spans`); JSON objects a row at a time (`RowTyper::add_row`). Both follow the same
//! rules (a proptest below compares them) and put each row straight into its partition's
//! columns.

use std::collections::HashMap;
use std::sync::Arc;

use std::borrow::Cow;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};

use crate::decode::value::{
    BINARY_TEXT, Nv, Reading, Val, build, has_new_fields, naive_micros, parse_integer, trim,
    type_leaf, type_nested,
};
use crate::error::Result;
use crate::schema::partition::Transform;
use crate::schema::{
    Column, ColumnType, SchemaInference, Temporal, date_to_days, parse_bool, parse_decimal,
    parse_f32, parse_f64, parse_hex, parse_i64, parse_i64_ascii, parse_short_decimal,
    parse_temporal,
};
use crate::source::csv::{BufferSplitter, CsvFormat, FieldSplitter, Records};
use crate::table::policy::SchemaPolicy;
use crate::table::{HeaderMap, TableLayout};

/// Values sampled to infer the type of a new column.
const NEW_COLUMN_SAMPLE: usize = 10_000;

/// Longest raw text kept for a quarantined row.
pub(crate) const MAX_QUARANTINE_RAW: usize = 64 * 1024;

/// A row that could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuarantineRow {
    pub source: String,
    pub line: u64,
    pub raw: String,
    pub reason: String,
    pub chunk: String,
}

/// The rows of one chunk (or foreign message), typed and split by partition.
#[derive(Debug)]
pub(crate) struct DecodedChunk {
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
pub(crate) enum OnFrozen {
    /// Each row goes to the quarantine with the reason (`convert`: no queue to leave it in).
    Quarantine,
    /// The whole source is refused (a queue message: dead-lettered with the reason).
    Refuse,
}

/// A column being built. Integers of every width are built as `int64` and floats as
/// `float64` (their values checked to fit, or parsed as `f32`), then cast to the file's type.
enum Col {
    Bool(BooleanBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Str(StringBuilder),
    Bin(BinaryBuilder),
    /// Structs, lists and maps: their values typed, built into an array at the end.
    Nested(ColumnType, Vec<Nv>),
}

/// A field value as the typer receives it: text already known to be UTF-8, or bytes to check.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    /// A field known to be UTF-8.
    Text(&'a str),
    /// A field as bytes, checked for UTF-8 when typed.
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

fn days_to_datetime(days: i32) -> chrono::NaiveDateTime {
    chrono::DateTime::from_timestamp(days as i64 * 86_400, 0)
        .map(|t| t.naive_utc())
        .unwrap_or_default()
}

/// Builds typed batches from rows of one table.
pub(crate) struct RowTyper<'l> {
    layout: &'l TableLayout,
    /// Per partition (by index in `partitions`): its columns, built as rows are taken.
    cols: Vec<Vec<Col>>,
    /// Rows taken per partition.
    rows: Vec<usize>,
    /// Rows expected in all, to size a partition's first builders.
    capacity: usize,
    partitions: Partitioner,
    quarantine: Vec<QuarantineRow>,
    rows_in: u64,
    vals: Vec<Val>,
    /// The nested values of the row being typed, by source column.
    nested: Vec<Nv>,
    /// Per source column: whether a date transform partitions by it (an unparseable value
    /// then sends the row to the default partition instead of the quarantine).
    date_source: Vec<bool>,
    /// Columns the source has and the table lacks (policy `evolve`), with sampled values.
    new_columns: Option<SchemaInference>,
    new_samples: usize,
    new_source: String,
}

impl<'l> RowTyper<'l> {
    pub fn new(layout: &'l TableLayout, capacity: usize) -> Self {
        RowTyper {
            layout,
            cols: Vec::new(),
            rows: Vec::new(),
            capacity,
            partitions: Partitioner::default(),
            quarantine: Vec::new(),
            rows_in: 0,
            vals: Vec::new(),
            nested: Vec::new(),
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
            new_columns: None,
            new_samples: 0,
            new_source: String::new(),
        }
    }

    /// The columns of partition `part`, created when it is first seen: its first builders
    /// are sized for an even share of the rows expected.
    fn columns_of(&mut self, part: u32) -> &mut Vec<Col> {
        let part = part as usize;
        while self.cols.len() <= part {
            let capacity = (self.capacity / 4).max(16);
            let cols = self
                .layout
                .file_columns
                .iter()
                .map(|c| match c.ty {
                    ColumnType::Boolean => Col::Bool(BooleanBuilder::with_capacity(capacity)),
                    ColumnType::Int8
                    | ColumnType::Int16
                    | ColumnType::Int32
                    | ColumnType::Int64 => Col::I64(Int64Builder::with_capacity(capacity)),
                    ColumnType::Float32 | ColumnType::Float64 => {
                        Col::F64(Float64Builder::with_capacity(capacity))
                    }
                    ColumnType::Decimal { precision, scale } => Col::Dec(
                        Decimal128Builder::with_capacity(capacity)
                            .with_precision_and_scale(precision, scale as i8)
                            .expect("a checked decimal type"),
                    ),
                    ColumnType::Binary => {
                        Col::Bin(BinaryBuilder::with_capacity(capacity, capacity * 8))
                    }
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
                    ColumnType::Struct(_) | ColumnType::List(_) | ColumnType::Map(_) => {
                        Col::Nested(c.ty, Vec::with_capacity(capacity))
                    }
                })
                .collect();
            self.cols.push(cols);
            self.rows.push(0);
        }
        &mut self.cols[part]
    }

    /// The table's layout this typer types for.
    pub fn layout(&self) -> &'l TableLayout {
        self.layout
    }

    /// Records a value (`None`: NULL) of a column the table lacks, in `source`, for its type.
    pub fn observe_new(&mut self, name: &str, value: Option<&str>, source: &str) {
        let value = self.sampled(value, source);
        self.new_column_inference().observe_named(name, value);
    }

    /// `value` of a column the table lacks, if the sample takes it (up to
    /// [`NEW_COLUMN_SAMPLE`] values), noting `source` as the first source with new columns.
    fn sampled<T>(&mut self, value: Option<T>, source: &str) -> Option<T> {
        if self.new_source.is_empty() {
            self.new_source = source.to_string();
        }
        let value = value.filter(|_| self.new_samples < NEW_COLUMN_SAMPLE);
        if value.is_some() {
            self.new_samples += 1;
        }
        value
    }

    /// Records a JSON value (`None`: absent) of a column the table lacks, in `source`, for its
    /// type: an object or an array by its shape and what it holds.
    pub fn observe_new_json(
        &mut self,
        name: &str,
        value: Option<&serde_json::value::RawValue>,
        source: &str,
    ) {
        let value = self.sampled(value, source);
        self.new_column_inference().observe_json_named(name, value);
    }

    /// Records that the column the table lacks `name` is written `written` in the source (its
    /// name before the table's naming rule), for the column's metadata.
    pub fn name_new(&mut self, name: &str, written: &str) {
        if name != written {
            self.new_column_inference().name_source(name, written);
        }
    }

    /// The inference of the columns the table lacks, made when first needed.
    fn new_column_inference(&mut self) -> &mut SchemaInference {
        let layout = self.layout;
        self.new_columns.get_or_insert_with(|| {
            SchemaInference::new(Vec::new(), layout.date_format.clone())
                .with_exact_decimals(layout.exact_decimals)
                .with_field_names(layout.names)
        })
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
        match self.type_row(&field, source) {
            Ok(part) => {
                let (layout, vals) = (self.layout, std::mem::take(&mut self.vals));
                self.columns_of(part);
                self.rows[part as usize] += 1;
                let cols = &mut self.cols[part as usize];
                for (i, v) in vals.iter().enumerate() {
                    if let Some(fi) = layout.file_index[i] {
                        if let (Col::Nested(_, b), Val::Nested) = (&mut cols[fi], v) {
                            b.push(std::mem::replace(&mut self.nested[i], Nv::Null));
                            continue;
                        }
                        let text = match v {
                            Val::Str | Val::Bin => field(i).and_then(|f| f.text().ok()),
                            _ => None,
                        };
                        push_val(&mut cols[fi], *v, text);
                    }
                }
                self.vals = vals;
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
    fn type_row<'f>(
        &mut self,
        field: &impl Fn(usize) -> Option<Field<'f>>,
        source: &str,
    ) -> Result<u32, String> {
        let layout = self.layout;
        self.vals.clear();
        self.vals.resize(layout.source_columns.len(), Val::Null);
        let mut widening: Option<&str> = None;
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
            let v = if col.ty.is_nested() {
                if self.nested.len() < layout.source_columns.len() {
                    self.nested.resize(layout.source_columns.len(), Nv::Null);
                }
                match type_nested(s, col.ty, Reading::of(layout)) {
                    Ok(v) => self.nested[i] = v,
                    // Keys a struct lacks, under `evolve`: sampled for the fields they add (in
                    // every column of the row); the chunk is typed again once the table has
                    // them.
                    Err(_)
                        if layout.policy == SchemaPolicy::Evolve
                            && has_new_fields(s, col.ty, layout.names) =>
                    {
                        let raw = serde_json::from_str::<&serde_json::value::RawValue>(s)
                            .expect("checked to be JSON");
                        self.observe_new_json(&col.name, Some(raw), source);
                        widening.get_or_insert(&col.name);
                        continue;
                    }
                    Err(what) => return Err(bad(&what)),
                }
                Val::Nested
            } else {
                // An unparseable partition date sends the row to the default partition.
                type_leaf(
                    s,
                    col.ty,
                    layout.date_format.as_deref(),
                    self.date_source[i],
                )
                .map_err(|what| bad(&what))?
            };
            self.vals[i] = v;
        }
        if let Some(name) = widening {
            return Err(format!("column {name:?}: new struct fields"));
        }
        let vals = &self.vals;
        self.partitions.part_of(
            layout,
            |i| vals[i],
            |i| field(i).and_then(|f| f.text().ok()),
        )
    }

    /// Finishes: one batch per partition.
    pub fn finish(mut self, chunk: &str) -> Result<DecodedChunk> {
        // Every partition a row was given has its columns; made sure of, not assumed.
        if let Some(last) = self.partitions.parts.len().checked_sub(1) {
            self.columns_of(last as u32);
        }
        let mut parts = Vec::with_capacity(self.cols.len());
        let parts_rows = self.partitions.parts.into_iter().zip(self.rows);
        for ((path, rows), mut cols) in parts_rows.zip(self.cols) {
            let arrays: Vec<ArrayRef> = cols
                .iter_mut()
                .zip(self.layout.file_schema.fields())
                .map(|(c, field)| -> Result<ArrayRef> {
                    let a: ArrayRef = match c {
                        Col::Bool(b) => Arc::new(b.finish()),
                        Col::I64(b) => Arc::new(b.finish()),
                        Col::F64(b) => Arc::new(b.finish()),
                        Col::Dec(b) => Arc::new(b.finish()),
                        Col::Date(b) => Arc::new(b.finish()),
                        Col::Ts(b) => Arc::new(b.finish()),
                        Col::Str(b) => Arc::new(b.finish()),
                        Col::Bin(b) => Arc::new(b.finish()),
                        Col::Nested(ty, values) => {
                            let a = build(&values.iter().collect::<Vec<_>>(), *ty);
                            values.clear();
                            a
                        }
                    };
                    // Narrower integers and floats: every value was checked to fit (a float32
                    // was parsed as one), so the cast is exact.
                    Ok(if a.data_type() == field.data_type() {
                        a
                    } else {
                        arrow::compute::cast(&a, field.data_type())?
                    })
                })
                .collect::<Result<_>>()?;
            let batch = RecordBatch::try_new_with_options(
                self.layout.file_schema.clone(),
                arrays,
                &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
            )?;
            parts.push((path, batch));
        }
        Ok(DecodedChunk {
            chunk: chunk.to_string(),
            parts,
            quarantine: self.quarantine,
            rows_in: self.rows_in,
            new_columns: self
                .new_columns
                .map(SchemaInference::finish)
                .unwrap_or_default()
                .into_iter()
                .map(|mut c| {
                    // A struct column of the table that the rows give fields it lacks: the
                    // table's type with those fields added.
                    if let Some(have) = self.layout.source_columns.iter().find(|s| s.name == c.name)
                    {
                        c.ty = have.ty.widened(c.ty);
                    }
                    c
                })
                .collect(),
            new_columns_source: self.new_source,
            produced_at_ms: None,
        })
    }
}

/// Hashes an `i64` key with one multiplication (the keys are day or hour numbers, not
/// attacker-chosen, and a partition lookup happens for every row).
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_i64(&mut self, n: i64) {
        self.0 = (n as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

/// Refuses a change of a keyed table whose key or sequence is NULL, or whose operation is not
/// one ([`crate::table::keyed::parse_op`]); a NULL operation is an upsert.
fn check_change<'t>(
    layout: &TableLayout,
    k: &crate::table::Keyed,
    val: &impl Fn(usize) -> Val,
    text: &impl Fn(usize) -> Option<&'t str>,
) -> Result<(), String> {
    let name = |i: usize| &layout.source_columns[i].name;
    if let Some(i) = k.key_sources.iter().find(|i| matches!(val(**i), Val::Null)) {
        return Err(format!("key column {:?} is NULL", name(*i)));
    }
    if let Some(i) = k.sequence_source
        && matches!(val(i), Val::Null)
    {
        return Err(format!("sequence column {:?} is NULL", name(i)));
    }
    if let Some(i) = k.op_source
        && let Some(t) = text(i)
        && crate::table::keyed::parse_op(t).is_none()
    {
        return Err(format!(
            "column {:?}: {:?} is not an operation (I, U or D; c, u, r or d)",
            name(i),
            clip(t)
        ));
    }
    Ok(())
}

/// The partitions rows go to, in order of first appearance.
#[derive(Default)]
struct Partitioner {
    parts: Vec<String>,
    part_ids: HashMap<String, u32>,
    path_buf: String,
    /// Partition of a day (`2 × days`) or hour (`2 × hours + 1`), for one-date-field specs.
    fast_keys: HashMap<i64, u32, std::hash::BuildHasherDefault<KeyHasher>>,
}

impl Partitioner {
    /// The partition of a typed row: `val(i)` is the value of source column `i`, `text(i)` its
    /// text (for a string, or an identity partition's date as written).
    fn part_of<'t>(
        &mut self,
        layout: &TableLayout,
        val: impl Fn(usize) -> Val,
        text: impl Fn(usize) -> Option<&'t str>,
    ) -> Result<u32, String> {
        if let Some(k) = &layout.keyed {
            check_change(layout, k, &val, &text)?;
        }
        // One date field (the usual spec): rows of the same day (or hour, for timestamps) share
        // a partition, found by number without building its path again.
        let fast_key = match (
            layout.spec.fields.as_slice(),
            layout.partition_sources.as_slice(),
        ) {
            ([pf], [i]) if pf.transform != Transform::Identity => match val(*i) {
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
            if pf.transform == Transform::Identity {
                let owned;
                let value = match val(i) {
                    Val::Str => text(i),
                    Val::I64(n) => {
                        owned = n.to_string();
                        Some(owned.as_str())
                    }
                    Val::Bool(b) => Some(if b { "true" } else { "false" }),
                    Val::Date(_) | Val::Ts(_) => text(i).map(str::trim),
                    _ => None,
                };
                if let Err(e) = pf.push_value_path(value, &mut path) {
                    self.path_buf = path;
                    return Err(e.to_string());
                }
            } else {
                let t = match val(i) {
                    Val::Date(d) => Some(days_to_datetime(d)),
                    Val::Ts(us) => {
                        chrono::DateTime::from_timestamp_micros(us).map(|t| t.naive_utc())
                    }
                    Val::Str => text(i)
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
}

fn push_val(col: &mut Col, v: Val, text: Option<&str>) {
    match (col, v) {
        (Col::Bool(b), Val::Bool(x)) => b.append_value(x),
        (Col::I64(b), Val::I64(x)) => b.append_value(x),
        (Col::F64(b), Val::F64(x)) => b.append_value(x),
        (Col::Dec(b), Val::Dec(x)) => b.append_value(x),
        (Col::Date(b), Val::Date(x)) => b.append_value(x),
        (Col::Ts(b), Val::Ts(x)) => b.append_value(x),
        (Col::Str(b), Val::Str) => b.append_option(text),
        (Col::Bin(b), Val::Bin) => b.append_option(text.and_then(|t| parse_hex(trim(t)))),
        (col, _) => append_nulls(col, 1),
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

/// CSV records to type (`raw`, as a [`crate::source::csv::RecordReader`] produces them), and
/// where they come from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CsvRecords<'a> {
    pub raw: &'a [u8],
    pub format: &'a CsvFormat,
    /// How the records' header maps to the table's columns.
    pub map: &'a HeaderMap,
    /// What columns the table lacks do under the `freeze` policy.
    pub frozen: OnFrozen,
    /// The file, object or message, for the quarantine and errors.
    pub source: &'a str,
    pub chunk: &'a str,
}

/// Types CSV records whose first is on line `first_line`; columns the table lacks are handled
/// by its policy (see [`DecodedChunk::new_columns`] and [`OnFrozen`]).
///
/// The payload is checked for UTF-8 once; its fields are then used in place, without copies.
pub(crate) fn add_csv_records(
    typer: &mut RowTyper<'_>,
    recs: &CsvRecords<'_>,
    first_line: u64,
) -> Result<()> {
    let records = Records::new(recs.raw, recs.format).map(|r| {
        r.map(|(before, start, end)| (first_line + before, start, end))
            .map_err(|newlines| first_line + newlines)
    });
    type_csv_records(typer, recs, records)
}

/// Types CSV records whose places the reader already found: `spans` are (line, length) of the
/// records that follow each other in `raw` (see
/// [`crate::source::csv::RecordReader::next_into`]), so they are not scanned for again.
pub(crate) fn add_csv_spans(
    typer: &mut RowTyper<'_>,
    recs: &CsvRecords<'_>,
    spans: &[(u64, usize)],
) -> Result<()> {
    let mut at = 0;
    let records = spans.iter().map(|(line, len)| {
        let start = at;
        at += len;
        Ok((*line, start, at))
    });
    type_csv_records(typer, recs, records)
}

/// Types records given as `Ok((line, start, end))` in `raw`, or `Err(line)` where a quoted
/// field never closes (the end of the records).
fn type_csv_records(
    typer: &mut RowTyper<'_>,
    recs: &CsvRecords<'_>,
    records: impl Iterator<Item = std::result::Result<(u64, usize, usize), u64>>,
) -> Result<()> {
    let CsvRecords {
        raw,
        format,
        map,
        frozen,
        source,
        chunk,
    } = *recs;
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
    if raw.len() >= IN_DATA as usize {
        return Err(crate::Error::invalid(format!(
            "{source}: a chunk of {} bytes is too large to type at once",
            raw.len()
        )));
    }
    let expected = map.fields;
    // Records are split where they lie; one whose fields must be copied (an escaped quote,
    // text after a closing quote, a quote never closed) is split again by a `FieldSplitter`.
    let splitter = BufferSplitter::new(raw, format.delimiter, format.quote);
    let mut places = Vec::with_capacity(expected);
    let mut sp = FieldSplitter::default();
    let text = std::str::from_utf8(raw).ok();
    let mut block = Block::new(map);
    for r in records {
        let (rec_line, start, end) = match r {
            Ok(r) => r,
            Err(line) => {
                typer.type_block(raw, text, &mut block, format, source, chunk);
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
        let fast = splitter.split(start, end, &mut places);
        if !fast {
            sp.split(rec, format.delimiter, format.quote);
        }
        let found = if fast { places.len() } else { sp.len() };
        if found != expected {
            let ordinal = block.records();
            block.refused.push((
                ordinal,
                QuarantineRow {
                    source: source.to_string(),
                    line: rec_line,
                    raw: truncate_raw(rec),
                    reason: format!("expected {expected} fields, found {found}"),
                    chunk: chunk.to_string(),
                },
            ));
            continue;
        }
        if fast {
            block.push_places(&places, rec_line, start, end);
        } else {
            block.push(&sp, rec_line, start, end);
        }
        if block.recs.len() >= BLOCK_ROWS {
            typer.type_block(raw, text, &mut block, format, source, chunk);
        }
    }
    typer.type_block(raw, text, &mut block, format, source, chunk);
    Ok(())
}

/// Records typed at once, a column at a time: their field places (8 bytes per field) stay in
/// the CPU's cache between splitting and typing.
const BLOCK_ROWS: usize = if cfg!(test) { 5 } else { 4096 };

/// Marks a field place in [`Block::data`] rather than in the chunk.
const IN_DATA: u32 = 1 << 31;

/// A block of split CSV records: for each source column of the table, the place of its field
/// in every record (`None`: the source lacks the column).
struct Block {
    /// (line, start, end) of each record in the chunk.
    recs: Vec<(u64, u32, u32)>,
    /// Per source column: (start, end) of its field in each record, in the chunk, or in
    /// `data` when `start` has [`IN_DATA`] set.
    fields: Vec<Option<Vec<(u32, u32)>>>,
    /// Field position in the record of each source column.
    pos_of_col: Vec<usize>,
    /// Fields copied to unescape `""`.
    data: Vec<u8>,
    /// Records refused when split (a wrong number of fields), by their place among the
    /// block's records.
    refused: Vec<(usize, QuarantineRow)>,
}

impl Block {
    fn new(map: &HeaderMap) -> Self {
        Block {
            recs: Vec::with_capacity(BLOCK_ROWS),
            fields: map
                .pos_of_col
                .iter()
                .map(|p| (*p != usize::MAX).then(|| Vec::with_capacity(BLOCK_ROWS)))
                .collect(),
            pos_of_col: map.pos_of_col.clone(),
            data: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// Records in the block, refused ones included.
    fn records(&self) -> usize {
        self.recs.len() + self.refused.len()
    }

    /// Adds the record `start..end` of the chunk, just split by `sp`.
    fn push(&mut self, sp: &FieldSplitter, line: u64, start: usize, end: usize) {
        // The ordinal of a typed record is its index in `recs` plus the refused before it:
        // kept implicitly by recording refusals with `records()`.
        self.recs.push((line, start as u32, end as u32));
        for (col, p) in self.fields.iter_mut().zip(&self.pos_of_col) {
            let Some(col) = col else { continue };
            match sp.place(*p) {
                Ok((s, e)) => col.push(((start + s) as u32, (start + e) as u32)),
                Err(bytes) => {
                    let at = self.data.len();
                    self.data.extend_from_slice(bytes);
                    col.push((at as u32 | IN_DATA, self.data.len() as u32));
                }
            }
        }
    }

    /// Adds the record `start..end` of the chunk, whose fields are at `places` in it.
    #[inline]
    fn push_places(&mut self, places: &[(u32, u32)], line: u64, start: usize, end: usize) {
        self.recs.push((line, start as u32, end as u32));
        for (col, p) in self.fields.iter_mut().zip(&self.pos_of_col) {
            if let Some(col) = col {
                col.push(places[*p]);
            }
        }
    }

    fn clear(&mut self) {
        self.recs.clear();
        for col in self.fields.iter_mut().flatten() {
            col.clear();
        }
        self.data.clear();
        self.refused.clear();
    }
}

/// A column of a block, typed.
enum Typed {
    /// The source lacks the column: NULL in every row.
    Absent,
    /// Strings are copied from their places when the rows are taken.
    Str,
    Bool(Vec<bool>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    Dec(Vec<i128>),
    Date(Vec<i32>),
    Ts(Vec<i64>),
    /// Bytes are decoded again from their places when the rows are taken.
    Bin,
    /// Structs, lists and maps, typed.
    Nested(Vec<Nv>),
    /// The source lacks the column, which has a default: its value (and text) in every row.
    Const(Val, String),
}

/// Where the fields of a block lie: in the chunk (`raw`, and `text` when the chunk is UTF-8),
/// or, for a place with [`IN_DATA`] set, in the block's copies of unescaped fields.
struct Places<'a> {
    raw: &'a [u8],
    text: Option<&'a str>,
    data: &'a [u8],
    data_text: Option<&'a str>,
}

impl<'a> Places<'a> {
    fn new(raw: &'a [u8], text: Option<&'a str>, data: &'a [u8]) -> Self {
        // Unescaped copies of UTF-8 text cut at ASCII quotes are UTF-8 too.
        let data_text = text.and_then(|_| std::str::from_utf8(data).ok());
        Places {
            raw,
            text,
            data,
            data_text,
        }
    }

    #[inline]
    fn bytes(&self, (s, e): (u32, u32)) -> &'a [u8] {
        if s & IN_DATA != 0 {
            &self.data[(s & !IN_DATA) as usize..e as usize]
        } else {
            &self.raw[s as usize..e as usize]
        }
    }

    /// The field as text, when its chunk (or copy) is known to be UTF-8.
    #[inline]
    fn str(&self, (s, e): (u32, u32)) -> Option<&'a str> {
        if s & IN_DATA != 0 {
            self.data_text?.get((s & !IN_DATA) as usize..e as usize)
        } else {
            self.text?.get(s as usize..e as usize)
        }
    }
}

/// The first reason each row of a block is refused for, found column by column in table order
/// (as the row-by-row rules read them).
struct Refusals {
    reasons: Vec<Option<String>>,
    any: bool,
}

impl Refusals {
    fn new(n: usize) -> Self {
        Refusals {
            reasons: vec![None; n],
            any: false,
        }
    }

    #[inline]
    fn is_refused(&self, r: usize) -> bool {
        self.reasons[r].is_some()
    }

    #[inline]
    fn refuse(&mut self, r: usize, reason: String) {
        self.reasons[r] = Some(reason);
        self.any = true;
    }
}

/// One source column of a block being typed: how to read row `r`'s field.
struct ColumnFields<'p, 'a> {
    name: &'p str,
    places: &'p [(u32, u32)],
    at: &'p Places<'a>,
    format: &'p CsvFormat,
}

impl<'a> ColumnFields<'_, 'a> {
    #[inline]
    fn bytes(&self, r: usize) -> &'a [u8] {
        self.at.bytes(self.places[r])
    }

    /// The text of row `r`'s field: `Ok(None)` for NULL, `Err` when not UTF-8.
    #[inline]
    fn text(&self, r: usize) -> Result<Option<&'a str>, String> {
        let place = self.places[r];
        let b = self.at.bytes(place);
        if self.format.is_null(b) {
            return Ok(None);
        }
        match self.at.str(place) {
            Some(s) => Ok(Some(s)),
            None => std::str::from_utf8(b).map(Some).map_err(|e| {
                format!(
                    "column {:?}: invalid UTF-8 at byte {}",
                    self.name,
                    e.valid_up_to()
                )
            }),
        }
    }

    fn bad_value(&self, s: &str, what: &str) -> String {
        format!(
            "column {:?}: cannot parse {:?} as {what}",
            self.name,
            clip(s)
        )
    }

    /// Types the field of each row not refused yet with `parse` (`Ok(false)`: NULL), refusing
    /// the rows whose value does not parse with the reason; `ok[r]` says whether row `r` has a
    /// value. `fast` may type a field from its bytes first (`true`: typed and present), which
    /// must give what `parse` would: numbers and ISO dates are read there without taking the
    /// field as text (no UTF-8 boundary checks).
    #[inline]
    fn type_values(
        &self,
        refusals: &mut Refusals,
        ok: &mut [bool],
        mut fast: impl FnMut(usize, &[u8]) -> bool,
        mut parse: impl FnMut(usize, &str) -> Result<bool, Cow<'static, str>>,
    ) {
        for (r, ok) in ok.iter_mut().enumerate() {
            if refusals.is_refused(r) {
                *ok = false;
                continue;
            }
            let b = self.bytes(r);
            if self.format.is_null(b) {
                *ok = false;
                continue;
            }
            if fast(r, b) {
                *ok = true;
                continue;
            }
            *ok = match self.text(r) {
                Ok(None) => false,
                Ok(Some(s)) => match parse(r, s) {
                    Ok(present) => present,
                    Err(what) => {
                        refusals.refuse(r, self.bad_value(s, &what));
                        false
                    }
                },
                Err(reason) => {
                    refusals.refuse(r, reason);
                    false
                }
            };
        }
    }
}

/// A block's columns as typed: each source column's values, and whether each row has one.
struct TypedColumns {
    typed: Vec<Typed>,
    valid: Vec<Vec<bool>>,
}

impl TypedColumns {
    /// Row `r`'s value of column `i`, as partitioning reads it.
    #[inline]
    fn val(&self, i: usize, r: usize) -> Val {
        match &self.typed[i] {
            Typed::Absent => return Val::Null,
            Typed::Const(v, _) => return *v,
            _ if !self.valid[i][r] => return Val::Null,
            _ => {}
        }
        match &self.typed[i] {
            Typed::Absent => Val::Null,
            Typed::Str => Val::Str,
            Typed::Bool(v) => Val::Bool(v[r]),
            Typed::I64(v) => Val::I64(v[r]),
            Typed::F64(v) => Val::F64(v[r]),
            Typed::Dec(v) => Val::Dec(v[r]),
            Typed::Date(v) => Val::Date(v[r]),
            Typed::Ts(v) => Val::Ts(v[r]),
            Typed::Bin => Val::Bin,
            Typed::Nested(_) => Val::Nested,
            Typed::Const(v, _) => *v,
        }
    }
}

impl RowTyper<'_> {
    /// Types the records of `block` a column at a time (`text`: the chunk, when it is UTF-8),
    /// takes the good rows and quarantines the others (in record order), and empties it.
    fn type_block(
        &mut self,
        raw: &[u8],
        text: Option<&str>,
        block: &mut Block,
        format: &CsvFormat,
        source: &str,
        chunk: &str,
    ) {
        let n = block.recs.len();
        let mut refusals = Refusals::new(n);
        {
            let at = Places::new(raw, text, &block.data);
            let columns = self.type_columns(&at, block, format, &mut refusals);
            let part = self.partition_rows(&at, block, format, &columns, &mut refusals);
            self.take_rows(&at, block, &columns, &refusals, &part);
        }
        self.rows_in += (n + block.refused.len()) as u64;
        self.quarantine_block(raw, block, refusals, source, chunk);
        block.clear();
    }

    /// Step 1: every source column of the block typed, refusing the rows whose field does not
    /// parse.
    fn type_columns(
        &self,
        at: &Places<'_>,
        block: &Block,
        format: &CsvFormat,
        refusals: &mut Refusals,
    ) -> TypedColumns {
        let layout = self.layout;
        let mut columns = TypedColumns {
            typed: Vec::with_capacity(layout.source_columns.len()),
            valid: Vec::with_capacity(layout.source_columns.len()),
        };
        for (i, col) in layout.source_columns.iter().enumerate() {
            let Some(places) = &block.fields[i] else {
                // A column the source lacks: its default in every row, else NULL.
                let typed = layout.defaults[i]
                    .as_ref()
                    .and_then(|d| {
                        type_leaf(d, col.ty, layout.date_format.as_deref(), false)
                            .ok()
                            .map(|v| Typed::Const(v, d.clone()))
                    })
                    .unwrap_or(Typed::Absent);
                columns.typed.push(typed);
                columns.valid.push(Vec::new());
                continue;
            };
            let fields = ColumnFields {
                name: &col.name,
                places,
                at,
                format,
            };
            let (t, ok) = self.type_column(i, col, &fields, refusals);
            columns.typed.push(t);
            columns.valid.push(ok);
        }
        columns
    }

    /// One column of a block, as its type says.
    #[inline]
    fn type_column(
        &self,
        i: usize,
        col: &Column,
        fields: &ColumnFields<'_, '_>,
        refusals: &mut Refusals,
    ) -> (Typed, Vec<bool>) {
        let n = fields.places.len();
        let mut ok = vec![true; n];
        // A number column: read from the field's bytes by `$fast`, else from its text by
        // `$slow`.
        macro_rules! number {
            ($zero:expr, $fast:expr, $slow:expr, $typed:ident) => {{
                let mut v = vec![$zero; n];
                let cell = std::cell::Cell::from_mut(&mut v[..]).as_slice_of_cells();
                fields.type_values(
                    refusals,
                    &mut ok,
                    |r, b| ($fast)(b).map(|x| cell[r].set(x)).is_some(),
                    |r, s| {
                        cell[r].set(($slow)(trim(s))?);
                        Ok(true)
                    },
                );
                Typed::$typed(v)
            }};
        }
        let no_fast = |_: usize, _: &[u8]| false;
        let ty = col.ty;
        let t = match col.ty {
            ColumnType::Struct(_) | ColumnType::List(_) | ColumnType::Map(_) => {
                let how = Reading::of(self.layout);
                let mut v = vec![Nv::Null; n];
                fields.type_values(refusals, &mut ok, no_fast, |r, s| {
                    v[r] = type_nested(s, ty, how)?;
                    Ok(true)
                });
                Typed::Nested(v)
            }
            ColumnType::String => {
                if fields.at.text.is_none() {
                    fields.type_values(refusals, &mut ok, no_fast, |_, _| Ok(true));
                } else {
                    for (r, ok) in ok.iter_mut().enumerate() {
                        *ok = !refusals.is_refused(r) && !fields.format.is_null(fields.bytes(r));
                    }
                }
                Typed::Str
            }
            ColumnType::Int64 => number!(
                0i64,
                parse_i64_ascii,
                |s| parse_i64(s).ok_or(Cow::Borrowed("int64")),
                I64
            ),
            ColumnType::Int8 | ColumnType::Int16 | ColumnType::Int32 => {
                let (lo, hi) = ty.integer_range().expect("an integer type");
                number!(
                    0i64,
                    |b| parse_i64_ascii(b).filter(|v| (lo..=hi).contains(v)),
                    |s| parse_integer(s, ty),
                    I64
                )
            }
            ColumnType::Float64 => number!(
                0f64,
                parse_short_decimal,
                |s| parse_f64(s).ok_or(Cow::Borrowed("float64")),
                F64
            ),
            ColumnType::Float32 => number!(
                0f64,
                |_: &[u8]| None::<f64>,
                |s| parse_f32(s).map(f64::from).ok_or(Cow::Borrowed("float32")),
                F64
            ),
            ColumnType::Decimal { precision, scale } => number!(
                0i128,
                |_: &[u8]| None::<i128>,
                |s| parse_decimal(s, precision, scale)
                    .map_err(|why| Cow::Owned(format!("{ty}: {why}"))),
                Dec
            ),
            ColumnType::Binary => {
                fields.type_values(refusals, &mut ok, no_fast, |_, s| {
                    parse_hex(trim(s))
                        .map(|_| true)
                        .ok_or(Cow::Borrowed(BINARY_TEXT))
                });
                Typed::Bin
            }
            ColumnType::Boolean => {
                let mut v = vec![false; n];
                fields.type_values(refusals, &mut ok, no_fast, |r, s| {
                    v[r] = parse_bool(trim(s)).ok_or(Cow::Borrowed("boolean"))?;
                    Ok(true)
                });
                Typed::Bool(v)
            }
            ColumnType::Date => {
                let mut v = vec![0i32; n];
                let cell = std::cell::Cell::from_mut(&mut v[..]).as_slice_of_cells();
                let lenient = self.date_source[i];
                let pattern = self.layout.date_format.as_deref();
                let iso = |r: usize, b: &[u8]| {
                    crate::schema::iso_date_days(b)
                        .map(|d| cell[r].set(d))
                        .is_some()
                };
                fields.type_values(refusals, &mut ok, iso, |r, s| {
                    match parse_temporal(s, pattern) {
                        Some(Temporal::Date(d)) => {
                            cell[r].set(date_to_days(d));
                            Ok(true)
                        }
                        Some(_) => Err(Cow::Borrowed("date (it has a time)")),
                        // An unparseable partition date: the default partition.
                        None if lenient => Ok(false),
                        None => Err(Cow::Borrowed("date")),
                    }
                });
                Typed::Date(v)
            }
            ColumnType::Timestamp | ColumnType::TimestampTz => {
                let mut v = vec![0i64; n];
                let lenient = self.date_source[i];
                let pattern = self.layout.date_format.as_deref();
                let zoned = col.ty == ColumnType::TimestampTz;
                let what = col.ty.name();
                fields.type_values(refusals, &mut ok, no_fast, |r, s| {
                    match parse_temporal(s, pattern) {
                        Some(t) => {
                            v[r] = match t {
                                Temporal::Zoned(us) if !zoned => us,
                                other => naive_micros(other),
                            };
                            Ok(true)
                        }
                        None if lenient => Ok(false),
                        None => Err(what.clone()),
                    }
                });
                Typed::Ts(v)
            }
        };
        (t, ok)
    }

    /// Step 2: the partition of each row typed so far, refusing the rows that have none.
    fn partition_rows(
        &mut self,
        at: &Places<'_>,
        block: &Block,
        format: &CsvFormat,
        columns: &TypedColumns,
        refusals: &mut Refusals,
    ) -> Vec<u32> {
        let n = block.recs.len();
        let mut part = vec![0u32; n];
        for (r, p) in part.iter_mut().enumerate() {
            if refusals.is_refused(r) {
                continue;
            }
            let text_of = |i: usize| -> Option<&str> {
                let place = block.fields[i].as_ref()?[r];
                let b = at.bytes(place);
                if format.is_null(b) {
                    return None;
                }
                at.str(place).or_else(|| std::str::from_utf8(b).ok())
            };
            match self
                .partitions
                .part_of(self.layout, |i| columns.val(i, r), text_of)
            {
                Ok(x) => *p = x,
                Err(reason) => refusals.refuse(r, reason),
            }
        }
        part
    }

    /// Step 3: the good rows, straight into their partitions' columns.
    fn take_rows(
        &mut self,
        at: &Places<'_>,
        block: &Block,
        columns: &TypedColumns,
        refusals: &Refusals,
        part: &[u32],
    ) {
        let layout = self.layout;
        let n = block.recs.len();
        let mut by_part: Vec<Vec<u32>> = Vec::new();
        for r in (0..n).filter(|r| !refusals.is_refused(*r)) {
            let p = part[r] as usize;
            if by_part.len() <= p {
                by_part.resize_with(p + 1, Vec::new);
            }
            by_part[p].push(r as u32);
        }
        for (p, rows) in by_part.iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            self.columns_of(p as u32);
            self.rows[p] += rows.len();
            // Every row of the block: columns are appended whole.
            let whole = rows.len() == n;
            let cols = &mut self.cols[p];
            for (i, t) in columns.typed.iter().enumerate() {
                let Some(fi) = layout.file_index[i] else {
                    continue;
                };
                let ok = &columns.valid[i];
                macro_rules! take_values {
                    ($b:expr, $v:expr) => {
                        if whole {
                            $b.append_values($v, ok);
                        } else {
                            for r in rows {
                                let r = *r as usize;
                                $b.append_option(ok[r].then(|| $v[r]));
                            }
                        }
                    };
                }
                match (&mut cols[fi], t) {
                    (Col::Bool(b), Typed::Bool(v)) => {
                        for r in rows {
                            let r = *r as usize;
                            b.append_option(ok[r].then(|| v[r]));
                        }
                    }
                    (Col::I64(b), Typed::I64(v)) => take_values!(b, v),
                    (Col::F64(b), Typed::F64(v)) => take_values!(b, v),
                    (Col::Dec(b), Typed::Dec(v)) => take_values!(b, v),
                    (Col::Date(b), Typed::Date(v)) => take_values!(b, v),
                    (Col::Ts(b), Typed::Ts(v)) => take_values!(b, v),
                    (Col::Str(b), Typed::Str) => {
                        let places = block.fields[i]
                            .as_ref()
                            .expect("a string column has places");
                        for r in rows {
                            let r = *r as usize;
                            if !ok[r] {
                                b.append_null();
                                continue;
                            }
                            let place = places[r];
                            match at.str(place) {
                                Some(s) => b.append_value(s),
                                // Checked above: the row would be refused otherwise.
                                None => b.append_option(std::str::from_utf8(at.bytes(place)).ok()),
                            }
                        }
                    }
                    (Col::Bin(b), Typed::Bin) => {
                        let places = block.fields[i]
                            .as_ref()
                            .expect("a binary column has places");
                        for r in rows {
                            let r = *r as usize;
                            let bytes = ok[r]
                                .then(|| std::str::from_utf8(at.bytes(places[r])).ok())
                                .flatten()
                                .and_then(|s| parse_hex(trim(s)));
                            b.append_option(bytes);
                        }
                    }
                    (col, Typed::Const(v, text)) => {
                        for _ in rows {
                            push_val(col, *v, Some(text));
                        }
                    }
                    (Col::Nested(_, b), Typed::Nested(v)) => {
                        for r in rows {
                            let r = *r as usize;
                            b.push(if ok[r] { v[r].clone() } else { Nv::Null });
                        }
                    }
                    (col, _) => append_nulls(col, rows.len()),
                }
            }
        }
    }

    /// Step 4: the quarantine, in record order: rows refused when split, then when typed.
    fn quarantine_block(
        &mut self,
        raw: &[u8],
        block: &mut Block,
        refusals: Refusals,
        source: &str,
        chunk: &str,
    ) {
        let mut refused = std::mem::take(&mut block.refused);
        if refusals.any {
            // A typed record's ordinal: its index plus the refused records before it.
            let mut before = 0;
            let mut k = 0;
            for (r, reason) in refusals.reasons.into_iter().enumerate() {
                while k < refused.len() && refused[k].0 <= r + before {
                    before += 1;
                    k += 1;
                }
                if let Some(reason) = reason {
                    let (line, s, e) = block.recs[r];
                    refused.push((
                        r + before,
                        QuarantineRow {
                            source: source.to_string(),
                            line,
                            raw: truncate_raw(&raw[s as usize..e as usize]),
                            reason,
                            chunk: chunk.to_string(),
                        },
                    ));
                }
            }
            refused.sort_by_key(|(ordinal, _)| *ordinal);
        }
        self.quarantine.extend(refused.into_iter().map(|(_, q)| q));
    }
}

fn append_nulls(col: &mut Col, n: usize) {
    match col {
        Col::Bool(b) => b.append_nulls(n),
        Col::I64(b) => b.append_nulls(n),
        Col::F64(b) => b.append_nulls(n),
        Col::Dec(b) => b.append_nulls(n),
        Col::Date(b) => b.append_nulls(n),
        Col::Ts(b) => b.append_nulls(n),
        Col::Str(b) => b.append_nulls(n),
        Col::Bin(b) => b.append_nulls(n),
        Col::Nested(_, v) => v.resize(v.len() + n, Nv::Null),
    }
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
    for ((_, name), written) in map.unknown.iter().zip(&map.unknown_as_written) {
        typer.name_new(name, written);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::partition::PartitionSpec;
    use proptest::prelude::*;

    fn layout(spec: &str) -> TableLayout {
        let columns = vec![
            Column::new("id", ColumnType::Int64),
            Column::new("x", ColumnType::Float64),
            Column::new("ok", ColumnType::Boolean),
            Column::new("d", ColumnType::Date),
            Column::new("ts", ColumnType::Timestamp),
            Column::new("name", ColumnType::String),
            Column::new("region", ColumnType::String),
            Column::new("small", ColumnType::Int8),
            Column::new("f", ColumnType::Float32),
            Column::new("price", ColumnType::decimal(6, 2).unwrap()),
            Column::new("blob", ColumnType::Binary),
        ];
        let spec = PartitionSpec::parse(spec).unwrap();
        let def = TableLayout::new_def("db", "t", "file:///t", columns, &spec, None).unwrap();
        TableLayout::from_def(&def).unwrap()
    }

    /// The rules a row at a time, as [`RowTyper::add_row`] applies them: the reference the
    /// typing of blocks a column at a time must agree with.
    fn one_row_at_a_time(
        typer: &mut RowTyper<'_>,
        raw: &[u8],
        format: &CsvFormat,
        map: &HeaderMap,
    ) {
        let mut sp = FieldSplitter::default();
        let text = std::str::from_utf8(raw).ok();
        for r in Records::new(raw, format) {
            let (before, start, end) = match r {
                Ok(r) => r,
                Err(newlines) => {
                    typer.reject(QuarantineRow {
                        source: "s".into(),
                        line: 2 + newlines,
                        raw: String::new(),
                        reason: "unterminated quoted field".into(),
                        chunk: "c".into(),
                    });
                    break;
                }
            };
            let rec = &raw[start..end];
            if rec.iter().all(|b| *b == b'\n' || *b == b'\r') {
                continue;
            }
            sp.split(rec, format.delimiter, format.quote);
            if sp.len() != map.fields {
                typer.reject(QuarantineRow {
                    source: "s".into(),
                    line: 2 + before,
                    raw: truncate_raw(rec),
                    reason: format!("expected {} fields, found {}", map.fields, sp.len()),
                    chunk: "c".into(),
                });
                continue;
            }
            let rec_text = text.and_then(|t| t.get(start..end));
            let sp = &sp;
            typer.add_row(
                |i| {
                    let p = map.pos_of_col[i];
                    if p == usize::MAX {
                        return None;
                    }
                    let f = sp.field(rec, p);
                    if format.is_null(f) {
                        return None;
                    }
                    Some(match rec_text.and_then(|t| sp.field_str(t, p)) {
                        Some(s) => Field::Text(s),
                        None => Field::Bytes(f),
                    })
                },
                2 + before,
                rec,
                "s",
                "c",
            );
        }
    }

    const VALUES: &[&[u8]] = &[
        b"",
        b"NA",
        b"7",
        b" -12 ",
        b"99999999999999999999",
        b"+5",
        b"-0",
        b"123456789012345678",
        b"-9223372036854775808",
        b"0.1",
        b"-12.75",
        b"1.5",
        b"1e3",
        b"-",
        b"true",
        b"FALSE",
        b"2024-02-29",
        b"2023-02-29",
        b"2024/01/05",
        b"2024-01-05T10:30:00",
        b"2024-01-05 10:30:00+02:00",
        b"x",
        b"\"a,b\"",
        b"\"he said \"\"hi\"\"\"",
        b"\"q\"tail",
        b"caf\xc3\xa9",
        b"bad\xff",
        b"__HIVE_DEFAULT_PARTITION__",
        b"a/b",
        b".",
        b"127",
        b"-128",
        b"128",
        b"1234.56",
        b"12345.6",
        b"0.125",
        b"16777217",
        b"0xdeadBEEF",
        b"\\x00ff",
        b"abc",
    ];

    fn record() -> impl Strategy<Value = Vec<u8>> {
        // Ten fields usually; sometimes nine or eleven (refused), sometimes a blank line.
        (prop::sample::select(vec![9usize, 10, 10, 10, 10, 10, 10, 11, 0]))
            .prop_flat_map(|n| prop::collection::vec(prop::sample::select(VALUES), n))
            .prop_map(|fields| fields.join(&b","[..]))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn blocks_typed_a_column_at_a_time_agree_with_the_row_rules(
            records in prop::collection::vec(record(), 0..40),
            spec in prop::sample::select(vec!["year(d)", "hour(ts)", "name", "day(d),name"]),
            unterminated in any::<bool>(),
        ) {
            let layout = layout(spec);
            let format = CsvFormat { null_values: vec!["NA".into()], ..CsvFormat::default() };
            // The header leaves `region` out: NULL in every row.
            let header: Vec<String> =
                ["name", "d", "id", "x", "ok", "ts", "small", "f", "price", "blob"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            let map = layout.map_header(&header, "s").unwrap();
            let mut raw = records.join(&b"\n"[..]);
            raw.push(b'\n');
            if unterminated {
                raw.extend_from_slice(b"\"never closed,1\n");
            }
            let mut columns = RowTyper::new(&layout, 0);
            let recs = CsvRecords {
                raw: &raw,
                format: &format,
                map: &map,
                frozen: OnFrozen::Quarantine,
                source: "s",
                chunk: "c",
            };
            add_csv_records(&mut columns, &recs, 2).unwrap();
            let got = columns.finish("c").unwrap();
            let mut rows = RowTyper::new(&layout, 0);
            one_row_at_a_time(&mut rows, &raw, &format, &map);
            let want = rows.finish("c").unwrap();
            prop_assert_eq!(got.rows_in, want.rows_in);
            prop_assert_eq!(&got.quarantine, &want.quarantine);
            prop_assert_eq!(got.parts.len(), want.parts.len());
            for ((gp, gb), (wp, wb)) in got.parts.iter().zip(&want.parts) {
                prop_assert_eq!(gp, wp);
                prop_assert_eq!(gb, wb, "partition {}", gp);
            }
        }
    }
}
