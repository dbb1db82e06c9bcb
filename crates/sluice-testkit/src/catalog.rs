//! The catalog conformance suite. Each function takes a fresh, empty catalog.

use std::collections::BTreeMap;

use sluice_core::Error;
use sluice_core::catalog::{Catalog, PARAM_LEDGER_VERSION, PartitionDef, TableDef};
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

fn partition(year: &str, rows: u64, version: u64) -> PartitionDef {
    PartitionDef {
        values: vec![year.to_string()],
        location: format!("file:///tmp/lake/t/year={year}/"),
        parameters: BTreeMap::from([
            ("numRows".to_string(), rows.to_string()),
            (PARAM_LEDGER_VERSION.to_string(), version.to_string()),
        ]),
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

/// Partitions: upsert creates and replaces, never rolls statistics back to an older ledger
/// version, and lists in order.
pub async fn partitions(c: &dyn Catalog, ns: &str) {
    let db3 = &format!("{ns}db3");
    c.create_database(db3).await.expect("create database");
    assert!(matches!(
        c.upsert_partitions(db3, "t", &[partition("2020", 1, 1)])
            .await,
        Err(Error::NotFound { .. })
    ));
    c.create_table(&sample_table(db3, "t"))
        .await
        .expect("create");
    c.upsert_partitions(
        db3,
        "t",
        &[partition("2021", 10, 1), partition("2020", 5, 1)],
    )
    .await
    .expect("upsert");
    c.upsert_partitions(db3, "t", &[partition("2021", 30, 3)])
        .await
        .expect("newer");
    c.upsert_partitions(db3, "t", &[partition("2021", 20, 2)])
        .await
        .expect("older is accepted and ignored");
    let parts = c.list_partitions(db3, "t").await.expect("list");
    let vals: Vec<&str> = parts.iter().map(|p| p.values[0].as_str()).collect();
    assert_eq!(vals, vec!["2020", "2021"]);
    assert_eq!(
        parts[1].parameters.get("numRows").map(String::as_str),
        Some("30")
    );
    // Idempotent.
    c.upsert_partitions(db3, "t", &[partition("2021", 30, 3)])
        .await
        .expect("again");
    assert_eq!(c.list_partitions(db3, "t").await.expect("list").len(), 2);
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
    partitions(&*make().await, ns).await;
}
