//! The embedded default: everything under one home directory.
//!
//! ```text
//! <home>/queue.db     embedded queues (SQLite, WAL)
//! <home>/catalog.db   embedded catalog (SQLite, WAL)
//! <home>/lake/        the lake (unless --lake points elsewhere)
//! <home>/spool/<id>/  private spool of each running consumer, with uploads.log
//! <home>/spool/<id>.lock  held (flock) while that consumer runs
//! ```

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::{Catalog, SqliteCatalog};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::queue::{EmbeddedQueues, Queue, QueueSettings};

/// A sluice home directory.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

/// The backends a command works with.
#[derive(Debug, Clone)]
pub struct Backends {
    pub queues: EmbeddedQueues,
    pub queue: Arc<dyn Queue>,
    pub catalog: Arc<dyn Catalog>,
    pub lake: Lake,
}

impl Backends {
    /// URL of a table's directory.
    pub fn table_location(&self, table: &str) -> String {
        self.lake.url_of(&Lake::table_dir(table))
    }
}

/// Name of the dead-letter queue of `queue`.
pub fn dead_letter_name(queue: &str) -> String {
    format!("{queue}_dlq")
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }

    pub fn queue_db(&self) -> PathBuf {
        self.root.join("queue.db")
    }

    pub fn catalog_db(&self) -> PathBuf {
        self.root.join("catalog.db")
    }

    pub fn lake_dir(&self) -> PathBuf {
        self.root.join("lake")
    }

    /// The lake at `url` (a directory or URL), or `<home>/lake` without one.
    pub fn lake(&self, url: Option<&str>) -> Result<Lake> {
        match url {
            Some(u) => Lake::from_url(u),
            None => Lake::local(&self.lake_dir()),
        }
    }

    /// Opens the embedded queue database.
    pub fn queues(&self) -> Result<EmbeddedQueues> {
        EmbeddedQueues::open(self.queue_db())
    }

    /// Creates (if needed) the queue `name` with a dead-letter queue.
    pub async fn ensure_queue(
        queues: &EmbeddedQueues,
        name: &str,
        settings: &QueueSettings,
    ) -> Result<()> {
        let dlq = dead_letter_name(name);
        queues
            .create_queue(
                &dlq,
                &QueueSettings {
                    dead_letter_queue: None,
                    ..settings.clone()
                },
            )
            .await?;
        queues
            .create_queue(
                name,
                &QueueSettings {
                    dead_letter_queue: Some(dlq),
                    ..settings.clone()
                },
            )
            .await
    }

    /// Opens the embedded queue `queue` (creating it and its dead-letter queue), the catalog and
    /// the lake under this home.
    pub async fn open(&self, queue: &str) -> Result<Backends> {
        self.open_with(queue, None, &QueueSettings::embedded())
            .await
    }

    /// Like [`Home::open`], with a lake URL and queue settings.
    pub async fn open_with(
        &self,
        queue: &str,
        lake_url: Option<&str>,
        settings: &QueueSettings,
    ) -> Result<Backends> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let queues = self.queues()?;
        Self::ensure_queue(&queues, queue, settings).await?;
        let q = queues.queue(queue).await?;
        let catalog = SqliteCatalog::open(self.catalog_db())?;
        let lake = self.lake(lake_url)?;
        Ok(Backends {
            queues,
            queue: Arc::new(q),
            catalog: Arc::new(catalog),
            lake,
        })
    }

    fn spool_root(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// Claims a private spool directory for a consumer, and removes the spools of consumers
    /// that are no longer running (their lock is free), returning the uploads those consumers
    /// recorded: files they may have uploaded without committing.
    pub fn claim_spool(&self, writer_id: &str) -> Result<SpoolClaim> {
        let root = self.spool_root();
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let lock_path = root.join(format!("{writer_id}.lock"));
        let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        lock.try_lock()
            .map_err(|e| Error::Task(format!("cannot lock {}: {e}", lock_path.display())))?;
        let mut orphans = Vec::new();
        for (id, alive) in spool_owners(&root) {
            if alive || id == writer_id {
                continue;
            }
            // Hold the dead owner's lock while removing its spool, so two cleaners agree.
            let owner_lock = root.join(format!("{id}.lock"));
            let Ok(f) = File::open(&owner_lock) else {
                continue;
            };
            if f.try_lock().is_err() {
                continue;
            }
            orphans.extend(read_uploads(&root.join(&id)));
            let _ = std::fs::remove_dir_all(root.join(&id));
            let _ = std::fs::remove_file(&owner_lock);
        }
        let dir = root.join(writer_id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(SpoolClaim {
            dir,
            _lock: lock,
            orphans,
        })
    }

    /// Files that running consumers of this home recorded as uploaded (some not yet committed):
    /// recovery must leave them alone.
    pub fn live_uploads(&self) -> HashSet<String> {
        let root = self.spool_root();
        spool_owners(&root)
            .into_iter()
            .filter(|(_, alive)| *alive)
            .flat_map(|(id, _)| read_uploads(&root.join(id)))
            .map(|(_, path)| path)
            .collect()
    }
}

/// Owners of spool directories, and whether each is running (holds its lock).
fn spool_owners(root: &Path) -> Vec<(String, bool)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id = name.strip_suffix(".lock")?.to_string();
            let alive = match File::open(e.path()) {
                Ok(f) => f.try_lock().is_err(),
                Err(_) => false,
            };
            Some((id, alive))
        })
        .collect()
}

const UPLOADS: &str = "uploads.log";

/// Records, durably and before the upload starts, that this consumer is about to upload `path`
/// (relative to the lake root) for `table`.
pub fn record_upload(spool_dir: &Path, table: &str, path: &str) -> Result<()> {
    use std::io::Write;
    let p = spool_dir.join(UPLOADS);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|e| Error::io(&p, e))?;
    writeln!(f, "{table}\t{path}")
        .and_then(|_| f.sync_data())
        .map_err(|e| Error::io(&p, e))
}

fn read_uploads(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join(UPLOADS))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once('\t')
                .map(|(t, p)| (t.to_string(), p.to_string()))
        })
        .collect()
}

/// One message that could not be processed, as recorded by a consumer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailureRecord {
    pub queue: String,
    pub message_id: String,
    pub receive_count: u32,
    pub reason: String,
    pub at_ms: i64,
}

/// Appends why a message could not be processed to a JSON-lines log. Queues move such a message
/// to their dead-letter queue after maxReceiveCount deliveries; the log says why.
pub fn record_failure(
    log: &Path,
    queue: &str,
    message_id: &str,
    receive_count: u32,
    reason: &str,
) -> Result<()> {
    use std::io::Write;
    let rec = FailureRecord {
        queue: queue.to_string(),
        message_id: message_id.to_string(),
        receive_count,
        reason: reason.to_string(),
        at_ms: chrono::Utc::now().timestamp_millis(),
    };
    let line = serde_json::to_string(&rec).expect("record serializes");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io(log, e))?;
    writeln!(f, "{line}").map_err(|e| Error::io(log, e))
}

/// The latest recorded failure of each message, by message id.
pub fn read_failures(log: &Path) -> std::collections::HashMap<String, FailureRecord> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<FailureRecord>(l).ok())
        .map(|r| (r.message_id.clone(), r))
        .collect()
}

impl Home {
    /// The log of messages consumers could not process.
    pub fn failure_log(&self) -> PathBuf {
        self.root.join("failures.jsonl")
    }
}

/// A spool directory held for the life of this value.
#[derive(Debug)]
pub struct SpoolClaim {
    pub dir: PathBuf,
    _lock: File,
    /// (table, path) of uploads recorded by consumers that died: uncommitted ones are garbage.
    pub orphans: Vec<(String, String)>,
}

impl SpoolClaim {
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SpoolClaim {
    fn drop(&mut self) {
        // Spool files go; the lock file and uploads.log stay until the next consumer starts,
        // sees the lock free, and removes any upload that no commit names (a commit whose
        // outcome this consumer could not learn, for one).
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name() != UPLOADS {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}
