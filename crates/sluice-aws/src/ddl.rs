//! Athena DDL for users who manage tables themselves.
//!
//! sluice's tables are Delta Lake tables: Athena (engine v3) reads them natively, taking the
//! schema, the partitions and the committed files from the table's `_delta_log`. The statement
//! names only the location; no columns, partitions or projections are declared, and nothing
//! needs registering as the table grows.

use std::fmt::Write as _;

use sluice_core::catalog::TableDef;
use sluice_core::{Error, Result};

fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `CREATE EXTERNAL TABLE` for `t` as a Delta Lake table, as sluice registers it in Glue.
pub fn create_table(t: &TableDef) -> Result<String> {
    if !t.location.starts_with("s3://") {
        return Err(Error::Config(format!(
            "table {} is at {}: Athena reads tables on S3 only (write it with --lake s3://…)",
            t.name, t.location
        )));
    }
    let location = if t.location.ends_with('/') {
        t.location.clone()
    } else {
        format!("{}/", t.location)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "CREATE EXTERNAL TABLE IF NOT EXISTS {}.{}",
        ident(&t.database),
        ident(&t.name)
    );
    let _ = writeln!(s, "LOCATION {}", literal(&location));
    let _ = writeln!(s, "TBLPROPERTIES ('table_type'='DELTA');");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::schema::{Column, ColumnType};
    use std::collections::BTreeMap;

    fn table(location: &str) -> TableDef {
        TableDef {
            database: "db".into(),
            name: "trips".into(),
            location: location.into(),
            columns: vec![Column::new("id", ColumnType::Int64)],
            partition_keys: vec![Column::new("year", ColumnType::Int64)],
            format: "parquet".into(),
            parameters: BTreeMap::new(),
            version: 0,
        }
    }

    #[test]
    fn ddl_names_the_location_and_delta() {
        let d = create_table(&table("s3://b/lake/trips")).unwrap();
        assert_eq!(
            d,
            "CREATE EXTERNAL TABLE IF NOT EXISTS `db`.`trips`\nLOCATION 's3://b/lake/trips/'\nTBLPROPERTIES ('table_type'='DELTA');\n"
        );
    }

    #[test]
    fn ddl_refuses_local_tables() {
        assert!(create_table(&table("file:///tmp/lake/trips/")).is_err());
    }
}
