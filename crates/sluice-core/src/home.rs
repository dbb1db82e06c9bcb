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

use std::path::PathBuf;
use std::sync::Arc;

use crate::catalog::{Catalog, SqliteCatalog};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::spool::{SpoolClaim, Spools};
use crate::queue::{EmbeddedQueues, Queue, QueueSettings};

/// A sluice home directory.
#[derive(Debug, Clone)]
pub struct Home {
    /// The home directory.
    pub root: PathBuf,
}

/// The embedded backends of a home: its queue database, one queue, the catalog and the lake.
#[derive(Debug, Clone)]
pub struct EmbeddedBackends {
    /// The embedded queue database.
    pub queues: EmbeddedQueues,
    /// The queue the command works with.
    pub queue: Arc<dyn Queue>,
    /// The embedded catalog.
    pub catalog: Arc<dyn Catalog>,
    /// The lake.
    pub lake: Lake,
}

impl EmbeddedBackends {
    /// URL of a table's directory.
    pub fn table_location(&self, table: &str) -> String {
        self.lake.url_of(&Lake::table_dir(table))
    }
}

impl Home {
    /// A home at `root` (created when first opened).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }

    /// The embedded queue database.
    pub fn queue_db(&self) -> PathBuf {
        self.root.join("queue.db")
    }

    /// The embedded catalog database.
    pub fn catalog_db(&self) -> PathBuf {
        self.root.join("catalog.db")
    }

    /// The lake, unless another is given.
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

    /// Opens the embedded queue `queue` (creating it and its dead-letter queue), the catalog and
    /// the lake under this home.
    pub async fn open(&self, queue: &str) -> Result<EmbeddedBackends> {
        self.open_with(queue, None, &QueueSettings::embedded())
            .await
    }

    /// Like [`Home::open`], with a lake URL and queue settings.
    pub async fn open_with(
        &self,
        queue: &str,
        lake_url: Option<&str>,
        settings: &QueueSettings,
    ) -> Result<EmbeddedBackends> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let queues = self.queues()?;
        queues.ensure_with_dead_letter(queue, settings).await?;
        let q = queues.queue(queue).await?;
        let catalog = SqliteCatalog::open(self.catalog_db())?;
        let lake = self.lake(lake_url)?;
        Ok(EmbeddedBackends {
            queues,
            queue: Arc::new(q),
            catalog: Arc::new(catalog),
            lake,
        })
    }

    fn spool_root(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// The spool directories of this home's consumers.
    pub fn spools(&self) -> Spools {
        Spools::new(self.spool_root())
    }

    /// Claims a private spool directory for a consumer: [`Spools::claim`].
    pub fn claim_spool(&self, writer_id: &str) -> Result<SpoolClaim> {
        self.spools().claim(writer_id)
    }

    /// Files that running consumers of this home recorded as uploaded: [`Spools::live_uploads`].
    pub fn live_uploads(&self) -> HashSet<String> {
        self.spools().live_uploads()
    }
}

impl Home {
    /// The log of messages consumers could not process.
    pub fn failure_log(&self) -> PathBuf {
        self.root.join("failures.jsonl")
    }
}
