//! # sluice-parquet
//!
//! sluice's Parquet encoder: files written a row group at a time as arrow-rs's `ArrowWriter`
//! writes them, except that the columns that keep a dictionary and hold dates, 32/64-bit
//! integers, microsecond timestamps, doubles or text are encoded by sluice
//! (`dictionary::DictColumn`): a small open-addressing table per column chunk instead of
//! arrow-rs's general interner, and page statistics taken over a page's distinct entries. Every
//! other column (booleans, columns without a dictionary, the leaves of nested fields) is encoded
//! by arrow-rs's own column writers, and the finished chunks go into the row group whole.
//!
//! What a chunk carries is what arrow-rs writes: the PLAIN dictionary page first, data pages of
//! at most `data_page_row_count_limit` rows, chunk statistics (text cut to 64 bytes, upper
//! bounds raised), column and offset index, page encoding statistics, definition-level
//! histograms and unencoded text sizes; a dictionary past its limit falls back to PLAIN pages for
//! the rest of the chunk. The differential suite (`tests/differential.rs`) writes random columns
//! of every kind with both writers and finds the files identical, byte for byte: chunks,
//! statistics, column and offset indexes, footer.
//!
//! ## The arrow-rs internals it depends on
//!
//! When `arrow`/`parquet` move, check these (the differential suite fails if their behaviour
//! changes under it):
//! - `parquet::arrow::arrow_writer::{ArrowRowGroupWriterFactory, ArrowColumnWriter,
//!   compute_leaves}`: arrow-rs's column writers for the columns sluice does not encode, and the
//!   leaves of a field in the order of the file's columns.
//! - `parquet::file::writer::{SerializedPageWriter, TrackedWrite}` and
//!   `parquet::column::page::{CompressedPage, Page, PageWriter}`: writing sluice's pages into a
//!   column chunk as arrow-rs's writers do.
//! - `parquet::column::writer::ColumnCloseResult` and `parquet::file::metadata::{ColumnChunkMetaData,
//!   ColumnIndexBuilder, OffsetIndexBuilder, PageEncodingStats, LevelHistogram}`: the chunk's
//!   metadata, column index and offset index, built as arrow-rs builds them, then appended to
//!   the row group with `SerializedRowGroupWriter::append_column`.
//! - `parquet::arrow::add_encoded_arrow_schema_to_metadata`: the Arrow schema in the footer, as
//!   `ArrowWriter` writes it.
//! - The statistics rules of `parquet::column::writer`: text bounds cut to
//!   `statistics_truncate_length` with the upper bound raised, NaN left out of float bounds,
//!   -0.0/+0.0 ordered as arrow-rs orders them.

#![warn(missing_docs)]

pub mod dictionary;
pub mod file;
pub mod properties;
#[cfg(test)]
mod testdata;

pub use file::FileWriter;
pub use properties::{ParquetOptions, created_by, writer_properties};

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong writing a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// arrow-rs's Parquet writer failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Compressing a page failed.
    #[error("{what}: {source}")]
    Compression {
        /// The codec (`zstd`).
        what: String,
        /// Its error.
        #[source]
        source: std::io::Error,
    },
    /// The encoder broke one of its own rules: a bug.
    #[error("internal error (a bug in sluice's Parquet encoder): {0}")]
    Internal(String),
}
