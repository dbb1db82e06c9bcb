//! The embedded default: everything under one home directory.
//!
//! ```text
//! <home>/queue.db     embedded queues (SQLite, WAL)
//! <home>/catalog.db   embedded catalog (SQLite, WAL)
//! <home>/lake/        the lake (unless --lake points elsewhere)
//! <home>/spool/<id>/  private spool of each running consumer, locked while it runs
//! ```

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
        self.open_with(queue, None, &QueueSettings::default()).await
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
        let lake = match lake_url {
            Some(u) => Lake::from_url(u)?,
            None => Lake::local(&self.lake_dir())?,
        };
        Ok(Backends {
            queues,
            queue: Arc::new(q),
            catalog: Arc::new(catalog),
            lake,
        })
    }

    /// Claims a private spool directory for a consumer, and removes the spools of consumers
    /// that are no longer running.
    pub fn claim_spool(&self, writer_id: &str) -> Result<SpoolClaim> {
        let root = self.root.join("spool");
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let dir = e.path();
                let lock = dir.join("lock");
                if let Ok(f) = File::open(&lock)
                    && f.try_lock().is_ok()
                {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        let dir = root.join(writer_id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        lock.try_lock()
            .map_err(|e| Error::Task(format!("cannot lock {}: {e}", lock_path.display())))?;
        Ok(SpoolClaim { dir, _lock: lock })
    }
}

/// A spool directory held for the life of this value.
#[derive(Debug)]
pub struct SpoolClaim {
    pub dir: PathBuf,
    _lock: File,
}

impl SpoolClaim {
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SpoolClaim {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
