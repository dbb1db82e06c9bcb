//! sluice's commits read back by `deltalake`, and checkpoints written by `deltalake` read back by
//! sluice's log: the exactly-once records survive the checkpoint, and a reader that starts from
//! it sees the same table.

use std::sync::Arc;

use futures::TryStreamExt;
use sluice_core::delta::log::{
    ChunkPart, CommitDraft, DataFile, DeltaField, DeltaSchema, FileKind, Ledger,
};
use sluice_core::lake::Lake;
use sluice_delta::{AsOf, DeltaCheckpointer, open_table};

fn schema() -> DeltaSchema {
    let f = |name: &str, ty: &'static str| DeltaField {
        name: name.into(),
        ty: ty.to_string(),
        nullable: true,
        source_name: None,
    };
    DeltaSchema {
        fields: vec![f("id", "long"), f("at", "timestamp_ntz"), f("year", "long")],
        partition_columns: vec!["year".into()],
        configuration: Default::default(),
    }
}

fn draft(i: u64) -> CommitDraft {
    let partition = if i.is_multiple_of(7) {
        "year=__HIVE_DEFAULT_PARTITION__".to_string()
    } else {
        format!("year={}", 2000 + i % 3)
    };
    CommitDraft {
        id: format!("c{i}"),
        add: vec![DataFile {
            path: format!("t/{partition}/part-{i}.parquet"),
            partition: partition.clone(),
            rows: i + 1,
            bytes: 1000 + i,
            kind: FileKind::Data,
            stats: Some(format!(
                r#"{{"numRecords":{},"minValues":{{"id":{i}}},"maxValues":{{"id":{}}},"nullCount":{{"id":0}}}}"#,
                i + 1,
                i + 10
            )),
        }],
        remove: vec![],
        chunks: vec![ChunkPart {
            chunk: format!("chunk-{i}"),
            partition,
        }],
        rearrange: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_carry_files_and_chunk_parts() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path()).unwrap();
    let mut log = Ledger::open(&lake, "t", "test")
        .await
        .unwrap()
        .with_checkpointer(Some(Arc::new(DeltaCheckpointer)));
    log.create_if_missing(&schema()).await.unwrap();
    for i in 1..=105 {
        let c = log.commit(draft(i)).await.unwrap();
        assert_eq!(c.version, i);
    }
    let log_dir = dir.path().join("t/_delta_log");
    assert!(
        log_dir
            .join("00000000000000000100.checkpoint.parquet")
            .is_file()
    );
    assert!(log_dir.join("_last_checkpoint").is_file());

    // deltalake reads sluice's versions: the same files, partition values and row counts.
    let table = open_table(&lake, "t/", AsOf::Latest).await.unwrap();
    let snapshot = table.snapshot().unwrap();
    assert_eq!(snapshot.version(), 105);
    let views: Vec<_> = snapshot
        .snapshot()
        .file_views(&*table.log_store(), None)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(views.len(), 105);
    let rows: i64 = views
        .iter()
        .filter_map(|v| v.num_records())
        .map(|n| n as i64)
        .sum();
    assert_eq!(rows, (1..=105).map(|i| i + 1).sum::<i64>());
    let v3 = open_table(&lake, "t/", AsOf::Version(3)).await.unwrap();
    assert_eq!(v3.snapshot().unwrap().version(), 3);

    // A reader that starts from the checkpoint: versions 101..105 replayed after it, and every
    // chunk part still recognised.
    std::fs::remove_file(log_dir.join("00000000000000000050.json")).unwrap();
    let fresh = Ledger::open(&lake, "t", "fresh").await.unwrap();
    let s = fresh.state();
    assert_eq!(s.version, 105);
    assert_eq!(s.files.len(), 105);
    assert_eq!(s.chunk_part_count(), 105);
    for i in 1..=105 {
        let d = draft(i);
        let cp = &d.chunks[0];
        assert!(s.has_part(&cp.chunk, &cp.partition), "{cp:?}");
        let f = &s.files[&d.add[0].path];
        assert_eq!(
            (f.rows, f.bytes, f.partition.as_str()),
            (i + 1, 1000 + i, d.add[0].partition.as_str())
        );
    }
    assert_eq!(s.partition_columns, vec!["year".to_string()]);
    // A draft committed again, by a writer that read the checkpoint, is a conflict.
    let mut fresh = fresh;
    let mut again = draft(42);
    again.id = "other".into();
    assert!(matches!(
        fresh.commit(again).await,
        Err(sluice_core::Error::Conflict(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_log_is_a_corrupt_log_naming_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path()).unwrap();
    let mut log = Ledger::open(&lake, "t", "test").await.unwrap();
    log.create_if_missing(&schema()).await.unwrap();
    for i in 1..=3 {
        log.commit(draft(i)).await.unwrap();
    }
    std::fs::remove_file(dir.path().join("t/_delta_log/00000000000000000002.json")).unwrap();
    match Ledger::open(&lake, "t", "reader").await {
        Err(sluice_core::Error::CorruptLog { path, message }) => {
            assert!(path.ends_with("t/_delta_log/"), "{path}");
            assert!(message.contains("version 2 is missing"), "{message}");
        }
        other => panic!("expected CorruptLog, got {other:?}"),
    }
    std::fs::write(
        dir.path().join("t/_delta_log/00000000000000000002.json"),
        "{not json\n",
    )
    .unwrap();
    match Ledger::open(&lake, "t", "reader").await {
        Err(sluice_core::Error::CorruptLog { path, message }) => {
            assert!(path.ends_with("00000000000000000002.json"), "{path}");
            assert!(message.contains("line 1"), "{message}");
        }
        other => panic!("expected CorruptLog, got {other:?}"),
    }
}
