//! A new table's columns from a sample of its first source: Parquet's own schema, or inferred
//! from CSV records or JSON objects.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use crate::error::{Error, Result};
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
    let mut names: Vec<String> = Vec::new();
    let mut values: Vec<(usize, String)> = Vec::new();
    let mut seen = 0;
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|e| read_error(name, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(OrderedObject(obj)) = serde_json::from_str(&line) else {
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
            let idx = match names.iter().position(|n| *n == k) {
                Some(p) => p,
                None => {
                    names.push(k);
                    names.len() - 1
                }
            };
            if let Some(text) = crate::source::json_member_text(&v) {
                values.push((idx, text.into_owned()));
            }
        }
        seen += 1;
        if seen >= sample.rows {
            break;
        }
    }
    if names.is_empty() {
        return Err(Error::invalid_at(
            name,
            None,
            "no JSON object to take columns from",
        ));
    }
    let mut inf = SchemaInference::new(names, sample.date_format.clone())
        .with_exact_decimals(sample.exact_decimals);
    for (i, v) in &values {
        inf.observe(*i, v);
    }
    Ok(inf.finish())
}

/// A JSON object's members in the order they are written (`serde_json::Map` sorts them).
struct OrderedObject(Vec<(String, Box<serde_json::value::RawValue>)>);

impl<'de> serde::Deserialize<'de> for OrderedObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<OrderedObject, A::Error> {
                let mut members = Vec::new();
                while let Some(kv) = map.next_entry::<String, Box<serde_json::value::RawValue>>()? {
                    members.push(kv);
                }
                Ok(OrderedObject(members))
            }
        }
        d.deserialize_map(V)
    }
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
