//! Writing Parquet: spool files on local disk, then upload to the lake.
//!
//! Files are written to a private spool directory (never visible to readers), closed when
//! rotated, then uploaded under a fresh name with create-if-absent, so no file is ever
//! overwritten. Only a ledger commit makes an uploaded file part of the table.

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

    /// Bytes of the buffered row group (memory held).
    pub fn buffered(&self) -> usize {
        self.with_writer(|w| w.in_progress_size())
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
