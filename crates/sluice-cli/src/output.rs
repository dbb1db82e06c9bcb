//! Printing query results.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

/// Output formats of `sluice query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// JSON lines, one object per row.
    Json,
    /// A Parquet file (needs --output).
    Parquet,
}

/// Writes batches in `format` to `out` (stdout if `None`).
pub fn write(
    format: Format,
    schema: SchemaRef,
    batches: &[RecordBatch],
    out: Option<&Path>,
) -> Result<()> {
    if format == Format::Parquet {
        let Some(p) = out else {
            bail!("--format parquet needs --output FILE")
        };
        let file = std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
        let props = sluice_core::parquet::writer::writer_properties(
            &sluice_core::parquet::writer::ParquetOptions::default(),
        )?;
        let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, Some(props))?;
        for b in batches {
            w.write(b)?;
        }
        w.close()?;
        return Ok(());
    }
    let mut sink: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match format {
        Format::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(sink, "(no rows; columns: {})", names.join(", "))?;
            } else {
                writeln!(
                    sink,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(batches)?
                )?;
            }
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut sink);
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema))?;
            }
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut sink);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Parquet => unreachable!("handled above"),
    }
    sink.flush()?;
    Ok(())
}
