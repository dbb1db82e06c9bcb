//! The embedded queue: SQS semantics on one SQLite file (WAL mode), safe for several processes.
//!
//! Every state change is one `BEGIN IMMEDIATE` transaction, so two processes never claim the
//! same message. Receipts are `<seq>:<random>`; a new receipt is issued on every delivery, so a
//! stale receipt can neither delete nor extend a message that someone else now holds.
//!
//! Bodies of [`FILE_BODY_BYTES`] or more are kept in files beside the database
//! (`<database>-bodies/<uuid>.body`), not in it: SQLite writes a large body three times (WAL,
//! checkpoint, and again when a page moves), a file is written once and read once. The rules
//! that keep a file and its row consistent through a crash:
//! - a file is written and synced before the transaction that commits its row, and removed if
//!   that transaction fails; a crash in between leaves a file no row names, removed when the
//!   database is next opened once it is `ORPHAN_AGE` old (a younger one may be a send in
//!   flight in another process);
//! - a file is removed only after the transaction that deleted its row committed (delete,
//!   purge, retention); a crash in between leaves an orphan, as above;
//! - a receive reads the file after its transaction: a file gone by then belongs to a message
//!   deleted meanwhile under a later receipt (a late delivery, dropped, as SQS would), or, if
//!   the message is still there, was lost: the message is dead-lettered with that reason.
//!
//! The row of a file-backed message holds a placeholder body that a sluice older than this
//! layout cannot decode, so such a consumer dead-letters the message instead of deleting it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::Notify;

use super::{
    BatchFailure, MAX_BATCH, Queue, QueueSettings, QueueStats, ReceiveOptions, ReceivedMessage,
};
use crate::error::{Error, Result};

/// Milliseconds since the epoch; replaceable in tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in milliseconds since the epoch.
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// Bodies of at least this many bytes are kept in files.
pub const FILE_BODY_BYTES: usize = 64 * 1024;
/// A body file no message names is removed once it is this old.
pub(crate) const ORPHAN_AGE: Duration = Duration::from_secs(3600);
/// First bytes of the stored body of a file-backed message: a chunk's magic with no payload
/// line, which every sluice consumer refuses (and so dead-letters) rather than deleting.
const FILE_BODY_PLACEHOLDER: &str = "sluice.chunk.v1 body kept in the queue's file ";

#[derive(Debug)]
struct Db {
    path: PathBuf,
    /// Directory of the body files.
    bodies: PathBuf,
    conn: Mutex<Connection>,
    clock: Arc<dyn Clock>,
    /// Wakes long polls in this process when a message is sent.
    sent: Notify,
}

impl Db {
    fn body_path(&self, file: &str) -> PathBuf {
        self.bodies.join(file)
    }

    /// Writes and syncs the bodies of [`FILE_BODY_BYTES`] or more to new files; returns each
    /// body's file name (`None`: stored in the database). Nothing is left behind on error.
    fn write_bodies(&self, bodies: &[String]) -> Result<Vec<Option<String>>> {
        let mut names: Vec<Option<String>> = Vec::with_capacity(bodies.len());
        let fail = |names: &[Option<String>], path: &Path, e: std::io::Error| {
            self.remove_files(names.iter().flatten());
            Err(Error::io(path, e))
        };
        if bodies.iter().any(|b| b.len() >= FILE_BODY_BYTES)
            && let Err(e) = std::fs::create_dir_all(&self.bodies)
        {
            return fail(&names, &self.bodies, e);
        }
        for b in bodies {
            if b.len() < FILE_BODY_BYTES {
                names.push(None);
                continue;
            }
            let name = format!("{}.body", uuid::Uuid::now_v7().simple());
            let path = self.body_path(&name);
            let written = std::fs::File::create_new(&path).and_then(|mut f| {
                std::io::Write::write_all(&mut f, b.as_bytes())?;
                f.sync_data()
            });
            if let Err(e) = written {
                let _ = std::fs::remove_file(&path);
                return fail(&names, &path, e);
            }
            names.push(Some(name));
        }
        // The new names themselves must survive a power loss before their rows commit.
        if names.iter().any(Option::is_some)
            && let Err(e) = std::fs::File::open(&self.bodies).and_then(|d| d.sync_all())
        {
            return fail(&names, &self.bodies, e);
        }
        Ok(names)
    }

    /// Removes body files whose rows are gone; a file already gone is fine, and a file that
    /// cannot be removed is left to the orphan sweep.
    fn remove_files<'a>(&self, files: impl IntoIterator<Item = &'a String>) {
        for f in files {
            let path = self.body_path(f);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "queue body file not removed; it is unreferenced now")
                }
            }
        }
    }

    /// Removes body files no row names that are older than `min_age`.
    fn sweep_orphans(&self, conn: &Connection, min_age: Duration) -> Result<usize> {
        let entries = match std::fs::read_dir(&self.bodies) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(&self.bodies, e)),
        };
        let now = std::time::SystemTime::now();
        let old: Vec<String> = entries
            .flatten()
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= min_age)
            })
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".body"))
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let named: std::collections::HashSet<String> = (|| {
            let mut st = conn.prepare("SELECT file FROM message_bodies WHERE file IS NOT NULL")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()
        })()
        .map_err(|e| self.err(e))?;
        let orphans: Vec<String> = old.into_iter().filter(|n| !named.contains(n)).collect();
        if !orphans.is_empty() {
            tracing::info!(files = orphans.len(), dir = %self.bodies.display(), "removing queue body files no message names (left by a crash)");
        }
        self.remove_files(&orphans);
        Ok(orphans.len())
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::Database {
            path: self.path.clone(),
            source: e,
        }
    }

    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Connection, &Db) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = db.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn, &db).map_err(|e| db.err(e))
        })
        .await?
    }
}

/// The set of embedded queues in one database file.
#[derive(Debug, Clone)]
pub struct EmbeddedQueues {
    db: Arc<Db>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    visibility_timeout_ms INTEGER NOT NULL,
    max_receive_count INTEGER NOT NULL,
    dead_letter_queue TEXT,
    retention_ms INTEGER NOT NULL,
    max_message_bytes INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    dead_letter_reason TEXT
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (queue, visible_at_ms, seq);
-- Bodies apart from the state a receive or a heartbeat updates: SQLite rewrites a whole row
-- (every overflow page of a 1 MiB body) when an update changes its size, as a receipt does.
-- `messages.body` is '' from schema version 1 on. `file` (version 2 on): the body is in that
-- file of the bodies directory, and `body` holds a placeholder.
CREATE TABLE IF NOT EXISTS message_bodies (
    seq INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    file TEXT
);
CREATE TRIGGER IF NOT EXISTS message_bodies_follow AFTER DELETE ON messages BEGIN
    DELETE FROM message_bodies WHERE seq = old.seq;
END;
";

/// Brings a queue database written by an earlier version to the current schema: version 1
/// moved bodies to `message_bodies`, version 2 added its `file` column.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    const CURRENT: i64 = 2;
    let version = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
    // Read without the write lock: every open of a migrated database ends here.
    if version(conn)? >= CURRENT {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated it meanwhile.
    let v = version(&tx)?;
    if v < 1 {
        tx.execute_batch(
            "INSERT OR IGNORE INTO message_bodies (seq, body) SELECT seq, body FROM messages;
             UPDATE messages SET body = '' WHERE body != '';",
        )?;
    }
    if v < 2 {
        // A new database got the column from `SCHEMA`.
        let has_file: bool = tx.query_row(
            "SELECT count(*) FROM pragma_table_info('message_bodies') WHERE name = 'file'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !has_file {
            tx.execute_batch("ALTER TABLE message_bodies ADD COLUMN file TEXT;")?;
        }
    }
    tx.pragma_update(None, "user_version", CURRENT)?;
    tx.commit()
}

/// The body files of the messages `filter` selects (columns of `messages` as `m.…`), to be
/// removed once the transaction that deletes those messages has committed.
fn files_where(
    tx: &rusqlite::Transaction,
    filter: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<Vec<String>> {
    let mut st = tx.prepare_cached(&format!(
        "SELECT b.file FROM messages m JOIN message_bodies b ON b.seq = m.seq WHERE b.file IS NOT NULL AND {filter}"
    ))?;
    let rows = st.query_map(p, |r| r.get(0))?;
    rows.collect()
}

impl EmbeddedQueues {
    /// Creates (if needed) the queue `name` with its dead-letter queue
    /// ([`crate::queue::dead_letter_name`]), which it moves a message to after
    /// `settings.max_receive_count` receives.
    pub async fn ensure_with_dead_letter(
        &self,
        name: &str,
        settings: &QueueSettings,
    ) -> Result<()> {
        let dlq = crate::queue::dead_letter_name(name);
        self.create_queue(
            &dlq,
            &QueueSettings {
                dead_letter_queue: None,
                ..settings.clone()
            },
        )
        .await?;
        self.create_queue(
            name,
            &QueueSettings {
                dead_letter_queue: Some(dlq),
                ..settings.clone()
            },
        )
        .await
    }

    /// Opens (creating if needed) the queue database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// Like [`EmbeddedQueues::open`] with a given clock (for tests of visibility timeouts).
    pub fn open_with_clock(path: impl AsRef<Path>, clock: Arc<dyn Clock>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let err = |e| Error::Database {
            path: path.clone(),
            source: e,
        };
        let mut conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        migrate(&mut conn).map_err(err)?;
        let mut bodies = path.clone().into_os_string();
        bodies.push("-bodies");
        let db = Db {
            path,
            bodies: bodies.into(),
            conn: Mutex::new(conn),
            clock,
            sent: Notify::new(),
        };
        let queues = EmbeddedQueues { db: Arc::new(db) };
        queues.sweep_orphan_bodies(ORPHAN_AGE)?;
        Ok(queues)
    }

    /// Removes body files no message names that are at least `min_age` old; returns how
    /// many. Opening the database does this with `ORPHAN_AGE`.
    pub fn sweep_orphan_bodies(&self, min_age: Duration) -> Result<usize> {
        let conn = self.db.conn.lock().unwrap_or_else(|p| p.into_inner());
        self.db.sweep_orphans(&conn, min_age)
    }

    /// The directory of the body files.
    pub fn bodies_dir(&self) -> &Path {
        &self.db.bodies
    }

    /// Creates a queue; creating an existing queue again is a no-op that keeps its settings.
    pub async fn create_queue(&self, name: &str, settings: &QueueSettings) -> Result<()> {
        crate::schema::validate_name("queue", name)?;
        if !(1024..=super::EMBEDDED_MAX_MESSAGE_BYTES).contains(&settings.max_message_bytes) {
            return Err(Error::invalid(format!(
                "the largest message of an embedded queue is 1 KiB to {} MiB, not {} bytes",
                super::EMBEDDED_MAX_MESSAGE_BYTES >> 20,
                settings.max_message_bytes
            )));
        }
        if let Some(dlq) = &settings.dead_letter_queue {
            crate::schema::validate_name("queue", dlq)?;
        }
        let (name, s) = (name.to_string(), settings.clone());
        self.db
            .run(move |c, db| {
                c.execute(
                    "INSERT OR IGNORE INTO queues VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        name,
                        s.visibility_timeout.as_millis() as i64,
                        s.max_receive_count,
                        s.dead_letter_queue,
                        s.retention.as_millis() as i64,
                        s.max_message_bytes as i64,
                        db.clock.now_ms()
                    ],
                )
                .map(|_| ())
            })
            .await
    }

    /// Opens an existing queue.
    pub async fn queue(&self, name: &str) -> Result<SqliteQueue> {
        let n = name.to_string();
        let settings = self
            .db
            .run(move |c, _| {
                c.query_row(
                    "SELECT visibility_timeout_ms, max_receive_count, dead_letter_queue, retention_ms, max_message_bytes FROM queues WHERE name = ?1",
                    [n],
                    |r| {
                        Ok(QueueSettings {
                            visibility_timeout: Duration::from_millis(r.get::<_, i64>(0)? as u64),
                            max_receive_count: r.get(1)?,
                            dead_letter_queue: r.get(2)?,
                            retention: Duration::from_millis(r.get::<_, i64>(3)? as u64),
                            max_message_bytes: r.get::<_, i64>(4)? as usize,
                        })
                    },
                )
                .optional()
            })
            .await?
            .ok_or_else(|| Error::NotFound { what: "queue", name: name.to_string() })?;
        Ok(SqliteQueue {
            name: name.to_string(),
            settings,
            db: self.db.clone(),
            last_retention: AtomicI64::new(0),
        })
    }

    /// Names of all queues with their settings.
    pub async fn list(&self) -> Result<Vec<(String, QueueSettings)>> {
        let names: Vec<String> = self
            .db
            .run(|c, _| {
                let mut st = c.prepare("SELECT name FROM queues ORDER BY name")?;
                let rows = st.query_map([], |r| r.get(0))?;
                rows.collect()
            })
            .await?;
        let mut out = Vec::new();
        for n in names {
            let q = self.queue(&n).await?;
            out.push((n, q.settings.clone()));
        }
        Ok(out)
    }

    /// Moves every message of `from` (a dead-letter queue) back to `to`, visible at once and with
    /// its receive count reset. Returns how many moved.
    pub async fn redrive(&self, from: &str, to: &str) -> Result<u64> {
        self.queue(from).await?;
        self.queue(to).await?;
        let (from, to) = (from.to_string(), to.to_string());
        let moved = self
            .db
            .run(move |c, db| {
                c.execute(
                    "UPDATE messages SET queue = ?2, visible_at_ms = ?3, receive_count = 0, receipt = NULL, dead_letter_reason = NULL WHERE queue = ?1",
                    params![from, to, db.clock.now_ms()],
                )
            })
            .await?;
        self.db.sent.notify_waiters();
        Ok(moved as u64)
    }

    /// Dead-letter reasons of the messages in a queue, with their message ids (for `queue stats`).
    pub async fn dead_letter_reasons(&self, queue: &str) -> Result<Vec<(String, String)>> {
        let q = queue.to_string();
        self.db
            .run(move |c, _| {
                let mut st = c.prepare(
                    "SELECT message_id, COALESCE(dead_letter_reason, '') FROM messages WHERE queue = ?1 ORDER BY seq LIMIT 100",
                )?;
                let rows = st.query_map([q], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await
    }
}

/// One embedded queue. Cheap to clone through [`EmbeddedQueues::queue`].
#[derive(Debug)]
pub struct SqliteQueue {
    name: String,
    settings: QueueSettings,
    db: Arc<Db>,
    last_retention: AtomicI64,
}

fn parse_receipt(r: &str) -> Option<i64> {
    r.split_once(':')?.0.parse().ok()
}

impl SqliteQueue {
    /// The queue's settings.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    fn receive_now(
        &self,
        opts: ReceiveOptions,
    ) -> impl Future<Output = Result<Vec<ReceivedMessage>>> + use<> {
        let name = self.name.clone();
        let s = self.settings.clone();
        let vt = opts
            .visibility_timeout
            .unwrap_or(s.visibility_timeout)
            .as_millis() as i64;
        let max = opts.max_messages;
        let now_probe = self.db.clock.now_ms();
        let do_retention = now_probe - self.last_retention.load(Ordering::Relaxed) > 60_000;
        if do_retention {
            self.last_retention.store(now_probe, Ordering::Relaxed);
        }
        let db = self.db.clone();
        async move {
            let settings = s.clone();
            let out = db.run(move |c, db| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = db.clock.now_ms();
                let mut expired = Vec::new();
                if do_retention {
                    let cutoff = now - s.retention.as_millis() as i64;
                    expired = files_where(&tx, "m.queue = ?1 AND m.sent_at_ms < ?2", params![name, cutoff])?;
                    tx.execute(
                        "DELETE FROM messages WHERE queue = ?1 AND sent_at_ms < ?2",
                        params![name, cutoff],
                    )?;
                }
                let mut out = Vec::new();
                // Claimed by this call: with a visibility timeout of 0 a claimed message is
                // visible again at once, and one receive must not return it twice.
                let mut taken = std::collections::HashSet::new();
                'outer: loop {
                    let candidates: Vec<(i64, u32)> = {
                        let mut st = tx.prepare_cached(
                            "SELECT seq, receive_count FROM messages WHERE queue = ?1 AND visible_at_ms <= ?2 ORDER BY visible_at_ms, seq LIMIT ?3",
                        )?;
                        let rows = st.query_map(params![name, now, (max - out.len() + taken.len()) as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                        rows.collect::<rusqlite::Result<_>>()?
                    };
                    let mut progressed = false;
                    for (seq, count) in candidates {
                        if !taken.insert(seq) {
                            continue;
                        }
                        progressed = true;
                        if let Some(dlq) = &s.dead_letter_queue
                            && count >= s.max_receive_count
                        {
                            tx.execute(
                                "UPDATE messages SET queue = ?2, visible_at_ms = ?3, receipt = NULL, dead_letter_reason = ?4 WHERE seq = ?1",
                                params![seq, dlq, now, format!("received {count} times (maxReceiveCount {}) without being deleted", s.max_receive_count)],
                            )?;
                            continue;
                        }
                        let receipt = format!("{seq}:{}", uuid::Uuid::new_v4().simple());
                        let (message_id, receive_count) = tx.query_row(
                            "UPDATE messages SET visible_at_ms = ?2, receive_count = receive_count + 1, receipt = ?3 WHERE seq = ?1 RETURNING message_id, receive_count",
                            params![seq, now + vt, receipt],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )?;
                        let (body, file): (String, Option<String>) = tx
                            .prepare_cached("SELECT body, file FROM message_bodies WHERE seq = ?1")?
                            .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
                        let msg = ReceivedMessage { message_id, receipt: receipt.clone(), body, receive_count };
                        out.push((msg, file));
                        if out.len() == max {
                            break 'outer;
                        }
                    }
                    // Nothing new (none left, or only messages this call already took): done.
                    if !progressed {
                        break;
                    }
                }
                tx.commit()?;
                db.remove_files(&expired);
                Ok(out)
            })
            .await?;
            if out.iter().all(|(_, f)| f.is_none()) {
                return Ok(out.into_iter().map(|(m, _)| m).collect());
            }
            // Bodies in files are read after the transaction, outside the database's lock.
            let (out, lost) = {
                let db = db.clone();
                tokio::task::spawn_blocking(move || db.read_bodies(out)).await??
            };
            if !lost.is_empty() {
                db.run(move |c, db| lose(c, db, &settings, &lost)).await?;
            }
            Ok(out)
        }
    }
}

/// Received messages whose body file was gone when read, with that file's name.
type Lost = Vec<(ReceivedMessage, String)>;

impl Db {
    /// Reads the bodies of received messages kept in files. Returns the messages whose body
    /// was read, and those whose file is gone.
    fn read_bodies(
        &self,
        received: Vec<(ReceivedMessage, Option<String>)>,
    ) -> Result<(Vec<ReceivedMessage>, Lost)> {
        let (mut out, mut lost) = (Vec::with_capacity(received.len()), Vec::new());
        for (mut m, file) in received {
            let Some(file) = file else {
                out.push(m);
                continue;
            };
            let path = self.body_path(&file);
            let read = std::fs::File::open(&path).and_then(|mut f| {
                let len = f.metadata()?.len() as usize;
                let mut bytes = crate::chunk::bufpool::take(len);
                std::io::Read::read_to_end(&mut f, &mut bytes)?;
                Ok(bytes)
            });
            match read {
                Ok(bytes) => {
                    m.body = String::from_utf8(bytes).map_err(|_| {
                        Error::io(
                            &path,
                            std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                "queue body file is not UTF-8",
                            ),
                        )
                    })?;
                    out.push(m);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => lost.push((m, file)),
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok((out, lost))
    }
}

/// Received messages whose body file was gone when read. A message deleted meanwhile (under a
/// later receipt) is simply not delivered; one still held under this receipt lost its body,
/// and is moved to the dead-letter queue with that reason, or, without one, logged and left to
/// come back after its visibility timeout.
fn lose(
    c: &mut Connection,
    db: &Db,
    s: &QueueSettings,
    lost: &[(ReceivedMessage, String)],
) -> rusqlite::Result<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (m, file) in lost {
        let Some(seq) = parse_receipt(&m.receipt) else {
            continue;
        };
        let held: bool = tx.query_row(
            "SELECT count(*) FROM messages WHERE seq = ?1 AND receipt = ?2",
            params![seq, m.receipt],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !held {
            continue;
        }
        let path = db.body_path(file);
        tracing::error!(message_id = %m.message_id, path = %path.display(), "the body file of a queued message is missing");
        if let Some(dlq) = &s.dead_letter_queue {
            tx.execute(
                "UPDATE messages SET queue = ?2, visible_at_ms = ?3, receipt = NULL, dead_letter_reason = ?4 WHERE seq = ?1",
                params![seq, dlq, db.clock.now_ms(), format!("its body file {} is missing", path.display())],
            )?;
        }
    }
    tx.commit()
}

fn check_batch(n: usize) -> Result<()> {
    if n == 0 || n > MAX_BATCH {
        return Err(Error::invalid(format!(
            "a batch holds 1 to {MAX_BATCH} entries, not {n}"
        )));
    }
    Ok(())
}

/// The queue of the messages held in `group` of queue `name` (a name no queue can have).
fn held_queue(name: &str, group: &str) -> String {
    format!("{name}{HELD_SEPARATOR}{group}")
}

/// Between a queue's name and a held group's, in the queue column of held messages.
const HELD_SEPARATOR: &str = "\u{1}held\u{1}";

impl SqliteQueue {
    /// Stores `bodies` as messages of the queue named `queue` (this queue, or one of its held
    /// groups), visible at once.
    async fn send_into(&self, queue: String, bodies: Vec<String>) -> Result<Vec<String>> {
        check_batch(bodies.len())?;
        let total: usize = bodies.iter().map(|b| b.len()).sum();
        if total > self.settings.max_message_bytes {
            return Err(Error::MessageTooLarge {
                size: total,
                limit: self.settings.max_message_bytes,
            });
        }
        // Large bodies go to files first, outside the database's lock (small ones, the usual
        // case of one event per message, skip the hop to a blocking thread).
        let db = self.db.clone();
        let (bodies, files) = if bodies.iter().all(|b| b.len() < FILE_BODY_BYTES) {
            let none = vec![None; bodies.len()];
            (bodies, none)
        } else {
            tokio::task::spawn_blocking(move || {
                let files = db.write_bodies(&bodies)?;
                // A body in its file is done with: its buffer can carry another.
                let bodies: Vec<String> = bodies
                    .into_iter()
                    .zip(&files)
                    .map(|(b, f)| match f {
                        Some(_) => {
                            crate::chunk::bufpool::give_string(b);
                            String::new()
                        }
                        None => b,
                    })
                    .collect();
                Ok::<_, Error>((bodies, files))
            })
            .await??
        };
        let written: Vec<String> = files.iter().flatten().cloned().collect();
        let name = queue;
        let ids = self
            .db
            .run(move |c, db| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = db.clock.now_ms();
                let mut ids = Vec::with_capacity(bodies.len());
                {
                    let mut st = tx.prepare_cached(
                        "INSERT INTO messages (queue, message_id, body, sent_at_ms, visible_at_ms) VALUES (?1, ?2, '', ?3, ?3)",
                    )?;
                    let mut put = tx.prepare_cached(
                        "INSERT INTO message_bodies (seq, body, file) VALUES (?1, ?2, ?3)",
                    )?;
                    for (b, file) in bodies.iter().zip(&files) {
                        let id = uuid::Uuid::new_v4().to_string();
                        st.execute(params![name, id, now])?;
                        let seq = tx.last_insert_rowid();
                        match file {
                            Some(f) => put.execute(params![seq, format!("{FILE_BODY_PLACEHOLDER}{f}"), f])?,
                            None => put.execute(params![seq, b, None::<String>])?,
                        };
                        ids.push(id);
                    }
                }
                tx.commit()?;
                Ok(ids)
            })
            .await;
        if ids.is_err() {
            self.db.remove_files(&written);
        }
        let ids = ids?;
        self.db.sent.notify_waiters();
        Ok(ids)
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_message_bytes(&self) -> usize {
        self.settings.max_message_bytes
    }

    fn billing_unit_bytes(&self) -> Option<usize> {
        None
    }

    fn prefers_text_chunks(&self) -> bool {
        true
    }

    fn on_local_disk(&self) -> bool {
        true
    }

    fn visibility_timeout(&self) -> Duration {
        self.settings.visibility_timeout
    }

    async fn send_batch(&self, bodies: Vec<String>) -> Result<Vec<String>> {
        self.send_into(self.name.clone(), bodies).await
    }

    fn holds_messages(&self) -> bool {
        true
    }

    async fn send_held(&self, group: &str, bodies: Vec<String>) -> Result<()> {
        self.send_into(held_queue(&self.name, group), bodies)
            .await
            .map(|_| ())
    }

    async fn release_held(&self, group: &str) -> Result<u64> {
        let (held, name) = (held_queue(&self.name, group), self.name.clone());
        let moved = self
            .db
            .run(move |c, db| {
                c.execute(
                    "UPDATE messages SET queue = ?2, visible_at_ms = ?3 WHERE queue = ?1",
                    params![held, name, db.clock.now_ms()],
                )
            })
            .await?;
        self.db.sent.notify_waiters();
        Ok(moved as u64)
    }

    async fn drop_held(&self, group: &str) -> Result<()> {
        let held = held_queue(&self.name, group);
        // Groups a producer that died left behind a day ago or more go with it.
        let stale = format!("{}{HELD_SEPARATOR}%", self.name);
        self.db
            .run(move |c, db| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let day_ago = db.clock.now_ms() - 86_400_000;
                let mut files = files_where(&tx, "m.queue = ?1", params![held])?;
                files.extend(files_where(
                    &tx,
                    "m.queue LIKE ?1 AND m.sent_at_ms < ?2",
                    params![stale, day_ago],
                )?);
                tx.execute("DELETE FROM messages WHERE queue = ?1", params![held])?;
                tx.execute(
                    "DELETE FROM messages WHERE queue LIKE ?1 AND sent_at_ms < ?2",
                    params![stale, day_ago],
                )?;
                tx.commit()?;
                db.remove_files(&files);
                Ok(())
            })
            .await
    }

    async fn receive(&self, opts: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        check_batch(opts.max_messages)?;
        let deadline = Instant::now() + opts.wait.min(super::MAX_WAIT);
        let mut pause = Duration::from_millis(10);
        loop {
            let notified = self.db.sent.notified();
            let got = self.receive_now(opts).await?;
            let now = Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            // Other processes cannot notify us: poll, backing off to 250 ms.
            let _ = tokio::time::timeout(pause.min(deadline - now), notified).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<BatchFailure>> {
        check_batch(receipts.len())?;
        let receipts = receipts.to_vec();
        self.db
            .run(move |c, db| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut failed = Vec::new();
                let mut files = Vec::new();
                for (i, r) in receipts.iter().enumerate() {
                    match parse_receipt(r) {
                        Some(seq) => {
                            files.extend(files_where(
                                &tx,
                                "m.seq = ?1 AND m.receipt = ?2",
                                params![seq, r],
                            )?);
                            tx.execute(
                                "DELETE FROM messages WHERE seq = ?1 AND receipt = ?2",
                                params![seq, r],
                            )?;
                        }
                        None => failed.push(BatchFailure {
                            index: i,
                            code: "ReceiptHandleIsInvalid".into(),
                            message: format!("malformed receipt {r:?}"),
                        }),
                    }
                }
                tx.commit()?;
                db.remove_files(&files);
                Ok(failed)
            })
            .await
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>> {
        check_batch(entries.len())?;
        let entries = entries.to_vec();
        let woke = entries.iter().any(|(_, t)| t.is_zero());
        let failed = self
            .db
            .run(move |c, db| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = db.clock.now_ms();
                let mut failed = Vec::new();
                for (i, (r, t)) in entries.iter().enumerate() {
                    let n = match parse_receipt(r) {
                        Some(seq) => tx.execute(
                            "UPDATE messages SET visible_at_ms = ?3 WHERE seq = ?1 AND receipt = ?2 AND visible_at_ms > ?4",
                            params![seq, r, now + t.as_millis() as i64, now],
                        )?,
                        None => 0,
                    };
                    if n == 0 {
                        failed.push(BatchFailure {
                            index: i,
                            code: "MessageNotInflight".into(),
                            message: format!("receipt {r:?} does not name an in-flight delivery"),
                        });
                    }
                }
                tx.commit()?;
                Ok(failed)
            })
            .await?;
        if woke {
            self.db.sent.notify_waiters();
        }
        Ok(failed)
    }

    async fn stats(&self) -> Result<QueueStats> {
        let name = self.name.clone();
        self.db
            .run(move |c, db| {
                let now = db.clock.now_ms();
                c.query_row(
                    "SELECT COALESCE(SUM(visible_at_ms <= ?2), 0), COALESCE(SUM(visible_at_ms > ?2), 0), MIN(sent_at_ms) FROM messages WHERE queue = ?1",
                    params![name, now],
                    |r| {
                        let oldest: Option<i64> = r.get(2)?;
                        Ok(QueueStats {
                            visible: r.get::<_, i64>(0)? as u64,
                            in_flight: r.get::<_, i64>(1)? as u64,
                            oldest_age: oldest
                                .map(|t| Duration::from_millis(now.saturating_sub(t).max(0) as u64)),
                        })
                    },
                )
            })
            .await
    }

    async fn purge(&self) -> Result<()> {
        let name = self.name.clone();
        self.db
            .run(move |c, db| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let files = files_where(&tx, "m.queue = ?1", params![name])?;
                tx.execute("DELETE FROM messages WHERE queue = ?1", [&name])?;
                tx.commit()?;
                db.remove_files(&files);
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Queue, QueueExt, ReceiveOptions};

    /// A queue database written before bodies had their own table: its messages are received
    /// whole after the upgrade, and deleting them deletes their bodies.
    #[tokio::test]
    async fn a_database_of_the_earlier_schema_keeps_its_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        {
            let qs = EmbeddedQueues::open(&path).unwrap();
            qs.create_queue("q", &QueueSettings::default())
                .await
                .unwrap();
        }
        // What the earlier schema held: the body in `messages`, version 0.
        let conn = Connection::open(&path).unwrap();
        let big = "x".repeat(100_000);
        let now = SystemClock.now_ms();
        for (id, body) in [("m1", "first"), ("m2", big.as_str())] {
            conn.execute(
                "INSERT INTO messages (queue, message_id, body, sent_at_ms, visible_at_ms) VALUES ('q', ?1, ?2, ?3, ?3)",
                params![id, body, now],
            )
            .unwrap();
        }
        conn.execute_batch("DELETE FROM message_bodies; PRAGMA user_version = 0;")
            .unwrap();
        drop(conn);

        let qs = EmbeddedQueues::open(&path).unwrap();
        let q = qs.queue("q").await.unwrap();
        q.send_batch(vec!["third".to_string()]).await.unwrap();
        let got = q
            .receive(ReceiveOptions {
                wait: Duration::ZERO,
                ..Default::default()
            })
            .await
            .unwrap();
        let bodies: Vec<(usize, &str)> = got
            .iter()
            .map(|m| (m.body.len(), &m.body[..m.body.len().min(5)]))
            .collect();
        assert_eq!(bodies, [(5, "first"), (100_000, "xxxxx"), (5, "third")]);
        let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
        assert!(q.delete_all(&receipts).await.unwrap().is_empty());
        let conn = Connection::open(&path).unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM message_bodies", [], |r| r.get(0))
            .unwrap();
        let in_rows: i64 = conn
            .query_row("SELECT count(*) FROM messages WHERE body != ''", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!((left, in_rows), (0, 0));
    }

    fn body_files(qs: &EmbeddedQueues) -> usize {
        std::fs::read_dir(qs.bodies_dir())
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn now_opts() -> ReceiveOptions {
        ReceiveOptions {
            wait: Duration::ZERO,
            ..Default::default()
        }
    }

    /// Large bodies are files from send to delete, purge or expiry; the database holds a
    /// placeholder that no sluice consumer can take for a chunk.
    #[tokio::test]
    async fn large_bodies_are_files_for_as_long_as_their_messages() {
        #[derive(Debug)]
        struct Fake(std::sync::atomic::AtomicI64);
        impl Clock for Fake {
            fn now_ms(&self) -> i64 {
                self.0.load(Ordering::SeqCst)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let clock = Arc::new(Fake(AtomicI64::new(1_000_000)));
        let qs = EmbeddedQueues::open_with_clock(&path, clock.clone()).unwrap();
        let s = QueueSettings {
            retention: Duration::from_secs(600),
            ..Default::default()
        };
        qs.create_queue("q", &s).await.unwrap();
        let q = qs.queue("q").await.unwrap();
        let big = |c: char, n: usize| c.to_string().repeat(n);
        let bodies = vec![
            "small ✓".to_string(),
            big('a', FILE_BODY_BYTES - 1),
            big('b', FILE_BODY_BYTES),
            format!("ü{}", big('c', 900_000)),
        ];
        q.send_batch(bodies.clone()).await.unwrap();
        assert_eq!(body_files(&qs), 2);
        let conn = Connection::open(&path).unwrap();
        let stored: Vec<(usize, Option<String>, String)> = conn
            .prepare(
                "SELECT length(body), file, substr(body, 1, 60) FROM message_bodies ORDER BY seq",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)? as usize, r.get(1)?, r.get(2)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(stored[0].1, None);
        assert_eq!((stored[1].0, &stored[1].1), (FILE_BODY_BYTES - 1, &None));
        for (_, file, text) in &stored[2..] {
            assert!(
                file.as_deref().is_some_and(|f| f.ends_with(".body")),
                "{file:?}"
            );
            // A consumer that knows nothing of files refuses the placeholder, never deletes it.
            let placeholder: String = conn
                .query_row(
                    "SELECT body FROM message_bodies WHERE file = ?1",
                    [file],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(text.starts_with(crate::chunk::MAGIC));
            assert!(matches!(
                crate::chunk::decode(&placeholder),
                Err(Error::Undecodable(_))
            ));
        }
        let got = q.receive(now_opts()).await.unwrap();
        let mut got_bodies: Vec<String> = got.iter().map(|m| m.body.clone()).collect();
        got_bodies.sort();
        let mut want = bodies.clone();
        want.sort();
        assert!(got_bodies == want, "bodies differ");
        let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
        assert!(q.delete_all(&receipts).await.unwrap().is_empty());
        assert_eq!(body_files(&qs), 0, "deleted messages leave no files");

        q.send_batch(vec![big('d', FILE_BODY_BYTES), big('e', FILE_BODY_BYTES)])
            .await
            .unwrap();
        assert_eq!(body_files(&qs), 2);
        q.purge().await.unwrap();
        assert_eq!(body_files(&qs), 0, "a purge leaves no files");

        q.send_batch(vec![big('f', FILE_BODY_BYTES)]).await.unwrap();
        clock.0.fetch_add(601_000, Ordering::SeqCst);
        assert!(q.receive(now_opts()).await.unwrap().is_empty());
        assert_eq!(body_files(&qs), 0, "expired messages leave no files");
    }

    /// A crash between writing a body and committing its message leaves a file no row names:
    /// removed once old enough, never while it may be a send in flight. A message whose file
    /// is lost is dead-lettered with that reason, not delivered empty.
    #[tokio::test]
    async fn held_messages_are_delivered_once_released_and_gone_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let qs = EmbeddedQueues::open(dir.path().join("q.db")).unwrap();
        qs.create_queue("q", &QueueSettings::default())
            .await
            .unwrap();
        let q = qs.queue("q").await.unwrap();
        assert!(q.holds_messages());
        let receive = || async {
            q.receive(ReceiveOptions {
                max_messages: 10,
                wait: Duration::ZERO,
                visibility_timeout: None,
            })
            .await
            .unwrap()
        };
        let big = "b".repeat(FILE_BODY_BYTES + 10);
        q.send_held("g1", vec!["one".into(), big.clone()])
            .await
            .unwrap();
        q.send_held("g2", vec!["two".into()]).await.unwrap();
        q.send_batch(vec!["plain".into()]).await.unwrap();
        // Held ones are neither delivered nor counted.
        let got = receive().await;
        assert_eq!(
            got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
            ["plain"]
        );
        assert_eq!(q.stats().await.unwrap().visible, 0);
        assert_eq!(body_files(&qs), 1);
        // Released: all of the group at once; a dropped group is gone with its body files.
        assert_eq!(q.release_held("g1").await.unwrap(), 2);
        q.drop_held("g2").await.unwrap();
        let mut got: Vec<String> = receive().await.into_iter().map(|m| m.body).collect();
        got.sort();
        assert_eq!(got, vec![big, "one".to_string()]);
        assert_eq!(q.release_held("g2").await.unwrap(), 0);
        assert!(receive().await.is_empty());
    }

    #[tokio::test]
    async fn orphan_files_are_swept_and_a_lost_body_is_dead_lettered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let qs = EmbeddedQueues::open(&path).unwrap();
        qs.create_queue("dlq", &QueueSettings::default())
            .await
            .unwrap();
        let s = QueueSettings {
            dead_letter_queue: Some("dlq".into()),
            ..Default::default()
        };
        qs.create_queue("q", &s).await.unwrap();
        let q = qs.queue("q").await.unwrap();
        q.send_batch(vec!["k".repeat(FILE_BODY_BYTES)])
            .await
            .unwrap();
        let orphan = qs.bodies_dir().join("0000orphan.body");
        std::fs::write(&orphan, "left by a crash").unwrap();
        // Reopening keeps it (younger than ORPHAN_AGE); a sweep of any age removes it only.
        drop(EmbeddedQueues::open(&path).unwrap());
        assert!(orphan.exists());
        assert_eq!(qs.sweep_orphan_bodies(Duration::ZERO).unwrap(), 1);
        assert!(!orphan.exists());
        assert_eq!(body_files(&qs), 1, "the queued message's file stays");

        // Lose the queued message's file.
        for f in std::fs::read_dir(qs.bodies_dir()).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        assert!(q.receive(now_opts()).await.unwrap().is_empty());
        let reasons = qs.dead_letter_reasons("dlq").await.unwrap();
        assert_eq!(reasons.len(), 1);
        assert!(
            reasons[0].1.contains("body file") && reasons[0].1.contains("missing"),
            "{reasons:?}"
        );
        assert_eq!(q.stats().await.unwrap().visible, 0);
    }

    /// A database of schema version 1 (bodies in `message_bodies`, no `file` column) gains the
    /// column, keeps its messages, and takes large bodies as files.
    #[tokio::test]
    async fn a_database_of_version_1_gains_body_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&SCHEMA.replace(
                "    body TEXT NOT NULL,\n    file TEXT\n",
                "    body TEXT NOT NULL\n",
            ))
            .unwrap();
            let cols: i64 = conn
                .query_row(
                    "SELECT count(*) FROM pragma_table_info('message_bodies')",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(cols, 2, "the version 1 table");
            let now = SystemClock.now_ms();
            conn.execute_batch(&format!(
                "INSERT INTO queues VALUES ('q', 30000, 5, NULL, 1209600000, 1048576, {now});
                 INSERT INTO messages (queue, message_id, body, sent_at_ms, visible_at_ms) VALUES ('q', 'm1', '', {now}, {now});
                 INSERT INTO message_bodies (seq, body) VALUES (last_insert_rowid(), 'before');
                 PRAGMA user_version = 1;",
            ))
            .unwrap();
        }
        let qs = EmbeddedQueues::open(&path).unwrap();
        let q = qs.queue("q").await.unwrap();
        q.send_batch(vec!["z".repeat(FILE_BODY_BYTES)])
            .await
            .unwrap();
        assert_eq!(body_files(&qs), 1);
        let got = q.receive(now_opts()).await.unwrap();
        let lens: Vec<usize> = got.iter().map(|m| m.body.len()).collect();
        assert_eq!(lens, [6, FILE_BODY_BYTES]);
        assert_eq!(got[0].body, "before");
    }
}
