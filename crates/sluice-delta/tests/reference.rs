//! Logs written by Databricks and Spark (Delta's reference tables, `testdata/delta-reference`):
//! sluice's log reader sees the same version and live files as `deltalake`'s kernel, through a
//! three-part classic checkpoint, V2 checkpoints in JSON and Parquet with sidecars, and a file
//! with a deletion vector; the protocol gate says what sluice may do with each. Compaction leaves
//! files with deletion vectors alone, and never deletes what a landed version names.

use std::collections::BTreeSet;
use std::path::Path;

use sluice_core::Error;
use sluice_core::delta::Operation;
use sluice_core::delta::compact;
use sluice_core::delta::log::{FileKind, Ledger};
use sluice_core::lake::Lake;
use sluice_delta::{AsOf, open_table};

fn reference() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/delta-reference")
}

/// A copy of the reference tables in a temporary lake (tests may write).
fn lake_with_references() -> (tempfile::TempDir, Lake) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                copy(&p, &to.join(e.file_name()));
            } else {
                std::fs::copy(&p, to.join(e.file_name())).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&reference(), dir.path());
    let lake = Lake::local(dir.path()).unwrap();
    (dir, lake)
}

/// Version and live files (relative to the table, decoded) by sluice's log and by the kernel.
async fn both_views(
    lake: &Lake,
    table: &str,
) -> ((u64, BTreeSet<String>), (u64, BTreeSet<String>)) {
    let log = Ledger::open_dir(lake, table, FileKind::Data, "test")
        .await
        .unwrap();
    let prefix = format!("{table}/");
    let ours: BTreeSet<String> = log
        .state()
        .files
        .keys()
        .map(|p| p.strip_prefix(&prefix).unwrap().to_string())
        .collect();
    let kernel = open_table(lake, table, AsOf::Latest).await.unwrap();
    let snapshot = kernel.snapshot().unwrap();
    let theirs: BTreeSet<String> = kernel
        .get_file_uris()
        .unwrap()
        .map(|u| {
            let u = u.to_string();
            let rel = u
                .rsplit_once(&format!("/{table}/"))
                .map(|(_, r)| r.to_string())
                .unwrap_or(u);
            sluice_core::delta::log::decode_path(&rel)
        })
        .collect();
    (
        (log.state().version, ours),
        (snapshot.version() as u64, theirs),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_reads_the_reference_logs_as_the_kernel_does() {
    let (_dir, lake) = lake_with_references();
    for table in [
        "table-with-dv-small",
        "v1-multi-part-partitioned-struct-stats-only",
        "v2-json-sidecars-struct-stats-only",
        "v2-parquet-sidecars-struct-stats-only",
    ] {
        let (ours, theirs) = both_views(&lake, table).await;
        assert_eq!(ours, theirs, "{table}");
        assert!(!ours.1.is_empty(), "{table}");
    }
    // The multi-part table's files sit in partition folders that name its values.
    let log = Ledger::open_dir(
        &lake,
        "v1-multi-part-partitioned-struct-stats-only",
        FileKind::Data,
        "t",
    )
    .await
    .unwrap();
    let parts: BTreeSet<&str> = log
        .state()
        .files
        .values()
        .map(|f| f.partition.as_str())
        .collect();
    assert!(parts.iter().all(|p| p.starts_with("part=")), "{parts:?}");
    // A log whose early JSON versions were cleaned up after the checkpoint reads the same.
    let log_dir = _dir
        .path()
        .join("v1-multi-part-partitioned-struct-stats-only/_delta_log");
    let before = both_views(&lake, "v1-multi-part-partitioned-struct-stats-only").await;
    for v in 0..5 {
        std::fs::remove_file(log_dir.join(format!("{v:020}.json"))).unwrap();
    }
    let after = both_views(&lake, "v1-multi-part-partitioned-struct-stats-only").await;
    assert_eq!(after, before);
    assert_eq!(after.0, after.1);
    // Without the checkpoint as well, the gap is an error naming it, never an empty table.
    for e in std::fs::read_dir(&log_dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().contains(".checkpoint.") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    match Ledger::open_dir(
        &lake,
        "v1-multi-part-partitioned-struct-stats-only",
        FileKind::Data,
        "t",
    )
    .await
    {
        Err(Error::CorruptLog { message, .. }) => {
            assert!(message.contains("version 0 is missing"), "{message}")
        }
        other => panic!("not an error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_honours_deletion_vectors_and_v2_checkpoints() {
    let (_dir, lake) = lake_with_references();
    // Databricks' table: one file, two of its ten rows deleted by a deletion vector.
    let dv = Ledger::open_dir(&lake, "table-with-dv-small", FileKind::Data, "t")
        .await
        .unwrap();
    let rules = dv.check(Operation::Append).unwrap();
    assert!(rules.deletion_vectors);
    assert_eq!(dv.state().deletion_vectors.len(), 1);
    let (file, f) = dv.state().files.iter().next().unwrap();
    assert!(dv.state().deletion_vectors.contains(file));
    // Ten rows written, two deleted.
    assert_eq!(f.rows, 8);
    // V2 checkpoints: sluice appends, but leaves checkpoints to the engine that writes V2 ones.
    let v2 = Ledger::open_dir(
        &lake,
        "v2-json-sidecars-struct-stats-only",
        FileKind::Data,
        "t",
    )
    .await
    .unwrap();
    let rules = v2.check(Operation::Append).unwrap();
    assert!(!rules.checkpoints);
    assert!(v2.check(Operation::Compact).is_ok());
}

/// A small Parquet file of `id` values at `path` in the lake; its size.
fn parquet_file(root: &Path, path: &str, ids: &[i64]) -> u64 {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![std::sync::Arc::new(Int64Array::from(ids.to_vec()))],
    )
    .unwrap();
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&full).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    std::fs::metadata(&full).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_never_rewrites_a_file_with_a_deletion_vector() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path()).unwrap();
    let paths = small_table(&lake, dir.path(), 3).await;
    // Another engine deletes a row of the first file with a deletion vector: its add again,
    // with one.
    let size = std::fs::metadata(dir.path().join(&paths[0])).unwrap().len();
    let first = paths[0].strip_prefix("t/").unwrap();
    let dv = serde_json::json!({"add": {"path": first, "partitionValues": {"year": "2024"},
        "size": size, "modificationTime": 1, "dataChange": true, "stats": "{\"numRecords\":1}",
        "deletionVector": {"storageType": "i", "pathOrInlineDv": "wi5b=000010000siXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L", "offset": 1, "sizeInBytes": 36, "cardinality": 1}}});
    let commit = serde_json::json!({"commitInfo": {"timestamp": 2, "operation": "DELETE", "isBlindAppend": false}});
    let remove =
        serde_json::json!({"remove": {"path": first, "deletionTimestamp": 2, "dataChange": true}});
    std::fs::write(
        dir.path().join("t/_delta_log/00000000000000000004.json"),
        format!("{commit}\n{remove}\n{dv}"),
    )
    .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let mut opts = compact::CompactOptions::new(spool.path().to_path_buf(), "test");
    opts.target_bytes = 1 << 20;
    let r = compact::compact(&lake, "t", &opts).await.unwrap();
    assert_eq!((r.files_removed, r.files_added), (2, 1), "{r:?}");
    let log = Ledger::open(&lake, "t", "test").await.unwrap();
    assert!(log.state().files.contains_key(&paths[0]));
    assert!(log.state().deletion_vectors.contains(&paths[0]));
    assert_eq!(
        log.state().files.len(),
        2,
        "{:?}",
        log.state().files.keys().collect::<Vec<_>>()
    );
    // The kernel sees the same two files.
    let kernel = open_table(&lake, "t", AsOf::Latest).await.unwrap();
    assert_eq!(kernel.get_file_uris().unwrap().count(), 2);
    // Databricks' table (an `integer` column, one file with a deletion vector): compaction
    // leaves that file as it is, deletion vector and all.
    let (_refs, refs) = lake_with_references();
    let r = compact::compact(&refs, "table-with-dv-small", &opts)
        .await
        .unwrap();
    assert_eq!((r.files_removed, r.files_added), (0, 0), "{r:?}");
    let log = Ledger::open(&refs, "table-with-dv-small", "test")
        .await
        .unwrap();
    assert_eq!(log.state().files.len(), 1);
    assert_eq!(log.state().deletion_vectors.len(), 1);
}

/// A table of `files` small files in one partition, on `lake`; their paths.
async fn small_table(lake: &Lake, root: &Path, files: usize) -> Vec<String> {
    use sluice_core::delta::log::{CommitDraft, DataFile};
    let mut log = Ledger::open(lake, "t", "test").await.unwrap();
    log.create_if_missing(&sluice_testkit::fixtures::id_year_schema())
        .await
        .unwrap();
    let mut paths = Vec::new();
    for k in 0..files {
        let path = format!("t/year=2024/part-{}.parquet", uuid::Uuid::now_v7());
        let bytes = parquet_file(root, &path, &[k as i64]);
        log.commit(CommitDraft {
            add: vec![DataFile {
                path: path.clone(),
                partition: "year=2024".into(),
                rows: 1,
                bytes,
                kind: FileKind::Data,
                stats: None,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
        paths.push(path);
    }
    paths
}

/// Every live file of the table exists, and the kernel reads `rows` rows from them.
async fn whole(lake: &Lake, rows: usize) {
    use object_store::ObjectStoreExt;
    let log = Ledger::open(lake, "t", "check").await.unwrap();
    for f in log.state().files.keys() {
        lake.store
            .head(&lake.path(f))
            .await
            .unwrap_or_else(|e| panic!("live file {f} is gone: {e}"));
    }
    let kernel = open_table(lake, "t", AsOf::Latest).await.unwrap();
    let ctx = datafusion_ctx(&kernel).await;
    let n = ctx
        .sql("SELECT count(*) AS n FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let n =
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(n[0].column(0)).value(0);
    assert_eq!(n as usize, rows);
}

async fn datafusion_ctx(
    table: &sluice_delta::deltalake_core::DeltaTable,
) -> sluice_delta::deltalake_core::datafusion::prelude::SessionContext {
    let ctx = sluice_delta::deltalake_core::datafusion::prelude::SessionContext::new();
    table.update_datafusion_session(&ctx.state()).unwrap();
    let provider = table.table_provider().build().await.unwrap();
    ctx.register_table("t", std::sync::Arc::new(provider))
        .unwrap();
    ctx
}

/// A compaction whose commit lands but whose reply is lost, and one whose commit fails before
/// it is written: neither deletes a file a landed version names; the second's uploads are
/// orphans that `repair` removes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_that_loses_its_reply_deletes_nothing_a_version_names() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let plain = Lake::local(dir.path()).unwrap();
    let faulty = std::sync::Arc::new(sluice_testkit::faults::FaultyStore::new(
        plain.store.clone(),
    ));
    let lake = Lake::from_url_with_store(plain.url.clone(), faulty.clone()).unwrap();
    small_table(&lake, dir.path(), 6).await;
    let spool = tempfile::tempdir().unwrap();
    let mut opts = compact::CompactOptions::new(spool.path().to_path_buf(), "test");
    opts.target_bytes = 1 << 20;
    opts.retry_base = std::time::Duration::from_millis(1);
    faulty.lose_log_replies.store(1, Ordering::SeqCst);
    assert!(compact::compact(&lake, "t", &opts).await.is_err());
    // The version landed: one file now, and it is there.
    let log = Ledger::open(&lake, "t", "check").await.unwrap();
    assert_eq!(log.state().files.len(), 1);
    whole(&lake, 6).await;
    // More small files, then a commit that fails before it is written (a timeout before the
    // request went out): the table is as it was, the uploads are orphans.
    small_table(&lake, dir.path(), 3).await;
    let before = Ledger::open(&lake, "t", "check")
        .await
        .unwrap()
        .state()
        .version;
    faulty.fail_log_writes.store(1, Ordering::SeqCst);
    assert!(compact::compact(&lake, "t", &opts).await.is_err());
    let after = Ledger::open(&lake, "t", "check").await.unwrap();
    assert_eq!(after.state().version, before);
    whole(&lake, 9).await;
    let r = sluice_core::delta::repair::repair(
        &lake,
        "t",
        &sluice_core::delta::repair::RepairOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.removed.len(), 1, "{r:?}");
    whole(&lake, 9).await;
    // A column added whose reply is lost: the version stands, the next try finds the column
    // there and writes nothing.
    let mut log = Ledger::open(&lake, "t", "test").await.unwrap();
    let at = log.state().version;
    let note = [sluice_core::delta::log::DeltaField {
        name: "note".into(),
        ty: "string".into(),
        nullable: true,
        source_name: None,
    }];
    faulty.lose_log_replies.store(1, Ordering::SeqCst);
    assert!(log.add_columns(&note).await.is_err());
    let mut log = Ledger::open(&lake, "t", "test").await.unwrap();
    assert_eq!(log.state().version, at + 1);
    assert!(log.state().schema_fields().iter().any(|(n, _)| n == "note"));
    assert_eq!(log.add_columns(&note).await.unwrap(), None);
    whole(&lake, 9).await;
}

/// Vacuum with no retention on Databricks' deletion-vector table, every file two days old:
/// the deletion vector a live file needs stays, and the table reads as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_keeps_the_deletion_vectors_live_files_need() {
    let (dir, lake) = lake_with_references();
    let table = dir.path().join("table-with-dv-small");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    for e in std::fs::read_dir(&table).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::File::options()
                .write(true)
                .open(e.path())
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
    let report = sluice_delta::vacuum(
        &lake,
        "table-with-dv-small",
        std::time::Duration::ZERO,
        false,
    )
    .await
    .unwrap();
    assert!(report.files.is_empty(), "{:?}", report.files);
    let dv = std::fs::read_dir(&table)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("deletion_vector_")
        })
        .count();
    assert_eq!(dv, 1);
    let log = Ledger::open_dir(&lake, "table-with-dv-small", FileKind::Data, "t")
        .await
        .unwrap();
    assert_eq!(log.state().files.values().map(|f| f.rows).sum::<u64>(), 8);
}
