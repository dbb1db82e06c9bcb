//! A new table's columns from its first source: Parquet's own, or inferred from CSV or JSON
//! lines.

use super::parquet_source::{parquet_schema, read_error};
use super::*;

/// Creates the table from the first source if it does not exist; returns its definition.
pub async fn ensure_table_for(
    catalog: &dyn Catalog,
    opts: &ProducerOptions,
    first: &Source,
    spool: &std::path::Path,
) -> Result<TableDef> {
    match catalog.get_table(&opts.database, &opts.table).await {
        Err(Error::NotFound { .. }) => {}
        other => return other,
    }
    let columns = match &opts.columns {
        Some(c) => Ok(c.clone()),
        None => {
            let rt = tokio::runtime::Handle::current();
            let (first, o, spool) = (first.clone(), opts.clone(), spool.to_path_buf());
            tokio::task::spawn_blocking(move || infer_columns(&rt, &first, &o, &spool)).await?
        }
    };
    ensure_table(catalog, opts, || columns).await
}

/// The columns of a new table from its first source: Parquet's own schema, or inferred from a
/// sample of CSV records or JSON objects.
fn infer_columns(
    rt: &tokio::runtime::Handle,
    src: &Source,
    opts: &ProducerOptions,
    spool: &std::path::Path,
) -> Result<Vec<Column>> {
    match src.format {
        Format::Csv => {
            let input = src.open(rt, Arc::default())?;
            let (mut reader, header) = read_header(input, &src.name, &opts.format)?;
            infer_csv(
                &mut reader,
                header,
                &opts.format,
                opts.sample_rows,
                opts.date_format.as_deref(),
            )
        }
        Format::JsonLines => {
            let input = BufReader::new(src.open(rt, Arc::default())?);
            infer_json(input, &src.name, opts)
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

fn infer_json(input: impl BufRead, name: &str, opts: &ProducerOptions) -> Result<Vec<Column>> {
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
            match v {
                serde_json::Value::Null => {}
                serde_json::Value::String(s) => values.push((idx, s)),
                other => values.push((idx, other.to_string())),
            }
        }
        seen += 1;
        if seen >= opts.sample_rows {
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
    let mut inf = SchemaInference::new(names, opts.date_format.clone());
    for (i, v) in &values {
        inf.observe(*i, v);
    }
    Ok(inf.finish())
}

/// A JSON object's members in the order they are written (`serde_json::Map` sorts them).
struct OrderedObject(Vec<(String, serde_json::Value)>);

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
                while let Some(kv) = map.next_entry::<String, serde_json::Value>()? {
                    members.push(kv);
                }
                Ok(OrderedObject(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// The type a Parquet column lands as: integers as int64, floats and decimals as float64,
/// dates, timestamps (with a zone or without), booleans; anything else as its text.
pub(super) fn column_type_of(t: &arrow::datatypes::DataType) -> ColumnType {
    use arrow::datatypes::DataType as D;
    match t {
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
            ColumnType::Int64
        }
        D::Float16 | D::Float32 | D::Float64 | D::Decimal32(..) | D::Decimal64(..) => {
            ColumnType::Float64
        }
        D::Decimal128(..) | D::Decimal256(..) => ColumnType::Float64,
        D::Boolean => ColumnType::Boolean,
        D::Date32 | D::Date64 => ColumnType::Date,
        D::Timestamp(_, None) => ColumnType::Timestamp,
        D::Timestamp(_, Some(_)) => ColumnType::TimestampTz,
        _ => ColumnType::String,
    }
}
