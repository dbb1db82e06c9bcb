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
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::arrow::{ArrowSchemaConverter, add_encoded_arrow_schema_to_metadata};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::writer::SerializedFileWriter;
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::parquet::dictionary::{DictColumn, Kind};

/// The Parquet footer's `created_by`, in the form parquet-java parses (`<app> version
/// <semver> (build <hash>)`): Spark, Hive and Trino trust the statistics of files whose writer
/// they can name, and ignore text statistics otherwise.
pub fn created_by() -> String {
    format!(
        "sluice version {} (build {})",
        env!("CARGO_PKG_VERSION"),
        env!("SLUICE_BUILD")
    )
}

/// Parquet settings.
#[derive(Debug, Clone)]
pub struct ParquetOptions {
    /// zstd level of the columns that have a dictionary or hold text.
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

/// Bytes of a column chunk's dictionary page; a column whose dictionary grows past it falls
/// back to plain encoding for the rest of the row group.
const DICTIONARY_PAGE_BYTES: usize = 256 * 1024;

/// zstd level of every column but text written without a dictionary, once the writer has
/// decided which columns keep theirs ([`writer_properties_for`]):
/// - a dictionary column's pages are bit-packed indices, which a higher level hardly shrinks:
///   TPC-H SF1 lineitem came out 33 KB smaller at level 1 than at 3, and each open column
///   chunk's zstd context is half the size (the peak of `convert` 11 MB lower);
/// - numbers without a dictionary (delta-packed keys, prices): level 3 made SF1's 0.5 MB
///   smaller (136.0 MB against 136.6 MB) for about a tenth of the zstd time of `convert`.
///
/// Free text without a dictionary keeps the configured level: level 1 made TPC-H's comments
/// 49.9 MB instead of 46.5 MB, 2.5% of the whole output, for about a fifth of the zstd time.
pub(crate) const FAST_ZSTD_LEVEL: i32 = 1;

/// Writer properties: zstd, dictionaries, page statistics and page indexes.
pub fn writer_properties(o: &ParquetOptions) -> Result<WriterProperties> {
    Ok(builder(o, o.zstd_level)?.build())
}

/// Writer properties once it is decided which columns keep their dictionary: the dictionary
/// off for `plain_columns` (see [`dictionary_misfits`]), which take the encoding of
/// [`plain_encoding`]. Text among them keeps `o.zstd_level`; every other column takes
/// [`FAST_ZSTD_LEVEL`] (or `o.zstd_level`, if lower). `schema` is the file's.
pub(crate) fn writer_properties_for(
    o: &ParquetOptions,
    schema: &arrow::datatypes::Schema,
    plain_columns: &[String],
) -> Result<WriterProperties> {
    let mut b = builder(o, o.zstd_level.min(FAST_ZSTD_LEVEL))?;
    for c in plain_columns {
        let path = parquet::schema::types::ColumnPath::from(c.as_str());
        b = b.set_column_dictionary_enabled(path.clone(), false);
        let ty = schema.field_with_name(c).ok().map(|f| f.data_type());
        if ty == Some(&arrow::datatypes::DataType::Utf8) {
            b = b.set_column_compression(
                path.clone(),
                Compression::ZSTD(ZstdLevel::try_new(o.zstd_level)?),
            );
        }
        if let Some(e) = ty.and_then(plain_encoding) {
            b = b.set_column_encoding(path, e);
        }
    }
    Ok(b.build())
}

/// The encoding of a column written without a dictionary, where it beats PLAIN:
/// - integers, dates and timestamps: DELTA_BINARY_PACKED, the differences bit-packed. TPC-H's
///   part keys (random, 200,000 values) took 14.4 MB instead of 17.9 MB at SF1, and sorted
///   keys or timestamps shrink to a few bits a value before zstd sees them;
/// - text: DELTA_LENGTH_BYTE_ARRAY, the lengths apart from the bytes, so zstd sees the text
///   unbroken: TPC-H's comments took 46.5 MB instead of 51.7 MB;
/// - floats stay PLAIN: BYTE_STREAM_SPLIT made TPC-H's prices larger (34.1 MB against 25.1 MB).
///
/// Both are Parquet's own encodings, read by DuckDB, Polars, pyarrow, Spark 3.3 and later,
/// Trino and Athena (engine 3).
pub(crate) fn plain_encoding(ty: &arrow::datatypes::DataType) -> Option<parquet::basic::Encoding> {
    use arrow::datatypes::DataType;
    use parquet::basic::Encoding;
    match ty {
        DataType::Int64 | DataType::Int32 | DataType::Date32 | DataType::Timestamp(_, _) => {
            Some(Encoding::DELTA_BINARY_PACKED)
        }
        DataType::Utf8 => Some(Encoding::DELTA_LENGTH_BYTE_ARRAY),
        _ => None,
    }
}

fn builder(
    o: &ParquetOptions,
    zstd_level: i32,
) -> Result<parquet::file::properties::WriterPropertiesBuilder> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_dictionary_enabled(true)
        // A column whose dictionary passes 256 KiB falls back to plain encoding: high-cardinality
        // columns stop paying for interning, and seven open partitions hold less memory.
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(o.row_group_rows))
        .set_created_by(created_by()))
}

/// Rows a dictionary decision needs to see at least.
pub(crate) const DICTIONARY_SAMPLE_MIN: usize = 4096;
/// Rows of one partition a dictionary decision looks at, at most.
const DICTIONARY_SAMPLE_MAX: usize = 65_536;

/// The columns whose dictionary would overflow its page in a row group of `row_group_rows`,
/// judged from `parts`: rows of one table, each batch the rows of one partition (one file) in
/// order. Writing them with a dictionary only to fall back to plain encoding part-way costs
/// time, and bytes: 27% more for sorted order keys in TPC-H's lineitem. `None`: fewer than
/// [`DICTIONARY_SAMPLE_MIN`] rows to judge by.
///
/// The distinct values of the first half of each partition's rows and of all of them tell how
/// many values the column has (see the estimate below): a column with few (dates, codes, ten
/// thousand suppliers) keeps its dictionary; one with more than a dictionary page holds in a
/// row group (ids, prices, free text) is written plain.
pub(crate) fn dictionary_misfits(
    parts: &[&RecordBatch],
    row_group_rows: usize,
) -> Option<Vec<String>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{
        DataType, Date32Type, Float64Type, Int64Type, TimestampMicrosecondType,
    };
    let schema = parts.first()?.schema();
    let rows: usize = parts
        .iter()
        .map(|b| b.num_rows().min(DICTIONARY_SAMPLE_MAX))
        .sum();
    if rows < DICTIONARY_SAMPLE_MIN {
        return None;
    }
    let mut plain = Vec::new();
    let mut values: Vec<u64> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let (mut d_half, mut d_full, mut n, mut bytes) = (0usize, 0usize, 0usize, 0usize);
        for b in parts {
            // The partition's values as numbers (strings by hash), nulls left out.
            let col = b
                .column(i)
                .slice(0, b.num_rows().min(DICTIONARY_SAMPLE_MAX));
            values.clear();
            match field.data_type() {
                DataType::Int64 => values.extend(
                    col.as_primitive::<Int64Type>()
                        .iter()
                        .flatten()
                        .map(|v| v as u64),
                ),
                DataType::Float64 => values.extend(
                    col.as_primitive::<Float64Type>()
                        .iter()
                        .flatten()
                        .map(f64::to_bits),
                ),
                DataType::Date32 => values.extend(
                    col.as_primitive::<Date32Type>()
                        .iter()
                        .flatten()
                        .map(|v| v as u64),
                ),
                DataType::Timestamp(_, _) => values.extend(
                    col.as_primitive::<TimestampMicrosecondType>()
                        .iter()
                        .flatten()
                        .map(|v| v as u64),
                ),
                DataType::Utf8 => {
                    for v in col.as_string::<i32>().iter().flatten() {
                        values.push(xxhash_rust::xxh3::xxh3_64(v.as_bytes()));
                        // The dictionary page holds the text and its 4-byte length.
                        bytes += v.len() + 4;
                    }
                }
                // Booleans and anything else: the writer's default.
                _ => break,
            }
            if let Some(w) = field.data_type().primitive_width() {
                bytes += w * values.len();
            }
            let half = values.len() / 2;
            seen.clear();
            seen.extend(values[..half].iter().copied());
            d_half += seen.len();
            seen.extend(values[half..].iter().copied());
            d_full += seen.len();
            n += values.len();
        }
        if n < DICTIONARY_SAMPLE_MIN || d_half == 0 {
            continue;
        }
        // Distinct values per partition, estimated from how many new ones the second half of
        // the rows brought: drawing n rows from N values, the first half finds N(1 - e^(-n/2N))
        // and the whole N(1 - e^(-n/N)), a ratio of 1 + e^(-n/2N). Keys that keep coming
        // (sorted order ids, free text) give a ratio of 2: as many values as rows.
        let k = parts.len() as f64;
        let (per_part, d_avg) = (n as f64 / k, d_full as f64 / k);
        let growth = d_full as f64 / d_half as f64;
        let distinct = if growth >= 2.0 {
            f64::INFINITY
        } else if growth <= 1.0 {
            d_avg
        } else {
            (-per_part / (2.0 * (growth - 1.0).ln())).max(d_avg)
        };
        let projected = distinct.min(row_group_rows as f64) * (bytes as f64 / n as f64);
        if projected > DICTIONARY_PAGE_BYTES as f64 {
            plain.push(field.name().clone());
        }
    }
    Some(plain)
}

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

/// A Parquet file written a row group at a time, as `ArrowWriter` writes it, except that
/// dictionary columns of the kinds [`crate::parquet::dictionary`] handles are encoded there; every
/// other column is encoded by arrow-rs. The file carries the Arrow schema, as
/// `ArrowWriter`'s do.
pub(crate) struct FileWriter {
    file: SerializedFileWriter<File>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    props: Arc<WriterProperties>,
    /// Per leaf column: encoded by sluice (its kind), or by arrow-rs.
    kinds: Vec<Option<Kind>>,
    group: Option<RowGroup>,
}

struct RowGroup {
    columns: Vec<ColumnEncoder>,
    rows: usize,
}

enum ColumnEncoder {
    Arrow(Box<ArrowColumnWriter>),
    Dictionary(Box<DictColumn>),
}

impl FileWriter {
    pub fn try_new(file: File, schema: SchemaRef, mut props: WriterProperties) -> Result<Self> {
        let parquet = ArrowSchemaConverter::new()
            .with_coerce_types(props.coerce_types())
            .convert(&schema)?;
        add_encoded_arrow_schema_to_metadata(&schema, &mut props);
        // Per leaf column: only a top-level field of a kind sluice encodes (a leaf whose path
        // is its name alone) may be; the leaves of nested fields are arrow-rs's.
        let kinds = (0..parquet.num_columns())
            .map(|i| {
                let descr = parquet.column(i);
                let path = descr.path();
                let [name] = path.parts() else {
                    return None;
                };
                let (kind, physical) = Kind::of(schema.field_with_name(name).ok()?.data_type())?;
                (physical == descr.physical_type()
                    && props.dictionary_enabled(path)
                    && props.statistics_enabled(path) == EnabledStatistics::Page
                    && matches!(props.compression(path), Compression::ZSTD(_))
                    && props.bloom_filter_properties(path).is_none()
                    && props.writer_version() == WriterVersion::PARQUET_1_0)
                    .then_some(kind)
            })
            .collect();
        let props = Arc::new(props);
        let file = SerializedFileWriter::new(file, parquet.root_schema_ptr(), props.clone())?;
        let factory = ArrowRowGroupWriterFactory::new(&file, schema.clone());
        Ok(FileWriter {
            file,
            factory,
            schema,
            props,
            kinds,
            group: None,
        })
    }

    /// Encodes `batch` into the buffered row group, closing row groups at the properties'
    /// row limit.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let max = self.props.max_row_group_row_count().unwrap_or(usize::MAX);
        let mut at = 0;
        while at < batch.num_rows() {
            if self.group.is_none() {
                let index = self.file.flushed_row_groups().len();
                let columns = self
                    .factory
                    .create_column_writers(index)?
                    .into_iter()
                    .zip(&self.kinds)
                    .enumerate()
                    .map(|(i, (w, kind))| match kind {
                        Some(kind) => {
                            DictColumn::new(self.file.schema_descr().column(i), *kind, &self.props)
                                .map(|d| ColumnEncoder::Dictionary(Box::new(d)))
                        }
                        None => Ok(ColumnEncoder::Arrow(Box::new(w))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.group = Some(RowGroup { columns, rows: 0 });
            }
            let group = self.group.as_mut().expect("row group is open");
            let take = (max - group.rows).min(batch.num_rows() - at);
            let part = batch.slice(at, take);
            // A field is one column, or (nested, arrow-rs's only) as many as it has leaves.
            let mut encoders = group.columns.iter_mut();
            for (field, array) in self.schema.fields().iter().zip(part.columns()) {
                let mut next = || {
                    encoders
                        .next()
                        .ok_or_else(|| Error::Internal("more leaves than column writers".into()))
                };
                match next()? {
                    ColumnEncoder::Dictionary(d) => d.write(array)?,
                    ColumnEncoder::Arrow(first) => {
                        let mut first = Some(first);
                        for leaf in compute_leaves(field, array)? {
                            match first.take() {
                                Some(w) => w.write(&leaf)?,
                                None => match next()? {
                                    ColumnEncoder::Arrow(w) => w.write(&leaf)?,
                                    ColumnEncoder::Dictionary(_) => {
                                        return Err(Error::Internal(
                                            "a nested field's leaf given to a dictionary column"
                                                .into(),
                                        ));
                                    }
                                },
                            }
                        }
                    }
                }
            }
            group.rows += take;
            at += take;
            if group.rows >= max {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Estimated encoded size of the buffered row group.
    pub fn in_progress_size(&self) -> usize {
        self.sum_columns(
            ArrowColumnWriter::get_estimated_total_bytes,
            DictColumn::estimated_bytes,
        )
    }

    /// Memory held by the buffered row group.
    pub fn memory_size(&self) -> usize {
        self.sum_columns(ArrowColumnWriter::memory_size, DictColumn::memory_size)
    }

    fn sum_columns(
        &self,
        arrow: fn(&ArrowColumnWriter) -> usize,
        own: fn(&DictColumn) -> usize,
    ) -> usize {
        self.group.as_ref().map_or(0, |g| {
            g.columns
                .iter()
                .map(|c| match c {
                    ColumnEncoder::Arrow(w) => arrow(w),
                    ColumnEncoder::Dictionary(d) => own(d),
                })
                .sum()
        })
    }

    /// Bytes written to the file so far.
    pub fn bytes_written(&self) -> usize {
        self.file.bytes_written()
    }

    /// Writes the buffered row group out.
    pub fn flush(&mut self) -> Result<()> {
        let Some(group) = self.group.take() else {
            return Ok(());
        };
        let mut rg = self.file.next_row_group()?;
        for c in group.columns {
            match c {
                ColumnEncoder::Arrow(w) => w.close()?.append_to_row_group(&mut rg)?,
                ColumnEncoder::Dictionary(d) => {
                    let (bytes, close) = d.close()?;
                    rg.append_column(&bytes, close)?;
                }
            }
        }
        rg.close()?;
        Ok(())
    }

    /// Writes the buffered row group and the footer.
    pub fn close(mut self) -> Result<()> {
        self.flush()?;
        self.file.close()?;
        Ok(())
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
            Some(c) => arrow::compute::cast(c, f.data_type()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    /// Rows shaped like TPC-H's lineitem in three partitions of 9,000 rows.
    fn parts() -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("order_key", DataType::Int64, false),
            Field::new("supplier", DataType::Int64, false),
            Field::new("price", DataType::Float64, false),
            Field::new("day", DataType::Date32, false),
            Field::new("mode", DataType::Utf8, false),
            Field::new("comment", DataType::Utf8, true),
        ]));
        let mut seed = 42u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed >> 33
        };
        (0..3)
            .map(|p| {
                let n = 9000;
                let mut key = 0i64;
                let order_key: Vec<i64> = (0..n)
                    .map(|_| {
                        key += (next() % 3) as i64; // a few lines per order, ascending
                        key
                    })
                    .collect();
                let supplier: Vec<i64> = (0..n).map(|_| (next() % 10_000) as i64).collect();
                let price: Vec<f64> = (0..n)
                    .map(|_| (next() % 10_000_000) as f64 / 100.0)
                    .collect();
                let day: Vec<i32> = (0..n)
                    .map(|_| 9000 + p * 365 + (next() % 365) as i32)
                    .collect();
                let modes = ["AIR", "MAIL", "RAIL", "SHIP", "TRUCK"];
                let mode: Vec<&str> = (0..n).map(|_| modes[(next() % 5) as usize]).collect();
                let comment: Vec<Option<String>> = (0..n)
                    .map(|i| (i % 10 != 0).then(|| format!("note {} {}", next(), next())))
                    .collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(order_key)),
                        Arc::new(Int64Array::from(supplier)),
                        Arc::new(Float64Array::from(price)),
                        Arc::new(Date32Array::from(day)),
                        Arc::new(StringArray::from(mode)),
                        Arc::new(StringArray::from(comment)),
                    ],
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn growing_keys_prices_and_text_are_written_plain_and_the_rest_keeps_its_dictionary() {
        let parts = parts();
        let refs: Vec<&RecordBatch> = parts.iter().collect();
        let plain = dictionary_misfits(&refs, 1 << 20).unwrap();
        assert_eq!(plain, ["order_key", "price", "comment"]);
        // Too few rows to judge.
        let small: Vec<RecordBatch> = parts.iter().map(|b| b.slice(0, 1000)).collect();
        let refs: Vec<&RecordBatch> = small.iter().collect();
        assert_eq!(dictionary_misfits(&refs, 1 << 20), None);
        // Row groups so small that every dictionary fits its page.
        let refs: Vec<&RecordBatch> = parts.iter().collect();
        assert_eq!(
            dictionary_misfits(&refs, 4096).unwrap(),
            Vec::<String>::new()
        );
    }

    /// A consumer's first message: seven partitions of 2,900 rows. Ten thousand suppliers fit a
    /// dictionary; two hundred thousand parts do not.
    #[test]
    fn small_partitions_tell_ten_thousand_values_from_two_hundred_thousand() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("supplier", DataType::Int64, false),
            Field::new("part", DataType::Int64, false),
        ]));
        let mut seed = 7u64;
        let mut next = move |m: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) % m) as i64
        };
        let parts: Vec<RecordBatch> = (0..7)
            .map(|_| {
                let supplier: Vec<i64> = (0..2900).map(|_| next(10_000)).collect();
                let part: Vec<i64> = (0..2900).map(|_| next(200_000)).collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(supplier)),
                        Arc::new(Int64Array::from(part)),
                    ],
                )
                .unwrap()
            })
            .collect();
        let refs: Vec<&RecordBatch> = parts.iter().collect();
        assert_eq!(dictionary_misfits(&refs, 1 << 20).unwrap(), ["part"]);
    }

    /// A nested field takes as many column writers as it has leaves, and the flat fields
    /// around it keep theirs (the one encoded by sluice included): every value reads back.
    #[test]
    fn nested_fields_beside_dictionary_columns_read_back() {
        use arrow::array::{ArrayRef, Int32Builder, ListBuilder, StructArray};
        use arrow::datatypes::{Field, Fields, Schema};
        let point = Fields::from(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("label", DataType::Utf8, true),
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("p", DataType::Struct(point.clone()), true),
            Field::new_list("l", Field::new_list_field(DataType::Int32, true), true),
            Field::new("t", DataType::Utf8, true),
        ]));
        let n = 5000;
        let mut list = ListBuilder::new(Int32Builder::new());
        for i in 0..n {
            for k in 0..i % 4 {
                list.values().append_value(k);
            }
            list.append(i % 9 != 0);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter(
                (0..n).map(|i| (i % 7 != 0).then_some(i64::from(i % 13))),
            )),
            Arc::new(StructArray::new(
                point,
                vec![
                    Arc::new(Int64Array::from_iter_values((0..n).map(i64::from))),
                    Arc::new(StringArray::from_iter(
                        (0..n).map(|i| (i % 5 != 0).then(|| format!("p{}", i % 3))),
                    )),
                ],
                None,
            )),
            Arc::new(list.finish()),
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| Some(format!("t{}", i % 4))),
            )),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested.parquet");
        let mut w = FileWriter::try_new(
            File::create(&path).unwrap(),
            schema,
            writer_properties(&ParquetOptions::default()).unwrap(),
        )
        .unwrap();
        w.write(&batch.slice(0, 1234)).unwrap();
        w.write(&batch.slice(1234, n as usize - 1234)).unwrap();
        w.close().unwrap();
        let read: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                File::open(&path).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        let read = arrow::compute::concat_batches(&batch.schema(), &read).unwrap();
        assert_eq!(read, batch);
        // `a` and `t` were encoded by sluice, the struct's and the list's leaves by arrow-rs.
        let kinds = FileWriter::try_new(
            File::create(dir.path().join("again.parquet")).unwrap(),
            batch.schema(),
            writer_properties(&ParquetOptions::default()).unwrap(),
        )
        .unwrap()
        .kinds;
        assert_eq!(
            kinds,
            [Some(Kind::I64), None, None, None, Some(Kind::Bytes)]
        );
    }

    #[test]
    fn columns_written_plain_carry_no_dictionary_page() {
        let parts = parts();
        let refs: Vec<&RecordBatch> = parts.iter().collect();
        let plain = dictionary_misfits(&refs, 1 << 20).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let props =
            writer_properties_for(&ParquetOptions::default(), &parts[0].schema(), &plain).unwrap();
        // Plain text keeps the configured level; every other column takes level 1.
        let level = |name: &str| match props.compression(&name.into()) {
            Compression::ZSTD(l) => l.compression_level(),
            other => panic!("{name}: {other:?}"),
        };
        for f in parts[0].schema().fields() {
            let text = f.data_type() == &arrow::datatypes::DataType::Utf8;
            let want = if plain.contains(f.name()) && text {
                ParquetOptions::default().zstd_level
            } else {
                FAST_ZSTD_LEVEL
            };
            assert_eq!(level(f.name()), want, "{}", f.name());
        }
        assert!(
            !plain.is_empty() && plain.len() < parts[0].num_columns(),
            "{plain:?}"
        );
        let mut f = SpoolFile::create(
            dir.path(),
            parts[0].schema(),
            props,
            &ParquetOptions::default(),
        )
        .unwrap();
        f.write(&parts[0]).unwrap();
        let done = f.finish().unwrap();
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(
            File::open(&done.local).unwrap(),
        )
        .unwrap();
        use parquet::file::reader::FileReader;
        let rg = reader.metadata().row_group(0);
        use parquet::basic::Encoding;
        for c in rg.columns() {
            let name = c.column_path().string();
            let is_plain = plain.contains(&name);
            assert_eq!(c.dictionary_page_offset().is_some(), !is_plain, "{name}");
            // Plain integers and text take their delta encoding; floats stay PLAIN.
            let want = match name.as_str() {
                "order_key" => Some(Encoding::DELTA_BINARY_PACKED),
                "comment" => Some(Encoding::DELTA_LENGTH_BYTE_ARRAY),
                _ if is_plain => Some(Encoding::PLAIN),
                _ => Some(Encoding::RLE_DICTIONARY),
            };
            let encodings: Vec<Encoding> = c.encodings().collect();
            assert!(
                want.is_some_and(|w| encodings.contains(&w)),
                "{name}: {encodings:?}"
            );
            if name == "order_key" || name == "comment" {
                assert!(
                    !encodings.contains(&Encoding::PLAIN),
                    "{name}: {encodings:?}"
                );
            }
        }
        // And the values read back as written.
        let back: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
                File::open(&done.local).unwrap(),
                4096,
            )
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        let back = arrow::compute::concat_batches(&parts[0].schema(), &back).unwrap();
        assert_eq!(back, parts[0]);
    }

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
}
