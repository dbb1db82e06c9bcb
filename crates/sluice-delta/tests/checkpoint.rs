//! sluice's commits read back by `deltalake`, and checkpoints written by `deltalake` read back by
//! sluice's log: the exactly-once records survive the checkpoint, and a reader that starts from
//! it sees the same table.

use std::sync::Arc;

use futures::TryStreamExt;
use sluice_core::delta::log::{
    Checkpointer, ChunkPart, CommitDraft, DataFile, DeltaField, DeltaSchema, FileKind, Ledger,
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
        merge: None,
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

/// The record index of checkpoint `v` (`t/_sluice/records/<v>.idx`).
fn index_file(dir: &std::path::Path, v: u64) -> std::path::PathBuf {
    dir.join(format!("t/_sluice/records/{v:020}.idx"))
}

fn read_index(dir: &std::path::Path, v: u64) -> sluice_core::delta::records::RecordIndex {
    let bytes = std::fs::read(index_file(dir, v)).unwrap();
    sluice_core::delta::records::RecordIndex::decode(bytes.into()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_index_serves_its_checkpoint_and_is_checked_against_the_log() {
    use sluice_core::delta::log::part_key;
    use sluice_core::delta::records::RecordIndex;
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path()).unwrap();
    let mut log = Ledger::open(&lake, "t", "test")
        .await
        .unwrap()
        .with_checkpointer(Some(Arc::new(DeltaCheckpointer)));
    log.create_if_missing(&schema()).await.unwrap();
    for i in 1..=105 {
        log.commit(draft(i)).await.unwrap();
    }
    // The writer that made checkpoint 100 indexed its records next.
    let ix = read_index(dir.path(), 100);
    assert_eq!((ix.version, ix.len()), (100, 100));
    let table_id = log.state().metadata.as_ref().unwrap().id.clone();
    assert_eq!(ix.table_id, table_id);
    let known = |l: &Ledger| -> Vec<u64> {
        (1..=106)
            .filter(|i| {
                let d = draft(*i);
                l.state()
                    .has_part(&d.chunks[0].chunk, &d.chunks[0].partition)
            })
            .collect()
    };
    let all: Vec<u64> = (1..=105).collect();
    let fresh = Ledger::open(&lake, "t", "fresh").await.unwrap();
    assert_eq!(known(&fresh), all);
    assert_eq!(fresh.state().chunk_part_count(), 105);
    assert_eq!(fresh.state().files.len(), 105);
    let records = fresh.state().records();
    let d5 = draft(5);
    assert!(records.contains(&part_key(&d5.chunks[0].chunk, &d5.chunks[0].partition)));
    assert!(!records.contains(&part_key("chunk-106", "year=2001")));

    // The index is what a writer reads the checkpoint's records from: one left out of it is
    // not known (the checkpoint's txn rows were not read).
    let without_5: Vec<_> = ix
        .iter()
        .filter(|(k, _)| *k != part_key(&d5.chunks[0].chunk, &d5.chunks[0].partition))
        .collect();
    let bytes = RecordIndex::encode(100, &table_id, without_5).unwrap();
    std::fs::write(index_file(dir.path(), 100), &bytes).unwrap();
    let tampered = Ledger::open(&lake, "t", "fresh").await.unwrap();
    assert_eq!(known(&tampered).len(), 104);
    assert!(!known(&tampered).contains(&5));

    // An index of another table under this name, one cut short, one of a version the log does
    // not have: the records come from the checkpoint.
    let other = RecordIndex::encode(100, "another-table", vec![]).unwrap();
    let future = RecordIndex::encode(900, &table_id, vec![]).unwrap();
    for bad in [other, bytes[..bytes.len() - 9].to_vec(), future] {
        std::fs::write(index_file(dir.path(), 100), &bad).unwrap();
        let l = Ledger::open(&lake, "t", "fresh").await.unwrap();
        assert_eq!(known(&l), all);
    }

    // A writer that read the records from the checkpoint indexes them after its first commit,
    // at its version, under the checkpoint's name; the next writer reads that.
    let mut w = Ledger::open(&lake, "t", "w")
        .await
        .unwrap()
        .with_checkpointer(Some(Arc::new(DeltaCheckpointer)));
    w.commit(draft(106)).await.unwrap();
    let ix = read_index(dir.path(), 100);
    assert_eq!((ix.version, ix.len()), (106, 106));
    let l = Ledger::open(&lake, "t", "fresh").await.unwrap();
    assert_eq!(known(&l), (1..=106).collect::<Vec<_>>());
    assert_eq!(l.state().chunk_part_count(), 106);

    // Another writer's checkpoint, newer than every index: its records are read from it.
    DeltaCheckpointer
        .checkpoint(&lake, "t/", 106)
        .await
        .unwrap();
    let l = Ledger::open(&lake, "t", "fresh").await.unwrap();
    assert_eq!(known(&l), (1..=106).collect::<Vec<_>>());
    assert!(!index_file(dir.path(), 106).exists());

    // Checkpoints 200 and 300: the index of each, and of the one before, are kept.
    for i in 107..=300 {
        w.commit(draft(i)).await.unwrap();
    }
    assert!(!index_file(dir.path(), 100).exists());
    assert_eq!(read_index(dir.path(), 200).len(), 200);
    assert_eq!(read_index(dir.path(), 300).len(), 300);
    let l = Ledger::open(&lake, "t", "fresh").await.unwrap();
    assert_eq!(l.state().chunk_part_count(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_read_beside_its_index_gives_the_same_table() {
    // Enough records for the checkpoint's app ids to span pages: the pages of records only
    // are skipped, the rows of files, metadata and protocol are read.
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path()).unwrap();
    let mut log = Ledger::open(&lake, "t", "test").await.unwrap();
    log.create_if_missing(&schema()).await.unwrap();
    for i in 1..=60u64 {
        let mut d = draft(i);
        d.chunks = (0..1_000)
            .map(|k| ChunkPart {
                chunk: format!("bulk-{i}-{k}"),
                partition: "year=2001".into(),
            })
            .collect();
        if (11..=50).contains(&i) {
            // Versions of records only, which fill pages of the checkpoint.
            d.add.clear();
        } else if i % 5 == 0 {
            // Files removed along the way are tombstones in the checkpoint.
            d.remove = vec![draft(i - 1).add[0].path.clone()];
        }
        log.commit(d).await.unwrap();
    }
    DeltaCheckpointer.checkpoint(&lake, "t/", 60).await.unwrap();
    // The checkpoint's app ids span pages, some of them records only.
    let cp = std::fs::File::open(
        dir.path()
            .join("t/_delta_log/00000000000000000060.checkpoint.parquet"),
    )
    .unwrap();
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required)
        .parse_and_finish(&cp)
        .unwrap();
    let leaf = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().parts() == ["txn", "appId"])
        .unwrap();
    let nulls = meta.column_index().unwrap()[0][leaf]
        .null_counts()
        .unwrap()
        .to_vec();
    assert!(nulls.len() > 1 && nulls.contains(&0), "{nulls:?}");
    let slow = Ledger::open(&lake, "t", "slow")
        .await
        .unwrap()
        .with_checkpointer(Some(Arc::new(DeltaCheckpointer)));
    let mut slow = slow;
    slow.index_records().await;
    assert_eq!(read_index(dir.path(), 60).len(), 60_000);
    let fast = Ledger::open(&lake, "t", "fast").await.unwrap();
    let (a, b) = (slow.state(), fast.state());
    assert_eq!(a.version, b.version);
    assert_eq!(a.files, b.files);
    assert_eq!(a.files.len(), 16);
    assert_eq!(a.removed, b.removed);
    assert_eq!(a.metadata, b.metadata);
    assert_eq!(a.protocol, b.protocol);
    assert_eq!(b.chunk_part_count(), 60_000);
    for (i, k) in [(1, 0), (30, 999), (60, 500)] {
        assert!(b.has_part(&format!("bulk-{i}-{k}"), "year=2001"));
    }
    assert!(!b.has_part("bulk-61-0", "year=2001"));
}
