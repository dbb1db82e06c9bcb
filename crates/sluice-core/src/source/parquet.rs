//! Parquet sources: their schema, the types their columns land as, and their rows read as JSON
//! lines (one way to type values from every format).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::schema::{Column, ColumnType};
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

/// The type a Parquet column lands as: its own where sluice has it (integers of every width,
/// `float`, `double`, decimals up to 38 digits, booleans, dates, timestamps with a zone or
/// without, text, bytes); otherwise the narrowest that holds every value exactly (unsigned
/// integers one size up, `uint64` as `decimal(20,0)`, half floats as `float`, timestamps in
/// other units in microseconds); anything else (a 76-digit decimal, a time of day, a nested
/// value) as its text.
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
        _ => ColumnType::String,
    }
}
