//! Writing Parquet: spool files on local disk, then upload to the lake.
//!
//! Files are written to a private spool directory (never visible to readers), closed when
//! rotated, then uploaded under a fresh name with create-if-absent, so no file is ever
//! overwritten. Only a Delta log commit makes an uploaded file part of the table.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use parquet::file::properties::WriterProperties;
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::lake::Lake;
use sluice_parquet::FileWriter;
pub use sluice_parquet::properties::{
    DICTIONARY_SAMPLE_MIN, ParquetOptions, dictionary_misfits, writer_properties,
    writer_properties_for,
};

/// A Parquet file being written in the spool.
pub(crate) struct SpoolFile {
    pub local: PathBuf,
    /// In a mutex only to make the consumer `Sync` (the writer is not); never contended.
    writer: std::sync::Mutex<Option<FileWriter>>,
    pub rows: u64,
    pub opened: Instant,
    row_group_bytes: usize,
}

impl std::fmt::Debug for SpoolFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolFile")
            .field("local", &self.local)
            .field("rows", &self.rows)
            .finish()
    }
}

impl SpoolFile {
    /// Creates a spool file in `dir`.
    pub fn create(
        dir: &Path,
        schema: SchemaRef,
        props: WriterProperties,
        opts: &ParquetOptions,
    ) -> Result<Self> {
        let local = dir.join(format!("{}.parquet", uuid::Uuid::now_v7()));
        let file = File::create(&local).map_err(|e| Error::io(&local, e))?;
        let writer = FileWriter::try_new(file, schema, props)?;
        Ok(SpoolFile {
            local,
            writer: std::sync::Mutex::new(Some(writer)),
            rows: 0,
            opened: Instant::now(),
            row_group_bytes: opts.row_group_bytes,
        })
    }

    /// Appends rows.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let w = self.writer.get_mut().unwrap_or_else(|p| p.into_inner());
        let w = w.as_mut().expect("spool file is open");
        w.write(batch)?;
        self.rows += batch.num_rows() as u64;
        if w.in_progress_size() >= self.row_group_bytes {
            w.flush()?;
        }
        Ok(())
    }

    /// Bytes on disk plus the buffered row group.
    pub fn size(&self) -> u64 {
        self.with_writer(|w| (w.bytes_written() + w.in_progress_size()) as u64)
    }

    /// Bytes of the row groups already written (exact, compressed).
    pub fn written(&self) -> u64 {
        self.with_writer(|w| w.bytes_written() as u64)
    }

    /// Estimated size of the buffered row group (its pages not yet compressed count whole).
    pub fn in_progress(&self) -> u64 {
        self.with_writer(|w| w.in_progress_size() as u64)
    }

    /// Memory held by the buffered row group: encoded pages and values not yet encoded
    /// (dictionary keys), more than the encoded size the row group will have.
    pub fn buffered(&self) -> usize {
        self.with_writer(|w| w.memory_size())
    }

    /// Closes the buffered row group early to free memory.
    pub fn flush_row_group(&mut self) -> Result<()> {
        if let Some(w) = self
            .writer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            w.flush()?;
        }
        Ok(())
    }

    /// Finishes the file.
    pub fn finish(mut self) -> Result<FinishedFile> {
        if let Some(w) = self
            .writer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            w.close()?;
        }
        let bytes = std::fs::metadata(&self.local)
            .map_err(|e| Error::io(&self.local, e))?
            .len();
        Ok(FinishedFile {
            local: std::mem::take(&mut self.local),
            rows: self.rows,
            bytes,
        })
    }

    /// Removes the local file.
    pub fn discard(self) {
        drop(self.writer);
        let _ = std::fs::remove_file(&self.local);
    }

    fn with_writer<T: Default>(&self, f: impl FnOnce(&FileWriter) -> T) -> T {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.as_ref().map(f).unwrap_or_default()
    }
}

/// A closed spool file, ready to upload.
#[derive(Debug)]
pub(crate) struct FinishedFile {
    pub local: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

impl FinishedFile {
    /// Removes the local file.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.local);
    }
}

/// Bytes of one part of a multipart upload (S3's minimum is 5 MiB).
const PART_SIZE: usize = 8 << 20;
/// Parts of one file uploaded at once: memory is about one more part than this. (Four parts
/// of 16 MiB in flight were 80 MiB of the peak when `convert` uploaded 128 MiB files.)
const PARTS_IN_FLIGHT: usize = 2;

/// Uploads a local file to `dest` (relative to the lake root) without overwriting anything:
/// linked into a lake in a local directory on the same file system, copied otherwise.
pub async fn upload(lake: &Lake, local: &Path, dest: &str) -> Result<u64> {
    let path = lake.path(dest);
    let len = tokio::fs::metadata(local)
        .await
        .map_err(|e| Error::io(local, e))?
        .len();
    #[cfg(unix)]
    if let Some(fs) = &lake.local
        && link_into_place(fs, &path, local).await?
    {
        return Ok(len);
    }
    if len as usize <= PART_SIZE {
        let data = tokio::fs::read(local)
            .await
            .map_err(|e| Error::io(local, e))?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        lake.store
            .put_opts(&path, PutPayload::from(Bytes::from(data)), opts)
            .await?;
    } else {
        // Multipart uploads cannot be conditional; the name is a fresh UUID, so there is
        // nothing to overwrite.
        let upload = lake.store.put_multipart(&path).await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut f = tokio::fs::File::open(local)
            .await
            .map_err(|e| Error::io(local, e))?;
        let mut buf = vec![0u8; 4 << 20];
        loop {
            let n = f.read(&mut buf).await.map_err(|e| Error::io(local, e))?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            w.write(&buf[..n]);
        }
        w.finish().await?;
    }
    Ok(len)
}

/// Links `local` to `path` of a lake in a local directory: no copy, no buffers, and the file
/// appears whole or not at all. `Ok(false)`: it cannot be linked there (another file system),
/// and is to be copied.
#[cfg(unix)]
async fn link_into_place(
    fs: &object_store::local::LocalFileSystem,
    path: &object_store::path::Path,
    local: &Path,
) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let target = fs.path_to_filesystem(path)?;
    if let Some(dir) = target.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| Error::io(dir, e))?;
    }
    match tokio::fs::hard_link(local, &target).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Linked by an attempt whose answer was lost: the same file is in place.
            let (a, b) = (
                tokio::fs::metadata(local).await,
                tokio::fs::metadata(&target).await,
            );
            match (a, b) {
                (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()) => Ok(true),
                _ => Err(Error::io(&target, e)),
            }
        }
        Err(_) => Ok(false),
    }
}

/// Schema of the quarantine files.
pub fn quarantine_schema() -> SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("chunk", DataType::Utf8, false),
        Field::new(
            "quarantined_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

/// Quarantine rows as a batch.
pub(crate) fn quarantine_batch(
    table: &str,
    rows: &[crate::decode::rows::QuarantineRow],
) -> Result<RecordBatch> {
    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    let now = chrono::Utc::now().timestamp_micros();
    let n = rows.len();
    Ok(RecordBatch::try_new(
        quarantine_schema(),
        vec![
            Arc::new(StringArray::from(vec![table; n])),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.source.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.line as i64),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.raw.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.reason.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.chunk.as_str()),
            )),
            Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        ],
    )?)
}

/// Delta statistics of a finished Parquet file, from its footer: `numRecords`, and per
/// top-level column `nullCount`, and `minValues`/`maxValues` where they bound the data safely
/// (timestamps at millisecond precision: minimum rounded down, maximum rounded up; a string
/// maximum only when Parquet kept it exact; no floating-point NaN or infinity).
pub(crate) fn delta_stats(path: &Path) -> Result<String> {
    use parquet::basic::{LogicalType, TimeUnit};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::file::statistics::Statistics;
    use serde_json::{Map, Value};

    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file)?;
    let meta = reader.metadata();
    let schema = meta.file_metadata().schema_descr();
    let rows: i64 = meta.row_groups().iter().map(|r| r.num_rows()).sum();
    let (mut mins, mut maxs, mut nulls) = (Map::new(), Map::new(), Map::new());
    for (ci, col) in schema.columns().iter().enumerate() {
        // A field inside structs has statistics, nested as its path is (`{"user": {"id": 5}}`);
        // a value inside a list or a map has none (Delta keeps none: it is not one per row).
        if col.max_rep_level() > 0 {
            continue;
        }
        let path = col.path().parts();
        let logical = col.logical_type_ref().cloned();
        let mut null_count: Option<u64> = Some(0);
        let (mut lo, mut hi): (Option<Value>, Option<Value>) = (None, None);
        let mut bounds_ok = true;
        for rg in meta.row_groups() {
            if rg.num_rows() == 0 {
                continue;
            }
            let Some(st) = rg.column(ci).statistics() else {
                null_count = None;
                bounds_ok = false;
                continue;
            };
            null_count = match (null_count, st.null_count_opt()) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
            let pair: Option<(Value, Value)> = match st {
                // Decimals as numbers, where a JSON number (read as a double by some readers)
                // holds them exactly; otherwise no bounds.
                Statistics::Int32(v)
                    if let Some(LogicalType::Decimal(parquet::basic::DecimalType {
                        scale,
                        ..
                    })) = logical =>
                {
                    decimal_bounds(
                        v.min_opt().map(|x| i128::from(*x)),
                        v.max_opt().map(|x| i128::from(*x)),
                        scale,
                    )
                }
                Statistics::Int64(v)
                    if let Some(LogicalType::Decimal(parquet::basic::DecimalType {
                        scale,
                        ..
                    })) = logical =>
                {
                    decimal_bounds(
                        v.min_opt().map(|x| i128::from(*x)),
                        v.max_opt().map(|x| i128::from(*x)),
                        scale,
                    )
                }
                Statistics::FixedLenByteArray(v)
                    if let Some(LogicalType::Decimal(parquet::basic::DecimalType {
                        scale,
                        ..
                    })) = logical =>
                {
                    let unscaled = |b: &parquet::data_type::FixedLenByteArray| {
                        let b = b.data();
                        (b.len() <= 16 && !b.is_empty()).then(|| {
                            // Big-endian two's complement, sign-extended to 128 bits.
                            let fill = if b[0] & 0x80 != 0 { 0xff } else { 0 };
                            let mut full = [fill; 16];
                            full[16 - b.len()..].copy_from_slice(b);
                            i128::from_be_bytes(full)
                        })
                    };
                    if st.min_is_exact() && st.max_is_exact() {
                        decimal_bounds(
                            v.min_opt().and_then(unscaled),
                            v.max_opt().and_then(unscaled),
                            scale,
                        )
                    } else {
                        None
                    }
                }
                Statistics::Int32(v) => match (v.min_opt(), v.max_opt(), &logical) {
                    (Some(a), Some(b), Some(LogicalType::Date)) => {
                        let d = |x: i32| {
                            chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
                                .and_then(|e| {
                                    e.checked_add_signed(chrono::Duration::days(x as i64))
                                })
                                .map(|d| Value::from(d.format("%Y-%m-%d").to_string()))
                        };
                        d(*a).zip(d(*b))
                    }
                    (Some(a), Some(b), _) => Some((Value::from(*a), Value::from(*b))),
                    _ => None,
                },
                Statistics::Int64(v) => match (v.min_opt(), v.max_opt(), &logical) {
                    (Some(a), Some(b), Some(LogicalType::Timestamp(ts))) => {
                        let utc = ts.is_adjusted_to_u_t_c;
                        let per_ms: i64 = match ts.unit {
                            TimeUnit::MILLIS => 1,
                            TimeUnit::MICROS => 1_000,
                            TimeUnit::NANOS => 1_000_000,
                        };
                        let lo_ms = a.div_euclid(per_ms);
                        let hi_ms = b.div_euclid(per_ms) + i64::from(b.rem_euclid(per_ms) != 0);
                        let fmt = |ms: i64| {
                            chrono::DateTime::from_timestamp_millis(ms).map(|t| {
                                let t = t.naive_utc();
                                Value::from(if utc {
                                    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
                                } else {
                                    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
                                })
                            })
                        };
                        fmt(lo_ms).zip(fmt(hi_ms))
                    }
                    (Some(a), Some(b), _) => Some((Value::from(*a), Value::from(*b))),
                    _ => None,
                },
                Statistics::Float(v) => match (v.min_opt(), v.max_opt()) {
                    (Some(a), Some(b)) if a.is_finite() && b.is_finite() => {
                        Some((Value::from(f64::from(*a)), Value::from(f64::from(*b))))
                    }
                    _ => None,
                },
                Statistics::Double(v) => match (v.min_opt(), v.max_opt()) {
                    (Some(a), Some(b)) if a.is_finite() && b.is_finite() => {
                        Some((Value::from(*a), Value::from(*b)))
                    }
                    _ => None,
                },
                Statistics::ByteArray(v) if matches!(logical, Some(LogicalType::String)) => {
                    match (v.min_opt(), v.max_opt()) {
                        (Some(a), Some(b)) if st.max_is_exact() => {
                            match (std::str::from_utf8(a.data()), std::str::from_utf8(b.data())) {
                                (Ok(a), Ok(b)) => Some((Value::from(a), Value::from(b))),
                                _ => None,
                            }
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            match pair {
                Some((a, b)) if bounds_ok => {
                    lo = Some(match lo {
                        Some(cur) if json_le(&cur, &a) => cur,
                        _ => a,
                    });
                    hi = Some(match hi {
                        Some(cur) if json_le(&b, &cur) => cur,
                        _ => b,
                    });
                }
                Some(_) => {}
                // A row group of only nulls has no bounds and does not widen them.
                None if st.null_count_opt() == Some(rg.num_rows() as u64) => {}
                None => bounds_ok = false,
            }
        }
        if let Some(n) = null_count {
            insert_at(&mut nulls, path, Value::from(n));
        }
        if bounds_ok && let (Some(a), Some(b)) = (lo, hi) {
            insert_at(&mut mins, path, a);
            insert_at(&mut maxs, path, b);
        }
    }
    let mut out = Map::new();
    out.insert("numRecords".into(), Value::from(rows));
    out.insert("minValues".into(), Value::Object(mins));
    out.insert("maxValues".into(), Value::Object(maxs));
    out.insert("nullCount".into(), Value::Object(nulls));
    Ok(Value::Object(out).to_string())
}

/// Puts `value` at `path` in nested objects, making the objects on the way.
fn insert_at(
    map: &mut serde_json::Map<String, serde_json::Value>,
    path: &[String],
    value: serde_json::Value,
) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = map;
    for p in parents {
        let next = at
            .entry(p.clone())
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        let serde_json::Value::Object(next) = next else {
            return;
        };
        at = next;
    }
    at.insert(last.clone(), value);
}

/// A decimal column's bounds as JSON numbers, when each has at most 15 significant digits (then
/// the shortest text of the nearest double is the decimal itself, which readers that parse
/// statistics as doubles and as decimals both read exactly); `None` otherwise.
fn decimal_bounds(
    min: Option<i128>,
    max: Option<i128>,
    scale: i32,
) -> Option<(serde_json::Value, serde_json::Value)> {
    let scale = u8::try_from(scale).ok()?;
    let as_number = |x: i128| -> Option<serde_json::Value> {
        if x.unsigned_abs() >= 1_000_000_000_000_000 {
            return None;
        }
        let v: f64 = crate::schema::format_decimal(x, scale).parse().ok()?;
        serde_json::Number::from_f64(v).map(serde_json::Value::Number)
    };
    Some((as_number(min?)?, as_number(max?)?))
}

/// Order of two statistics of one column (numbers, or strings in the same format).
fn json_le(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x <= y,
            _ => x.as_f64().unwrap_or(f64::NAN) <= y.as_f64().unwrap_or(f64::NAN),
        },
        (Value::String(x), Value::String(y)) => x <= y,
        _ => false,
    }
}

/// A batch typed for an earlier layout of the table, with the columns added since as NULL (and
/// any column of another type cast to the table's).
pub(crate) fn conform(
    batch: arrow::array::RecordBatch,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<arrow::array::RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => reshape(c, f.data_type(), FieldsBy::Name),
            None => Ok(arrow::array::new_null_array(
                f.data_type(),
                batch.num_rows(),
            )),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(arrow::array::RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// How [`reshape`] finds, in an array, the struct fields of the type it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldsBy {
    /// By name: a field the array lacks is NULL (a struct schema evolution widened).
    Name,
    /// By position: the array has the same fields under other names (column mapping).
    Position,
}

/// `array` as `to`: every struct (at any depth, in list elements and map values too) takes the
/// fields of `to`, found in the array as `by` says; anything else is cast.
pub(crate) fn reshape(
    array: &arrow::array::ArrayRef,
    to: &arrow::datatypes::DataType,
    by: FieldsBy,
) -> std::result::Result<arrow::array::ArrayRef, arrow::error::ArrowError> {
    use arrow::array::{Array, AsArray, ListArray, MapArray, StructArray};
    use arrow::datatypes::DataType as D;
    use std::sync::Arc;
    if array.data_type() == to {
        return Ok(array.clone());
    }
    Ok(match (array.data_type(), to) {
        (D::Struct(_), D::Struct(fields)) => {
            let s = array.as_struct();
            let children = fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let child = match by {
                        FieldsBy::Name => s.column_by_name(f.name()),
                        FieldsBy::Position => s.columns().get(i),
                    };
                    match child {
                        Some(c) => reshape(c, f.data_type(), by),
                        None => Ok(arrow::array::new_null_array(f.data_type(), s.len())),
                    }
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Arc::new(StructArray::try_new(
                fields.clone(),
                children,
                s.nulls().cloned(),
            )?)
        }
        (D::List(_), D::List(field)) => {
            let l = array.as_list::<i32>();
            Arc::new(ListArray::try_new(
                field.clone(),
                l.offsets().clone(),
                reshape(l.values(), field.data_type(), by)?,
                l.nulls().cloned(),
            )?)
        }
        (D::Map(_, _), D::Map(entries, sorted)) => {
            let m = array.as_map();
            let e = reshape(
                &(Arc::new(m.entries().clone()) as _),
                entries.data_type(),
                by,
            )?;
            Arc::new(MapArray::try_new(
                entries.clone(),
                m.offsets().clone(),
                e.as_struct().clone(),
                m.nulls().cloned(),
                *sorted,
            )?)
        }
        _ => arrow::compute::cast(array, to)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[tokio::test]
    async fn a_file_is_linked_into_a_local_lake_and_copied_into_another_store() {
        use object_store::ObjectStoreExt;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        let file = spool.join("a.parquet");
        std::fs::write(&file, vec![7u8; PART_SIZE + 10]).unwrap();
        let lake = Lake::local(&dir.path().join("lake")).unwrap();
        let dest = "t/region=a%2Fb/part-1.parquet";

        assert_eq!(
            upload(&lake, &file, dest).await.unwrap(),
            PART_SIZE as u64 + 10
        );
        // Where the store puts (and readers find) that path, the very same file.
        let placed = lake
            .local
            .as_ref()
            .unwrap()
            .path_to_filesystem(&lake.path(dest))
            .unwrap();
        assert!(
            placed.ends_with("lake/t/region=a%2Fb/part-1.parquet"),
            "{placed:?}"
        );
        assert_eq!(
            std::fs::metadata(&placed).unwrap().ino(),
            std::fs::metadata(&file).unwrap().ino()
        );
        let got = lake
            .store
            .get(&lake.path(dest))
            .await
            .unwrap()
            .bytes()
            .await;
        assert_eq!(got.unwrap().len(), PART_SIZE + 10);
        // Linked already (an attempt whose answer was lost): done, not an error.
        upload(&lake, &file, dest).await.unwrap();
        // Another file under that name is not overwritten.
        let other = spool.join("b.parquet");
        std::fs::write(&other, b"other").unwrap();
        assert!(upload(&lake, &other, dest).await.is_err());
        assert_eq!(
            std::fs::metadata(&placed).unwrap().len(),
            PART_SIZE as u64 + 10
        );

        // A store that is not a local directory gets a copy, in parts when large.
        let mem = Lake::from_url("memory:///lake/").unwrap();
        assert!(mem.local.is_none());
        upload(&mem, &file, dest).await.unwrap();
        upload(&mem, &other, "t/small.parquet").await.unwrap();
        let got = mem.store.get(&mem.path(dest)).await.unwrap().bytes().await;
        assert_eq!(got.unwrap().len(), PART_SIZE + 10);
        let got = mem.store.get(&mem.path("t/small.parquet")).await.unwrap();
        assert_eq!(&got.bytes().await.unwrap()[..], b"other");
    }

    /// A field inside structs has its statistics nested as its path is; a list's elements and
    /// a map's entries have none.
    #[test]
    fn nested_fields_have_statistics_at_their_path() {
        use crate::schema::{Column, ColumnType, arrow_schema};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.parquet");
        let columns = vec![
            Column::new("id", ColumnType::Int64),
            Column::new(
                "user",
                ColumnType::parse(
                    "struct<uid:int64,address:struct<city:string>,tags:array<int32>>",
                )
                .unwrap(),
            ),
            Column::new("m", ColumnType::parse("map<string,int64>").unwrap()),
        ];
        let schema = arrow_schema(&columns);
        let rows = [
            r#"{"id": 1, "user": {"uid": 7, "address": {"city": "b"}, "tags": [1]}, "m": {"k": 1}}"#,
            r#"{"id": 2, "user": {"uid": 3, "address": null, "tags": []}}"#,
            r#"{"id": 3, "user": null}"#,
        ];
        let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
            .build_decoder()
            .unwrap();
        decoder.decode(rows.join("\n").as_bytes()).unwrap();
        let batch = decoder.flush().unwrap().unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            schema,
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let stats: serde_json::Value = serde_json::from_str(&delta_stats(&path).unwrap()).unwrap();
        assert_eq!(stats["numRecords"], 3);
        assert_eq!(stats["minValues"]["user"]["uid"], 3);
        assert_eq!(stats["maxValues"]["user"]["uid"], 7);
        assert_eq!(stats["minValues"]["user"]["address"]["city"], "b");
        assert_eq!(stats["nullCount"]["user"]["uid"], 1);
        assert_eq!(stats["nullCount"]["user"]["address"]["city"], 2);
        assert_eq!(stats["maxValues"]["id"], 3);
        assert!(stats["minValues"]["user"].get("tags").is_none(), "{stats}");
        assert!(stats["nullCount"].get("m").is_none(), "{stats}");
    }
}
