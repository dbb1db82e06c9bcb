//! Schema evolution in the core: Delta `metaData` versions racing with appends and with each
//! other, and the pipeline's policies (evolve, freeze → dead letter, discard-columns).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use sluice_core::delta::log::{CommitDraft, DataFile, DeltaField, DeltaSchema, FileKind, Ledger};
use sluice_core::home::{EmbeddedBackends, Home};
use sluice_core::lake::Lake;
use sluice_core::pipeline::consumer::{Consumer, ConsumerOptions, ConsumerStats};
use sluice_core::pipeline::producer::{Producer, ProducerOptions};
use sluice_core::pipeline::setup::TableSettings;
use sluice_core::queue::Queue;
use sluice_core::schema::partition::PartitionSpec;
use sluice_core::table::policy::{SchemaPolicy, set_policy};

fn field(name: &str, ty: &'static str) -> DeltaField {
    DeltaField {
        name: name.into(),
        ty: ty.to_string(),
        nullable: true,
        source_name: None,
    }
}

fn nested(name: &str, ty: &str) -> DeltaField {
    DeltaField {
        name: name.into(),
        ty: sluice_core::delta::log::DeltaField::of_column(&sluice_core::schema::Column::new(
            name,
            sluice_core::schema::ColumnType::parse(ty).unwrap(),
        ))
        .ty,
        nullable: true,
        source_name: None,
    }
}

/// Two writers that add different fields to one struct, each from the version before the
/// other's: both fields land, in the order of the commits, and a writer's appends for the
/// narrower struct still commit after the change.
#[tokio::test]
async fn struct_fields_added_by_two_writers_are_merged() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path()).unwrap();
    let mut a = Ledger::open(&lake, "t", "a").await.unwrap();
    a.create_if_missing(&DeltaSchema {
        fields: vec![field("id", "long"), nested("user", "struct<id:int64>")],
        partition_columns: vec![],
        configuration: Default::default(),
    })
    .await
    .unwrap();
    let mut b = Ledger::open(&lake, "t", "b").await.unwrap();
    let mut c = Ledger::open(&lake, "t", "c").await.unwrap();
    assert_eq!(
        b.add_columns(&[nested("user", "struct<id:int64,a:string>")])
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        c.add_columns(&[nested("user", "struct<id:int64,b:array<date>>")])
            .await
            .unwrap(),
        Some(2)
    );
    // The struct's fields in the log (Delta's JSON).
    let read = |l: &Ledger| {
        let ty = l
            .state()
            .schema_fields()
            .into_iter()
            .find(|(n, _)| n == "user")
            .unwrap()
            .1;
        let v: serde_json::Value = serde_json::from_str(&ty).unwrap();
        v["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(read(&c), ["id", "a", "b"]);
    // Nothing new: no version.
    assert_eq!(
        b.add_columns(&[nested("user", "struct<id:int64,b:array<date>>")])
            .await
            .unwrap(),
        None
    );
    // a wrote for struct<id>: its files stay valid, its append commits.
    let commit = a
        .commit(CommitDraft {
            add: vec![DataFile {
                path: "t/part-1.parquet".into(),
                partition: String::new(),
                rows: 3,
                bytes: 100,
                kind: FileKind::Data,
                stats: None,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(commit.version, 3);
}

fn names(l: &Ledger) -> Vec<String> {
    l.state()
        .schema_fields()
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

#[tokio::test]
async fn schema_changes_race_with_appends_and_each_other_without_losing_either() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path()).unwrap();
    let mut a = Ledger::open(&lake, "t", "a").await.unwrap();
    a.create_if_missing(&DeltaSchema {
        fields: vec![field("id", "long"), field("year", "long")],
        partition_columns: vec!["year".into()],
        configuration: Default::default(),
    })
    .await
    .unwrap();
    let mut b = Ledger::open(&lake, "t", "b").await.unwrap();
    let mut c = Ledger::open(&lake, "t", "c").await.unwrap();
    // b adds a column; a, still at version 0, appends: no conflict, its commit lands after.
    assert_eq!(
        b.add_columns(&[field("colour", "string")]).await.unwrap(),
        Some(1)
    );
    let commit = a
        .commit(CommitDraft {
            add: vec![DataFile {
                path: "t/year=2024/part-1.parquet".into(),
                partition: "year=2024".into(),
                rows: 3,
                bytes: 100,
                kind: FileKind::Data,
                stats: None,
            }],
            chunks: vec![sluice_core::delta::log::ChunkPart {
                chunk: "c1".into(),
                partition: "year=2024".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(commit.version, 2);
    assert_eq!(names(&a), ["id", "colour", "year"]);
    // c, at version 0, adds another column and one b added with another type: its change is
    // made against the newest schema, the existing column keeps its type.
    assert_eq!(
        c.add_columns(&[field("colour", "long"), field("ts", "timestamp_ntz")])
            .await
            .unwrap(),
        Some(3)
    );
    assert_eq!(names(&c), ["id", "colour", "ts", "year"]);
    let types: BTreeMap<String, String> = c.state().schema_fields().into_iter().collect();
    assert_eq!(types["colour"], "string");
    assert_eq!(types["ts"], "timestamp_ntz");
    // A timestamp without zone needs the table feature: the protocol says so.
    let p = c.state().protocol.clone().unwrap();
    assert_eq!(p.min_reader_version, 3);
    assert_eq!(p.reader_features, Some(vec!["timestampNtz".to_string()]));
    // Nothing new: no version.
    assert_eq!(
        b.add_columns(&[field("ts", "timestamp_ntz")])
            .await
            .unwrap(),
        None
    );
    // Everything a reader starting from scratch sees: the files, the chunk, the schema, the
    // table's identity and partitioning kept.
    let fresh = Ledger::open(&lake, "t", "d").await.unwrap();
    assert_eq!(fresh.state().version, 3);
    assert!(fresh.state().has_part("c1", "year=2024"));
    assert_eq!(fresh.state().files.len(), 1);
    assert_eq!(fresh.state().partition_columns, ["year"]);
    assert_eq!(
        fresh.state().metadata.as_ref().unwrap().id,
        a.state().metadata.as_ref().unwrap().id
    );
}

async fn produce(b: &EmbeddedBackends, file: &Path) -> sluice_core::Result<()> {
    let opts = ProducerOptions::new(TableSettings::new(
        "t",
        PartitionSpec::parse("year(d)").unwrap(),
        b.table_location("t"),
    ));
    Producer::new(b.queue.clone(), b.catalog.clone(), opts)?
        .produce(&[file], None)
        .await
        .map(|_| ())
}

async fn consume(home: &Home, b: &EmbeddedBackends, log: &Path) -> ConsumerStats {
    let spool = home.claim_spool(&sluice_core::writer_id()).unwrap();
    let mut o = ConsumerOptions::new("t", spool.path().to_path_buf());
    o.once = true;
    o.visibility_timeout = Some(Duration::from_secs(1));
    o.dead_letter_log = Some(log.to_path_buf());
    let c = Consumer::new(o, b.queue.clone(), b.catalog.clone(), b.lake.clone())
        .await
        .unwrap();
    c.run(std::future::pending()).await.unwrap()
}

/// (id, colour) of every committed row, read from the Parquet files (NULL: files written
/// before the column, or rows without it).
async fn rows(b: &EmbeddedBackends) -> Vec<(i64, Option<String>)> {
    let ledger = Ledger::open(&b.lake, "t", "test").await.unwrap();
    let root = b.lake.url.to_file_path().unwrap();
    let mut out = Vec::new();
    for f in ledger.state().files.values() {
        let file = std::fs::File::open(root.join(&f.path)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch
                .column_by_name("id")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .clone();
            let colour = batch
                .column_by_name("colour")
                .map(|c| c.as_string::<i32>().clone());
            for i in 0..batch.num_rows() {
                let c = colour
                    .as_ref()
                    .filter(|c| c.is_valid(i))
                    .map(|c| c.value(i).to_string());
                out.push((ids.value(i), c));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_evolves_freezes_into_the_dead_letter_queue_and_discards() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path().join("home"));
    let settings = sluice_core::queue::QueueSettings {
        max_receive_count: 2,
        visibility_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let b = home.open_with("t", None, &settings).await.unwrap();
    let log = dir.path().join("failures.jsonl");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    produce(&b, &write("a.csv", "id,d\n1,2020-01-01\n2,2021-01-01\n"))
        .await
        .unwrap();
    consume(&home, &b, &log).await;
    // evolve (the default): reordered, one column more.
    produce(
        &b,
        &write("b.csv", "colour,d,id\nred,2021-05-05,3\n,2022-01-01,4\n"),
    )
    .await
    .unwrap();
    let c = consume(&home, &b, &log).await;
    assert_eq!(c.write.rows_written, 2, "{c:?}");
    assert_eq!(
        rows(&b).await,
        [
            (1, None),
            (2, None),
            (3, Some("red".to_string())),
            (4, None)
        ]
    );
    let def = b.catalog.get_table("sluice", "t").await.unwrap();
    assert!(def.columns.iter().any(|c| c.name == "colour"), "{def:?}");
    let changes = sluice_core::table::policy::history(&def);
    assert_eq!(changes.len(), 1);
    assert!(changes[0].source.ends_with("b.csv"), "{changes:?}");

    // A new column named like the partition key cannot be added: dead-lettered with the reason.
    produce(&b, &write("k.csv", "id,d,year\n9,2024-01-01,1999\n"))
        .await
        .unwrap();
    let c = consume(&home, &b, &log).await;
    assert_eq!(c.write.rows_written, 0, "{c:?}");
    let failures = sluice_core::queue::failures::read_failures(&log);
    assert!(
        failures.values().any(|f| f
            .reason
            .contains("column \"year\" has the name of table t's partition key")),
        "{failures:?}"
    );

    // freeze: the message with a new column is dead-lettered with the reason.
    set_policy(&*b.catalog, "sluice", "t", SchemaPolicy::Freeze)
        .await
        .unwrap();
    produce(&b, &write("c.csv", "id,d,size\n5,2022-02-02,XL\n"))
        .await
        .unwrap();
    let c = consume(&home, &b, &log).await;
    assert_eq!(c.write.rows_written, 0, "{c:?}");
    let dlq = b.queues.queue("t_dlq").await.unwrap();
    assert_eq!(dlq.stats().await.unwrap().visible, 2);
    let failures = sluice_core::queue::failures::read_failures(&log);
    assert!(
        failures.values().any(|f| f
            .reason
            .contains("columns not in table t (its schema policy is freeze): size")),
        "{failures:?}"
    );
    let def = b.catalog.get_table("sluice", "t").await.unwrap();
    assert!(!def.columns.iter().any(|c| c.name == "size"));

    // discard-columns: the row lands without it.
    set_policy(&*b.catalog, "sluice", "t", SchemaPolicy::DiscardColumns)
        .await
        .unwrap();
    produce(&b, &write("d.csv", "size,id,d\nS,6,2023-03-03\n"))
        .await
        .unwrap();
    let c = consume(&home, &b, &log).await;
    assert_eq!(c.write.rows_written, 1, "{c:?}");
    assert_eq!(rows(&b).await.len(), 5);
    let def = b.catalog.get_table("sluice", "t").await.unwrap();
    assert!(!def.columns.iter().any(|c| c.name == "size"));
}
