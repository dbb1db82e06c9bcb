//! Leases on uploads not yet committed, kept in the lake where every home sees them.
//!
//! A writer (a consumer, `convert`) lists the files it is about to upload in
//! `<table>/_sluice/pending/<writer>.json` before it uploads them, rewrites the list at least
//! every [`RENEW`] while it holds any, and drops them from it once committed (or removed). Start-up
//! recovery and `repair`, on any machine, never remove a file that a list renewed within
//! [`LEASE`] names: a writer that takes long between its upload and its commit (a large source
//! staged by `convert`, a slow store) cannot lose its files to another machine's recovery, whatever
//! the grace. A list not renewed within the lease is a dead writer's: its files are orphans as any
//! other, and the list itself is removed by the next repair.
//!
//! A writer that could not renew its lease for half of it (a process stopped, a network cut)
//! checks that its files still exist before it commits them ([`Pending::must_check`]).

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::error::retry::{Backoff, retry, transient};
use crate::lake::Lake;

/// A list not rewritten for this long is a dead writer's.
pub(crate) const LEASE: Duration = Duration::from_secs(600);
/// A writer holding files rewrites its list at least this often.
pub(crate) const RENEW: Duration = Duration::from_secs(60);

/// The folder of a table's pending lists.
pub(crate) fn pending_dir(table: &str) -> String {
    format!("{}_sluice/pending/", Lake::table_dir(table))
}

#[derive(Debug, Serialize, Deserialize)]
struct PendingList {
    writer: String,
    /// When the writer wrote it (its clock; the store's time of the object decides).
    written_ms: i64,
    files: Vec<String>,
}

/// One writer's lease on its uploads of one table.
#[derive(Debug)]
pub(crate) struct Pending {
    lake: Lake,
    table: String,
    writer: String,
    files: BTreeSet<String>,
    /// When the list was last written (with files in it).
    renewed: Option<Instant>,
    /// First back-off of a retried write of the list.
    retry_base: Duration,
}

impl Pending {
    /// A lease of a new writer of `table` (a fresh name: lists are never shared).
    pub fn new(lake: Lake, table: &str) -> Self {
        Pending {
            lake,
            table: table.to_string(),
            writer: uuid::Uuid::now_v7().to_string(),
            files: BTreeSet::new(),
            renewed: None,
            retry_base: Duration::from_millis(200),
        }
    }

    /// Retries writes of the list from `base` on (as the writer's uploads are).
    pub fn with_retry_base(mut self, base: Duration) -> Self {
        self.retry_base = base;
        self
    }

    fn path(&self) -> object_store::path::Path {
        self.lake
            .path(&format!("{}{}.json", pending_dir(&self.table), self.writer))
    }

    async fn write(&mut self) -> Result<()> {
        let (path, backoff) = (self.path(), Backoff::steps(self.retry_base));
        if self.files.is_empty() {
            retry("lease removal", backoff, transient, || async {
                match self.lake.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
            self.renewed = None;
            return Ok(());
        }
        let list = PendingList {
            writer: self.writer.clone(),
            written_ms: chrono::Utc::now().timestamp_millis(),
            files: self.files.iter().cloned().collect(),
        };
        let body =
            bytes::Bytes::from(serde_json::to_vec(&list).expect("a pending list serializes"));
        retry("upload lease", backoff, transient, || async {
            self.lake
                .store
                .put(&path, PutPayload::from(body.clone()))
                .await
                .map(|_| ())
                .map_err(Into::into)
        })
        .await?;
        self.renewed = Some(Instant::now());
        Ok(())
    }

    /// Adds `paths` (relative to the lake root) to the lease, before they are uploaded.
    pub async fn add(&mut self, paths: impl IntoIterator<Item = String>) -> Result<()> {
        let before = self.files.len();
        self.files.extend(paths);
        if self.files.len() == before {
            return Ok(());
        }
        self.write().await
    }

    /// Drops `paths` from the lease: committed, or removed.
    pub async fn remove(&mut self, paths: &[String]) -> Result<()> {
        let before = self.files.len();
        for p in paths {
            self.files.remove(p);
        }
        if self.files.len() == before {
            return Ok(());
        }
        self.write().await
    }

    /// Renews the lease if it holds files and was written [`RENEW`] ago or more.
    pub async fn renew(&mut self) -> Result<()> {
        if !self.files.is_empty() && self.renewed.is_none_or(|t| t.elapsed() >= RENEW) {
            self.write().await?;
        }
        Ok(())
    }

    /// Whether the lease may have lapsed (not written for half of [`LEASE`]): then another
    /// machine's recovery may have removed the files, and they must be checked before a
    /// commit names them.
    pub fn must_check(&self) -> bool {
        self.renewed.is_none_or(|t| t.elapsed() >= LEASE / 2)
    }
}

/// The files of `table` that live leases hold: never removed by recovery or `repair`. Lists
/// older than [`LEASE`] (by the store's clock) are left out, and removed when `remove_stale`.
pub(crate) async fn leased(
    lake: &Lake,
    table: &str,
    remove_stale: bool,
) -> Result<HashSet<String>> {
    let prefix = lake.path(&pending_dir(table));
    let lists: Vec<_> = lake.store.list(Some(&prefix)).try_collect().await?;
    let now = chrono::Utc::now();
    let mut out = HashSet::new();
    for m in lists {
        let age = now
            .signed_duration_since(m.last_modified)
            .to_std()
            .unwrap_or_default();
        if age >= LEASE {
            if remove_stale {
                let _ = lake.store.delete(&m.location).await;
            }
            continue;
        }
        let body = match lake.store.get(&m.location).await {
            Ok(r) => r.bytes().await?,
            // Removed by its writer meanwhile: nothing pending.
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        // A list that does not read protects nothing it could name: leave it to its lease.
        if let Ok(list) = serde_json::from_slice::<PendingList>(&body) {
            out.extend(list.files);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lease_names_its_files_until_they_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::local(dir.path()).unwrap();
        let mut a = Pending::new(lake.clone(), "t");
        let mut b = Pending::new(lake.clone(), "t");
        a.add(["t/x.parquet".to_string(), "t/y.parquet".to_string()])
            .await
            .unwrap();
        b.add(["t/z.parquet".to_string()]).await.unwrap();
        let held = leased(&lake, "t", false).await.unwrap();
        assert_eq!(held.len(), 3);
        assert!(!a.must_check());
        a.remove(&["t/x.parquet".to_string()]).await.unwrap();
        b.remove(&["t/z.parquet".to_string()]).await.unwrap();
        let held = leased(&lake, "t", false).await.unwrap();
        assert_eq!(held, HashSet::from(["t/y.parquet".to_string()]));
        // An empty lease has no list at all.
        assert!(
            !dir.path()
                .join(format!("t/_sluice/pending/{}.json", b.writer))
                .exists()
        );
        assert!(leased(&lake, "other", false).await.unwrap().is_empty());
        // A list not rewritten within the lease is a dead writer's: it protects nothing, and
        // is removed when asked.
        let list = dir
            .path()
            .join(format!("t/_sluice/pending/{}.json", a.writer));
        let old = std::time::SystemTime::now() - LEASE - Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&list)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(leased(&lake, "t", false).await.unwrap().is_empty());
        assert!(list.exists());
        assert!(leased(&lake, "t", true).await.unwrap().is_empty());
        assert!(!list.exists());
    }
}
