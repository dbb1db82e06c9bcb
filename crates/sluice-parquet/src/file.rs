//! The file writer: a Parquet file written a row group at a time.

use std::fs::File;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::arrow::{ArrowSchemaConverter, add_encoded_arrow_schema_to_metadata};
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::writer::SerializedFileWriter;

use crate::dictionary::{DictColumn, Kind};
use crate::{Error, Result};

/// A Parquet file written a row group at a time, as `ArrowWriter` writes it, except that
/// dictionary columns of the kinds [`crate::dictionary`] handles are encoded there; every
/// other column is encoded by arrow-rs. The file carries the Arrow schema, as
/// `ArrowWriter`'s do.
pub struct FileWriter {
    file: SerializedFileWriter<File>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    props: Arc<WriterProperties>,
    /// Per leaf column: encoded by sluice (its kind), or by arrow-rs.
    pub(crate) kinds: Vec<Option<Kind>>,
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
    /// A writer of rows of `schema` into `file`, with `props` (see
    /// [`crate::properties::writer_properties`]).
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
