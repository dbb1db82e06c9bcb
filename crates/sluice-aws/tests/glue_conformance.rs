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

/// What Athena needs to read the table as it is, without a crawler or MSCK REPAIR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glue_table_is_readable_by_athena() {
    use sluice_core::catalog::{CatalogExt, PartitionDef};
    let aws = common::aws().await;
    let c = GlueCatalog::new(&aws);
    let db = common::unique("shape").replace('-', "_");
    c.ensure_database(&db).await.unwrap();
    c.ensure_database(&db).await.expect("idempotent");
    let mut t = sluice_testkit::catalog::sample_table(&db, "events");
    t.location = "s3://lake/raw/events/".into();
    t.columns.push(sluice_core::schema::Column::new(
        "at",
        sluice_core::schema::ColumnType::TimestampTz,
    ));
    c.create_table(&t).await.unwrap();
    c.upsert_partitions(
        &db,
        "events",
        &[PartitionDef {
            values: vec!["2024".into()],
            location: "s3://lake/raw/events/year=2024/".into(),
            parameters: [("numRows".to_string(), "7".to_string())].into(),
        }],
    )
    .await
    .unwrap();
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
    assert_eq!(
        params.get("classification").map(String::as_str),
        Some("parquet")
    );
    let sd = raw.storage_descriptor().unwrap();
    assert_eq!(sd.location(), Some("s3://lake/raw/events/"));
    assert_eq!(
        sd.input_format(),
        Some(sluice_aws::glue::PARQUET_INPUT_FORMAT)
    );
    assert_eq!(
        sd.output_format(),
        Some(sluice_aws::glue::PARQUET_OUTPUT_FORMAT)
    );
    assert_eq!(
        sd.serde_info().and_then(|s| s.serialization_library()),
        Some(sluice_aws::glue::PARQUET_SERDE)
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
            ("at", Some("timestamp"))
        ]
    );
    let keys: Vec<&str> = raw.partition_keys().iter().map(|k| k.name()).collect();
    assert_eq!(keys, vec!["year"]);
    // sluice's finer types survive the round trip.
    assert_eq!(c.get_table(&db, "events").await.unwrap().columns, t.columns);
    let parts = aws
        .glue()
        .get_partitions()
        .database_name(&db)
        .table_name("events")
        .send()
        .await
        .unwrap();
    let p = &parts.partitions()[0];
    assert_eq!(p.values(), ["2024"]);
    let psd = p.storage_descriptor().unwrap();
    assert_eq!(psd.location(), Some("s3://lake/raw/events/year=2024/"));
    assert_eq!(
        psd.serde_info().and_then(|s| s.serialization_library()),
        Some(sluice_aws::glue::PARQUET_SERDE)
    );
}
