//! Parquet sources: their schema, the types their columns land as, and their rows read as JSON
//! lines (one way to type values from every format).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::schema::{Column, ColumnType, StructField};
use crate::source::{Location, Source};

/// Rows of a Parquet source read at once.
pub(crate) const PARQUET_BATCH_ROWS: usize = 65_536;

pub(crate) fn read_error(name: &str, e: std::io::Error) -> Error {
    Error::invalid_at(name, None, format!("cannot read: {e}"))
}

pub(crate) fn parquet_schema(
    rt: &tokio::runtime::Handle,
    src: &Source,
    spool: &std::path::Path,
) -> Result<arrow::datatypes::SchemaRef> {
    let (f, _local) = open_parquet(rt, src, spool, &Arc::default())?;
    let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| parquet_error(&src.name, e))?;
    Ok(b.schema().clone())
}

/// A Parquet source's rows as JSON lines (one object per row), for pieces and
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
            let batch = for_json(batch).map_err(|e| {
                std::io::Error::other(format!("{}: cannot read as JSON lines: {e}", self.name))
            })?;
            // Explicit nulls: a map entry whose value is NULL is kept (left out, it would be
            // lost); a member that is NULL reads as absent, as a left-out one does.
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(&mut self.buf);
            w.write(&batch).map_err(std::io::Error::other)?;
            w.finish().map_err(std::io::Error::other)?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The batch as JSON lines can hold it exactly: the keys of maps, at any depth, as text (JSON
/// objects have text keys; the typer reads them back as the key type). Half floats need nothing:
/// arrow-json writes one as the shortest text of the `float` it is (the test below holds it to
/// that).
fn for_json(
    batch: arrow::array::RecordBatch,
) -> std::result::Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    use arrow::datatypes::{DataType as D, Field, Schema};
    fn json_type(t: &D) -> D {
        let field = |f: &Field, t: D| Arc::new(f.clone().with_data_type(t));
        match t {
            D::Struct(fs) => D::Struct(
                fs.iter()
                    .map(|f| field(f, json_type(f.data_type())))
                    .collect(),
            ),
            D::List(f) => D::List(field(f, json_type(f.data_type()))),
            D::LargeList(f) => D::LargeList(field(f, json_type(f.data_type()))),
            D::FixedSizeList(f, n) => D::FixedSizeList(field(f, json_type(f.data_type())), *n),
            D::Map(entries, sorted) => match entries.data_type() {
                D::Struct(kv) if kv.len() == 2 => {
                    let key = match kv[0].data_type() {
                        k @ (D::Utf8 | D::LargeUtf8 | D::Utf8View) => k.clone(),
                        _ => D::Utf8,
                    };
                    let kv = vec![
                        field(&kv[0], key),
                        field(&kv[1], json_type(kv[1].data_type())),
                    ];
                    D::Map(field(entries, D::Struct(kv.into())), *sorted)
                }
                _ => t.clone(),
            },
            other => other.clone(),
        }
    }
    let schema = batch.schema();
    if schema
        .fields()
        .iter()
        .all(|f| json_type(f.data_type()) == *f.data_type())
    {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let t = json_type(f.data_type());
        columns.push(if t == *f.data_type() {
            c.clone()
        } else {
            arrow::compute::cast(c, &t)?
        });
        fields.push(f.as_ref().clone().with_data_type(t));
    }
    arrow::array::RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
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

/// The type a Parquet column lands as: its own where sluice has it (integers of every width,
/// `float`, `double`, decimals up to 38 digits, booleans, dates, timestamps with a zone or
/// without, text, bytes); otherwise the narrowest that holds every value exactly (unsigned
/// integers one size up, `uint64` as `decimal(20,0)`, half floats as `float`, timestamps in
/// other units in microseconds); structs, lists and maps as such, their parts by the same
/// rules; anything else (a 76-digit decimal, a time of day) as its text.
pub(crate) fn column_type_of(t: &arrow::datatypes::DataType) -> ColumnType {
    use arrow::datatypes::DataType as D;
    if let Some(ty) = ColumnType::of_arrow(t) {
        return ty;
    }
    match t {
        D::UInt8 => ColumnType::Int16,
        D::UInt16 => ColumnType::Int32,
        D::UInt32 => ColumnType::Int64,
        D::UInt64 => ColumnType::Decimal {
            precision: 20,
            scale: 0,
        },
        D::Float16 => ColumnType::Float32,
        D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal256(p, s) => u8::try_from(*s)
            .ok()
            .and_then(|s| ColumnType::decimal(*p, s).ok())
            .unwrap_or(ColumnType::String),
        D::Date64 => ColumnType::Date,
        D::Timestamp(_, None) => ColumnType::Timestamp,
        D::Timestamp(_, Some(_)) => ColumnType::TimestampTz,
        D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => ColumnType::Binary,
        D::LargeUtf8 | D::Utf8View => ColumnType::String,
        D::Struct(fields) => ColumnType::structure(
            fields
                .iter()
                .map(|f| StructField::new(f.name(), column_type_of(f.data_type())))
                .collect(),
        )
        .unwrap_or(ColumnType::String),
        D::List(elem)
        | D::LargeList(elem)
        | D::ListView(elem)
        | D::LargeListView(elem)
        | D::FixedSizeList(elem, _) => ColumnType::list(column_type_of(elem.data_type())),
        D::Map(entries, _) => match entries.data_type() {
            D::Struct(kv) if kv.len() == 2 => ColumnType::map(
                column_type_of(kv[0].data_type()),
                column_type_of(kv[1].data_type()),
            )
            .unwrap_or(ColumnType::String),
            _ => ColumnType::String,
        },
        _ => ColumnType::String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Float32Array, RecordBatch};
    use arrow::datatypes::{DataType, Float32Type};

    /// A half float reaches the typer as the very `float` it is, not as the `float` nearest to
    /// its own shortest decimal text (0.1 in half precision is 0.0999755859375).
    #[test]
    fn half_floats_reach_json_as_the_floats_they_are() {
        let f32s = Float32Array::from(vec![0.1, 1.0 / 3.0, 65504.0, -2.5e-5, 0.0, 6e-8]);
        let half = arrow::compute::cast(&f32s, &DataType::Float16).unwrap();
        let exact = arrow::compute::cast(&half, &DataType::Float32).unwrap();
        let batch = RecordBatch::try_from_iter([("h", half)]).unwrap();
        let batch = for_json(batch).unwrap();
        let mut out = Vec::new();
        let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
        w.write(&batch).unwrap();
        w.finish().unwrap();
        let got: Vec<f32> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                crate::schema::parse_f32(&v["h"].to_string()).unwrap()
            })
            .collect();
        let exact = exact.as_primitive::<Float32Type>();
        assert_eq!(got.len(), exact.len());
        for (g, e) in got.iter().zip(exact.values()) {
            assert_eq!(g.to_bits(), e.to_bits(), "{g} against {e}");
        }
        assert_ne!(got[0], 0.1);
    }
}
