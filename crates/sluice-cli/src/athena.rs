//! `sluice query --engine athena`: the same output formats as the embedded engine.

use std::sync::Arc;

use anyhow::{Result, bail};
use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use sluice_aws::athena::{AthenaOptions, AthenaResult};

use crate::args::QueryArgs;
use crate::{Ctx, output};

/// The Arrow type a column of Athena type `ty` is printed as; other types stay text, as
/// Athena returns them.
fn arrow_type(ty: &str) -> DataType {
    match ty.to_ascii_lowercase().as_str() {
        "tinyint" | "smallint" | "integer" | "int" | "bigint" => DataType::Int64,
        "double" | "float" | "real" => DataType::Float64,
        "boolean" => DataType::Boolean,
        _ => DataType::Utf8,
    }
}

/// Athena's text results as one typed batch. A value that does not parse as its column's
/// type is an error rather than a silent NULL.
pub fn to_batch(r: &AthenaResult) -> Result<RecordBatch> {
    let fields: Vec<Field> = r
        .columns
        .iter()
        .map(|(n, t)| Field::new(n, arrow_type(t), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, (name, ty)) in r.columns.iter().enumerate() {
        let vals = r.rows.iter().map(|row| row.get(i).cloned().flatten());
        let bad = |v: &str| anyhow::anyhow!("Athena column {name} ({ty}): cannot read {v:?}");
        let a: ArrayRef = match arrow_type(ty) {
            DataType::Int64 => Arc::new(Int64Array::from(
                vals.map(|v| v.map(|v| v.parse::<i64>().map_err(|_| bad(&v))).transpose())
                    .collect::<Result<Vec<_>>>()?,
            )),
            DataType::Float64 => Arc::new(Float64Array::from(
                vals.map(|v| {
                    v.map(|v| match v.as_str() {
                        "NaN" => Ok(f64::NAN),
                        "Infinity" => Ok(f64::INFINITY),
                        "-Infinity" => Ok(f64::NEG_INFINITY),
                        s => s.parse::<f64>().map_err(|_| bad(s)),
                    })
                    .transpose()
                })
                .collect::<Result<Vec<_>>>()?,
            )),
            DataType::Boolean => Arc::new(BooleanArray::from(
                vals.map(|v| {
                    v.map(|v| match v.as_str() {
                        "true" => Ok(true),
                        "false" => Ok(false),
                        s => Err(bad(s)),
                    })
                    .transpose()
                })
                .collect::<Result<Vec<_>>>()?,
            )),
            _ => Arc::new(StringArray::from(vals.collect::<Vec<_>>())),
        };
        arrays.push(a);
    }
    Ok(RecordBatch::try_new(schema, arrays)?)
}

pub async fn query(ctx: &Ctx, a: &QueryArgs) -> Result<()> {
    let Some(db) = ctx.open.glue_database() else {
        bail!("--engine athena queries the Glue catalog: add --catalog glue://DATABASE");
    };
    let settings = &ctx.open.aws_settings.athena;
    let mut opts = AthenaOptions::new(db);
    if let Some(w) = a.workgroup.clone().or(settings.workgroup.clone()) {
        opts.workgroup = w;
    }
    opts.output_location = a.results.clone().or(settings.output_location.clone());
    let aws = ctx.open.aws().await;
    let r = sluice_aws::athena::query(aws, &a.sql, &opts).await?;
    eprintln!(
        "athena: query {} in workgroup {}: {} row(s), {} scanned, {} ms engine time, {} poll(s), {} page(s)",
        r.query_execution_id,
        opts.workgroup,
        r.rows.len(),
        r.data_scanned_bytes
            .map(|b| format!("{:.1} MB", b as f64 / 1e6))
            .unwrap_or_else(|| "? MB".into()),
        r.engine_millis
            .map(|m| m.to_string())
            .unwrap_or_else(|| "?".into()),
        r.polls,
        r.pages
    );
    let batch = to_batch(&r)?;
    output::write(a.format, batch.schema(), &[batch], a.output.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    #[test]
    fn athena_text_becomes_typed_columns() {
        let r = AthenaResult {
            columns: vec![
                ("year".into(), "bigint".into()),
                ("avg".into(), "double".into()),
                ("name".into(), "varchar".into()),
                ("ok".into(), "boolean".into()),
            ],
            rows: vec![
                vec![
                    Some("2024".into()),
                    Some("1.5".into()),
                    Some("a".into()),
                    Some("true".into()),
                ],
                vec![None, Some("NaN".into()), None, Some("false".into())],
            ],
            ..Default::default()
        };
        let b = to_batch(&r).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema().field(0).data_type(), &DataType::Int64);
        let years = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(years.value(0), 2024);
        assert!(years.is_null(1));
        let mut bad = r.clone();
        bad.rows[0][0] = Some("x".into());
        assert!(to_batch(&bad).unwrap_err().to_string().contains("year"));
    }
}
