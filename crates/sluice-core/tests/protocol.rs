//! The protocol features sluice honours when it writes, seen in the log it writes: row ids for
//! row tracking, in-commit timestamps, a winner's incompatible schema change refused, and the
//! exactly-once records' retention.

use sluice_core::Error;
use sluice_core::delta::log::{ChunkPart, CommitDraft, DataFile, DeltaSchema, FileKind, Ledger};
use sluice_core::delta::{Action, Protocol};
use sluice_core::lake::Lake;

fn schema() -> DeltaSchema {
    sluice_testkit::fixtures::id_year_schema()
}

fn file(n: u64, rows: u64) -> DataFile {
    DataFile {
        path: format!("t/year=2024/part-{n}.parquet"),
        partition: "year=2024".into(),
        rows,
        bytes: 100,
        kind: FileKind::Data,
        stats: Some(format!(r#"{{"numRecords":{rows}}}"#)),
    }
}

/// The actions of version `v`.
fn version(dir: &std::path::Path, v: u64) -> Vec<Action> {
    std::fs::read_to_string(dir.join(format!("t/_delta_log/{v:020}.json")))
        .unwrap()
        .lines()
        .filter_map(|l| Action::parse_line(l).unwrap())
        .collect()
}

/// Writes version `v` by hand, as another engine would: its actions after a `commitInfo`.
fn foreign_version(dir: &std::path::Path, v: u64, actions: &[Action]) {
    let mut all = vec![Action::CommitInfo(Default::default())];
    all.extend_from_slice(actions);
    std::fs::write(
        dir.join(format!("t/_delta_log/{v:020}.json")),
        sluice_core::delta::actions::render(&all),
    )
    .unwrap();
}

async fn table() -> (tempfile::TempDir, Lake, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path()).unwrap();
    let mut log = Ledger::open(&lake, "t", "test").await.unwrap();
    log.create_if_missing(&schema()).await.unwrap();
    (dir, lake, log)
}

/// A protocol with the writer-only `features`, and a metadata with `config` added.
fn enable(log: &Ledger, features: &[&str], config: &[(&str, &str)]) -> Vec<Action> {
    let mut p: Protocol = log.state().protocol.clone().unwrap();
    for f in features {
        p = p.with_writer_feature(f);
    }
    let mut m = log.state().metadata.clone().unwrap();
    for (k, v) in config {
        m.configuration.insert(k.to_string(), Some(v.to_string()));
    }
    vec![Action::Protocol(p), Action::Metadata(m)]
}

#[tokio::test]
async fn row_tracking_gives_every_added_file_fresh_row_ids() {
    let (dir, lake, mut log) = table().await;
    foreign_version(
        dir.path(),
        1,
        &enable(
            &log,
            &["rowTracking", "domainMetadata"],
            &[("delta.enableRowTracking", "true")],
        ),
    );
    log.refresh().await.unwrap();
    let c = log
        .commit(CommitDraft {
            add: vec![file(1, 3), file(2, 5)],
            ..Default::default()
        })
        .await
        .unwrap();
    let c2 = log
        .commit(CommitDraft {
            add: vec![file(3, 2)],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ids = Vec::new();
    let mut marks = Vec::new();
    for v in [c.version, c2.version] {
        for a in version(dir.path(), v) {
            match a {
                Action::Add(a) => ids.push((
                    a.base_row_id.unwrap(),
                    a.default_row_commit_version.unwrap(),
                )),
                Action::DomainMetadata(d) => {
                    assert_eq!(d.domain, "delta.rowTracking");
                    marks.push(d.configuration);
                }
                _ => {}
            }
        }
    }
    // Rows 0-2, 3-7, then 8-9: ids never reused, the high-water mark their last.
    assert_eq!(ids, [(0, 2), (3, 2), (8, 3)]);
    assert_eq!(
        marks,
        [r#"{"rowIdHighWaterMark":7}"#, r#"{"rowIdHighWaterMark":9}"#]
    );
    // Compaction would have to keep the ids: refused while row tracking is enabled.
    let reopened = Ledger::open(&lake, "t", "test").await.unwrap();
    match reopened.check(sluice_core::delta::Operation::Compact) {
        Err(Error::UnsupportedFeature { feature, .. }) => assert_eq!(feature, "rowTracking"),
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test]
async fn in_commit_timestamps_come_first_and_always_grow() {
    let (dir, _lake, mut log) = table().await;
    // Another engine's clock ran ahead: its commit's timestamp is far in the future.
    let ahead = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let mut actions = enable(
        &log,
        &["inCommitTimestamp"],
        &[("delta.enableInCommitTimestamps", "true")],
    );
    actions.insert(
        0,
        Action::CommitInfo(sluice_core::delta::CommitInfo {
            in_commit_timestamp: Some(ahead),
            ..Default::default()
        }),
    );
    std::fs::write(
        dir.path().join(format!("t/_delta_log/{:020}.json", 1)),
        sluice_core::delta::actions::render(&actions),
    )
    .unwrap();
    log.refresh().await.unwrap();
    let mut last = ahead;
    for n in 0..3 {
        let c = log
            .commit(CommitDraft {
                add: vec![file(n, 1)],
                ..Default::default()
            })
            .await
            .unwrap();
        let first = version(dir.path(), c.version).into_iter().next().unwrap();
        let Action::CommitInfo(info) = first else {
            panic!("commitInfo is not first: {first:?}")
        };
        let t = info.in_commit_timestamp.expect("inCommitTimestamp");
        assert!(t > last, "{t} after {last}");
        last = t;
    }
}

#[tokio::test]
async fn a_winner_that_changed_what_the_files_were_written_for_is_never_committed_over() {
    let (dir, lake, mut log) = table().await;
    // Another writer added a column (fine) and then retyped `id` (not what sluice wrote).
    let mut m = log.state().metadata.clone().unwrap();
    let mut s = m.schema().unwrap();
    s.fields.insert(
        1,
        sluice_core::delta::log::DeltaField {
            name: "note".into(),
            ty: "string".into(),
            nullable: true,
            source_name: None,
        }
        .to_struct_field(),
    );
    m.schema_string = serde_json::to_string(&s).unwrap();
    foreign_version(dir.path(), 1, &[Action::Metadata(m.clone())]);
    let c = log
        .commit(CommitDraft {
            add: vec![file(1, 1)],
            chunks: vec![ChunkPart {
                chunk: "c1".into(),
                partition: "year=2024".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(c.version, 2);
    s.fields[0].ty = serde_json::json!("string");
    m.schema_string = serde_json::to_string(&s).unwrap();
    foreign_version(dir.path(), 3, &[Action::Metadata(m)]);
    match log
        .commit(CommitDraft {
            add: vec![file(2, 1)],
            ..Default::default()
        })
        .await
    {
        Err(Error::TableChanged {
            version, message, ..
        }) => {
            assert_eq!(version, 3);
            assert!(message.contains("column id changed type"), "{message}");
        }
        other => panic!("committed over it: {other:?}"),
    }
    assert!(
        !dir.path()
            .join(format!("t/_delta_log/{:020}.json", 4))
            .exists()
    );
    // A writer that opens the table now writes for what it is.
    let fresh = Ledger::open(&lake, "t", "test").await.unwrap();
    assert!(fresh.state().has_part("c1", "year=2024"));
}

#[tokio::test]
async fn exactly_once_records_expire_after_the_tables_retention() {
    let (dir, lake, mut log) = table().await;
    // sluice's tables keep the records 30 days.
    let m = log.state().metadata.clone().unwrap();
    assert_eq!(
        m.config(sluice_core::delta::log::TXN_RETENTION_KEY),
        Some(sluice_core::delta::log::TXN_RETENTION)
    );
    log.commit(CommitDraft {
        add: vec![file(1, 1)],
        chunks: vec![ChunkPart {
            chunk: "fresh".into(),
            partition: "year=2024".into(),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    // A record another writer made 31 days ago, and one without a time (kept: nothing says
    // when it was made).
    let old = chrono::Utc::now().timestamp_millis() - 31 * 86_400_000;
    foreign_version(
        dir.path(),
        2,
        &[
            Action::Txn(sluice_core::delta::Txn {
                app_id: "sluice/old/year=2024".into(),
                version: 1,
                last_updated: Some(old),
            }),
            Action::Txn(sluice_core::delta::Txn {
                app_id: "sluice/timeless/year=2024".into(),
                version: 1,
                last_updated: None,
            }),
        ],
    );
    let l = Ledger::open(&lake, "t", "test").await.unwrap();
    assert!(l.state().has_part("fresh", "year=2024"));
    assert!(!l.state().has_part("old", "year=2024"));
    assert!(l.state().has_part("timeless", "year=2024"));
    let keys = l.state().records();
    assert!(keys.contains(&sluice_core::delta::log::part_key("fresh", "year=2024")));
    assert!(!keys.contains(&sluice_core::delta::log::part_key("old", "year=2024")));
    // Another writer lengthens the retention: the old record counts again.
    let mut m = l.state().metadata.clone().unwrap();
    m.configuration.insert(
        sluice_core::delta::log::TXN_RETENTION_KEY.into(),
        Some("interval 60 days".into()),
    );
    foreign_version(dir.path(), 3, &[Action::Metadata(m)]);
    let l = Ledger::open(&lake, "t", "test").await.unwrap();
    assert!(l.state().has_part("old", "year=2024"));
    assert_eq!(
        sluice_core::delta::log::parse_interval_ms("interval 2 weeks"),
        Some(14 * 86_400_000)
    );
}

#[tokio::test]
async fn partitions_of_a_column_mapped_table_come_from_physical_keys() {
    // Column mapping: partition values are keyed by physical names, files sit under random
    // prefixes (the table's log as Databricks writes it, one file added by hand).
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path()).unwrap();
    let log = dir.path().join("t/_delta_log");
    std::fs::create_dir_all(&log).unwrap();
    let schema = serde_json::json!({"type": "struct", "fields": [
        {"name": "value", "type": "long", "nullable": true, "metadata": {"delta.columnMapping.id": 1, "delta.columnMapping.physicalName": "col-e0571b78"}},
        {"name": "category", "type": "string", "nullable": true, "metadata": {"delta.columnMapping.id": 2, "delta.columnMapping.physicalName": "col-6dc68f07"}}]});
    let lines = [
        serde_json::json!({"protocol": {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": ["columnMapping"], "writerFeatures": ["columnMapping"]}}),
        serde_json::json!({"metaData": {"id": "cm", "format": {"provider": "parquet", "options": {}}, "schemaString": schema.to_string(), "partitionColumns": ["category"], "configuration": {"delta.columnMapping.mode": "name", "delta.columnMapping.maxColumnId": "2"}, "createdTime": 1}}),
        serde_json::json!({"add": {"path": "Ab/part-00000-x.snappy.parquet", "partitionValues": {"col-6dc68f07": "books"}, "size": 10, "modificationTime": 1, "dataChange": true, "stats": "{\"numRecords\":4}"}}),
    ];
    std::fs::write(
        log.join(format!("{:020}.json", 0)),
        lines.map(|l| l.to_string()).join("\n"),
    )
    .unwrap();
    let l = Ledger::open(&lake, "t", "test").await.unwrap();
    let parts = l.state().partitions();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].dir, "category=books");
    assert_eq!(parts[0].rows, 4);
    // Appends write physical names, and columns can be added (each its own id and name).
    l.check(sluice_core::delta::Operation::Append).unwrap();
    l.check(sluice_core::delta::Operation::ChangeSchema)
        .unwrap();
    let m = l.state().column_mapping().unwrap().unwrap();
    assert_eq!(m.physical("category"), Some("col-6dc68f07"));
    let mut l = l;
    l.add_columns(&[sluice_core::delta::log::DeltaField {
        name: "note".into(),
        ty: "string".into(),
        nullable: true,
        source_name: None,
    }])
    .await
    .unwrap();
    let m = l.state().column_mapping().unwrap().unwrap();
    let note = m.physical("note").unwrap().to_string();
    assert!(note.starts_with("col-") && note != "col-6dc68f07", "{note}");
    let meta = l.state().metadata.clone().unwrap();
    assert_eq!(meta.config("delta.columnMapping.maxColumnId"), Some("3"));
    let schema = meta.schema().unwrap();
    let f = schema.fields.iter().find(|f| f.name == "note").unwrap();
    assert_eq!(f.metadata["delta.columnMapping.id"], serde_json::json!(3));
}

/// Two writers claiming identity values from the same version (another engine's identity
/// column `id`, start 100, step 10): the one that loses the race claims above the winner's
/// mark, so their blocks never overlap, and the mark covers both.
#[tokio::test]
async fn identity_claims_racing_from_one_version_never_overlap() {
    let (dir, lake, log) = table().await;
    let mut actions = enable(&log, &["identityColumns"], &[]);
    let Action::Metadata(m) = &mut actions[1] else {
        panic!("{actions:?}")
    };
    let mut schema: serde_json::Value = serde_json::from_str(&m.schema_string).unwrap();
    schema["fields"][0]["metadata"] = serde_json::json!({
        "delta.identity.start": 100,
        "delta.identity.step": 10,
        "delta.identity.allowExplicitInsert": false,
    });
    m.schema_string = schema.to_string();
    foreign_version(dir.path(), 1, &actions);
    let mut a = Ledger::open(&lake, "t", "a").await.unwrap();
    let mut b = Ledger::open(&lake, "t", "b").await.unwrap();
    assert_eq!(a.reserve_identity("id", 10).await.unwrap(), 100);
    // b still reads version 1: its claim loses the race, then lands above a's block.
    assert_eq!(b.reserve_identity("id", 5).await.unwrap(), 200);
    assert_eq!(a.reserve_identity("id", 1).await.unwrap(), 250);
    let fresh = Ledger::open(&lake, "t", "c").await.unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&fresh.state().metadata.as_ref().unwrap().schema_string).unwrap();
    assert_eq!(
        schema["fields"][0]["metadata"]["delta.identity.highWaterMark"],
        250
    );
    assert_eq!(fresh.state().version, 4);
}
