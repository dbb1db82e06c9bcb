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
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::lake::Lake;

/// Parquet settings.
#[derive(Debug, Clone)]
pub struct ParquetOptions {
    pub zstd_level: i32,
    /// Rows per row group at most.
    pub row_group_rows: usize,
    /// A row group is closed early when its buffered size passes this many bytes.
    pub row_group_bytes: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            zstd_level: 3,
            row_group_rows: 1 << 20,
            row_group_bytes: 48 << 20,
        }
    }
}

/// Writer properties: zstd, dictionaries, page statistics and page indexes.
pub fn writer_properties(o: &ParquetOptions) -> Result<WriterProperties> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(o.zstd_level)?))
        .set_dictionary_enabled(true)
        // A column whose dictionary passes 256 KiB falls back to plain encoding: high-cardinality
        // columns stop paying for interning, and seven open partitions hold less memory.
        .set_dictionary_page_size_limit(256 * 1024)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(o.row_group_rows))
        .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
        .build())
}

/// A Parquet file being written in the spool.
pub struct SpoolFile {
    pub local: PathBuf,
    /// In a mutex only to make the consumer `Sync` (the writer is not); never contended.
    writer: std::sync::Mutex<Option<ArrowWriter<File>>>,
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
        let writer = ArrowWriter::try_new(file, schema, Some(props))?;
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

    fn with_writer<T: Default>(&self, f: impl FnOnce(&ArrowWriter<File>) -> T) -> T {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.as_ref().map(f).unwrap_or_default()
    }
}

/// A closed spool file, ready to upload.
#[derive(Debug)]
pub struct FinishedFile {
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

const PART_SIZE: usize = 16 << 20;

/// Uploads a local file to `dest` (relative to the lake root) without overwriting anything.
pub async fn upload(lake: &Lake, local: &Path, dest: &str) -> Result<u64> {
    let path = lake.path(dest);
    let len = tokio::fs::metadata(local)
        .await
        .map_err(|e| Error::io(local, e))?
        .len();
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
            w.wait_for_capacity(4).await?;
            w.write(&buf[..n]);
        }
        w.finish().await?;
    }
    Ok(len)
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
pub fn quarantine_batch(table: &str, rows: &[crate::rows::QuarantineRow]) -> Result<RecordBatch> {
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
pub fn delta_stats(path: &Path) -> Result<String> {
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
        // Flat schemas only: a nested column has no single Delta statistic.
        if col.path().parts().len() != 1 {
            continue;
        }
        let name = col.name().to_string();
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
            nulls.insert(name.clone(), Value::from(n));
        }
        if bounds_ok && let (Some(a), Some(b)) = (lo, hi) {
            mins.insert(name.clone(), a);
            maxs.insert(name, b);
        }
    }
    let mut out = Map::new();
    out.insert("numRecords".into(), Value::from(rows));
    out.insert("minValues".into(), Value::Object(mins));
    out.insert("maxValues".into(), Value::Object(maxs));
    out.insert("nullCount".into(), Value::Object(nulls));
    Ok(Value::Object(out).to_string())
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
