//! The lake: an `object_store` chosen by URL, and where each table's files live in it.
//!
//! ```text
//! <lake>/<table>/<partition dirs>/part-<uuid>.parquet   data files (Hive layout)
//! <lake>/<table>/_delta_log/<version>.json             the table's Delta log
//! <lake>/_quarantine/<table>/part-<uuid>.parquet        rows that could not be parsed
//! <lake>/_quarantine/<table>/_delta_log/                the quarantine's Delta log
//! ```

pub mod metered;
pub(crate) mod pending;
pub(crate) mod ranged;
pub mod spool;

pub use metered::MeteredStore;

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;
use url::Url;

use crate::error::{Error, Result};

/// Partition key of the quarantine's chunk parts in its Delta log.
pub(crate) const QUARANTINE_PART: &str = "__quarantine__";

/// A lake root.
#[derive(Debug, Clone)]
pub struct Lake {
    /// The object store the lake is in.
    pub store: Arc<dyn ObjectStore>,
    /// Path of the lake root inside `store`.
    pub root: Path,
    /// The lake root as a URL, ending in `/`.
    pub url: Url,
    /// The local file system, when the lake is a local directory: finished files are linked
    /// into place instead of copied through `store`. A lake whose `store` wraps another to
    /// see or alter every write (faults, say) sets it to `None`; counting requests does not
    /// need to (a link is no request).
    pub local: Option<Arc<object_store::local::LocalFileSystem>>,
}

impl Lake {
    /// A lake on the local file system, in `dir` (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let abs = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let url = Url::from_directory_path(&abs)
            .map_err(|_| Error::Config(format!("{} is not an absolute path", abs.display())))?;
        let fs = Arc::new(object_store::local::LocalFileSystem::new());
        let mut lake = Self::from_url_with_store(url, fs.clone())?;
        lake.local = Some(fs);
        Ok(lake)
    }

    /// A lake from a URL (`file:///…`, `memory:///`); other schemes come from backends that
    /// build their store themselves and call [`Lake::from_url_with_store`].
    pub fn from_url(url: &str) -> Result<Self> {
        let url = parse_dir_url(url)?;
        match url.scheme() {
            "file" => {
                let p = url
                    .to_file_path()
                    .map_err(|_| Error::Config(format!("bad file URL {url}")))?;
                Self::local(&p)
            }
            "memory" => {
                Self::from_url_with_store(url, Arc::new(object_store::memory::InMemory::new()))
            }
            other => Err(Error::Config(format!(
                "lake URL scheme {other:?} is not supported by this build (use file:// or a local path)"
            ))),
        }
    }

    /// A lake at `url` on a store the caller built.
    pub fn from_url_with_store(url: Url, store: Arc<dyn ObjectStore>) -> Result<Self> {
        let root = Path::from_url_path(url.path())
            .map_err(|e| Error::Config(format!("lake URL {url}: {e}")))?;
        Ok(Lake {
            store,
            root,
            url,
            local: None,
        })
    }

    /// A path below the lake root.
    ///
    /// `rel` is used as it is (no percent-encoding), so Hive-escaped partition directories keep
    /// their names on disk and in S3 keys.
    pub fn path(&self, rel: &str) -> Path {
        let rel = rel.trim_matches('/');
        let root = self.root.as_ref();
        let s = match (root.is_empty(), rel.is_empty()) {
            (true, _) => rel.to_string(),
            (false, true) => root.to_string(),
            (false, false) => format!("{root}/{rel}"),
        };
        Path::parse(&s).unwrap_or_else(|_| {
            let mut p = self.root.clone();
            for part in rel.split('/').filter(|s| !s.is_empty()) {
                p = p.clone().join(part);
            }
            p
        })
    }

    /// Whether anything is stored under `rel` (a directory below the lake root; one that does
    /// not exist holds nothing).
    pub async fn has_objects_under(&self, rel: &str) -> Result<bool> {
        use futures::TryStreamExt;
        let mut list = self.store.list(Some(&self.path(rel)));
        Ok(list.try_next().await?.is_some())
    }

    /// The URL of a path below the lake root.
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}{}", self.url, rel)
    }

    /// Directory of a table, relative to the lake root.
    pub fn table_dir(table: &str) -> String {
        format!("{table}/")
    }

    /// Quarantine directory of a table, relative to the lake root.
    pub fn quarantine_dir(table: &str) -> String {
        format!("_quarantine/{table}/")
    }
}

/// Parses a directory URL, accepting plain local paths too, and makes it end in `/`.
pub fn parse_dir_url(s: &str) -> Result<Url> {
    let mut url = match Url::parse(s) {
        Ok(u) if u.scheme().len() > 1 => u,
        _ => {
            let p = std::path::Path::new(s);
            std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
            let abs = std::fs::canonicalize(p).map_err(|e| Error::io(p, e))?;
            Url::from_directory_path(&abs)
                .map_err(|_| Error::Config(format!("bad lake path {s:?}")))?
        }
    };
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// The path of a data file `name` in `partition` (`year=2024`, empty for an unpartitioned
/// table) of the table in `table_dir` (ending in `/`).
pub(crate) fn data_file_path(table_dir: &str, partition: &str, name: &str) -> String {
    if partition.is_empty() {
        format!("{table_dir}{name}")
    } else {
        format!("{table_dir}{partition}/{name}")
    }
}
