//! Consumers' spools: a private directory per running consumer for the files it writes before
//! uploading them, locked (flock) while it runs, with `uploads.log`, the durable record of every
//! upload it starts. Start-up recovery reads the records of consumers that died
//! ([`SpoolClaim::orphans`]) and leaves running consumers' uploads alone ([`Spools::live_uploads`]).
//!
//! ```text
//! <spools>/<id>/       private spool of consumer <id>, with uploads.log
//! <spools>/<id>.lock   held while that consumer runs
//! ```

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The spool directories under one root (a home's `spool/`).
#[derive(Debug, Clone)]
pub struct Spools {
    root: PathBuf,
}

impl Spools {
    /// The spools under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Spools { root: root.into() }
    }

    /// Claims a private spool directory for a consumer, and removes the spools of consumers
    /// that are no longer running (their lock is free), returning the uploads those consumers
    /// recorded: files they may have uploaded without committing.
    pub fn claim(&self, writer_id: &str) -> Result<SpoolClaim> {
        let root = &self.root;
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let lock_path = root.join(format!("{writer_id}.lock"));
        let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        lock.try_lock()
            .map_err(|e| Error::io(&lock_path, e.into()))?;
        let mut orphans = Vec::new();
        let mut staged = Vec::new();
        for (id, alive) in spool_owners(root) {
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
            staged.extend(read_lines(&root.join(&id).join(STAGED)));
            let _ = std::fs::remove_dir_all(root.join(&id));
            let _ = std::fs::remove_file(&owner_lock);
        }
        let dir = root.join(writer_id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(SpoolClaim {
            dir,
            _lock: lock,
            orphans,
            staged,
        })
    }

    /// Files that running consumers of this home recorded as uploaded (some not yet committed):
    /// recovery must leave them alone.
    pub fn live_uploads(&self) -> HashSet<String> {
        let root = &self.root;
        spool_owners(root)
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
/// Uploads staged by `convert` and not committed yet, one JSON record a line (with the table):
/// a later `convert` of the same sources takes them over instead of writing them again.
const STAGED: &str = "staged.log";

/// Records, durably and before the upload starts, that this consumer is about to upload `path`
/// (relative to the lake root) for `table`.
pub(crate) fn record_upload(spool_dir: &Path, table: &str, path: &str) -> Result<()> {
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
    read_lines(&dir.join(UPLOADS))
}

/// `table<TAB>text` lines of a log (a line cut short by a crash is left out by its reader).
fn read_lines(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once('\t')
                .map(|(t, p)| (t.to_string(), p.to_string()))
        })
        .collect()
}

/// Appends staged-upload records (`lines`, one JSON value each) of `table`, durably.
pub(crate) fn record_staged(spool_dir: &Path, table: &str, lines: &[String]) -> Result<()> {
    use std::io::Write;
    if lines.is_empty() {
        return Ok(());
    }
    let p = spool_dir.join(STAGED);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|e| Error::io(&p, e))?;
    let mut text = String::new();
    for l in lines {
        text.push_str(table);
        text.push('\t');
        text.push_str(l);
        text.push('\n');
    }
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(|e| Error::io(&p, e))
}

/// Forgets the staged-upload records: committed, or removed.
pub(crate) fn clear_staged(spool_dir: &Path) -> Result<()> {
    let p = spool_dir.join(STAGED);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&p, e)),
    }
}

/// A spool directory held for the life of this value.
#[derive(Debug)]
pub struct SpoolClaim {
    /// The spool directory.
    pub dir: PathBuf,
    _lock: File,
    /// (table, path) of uploads recorded by consumers that died: uncommitted ones are garbage.
    pub orphans: Vec<(String, String)>,
    /// (table, record) of uploads that a `convert` that died staged: a `convert` of the same
    /// sources may take them over.
    pub staged: Vec<(String, String)>,
}

impl SpoolClaim {
    /// The spool directory.
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
                if e.file_name() != UPLOADS && e.file_name() != STAGED {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}
