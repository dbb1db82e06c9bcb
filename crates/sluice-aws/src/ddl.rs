//! Athena DDL for users who manage tables themselves.

use std::fmt::Write as _;

use sluice_core::catalog::{PARAM_PARTITION_BY, TableDef};
use sluice_core::partition::DEFAULT_PARTITION;
use sluice_core::{Error, Result};

fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Lowest year a year projection covers.
const FIRST_YEAR: i32 = 1970;

/// `CREATE EXTERNAL TABLE` for `t`, as sluice registers it in Glue. With `projection`, partition
/// projection properties let Athena compute partitions instead of listing them: `year`,
/// `month` and `day` keys as integer ranges (years 1970 to `current_year + 1`), other keys as
/// `injected` (queries must then filter on them). Rows whose partition value was missing
/// (`__HIVE_DEFAULT_PARTITION__`) are not reachable through a projection.
pub fn create_table(t: &TableDef, projection: bool, current_year: i32) -> Result<String> {
    if !t.location.starts_with("s3://") {
        return Err(Error::Config(format!(
            "table {} is at {}: Athena reads tables on S3 only (write it with --lake s3://…)",
            t.name, t.location
        )));
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "CREATE EXTERNAL TABLE IF NOT EXISTS {}.{} (",
        ident(&t.database),
        ident(&t.name)
    );
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("  {} {}", ident(&c.name), c.ty.hive_type()))
        .collect();
    let _ = writeln!(s, "{}\n)", cols.join(",\n"));
    if !t.partition_keys.is_empty() {
        let keys: Vec<String> = t
            .partition_keys
            .iter()
            .map(|c| format!("{} {}", ident(&c.name), c.ty.hive_type()))
            .collect();
        let _ = writeln!(s, "PARTITIONED BY ({})", keys.join(", "));
    }
    let _ = writeln!(s, "STORED AS PARQUET");
    let location = if t.location.ends_with('/') {
        t.location.clone()
    } else {
        format!("{}/", t.location)
    };
    let _ = writeln!(s, "LOCATION {}", literal(&location));
    let mut props: Vec<(String, String)> = vec![
        ("classification".into(), "parquet".into()),
        ("parquet.compression".into(), "ZSTD".into()),
    ];
    if let Some(spec) = t.parameters.get(PARAM_PARTITION_BY) {
        props.push((PARAM_PARTITION_BY.into(), spec.clone()));
    }
    if projection && !t.partition_keys.is_empty() {
        props.push(("projection.enabled".into(), "true".into()));
        let mut template = location.clone();
        for k in &t.partition_keys {
            let p = format!("projection.{}", k.name);
            match k.name.as_str() {
                "year" => {
                    props.push((format!("{p}.type"), "integer".into()));
                    props.push((
                        format!("{p}.range"),
                        format!("{FIRST_YEAR},{}", current_year + 1),
                    ));
                }
                "month" => {
                    props.push((format!("{p}.type"), "integer".into()));
                    props.push((format!("{p}.range"), "1,12".into()));
                }
                "day" => {
                    props.push((format!("{p}.type"), "integer".into()));
                    props.push((format!("{p}.range"), "1,31".into()));
                }
                _ => props.push((format!("{p}.type"), "injected".into())),
            }
            let _ = write!(template, "{}=${{{}}}/", k.name, k.name);
        }
        props.push(("storage.location.template".into(), template));
    }
    let props: Vec<String> = props
        .iter()
        .map(|(k, v)| format!("  {}={}", literal(k), literal(v)))
        .collect();
    let _ = writeln!(s, "TBLPROPERTIES (\n{}\n);", props.join(",\n"));
    if projection && !t.partition_keys.is_empty() {
        let _ = writeln!(
            s,
            "-- Partition projection does not reach rows whose partition value was missing ({DEFAULT_PARTITION})."
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_core::schema::{Column, ColumnType};

    use super::*;

    fn table(keys: Vec<Column>) -> TableDef {
        TableDef {
            database: "analytics".into(),
            name: "trips".into(),
            location: "s3://lake/raw/trips/".into(),
            columns: vec![
                Column::new("id", ColumnType::Int64),
                Column::new("pickup", ColumnType::TimestampTz),
                Column::new("it's", ColumnType::String),
            ],
            partition_keys: keys,
            format: "parquet".into(),
            parameters: BTreeMap::from([(PARAM_PARTITION_BY.into(), "year(pickup)".into())]),
            version: 1,
        }
    }

    #[test]
    fn ddl_without_projection() {
        let d = create_table(
            &table(vec![Column::new("year", ColumnType::Int64)]),
            false,
            2026,
        )
        .unwrap();
        assert_eq!(
            d,
            "CREATE EXTERNAL TABLE IF NOT EXISTS `analytics`.`trips` (\n  `id` bigint,\n  `pickup` timestamp,\n  `it's` string\n)\nPARTITIONED BY (`year` bigint)\nSTORED AS PARQUET\nLOCATION 's3://lake/raw/trips/'\nTBLPROPERTIES (\n  'classification'='parquet',\n  'parquet.compression'='ZSTD',\n  'sluice.partition_by'='year(pickup)'\n);\n"
        );
    }

    #[test]
    fn ddl_with_projection() {
        let d = create_table(
            &table(vec![
                Column::new("year", ColumnType::Int64),
                Column::new("month", ColumnType::Int64),
            ]),
            true,
            2026,
        )
        .unwrap();
        assert!(d.contains("'projection.enabled'='true'"), "{d}");
        assert!(d.contains("'projection.year.range'='1970,2027'"), "{d}");
        assert!(d.contains("'projection.month.range'='1,12'"), "{d}");
        assert!(
            d.contains(
                "'storage.location.template'='s3://lake/raw/trips/year=${year}/month=${month}/'"
            ),
            "{d}"
        );
        let d = create_table(
            &table(vec![Column::new("city", ColumnType::String)]),
            true,
            2026,
        )
        .unwrap();
        assert!(d.contains("'projection.city.type'='injected'"), "{d}");
    }

    #[test]
    fn ddl_refuses_local_tables() {
        let mut t = table(vec![]);
        t.location = "file:///tmp/lake/trips/".into();
        assert!(create_table(&t, false, 2026).is_err());
    }
}
