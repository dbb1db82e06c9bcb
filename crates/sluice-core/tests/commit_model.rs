//! Model check of the commit protocol on the Delta log: several writers, each with its own
//! (possibly stale) view, commit chunk parts in random interleavings, and retry drafts whose
//! reply they "lost". Against a simple model (a set of committed chunk parts), every outcome
//! must be what exactly-once requires:
//! - a commit succeeds iff none of its chunk parts was committed, and then adds all of them;
//! - a commit that finds one of its parts committed fails with `Conflict` and adds nothing;
//! - a retried draft whose first attempt landed is recognised (same version), never repeated;
//! - a compaction (remove files, add one; from the writer's possibly stale view of the files)
//!   succeeds iff every file it removes is still live, else `Conflict` and nothing changes;
//! - a schema change adds exactly the columns the newest schema lacks, racing with anything;
//! - a fresh reader sees exactly the model's chunk parts, files and columns, versions without
//!   gaps.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use sluice_core::Error;
use sluice_core::delta::log::{
    ChunkPart, CommitDraft, DataFile, DeltaField, DeltaSchema, FileKind, Ledger,
};
use sluice_core::lake::Lake;

#[derive(Debug, Clone)]
enum Op {
    /// Writer `w` commits chunk parts `parts` (chunk ids) in partition `year=2000+p`.
    Commit { w: usize, parts: Vec<u8>, p: u8 },
    /// Writer `w` retries the `pick`-th draft that landed (its reply was lost).
    Retry { w: usize, pick: usize },
    /// Writer `w` re-reads the log.
    Refresh { w: usize },
    /// Writer `w` compacts up to `take` of the files it sees in partition `year=2000+p`.
    Compact { w: usize, p: u8, take: usize },
    /// Writer `w` adds column `c{col}`.
    Evolve { w: usize, col: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..3, prop::collection::vec(0u8..16, 1..4), 0u8..3)
            .prop_map(|(w, parts, p)| Op::Commit { w, parts, p }),
        1 => (0usize..3, 0usize..32).prop_map(|(w, pick)| Op::Retry { w, pick }),
        1 => (0usize..3).prop_map(|w| Op::Refresh { w }),
        2 => (0usize..3, 0u8..3, 1usize..4).prop_map(|(w, p, take)| Op::Compact { w, p, take }),
        1 => (0usize..3, 0u8..4).prop_map(|(w, col)| Op::Evolve { w, col }),
    ]
}

fn schema() -> DeltaSchema {
    sluice_testkit::fixtures::id_year_schema()
}

async fn check(ops: Vec<Op>) {
    let lake = Lake::from_url("memory:///lake/").unwrap();
    let mut writers = Vec::new();
    for i in 0..3 {
        let mut l = Ledger::open(&lake, "t", format!("w{i}")).await.unwrap();
        l.create_if_missing(&schema()).await.unwrap();
        writers.push(l);
    }
    // Model: committed chunk parts, committed files, and the drafts that landed.
    let mut parts: BTreeSet<ChunkPart> = BTreeSet::new();
    let mut files: BTreeSet<String> = BTreeSet::new();
    let mut landed: Vec<(CommitDraft, u64)> = Vec::new();
    let mut columns: BTreeSet<String> = ["id".to_string(), "year".to_string()].into();
    let mut versions = 0u64;
    let mut n = 0u32;
    for op in ops {
        match op {
            Op::Commit { w, parts: ids, p } => {
                n += 1;
                let partition = format!("year={}", 2000 + p as u32);
                let cps: BTreeSet<ChunkPart> = ids
                    .iter()
                    .map(|c| ChunkPart {
                        chunk: format!("c{c}"),
                        partition: partition.clone(),
                    })
                    .collect();
                let path = format!("t/{partition}/part-{n}.parquet");
                let draft = CommitDraft {
                    id: format!("commit-{n}"),
                    add: vec![DataFile {
                        path: path.clone(),
                        partition: partition.clone(),
                        rows: cps.len() as u64,
                        bytes: 100,
                        kind: FileKind::Data,
                        stats: None,
                    }],
                    remove: vec![],
                    chunks: cps.iter().cloned().collect(),
                    rearrange: false,
                    merge: None,
                };
                let already = cps.iter().any(|c| parts.contains(c));
                match writers[w].commit(draft.clone()).await {
                    Ok(c) => {
                        assert!(!already, "a commit re-committed a chunk part: {cps:?}");
                        parts.extend(cps);
                        files.insert(path);
                        landed.push((draft, c.version));
                        versions += 1;
                    }
                    Err(Error::Conflict(_)) => {
                        assert!(already, "conflict without a committed chunk part: {cps:?}")
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            Op::Retry { w, pick } => {
                if landed.is_empty() {
                    continue;
                }
                let (draft, version) = landed[pick % landed.len()].clone();
                let c = writers[w]
                    .commit(draft)
                    .await
                    .expect("a landed draft is recognised as landed");
                assert_eq!(c.version, version, "retried draft landed twice");
            }
            Op::Refresh { w } => writers[w].refresh().await.unwrap(),
            Op::Compact { w, p, take } => {
                let partition = format!("year={}", 2000 + p as u32);
                let remove: Vec<String> = writers[w]
                    .state()
                    .files
                    .values()
                    .filter(|f| f.partition == partition)
                    .take(take)
                    .map(|f| f.path.clone())
                    .collect();
                if remove.is_empty() {
                    continue;
                }
                n += 1;
                let path = format!("t/{partition}/part-{n}.parquet");
                let draft = CommitDraft {
                    id: format!("compact-{n}"),
                    add: vec![DataFile {
                        path: path.clone(),
                        partition,
                        rows: 1,
                        bytes: 100,
                        kind: FileKind::Data,
                        stats: None,
                    }],
                    remove: remove.clone(),
                    chunks: vec![],
                    rearrange: true,
                    merge: None,
                };
                let live = remove.iter().all(|r| files.contains(r));
                match writers[w].commit(draft).await {
                    Ok(_) => {
                        assert!(
                            live,
                            "a compaction removed a file no longer live: {remove:?}"
                        );
                        for r in &remove {
                            files.remove(r);
                        }
                        files.insert(path);
                        versions += 1;
                    }
                    Err(Error::Conflict(_)) => {
                        assert!(!live, "conflict although every file was live: {remove:?}")
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            Op::Evolve { w, col } => {
                let name = format!("c{col}");
                let field = DeltaField {
                    name: name.clone(),
                    ty: "string".into(),
                    nullable: true,
                    source_name: None,
                };
                let added = writers[w].add_columns(&[field]).await.unwrap();
                assert_eq!(added.is_some(), !columns.contains(&name), "{name}");
                if added.is_some() {
                    columns.insert(name);
                    versions += 1;
                }
            }
        }
        // A fresh reader sees exactly the model.
        let fresh = Ledger::open(&lake, "t", "reader").await.unwrap();
        let s = fresh.state();
        assert_eq!(s.chunk_part_count(), parts.len());
        for cp in &parts {
            assert!(s.has_part(&cp.chunk, &cp.partition), "{cp:?} missing");
        }
        let got: BTreeSet<String> = s.files.keys().cloned().collect();
        assert_eq!(got, files);
        let cols: BTreeSet<String> = s.schema_fields().into_iter().map(|(n, _)| n).collect();
        assert_eq!(cols, columns);
        assert_eq!(s.partition_columns, ["year"]);
        assert_eq!(s.version, versions, "one version per landed commit");
    }
    // Every landed commit is its own version, numbered without gaps.
    let versions: BTreeMap<u64, usize> = landed.iter().map(|(_, v)| (*v, 1)).collect();
    assert_eq!(versions.len(), landed.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn commits_are_exactly_once(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check(ops));
    }
}

/// A checkpoint that fails never turns a commit that landed into an error.
#[tokio::test]
async fn a_failed_checkpoint_does_not_fail_the_commit() {
    #[derive(Debug)]
    struct Broken(std::sync::atomic::AtomicU32);
    #[async_trait::async_trait]
    impl sluice_core::delta::log::Checkpointer for Broken {
        async fn checkpoint(&self, _: &Lake, _: &str, version: u64) -> sluice_core::Result<()> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(Error::CorruptLog {
                path: format!("checkpoint {version}"),
                message: "injected".into(),
            })
        }
    }
    let broken = std::sync::Arc::new(Broken(Default::default()));
    let lake = Lake::from_url("memory:///lake/").unwrap();
    let mut log = Ledger::open(&lake, "t", "w")
        .await
        .unwrap()
        .with_checkpointer(Some(broken.clone()));
    log.create_if_missing(&schema()).await.unwrap();
    for i in 1..=sluice_core::delta::log::CHECKPOINT_INTERVAL {
        let draft = CommitDraft {
            id: format!("c{i}"),
            add: vec![],
            remove: vec![],
            chunks: vec![ChunkPart {
                chunk: format!("c{i}"),
                partition: "year=2000".into(),
            }],
            rearrange: false,
            merge: None,
        };
        assert_eq!(log.commit(draft).await.unwrap().version, i);
    }
    assert_eq!(broken.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    let fresh = Ledger::open(&lake, "t", "r").await.unwrap();
    assert_eq!(
        fresh.state().version,
        sluice_core::delta::log::CHECKPOINT_INTERVAL
    );
}
