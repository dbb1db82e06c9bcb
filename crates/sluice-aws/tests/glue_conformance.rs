//! The Glue backend runs the shared catalog conformance suite over the wire.

mod common;

use sluice_aws::glue::GlueCatalog;
use sluice_core::catalog::Catalog;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glue_catalog_conformance() {
    let aws = common::aws().await;
    let ns = common::unique("c").replace('-', "_");
    sluice_testkit::catalog::run_all(&format!("{ns}_"), || {
        let aws = aws.clone();
        async move { Box::new(GlueCatalog::new(&aws)) as Box<dyn Catalog> }
    })
    .await;
}

/// What Athena (engine v3) needs to read the table natively as a Delta Lake table: no crawler,
/// no MSCK REPAIR, no partitions registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glue_table_is_a_delta_table_for_athena() {
    use sluice_core::catalog::CatalogExt;
    let aws = common::aws().await;
    let c = GlueCatalog::new(&aws);
    let db = common::unique("shape").replace('-', "_");
    c.ensure_database(&db).await.unwrap();
    c.ensure_database(&db).await.expect("idempotent");
    let mut t = sluice_testkit::catalog::sample_table(&db, "events");
    t.location = "s3://lake/raw/events/".into();
    {
        use sluice_core::schema::{Column, ColumnType};
        t.columns.extend([
            Column::new("at", ColumnType::TimestampTz),
            Column::new("tiny", ColumnType::Int8),
            Column::new("short", ColumnType::Int16),
            Column::new("int", ColumnType::Int32),
            Column::new("ratio", ColumnType::Float32),
            Column::new("price", ColumnType::decimal(12, 2).unwrap()),
            Column::new("payload", ColumnType::Binary),
            Column::new(
                "user",
                ColumnType::parse("struct<id:bigint,`Full Name`:string,tags:array<string>>")
                    .unwrap(),
            ),
            Column::new(
                "attrs",
                ColumnType::parse("map<string,decimal(12,2)>").unwrap(),
            ),
            Column::new("tags", ColumnType::parse("array<string>").unwrap()),
        ]);
    }
    c.create_table(&t).await.unwrap();
    let raw = aws
        .glue()
        .get_table()
        .database_name(&db)
        .name("events")
        .send()
        .await
        .unwrap();
    let raw = raw.table().unwrap();
    assert_eq!(raw.table_type(), Some("EXTERNAL_TABLE"));
    let params = raw.parameters().unwrap();
    let param = |k: &str| params.get(k).map(String::as_str);
    assert_eq!(param("table_type"), Some("DELTA"));
    assert_eq!(param("spark.sql.sources.provider"), Some("delta"));
    assert_eq!(param("EXTERNAL"), Some("TRUE"));
    let sd = raw.storage_descriptor().unwrap();
    assert_eq!(sd.location(), Some("s3://lake/raw/events/"));
    let serde = sd.serde_info().unwrap();
    assert_eq!(
        serde
            .parameters()
            .and_then(|p| p.get("path"))
            .map(String::as_str),
        Some("s3://lake/raw/events/")
    );
    let types: Vec<(&str, Option<&str>)> = sd
        .columns()
        .iter()
        .map(|c| (c.name(), c.r#type()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("id", Some("bigint")),
            ("ts", Some("date")),
            ("at", Some("timestamp")),
            ("tiny", Some("tinyint")),
            ("short", Some("smallint")),
            ("int", Some("int")),
            ("ratio", Some("float")),
            ("price", Some("decimal(12,2)")),
            ("payload", Some("binary")),
            (
                "user",
                Some("struct<id:bigint,`Full Name`:string,tags:array<string>>")
            ),
            ("attrs", Some("map<string,decimal(12,2)>")),
            ("tags", Some("array<string>")),
            ("year", Some("bigint"))
        ]
    );
    // Athena reads the partitions from the Delta log: none are declared in Glue.
    assert!(raw.partition_keys().is_empty());
    // sluice's finer types and its partition keys survive the round trip.
    let back = c.get_table(&db, "events").await.unwrap();
    assert_eq!(back.columns, t.columns);
    assert_eq!(back.partition_keys, t.partition_keys);
}
