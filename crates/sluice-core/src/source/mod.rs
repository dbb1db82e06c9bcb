//! Sources of rows: local files, directories and globs, and objects under an object-store
//! prefix (`s3://bucket/prefix`); CSV (plain, `.gz`, `.zst`), JSON lines and Parquet.
//!
//! ```text
//!  SOURCE args ─► expand (file | dir, recursive | glob | store prefix) ─► [Source], sorted
//!  Source::open ─► bytes (a local file, or ranged GETs of one object version, 4 at once)
//!                ─► count (progress) ─► decompress (by extension) ─► Read
//! ```
//!
//! Names starting with `_` or `.` (`_SUCCESS`, `_delta_log/`, `.crc`) are skipped when a
//! directory or prefix is expanded; a file named on its own is always read.

pub mod csv;
pub mod infer;
pub mod parquet;
pub mod s3_events;

use std::io::Read;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};

/// How a source's rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Format {
    /// CSV (also TSV and text with another delimiter).
    Csv,
    /// JSON lines: one object per line.
    JsonLines,
    /// Parquet.
    Parquet,
}

impl Format {
    /// `csv`, `jsonl` (or `ndjson`, `json`), `parquet`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "csv" | "tsv" | "txt" => Ok(Format::Csv),
            "jsonl" | "ndjson" | "json" => Ok(Format::JsonLines),
            "parquet" | "pq" => Ok(Format::Parquet),
            other => Err(Error::invalid(format!(
                "unknown format {other:?}: expected csv, jsonl or parquet"
            ))),
        }
    }
}

/// How a source's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Compression {
    /// As it is.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Format and compression from a file name: `x.csv`, `x.csv.gz`, `x.jsonl.zst`, `x.parquet`.
pub(crate) fn detect(name: &str) -> Option<(Format, Compression)> {
    let lower = name.to_ascii_lowercase();
    let (stem, compression) = if let Some(s) = lower.strip_suffix(".gz") {
        (s.to_string(), Compression::Gzip)
    } else if let Some(s) = lower.strip_suffix(".zst") {
        (s.to_string(), Compression::Zstd)
    } else {
        (lower, Compression::None)
    };
    let ext = stem.rsplit_once('.').map(|(_, e)| e)?;
    let format = Format::parse(ext).ok()?;
    if format == Format::Parquet && compression != Compression::None {
        return None;
    }
    Some((format, compression))
}

/// Where a source's bytes are.
#[derive(Debug, Clone)]
pub enum Location {
    /// A local file.
    Local(PathBuf),
    /// An object in a store.
    Object {
        /// The store.
        store: Arc<dyn ObjectStore>,
        /// The object's path in it.
        path: Path,
    },
}

/// One file or object to read.
#[derive(Debug, Clone)]
pub struct Source {
    /// As the user knows it: a path, or `s3://bucket/key`. Used in messages and the quarantine.
    pub name: String,
    /// Where it is.
    pub location: Location,
    /// Bytes as stored (compressed).
    pub size: u64,
    /// The object version read (its ETag, or version id): every range is read with
    /// `If-Match`, so an object replaced while it is read is an error, not a mix.
    pub version: Option<String>,
    /// How its rows are written.
    pub format: Format,
    /// How it is compressed.
    pub compression: Compression,
}

/// Format and compression of `name`: from `format` if given (compression still from the
/// extension), else from the extension.
pub(crate) fn kind_of(name: &str, format: Option<Format>) -> Option<(Format, Compression)> {
    let detected = detect(name);
    match format {
        Some(f) => {
            let c = detected.map(|d| d.1).unwrap_or_else(|| {
                let l = name.to_ascii_lowercase();
                if l.ends_with(".gz") {
                    Compression::Gzip
                } else if l.ends_with(".zst") {
                    Compression::Zstd
                } else {
                    Compression::None
                }
            });
            Some((f, c))
        }
        None => detected,
    }
}

fn hidden(component: &str) -> bool {
    component.starts_with('_') || component.starts_with('.')
}

/// Expands a local SOURCE argument: a file, a directory (recursively, in name order) or a
/// glob pattern (`data/*.csv.gz`, `logs/**/*.jsonl`).
///
/// A file named on its own is read as CSV when neither its extension nor `format` says
/// otherwise; in a directory or a glob, files of unknown kind are skipped. Nothing found is an
/// error naming `arg`.
pub fn expand_local(arg: &str, format: Option<Format>) -> Result<Vec<Source>> {
    let mut paths = Vec::new();
    let p = FsPath::new(arg);
    let explicit;
    if arg.contains(['*', '?', '[']) {
        explicit = false;
        let entries = glob::glob(arg)
            .map_err(|e| Error::invalid_at(arg, None, format!("bad glob pattern: {e}")))?;
        for e in entries {
            let e = e.map_err(|e| Error::io(e.path().to_path_buf(), e.into()))?;
            if e.is_file() {
                paths.push(e);
            }
        }
    } else if p.is_dir() {
        explicit = false;
        walk(p, &mut paths)?;
    } else if p.is_file() {
        explicit = true;
        paths.push(p.to_path_buf());
    } else {
        return Err(Error::invalid_at(arg, None, "no such file or directory"));
    }
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let name = path.display().to_string();
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = kind_of(&file_name, format)
            // A file named on its own is CSV unless its name says otherwise.
            .or_else(|| {
                explicit
                    .then(|| kind_of(&file_name, Some(Format::Csv)))
                    .flatten()
            });
        let Some((format, compression)) = kind else {
            continue;
        };
        let size = std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .len();
        out.push(Source {
            name,
            location: Location::Local(path),
            size,
            version: None,
            format,
            compression,
        });
    }
    if out.is_empty() {
        return Err(Error::invalid_at(
            arg,
            None,
            "no CSV, JSON-lines or Parquet files found",
        ));
    }
    Ok(out)
}

fn walk(dir: &FsPath, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if hidden(&name) {
            continue;
        }
        let path = e.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Lists the objects under `prefix` of `store` (one object if `prefix` names one), in key
/// order. `url` is the prefix as the user wrote it (`s3://bucket/prefix`), for names.
pub async fn expand_store(
    store: Arc<dyn ObjectStore>,
    bucket_url: &str,
    prefix: &str,
    format: Option<Format>,
) -> Result<Vec<Source>> {
    let shown = format!("{}/{}", bucket_url.trim_end_matches('/'), prefix);
    let source_of = |meta: object_store::ObjectMeta| -> Option<Source> {
        let key = meta.location.to_string();
        let file_name = key.rsplit('/').next().unwrap_or(&key).to_string();
        let (format, compression) = kind_of(&file_name, format)?;
        Some(Source {
            name: format!("{}/{key}", bucket_url.trim_end_matches('/')),
            location: Location::Object {
                store: store.clone(),
                path: meta.location,
            },
            size: meta.size,
            version: meta.e_tag.or(meta.version),
            format,
            compression,
        })
    };
    let trimmed = prefix.trim_matches('/');
    // A key named exactly.
    if !prefix.ends_with('/') && !trimmed.is_empty() {
        match store.head(&Path::from(trimmed)).await {
            Ok(meta) => {
                return source_of(meta).map(|s| vec![s]).ok_or_else(|| {
                    Error::invalid_at(
                        &shown,
                        None,
                        "unknown kind of object: name it .csv, .jsonl or .parquet (optionally .gz or .zst), or give --format",
                    )
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::from_store(&shown, e)),
        }
    }
    let base = (!trimmed.is_empty()).then(|| Path::from(trimmed));
    let metas: Vec<object_store::ObjectMeta> = store
        .list(base.as_ref())
        .try_collect()
        .await
        .map_err(|e| Error::from_store(&shown, e))?;
    let base_depth = base.as_ref().map(|b| b.parts().count()).unwrap_or(0);
    let mut out: Vec<Source> = metas
        .into_iter()
        .filter(|m| {
            !m.location
                .parts()
                .skip(base_depth)
                .any(|p| hidden(p.as_ref()))
        })
        .filter_map(source_of)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if out.is_empty() {
        return Err(Error::invalid_at(
            &shown,
            None,
            "no CSV, JSON-lines or Parquet objects under this prefix",
        ));
    }
    Ok(out)
}

/// Bytes of one object range read at a time, and ranges in flight.
const RANGE_BYTES: u64 = 8 << 20;
const RANGES_IN_FLIGHT: usize = 4;

impl Source {
    /// A local file: its kind from the extension, CSV when the extension says nothing.
    pub fn local_file(path: &FsPath) -> Result<Source> {
        let name = path.display().to_string();
        if !path.is_file() {
            return Err(Error::invalid_at(&name, None, "no such file"));
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (format, compression) = kind_of(&file_name, None)
            .or_else(|| kind_of(&file_name, Some(Format::Csv)))
            .expect("a given format always has a kind");
        let size = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        Ok(Source {
            name,
            location: Location::Local(path.to_path_buf()),
            size,
            version: None,
            format,
            compression,
        })
    }

    /// A fingerprint of this source's content (for chunk ids): for a local file its size and
    /// first 64 KiB, so the same file under another path is the same source; for an object
    /// its name, size and version.
    pub fn fingerprint(&self, table: &str) -> Result<String> {
        match &self.location {
            Location::Local(p) => source_fingerprint(table, p),
            Location::Object { .. } => {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                for part in [
                    table,
                    self.name.as_str(),
                    self.version.as_deref().unwrap_or(""),
                ] {
                    h.update(part.as_bytes());
                    h.update(&[0]);
                }
                h.update(&self.size.to_le_bytes());
                Ok(format!("{:032x}", h.digest128()))
            }
        }
    }

    /// Opens the stored bytes (not decompressed), counting them into `read`.
    ///
    /// Call it on a blocking thread: an object is fetched by tasks on `rt`, in ranges of
    /// 8 MiB, 4 at once, each with `If-Match` of the version listed.
    pub fn open_raw(
        &self,
        rt: &tokio::runtime::Handle,
        read: Arc<AtomicU64>,
    ) -> Result<Box<dyn Read + Send>> {
        let inner: Box<dyn Read + Send> = match &self.location {
            Location::Local(p) => {
                Box::new(std::fs::File::open(p).map_err(|e| {
                    Error::invalid_at(&self.name, None, format!("cannot open: {e}"))
                })?)
            }
            Location::Object { store, path } => {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Bytes>>(RANGES_IN_FLIGHT);
                let (store, path, size) = (store.clone(), path.clone(), self.size);
                let (version, name) = (self.version.clone(), self.name.clone());
                rt.spawn(async move {
                    let ranges = (0..size.div_ceil(RANGE_BYTES)).map(|i| {
                        let r = i * RANGE_BYTES..((i + 1) * RANGE_BYTES).min(size);
                        let opts = GetOptions {
                            if_match: version.clone(),
                            range: Some(GetRange::Bounded(r)),
                            ..Default::default()
                        };
                        let (store, path) = (store.clone(), path.clone());
                        async move {
                            let got = store.get_opts(&path, opts).await?;
                            got.bytes().await
                        }
                    });
                    let mut stream = futures::stream::iter(ranges).buffered(RANGES_IN_FLIGHT);
                    while let Some(r) = stream.next().await {
                        let r = r.map_err(|e| match e {
                            object_store::Error::Precondition { .. } => Error::invalid_at(
                                &name,
                                None,
                                "the object changed while it was read: run again to read its new version",
                            ),
                            e => Error::from_store(&name, e),
                        });
                        let stop = r.is_err();
                        if tx.send(r).is_err() || stop {
                            return;
                        }
                    }
                });
                Box::new(ChannelReader {
                    rx,
                    current: Bytes::new(),
                })
            }
        };
        Ok(Box::new(Counting { inner, read }))
    }

    /// Opens the source's bytes, decompressed.
    pub fn open(
        &self,
        rt: &tokio::runtime::Handle,
        read: Arc<AtomicU64>,
    ) -> Result<Box<dyn Read + Send>> {
        let raw = self.open_raw(rt, read)?;
        Ok(match self.compression {
            Compression::None => raw,
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
                std::io::BufReader::with_capacity(256 * 1024, raw),
            )),
            Compression::Zstd => {
                Box::new(zstd::Decoder::new(raw).map_err(|e| {
                    Error::invalid_at(&self.name, None, format!("not zstd data: {e}"))
                })?)
            }
        })
    }
}

/// Reads the byte ranges a fetching task sends.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(Ok(b)) => self.current = b,
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

struct Counting {
    inner: Box<dyn Read + Send>,
    read: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Fingerprint of a local source: table, size and the first 64 KiB.
pub(crate) fn source_fingerprint(table: &str, path: &FsPath) -> Result<String> {
    let name = path.display().to_string();
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::invalid_at(&name, None, format!("cannot open: {e}")))?;
    let len = f.metadata().map_err(|e| Error::io(&name, e))?.len();
    let mut head = vec![0u8; 64 * 1024];
    let mut n = 0;
    while n < head.len() {
        let k = f.read(&mut head[n..]).map_err(|e| Error::io(&name, e))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(table.as_bytes());
    h.update(&[0]);
    h.update(&len.to_le_bytes());
    h.update(&head[..n]);
    Ok(format!("{:032x}", h.digest128()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_extension() {
        assert_eq!(detect("a.csv"), Some((Format::Csv, Compression::None)));
        assert_eq!(detect("A.CSV.GZ"), Some((Format::Csv, Compression::Gzip)));
        assert_eq!(
            detect("x/y.jsonl.zst"),
            Some((Format::JsonLines, Compression::Zstd))
        );
        assert_eq!(
            detect("p.parquet"),
            Some((Format::Parquet, Compression::None))
        );
        assert_eq!(detect("p.parquet.gz"), None);
        assert_eq!(detect("README"), None);
        assert_eq!(detect("_SUCCESS"), None);
        assert_eq!(
            kind_of("dump.gz", Some(Format::Csv)),
            Some((Format::Csv, Compression::Gzip))
        );
    }

    #[test]
    fn directories_and_globs_expand_in_name_order_without_hidden_files() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("b/_tmp")).unwrap();
        for f in [
            "b/2.csv",
            "a.csv.gz",
            "b/_tmp/x.csv",
            ".hidden.csv",
            "notes.txt.md",
            "b/1.jsonl",
        ] {
            std::fs::write(root.join(f), "x\n").unwrap();
        }
        let names = |v: Vec<Source>| -> Vec<String> {
            v.iter()
                .map(|s| {
                    s.name
                        .strip_prefix(&format!("{}/", root.display()))
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        let all = expand_local(root.to_str().unwrap(), None).unwrap();
        assert_eq!(names(all), ["a.csv.gz", "b/1.jsonl", "b/2.csv"]);
        let glob = expand_local(&format!("{}/b/*.csv", root.display()), None).unwrap();
        assert_eq!(names(glob), ["b/2.csv"]);
        let err = expand_local(&format!("{}/nothing", root.display()), None).unwrap_err();
        assert!(err.to_string().contains("no such file"), "{err}");
        let alone = expand_local(&format!("{}/notes.txt.md", root.display()), None).unwrap();
        assert_eq!(alone[0].format, Format::Csv);
    }

    #[tokio::test]
    async fn objects_are_read_in_ranges_of_one_version() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let body: Vec<u8> = (0..(RANGE_BYTES * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        store
            .put(&Path::from("in/big.csv"), body.clone().into())
            .await
            .unwrap();
        store
            .put(&Path::from("in/_SUCCESS"), Bytes::new().into())
            .await
            .unwrap();
        let sources = expand_store(store.clone(), "mem://b", "in/", None)
            .await
            .unwrap();
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].name, "mem://b/in/big.csv");
        let src = sources[0].clone();
        let read = Arc::new(AtomicU64::new(0));
        let rt = tokio::runtime::Handle::current();
        let (got, n) = tokio::task::spawn_blocking({
            let read = read.clone();
            move || {
                let mut v = Vec::new();
                src.open(&rt, read.clone())
                    .unwrap()
                    .read_to_end(&mut v)
                    .unwrap();
                (v, read.load(Ordering::Relaxed))
            }
        })
        .await
        .unwrap();
        assert_eq!(got, body);
        assert_eq!(n, body.len() as u64);
        // Replaced after listing: the read fails instead of mixing versions.
        store
            .put(&Path::from("in/big.csv"), body[..100].to_vec().into())
            .await
            .unwrap();
        let src = sources[0].clone();
        let rt = tokio::runtime::Handle::current();
        let err = tokio::task::spawn_blocking(move || {
            let mut v = Vec::new();
            src.open(&rt, Arc::default())
                .unwrap()
                .read_to_end(&mut v)
                .unwrap_err()
        })
        .await
        .unwrap();
        assert!(
            err.to_string().contains("changed while it was read"),
            "{err}"
        );
        let err = expand_store(store, "mem://b", "none/", None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("mem://b/none/"), "{err}");
    }
}
