//! The catalog conformance suite. Each function takes a fresh, empty catalog.

use std::collections::BTreeMap;

use sluice_core::Error;
use sluice_core::catalog::{Catalog, TableDef};
use sluice_core::schema::{Column, ColumnType};

/// A table definition for the suites.
pub fn sample_table(database: &str, name: &str) -> TableDef {
    TableDef {
        database: database.to_string(),
        name: name.to_string(),
        location: format!("file:///tmp/lake/{name}/"),
        columns: vec![
            Column::new("id", ColumnType::Int64),
            Column::new("ts", ColumnType::Date),
        ],
        partition_keys: vec![Column::new("year", ColumnType::Int64)],
        format: "parquet".to_string(),
        parameters: BTreeMap::from([("sluice.partition_by".to_string(), "year(ts)".to_string())]),
        version: 0,
    }
}

/// Databases and tables: create, get, list, and the error variants.
pub async fn tables(c: &dyn Catalog, ns: &str) {
    let db1 = &format!("{ns}db1");
    assert!(matches!(
        c.create_table(&sample_table(&format!("{ns}nodb"), "t"))
            .await,
        Err(Error::NotFound { .. })
    ));
    c.create_database(db1).await.expect("create database");
    assert!(matches!(
        c.create_database(db1).await,
        Err(Error::AlreadyExists { .. })
    ));
    assert!(
        c.list_databases()
            .await
            .expect("list")
            .contains(&db1.to_string())
    );
    assert!(matches!(
        c.get_table(db1, "t").await,
        Err(Error::NotFound { .. })
    ));
    c.create_table(&sample_table(db1, "zeta"))
        .await
        .expect("create");
    c.create_table(&sample_table(db1, "alpha"))
        .await
        .expect("create");
    assert!(matches!(
        c.create_table(&sample_table(db1, "alpha")).await,
        Err(Error::AlreadyExists { .. })
    ));
    let t = c.get_table(db1, "alpha").await.expect("get");
    assert_eq!(t.columns, sample_table(db1, "alpha").columns);
    assert_eq!(
        t.partition_keys,
        vec![Column::new("year", ColumnType::Int64)]
    );
    assert_eq!(
        t.parameters.get("sluice.partition_by").map(String::as_str),
        Some("year(ts)")
    );
    let names: Vec<String> = c
        .list_tables(db1)
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["alpha", "zeta"]);
}

/// Every column type sluice has, read back as written (a `float` stays 32-bit, a decimal keeps
/// its precision and scale, nested types their parts).
pub async fn column_types(c: &dyn Catalog, ns: &str) {
    let db = &format!("{ns}db3");
    c.create_database(db).await.expect("create database");
    let mut t = sample_table(db, "every_type");
    t.columns = [
        ColumnType::Boolean,
        ColumnType::Int8,
        ColumnType::Int16,
        ColumnType::Int32,
        ColumnType::Int64,
        ColumnType::Float32,
        ColumnType::Float64,
        ColumnType::decimal(12, 2).expect("a decimal type"),
        ColumnType::decimal(38, 10).expect("a decimal type"),
        ColumnType::Date,
        ColumnType::Timestamp,
        ColumnType::TimestampTz,
        ColumnType::String,
        ColumnType::Binary,
        ColumnType::parse("struct<id:int64,`Unit Price`:decimal(12,2),at:timestamp_tz>")
            .expect("a struct type"),
        ColumnType::parse("array<array<float32>>").expect("a list type"),
        ColumnType::parse("map<string,struct<x:int8>>").expect("a map type"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, ty)| Column::new(format!("c{i}"), ty))
    .chain([Column::new("ts", ColumnType::Date)])
    .collect();
    c.create_table(&t).await.expect("create");
    let back = c.get_table(db, "every_type").await.expect("get");
    assert_eq!(back.columns, t.columns);
}

/// Updates are optimistic: a stale version fails with `Conflict` and changes nothing.
pub async fn update_conflicts(c: &dyn Catalog, ns: &str) {
    let db2 = &format!("{ns}db2");
    c.create_database(db2).await.expect("create database");
    c.create_table(&sample_table(db2, "t"))
        .await
        .expect("create");
    let t = c.get_table(db2, "t").await.expect("get");
    let mut a = t.clone();
    a.columns.push(Column::new("extra", ColumnType::String));
    let a2 = c.update_table(&a).await.expect("first update wins");
    assert!(a2.version > t.version);
    let mut b = t.clone();
    b.columns.push(Column::new("other", ColumnType::Int64));
    assert!(matches!(c.update_table(&b).await, Err(Error::Conflict(_))));
    let now = c.get_table(db2, "t").await.expect("get");
    assert_eq!(now.columns.last().map(|c| c.name.as_str()), Some("extra"));
    assert_eq!(now.version, a2.version);
}

/// Runs every suite on fresh catalogs from `make`; database names start with `ns`, so that
/// suites can share a catalog account (a server other tests use too).
pub async fn run_all<F, Fut>(ns: &str, make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Box<dyn Catalog>>,
{
    tables(&*make().await, ns).await;
    update_conflicts(&*make().await, ns).await;
    column_types(&*make().await, ns).await;
}
