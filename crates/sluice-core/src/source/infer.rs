//! A new table's columns from a sample of its first source: Parquet's own schema, or inferred
//! from CSV records or JSON objects.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::schema::json::Members;
use crate::schema::{Column, SchemaInference};
use crate::source::csv::{CsvFormat, FieldSplitter, RecordReader, read_header};
use crate::source::parquet::{column_type_of, parquet_schema, read_error};
use crate::source::{Format, Source};

/// How a source is sampled for its columns.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Records (or objects) read at most.
    pub rows: usize,
    /// The CSV dialect of the source.
    pub format: CsvFormat,
    /// strftime pattern for dates that are not ISO 8601.
    pub date_format: Option<String>,
    /// Numbers written with a point are `decimal(p,s)` columns, not `float64`.
    pub exact_decimals: bool,
}

/// The columns of a new table from its first source: Parquet's own schema, or inferred from a
/// sample of CSV records or JSON objects.
pub(crate) fn infer_columns(
    rt: &tokio::runtime::Handle,
    src: &Source,
    sample: &Sample,
    spool: &std::path::Path,
) -> Result<Vec<Column>> {
    match src.format {
        Format::Csv => {
            let input = src.open(rt, Arc::default())?;
            let (mut reader, header) = read_header(input, &src.name, &sample.format)?;
            infer_csv(&mut reader, header, sample)
        }
        Format::JsonLines => {
            let input = BufReader::new(src.open(rt, Arc::default())?);
            infer_json(input, &src.name, sample)
        }
        Format::Parquet => {
            let schema = parquet_schema(rt, src, spool)?;
            schema
                .fields()
                .iter()
                .map(|f| Ok(Column::new(f.name(), column_type_of(f.data_type()))))
                .collect()
        }
    }
}

fn infer_json(input: impl BufRead, name: &str, sample: &Sample) -> Result<Vec<Column>> {
    let mut inf = SchemaInference::new(Vec::new(), sample.date_format.clone())
        .with_exact_decimals(sample.exact_decimals);
    let mut seen = 0;
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| read_error(name, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(Members(obj)) = serde_json::from_str(&line) else {
            if seen == 0 {
                return Err(Error::invalid_at(
                    name,
                    Some(i as u64 + 1),
                    "not a JSON object: JSON lines need one object per line",
                ));
            }
            continue;
        };
        for (k, v) in obj {
            inf.observe_json_named(&k, Some(v));
        }
        seen += 1;
        if seen >= sample.rows {
            break;
        }
    }
    let columns = inf.finish();
    if columns.is_empty() {
        return Err(Error::invalid_at(
            name,
            None,
            "no JSON object to take columns from",
        ));
    }
    Ok(columns)
}

/// Infers a table's columns from a CSV header and the records of `reader` the sample takes.
pub(crate) fn infer_csv<R: Read>(
    reader: &mut RecordReader<R>,
    header: Vec<String>,
    sample: &Sample,
) -> Result<Vec<Column>> {
    let (format, n) = (&sample.format, sample.rows);
    let mut inf = SchemaInference::new(header.clone(), sample.date_format.clone())
        .with_exact_decimals(sample.exact_decimals);
    let mut rec = Vec::new();
    let mut sp = FieldSplitter::default();
    let mut rows = 0;
    while rows < n {
        rec.clear();
        let Some(_) = reader.next_into(&mut rec)? else {
            break;
        };
        sp.split(&rec, format.delimiter, format.quote);
        if sp.len() != header.len() {
            continue;
        }
        rows += 1;
        for i in 0..sp.len() {
            let f = sp.field(&rec, i);
            if !format.is_null(f)
                && let Ok(v) = std::str::from_utf8(f)
            {
                inf.observe(i, v);
            }
        }
    }
    Ok(inf.finish())
}
