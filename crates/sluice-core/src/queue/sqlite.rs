//! The embedded queue: SQS semantics on one SQLite file (WAL mode), safe for several processes.
//!
//! Every state change is one `BEGIN IMMEDIATE` transaction, so two processes never claim the
//! same message. Receipts are `<seq>:<random>`; a new receipt is issued on every delivery, so a
//! stale receipt can neither delete nor extend a message that someone else now holds.

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
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

#[derive(Debug)]
struct Db {
    path: PathBuf,
    conn: Mutex<Connection>,
    clock: Arc<dyn Clock>,
    /// Wakes long polls in this process when a message is sent.
    sent: Notify,
}

impl Db {
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
-- `messages.body` is '' from schema version 1 on.
CREATE TABLE IF NOT EXISTS message_bodies (
    seq INTEGER PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS message_bodies_follow AFTER DELETE ON messages BEGIN
    DELETE FROM message_bodies WHERE seq = old.seq;
END;
";

/// Moves the bodies of a queue database written before `message_bodies` existed.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
    // Read without the write lock: every open of a migrated database ends here.
    if version(conn)? >= 1 {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated it meanwhile.
    if version(&tx)? < 1 {
        tx.execute_batch(
            "INSERT OR IGNORE INTO message_bodies (seq, body) SELECT seq, body FROM messages;
             UPDATE messages SET body = '' WHERE body != '';
             PRAGMA user_version = 1;",
        )?;
    }
    tx.commit()
}

impl EmbeddedQueues {
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
        Ok(EmbeddedQueues {
            db: Arc::new(Db {
                path,
                conn: Mutex::new(conn),
                clock,
                sent: Notify::new(),
            }),
        })
    }

    /// Creates a queue; creating an existing queue again is a no-op that keeps its settings.
    pub async fn create_queue(&self, name: &str, settings: &QueueSettings) -> Result<()> {
        crate::schema::validate_name("queue", name)?;
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
            db.run(move |c, db| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let now = db.clock.now_ms();
                if do_retention {
                    tx.execute(
                        "DELETE FROM messages WHERE queue = ?1 AND sent_at_ms < ?2",
                        params![name, now - s.retention.as_millis() as i64],
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
                        let body = tx
                            .prepare_cached("SELECT body FROM message_bodies WHERE seq = ?1")?
                            .query_row([seq], |r| r.get(0))?;
                        let msg = ReceivedMessage { message_id, receipt: receipt.clone(), body, receive_count };
                        out.push(msg);
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
                Ok(out)
            })
            .await
        }
    }
}

fn check_batch(n: usize) -> Result<()> {
    if n == 0 || n > MAX_BATCH {
        return Err(Error::invalid(format!(
            "a batch holds 1 to {MAX_BATCH} entries, not {n}"
        )));
    }
    Ok(())
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

    fn visibility_timeout(&self) -> Duration {
        self.settings.visibility_timeout
    }

    async fn send_batch(&self, bodies: Vec<String>) -> Result<Vec<String>> {
        check_batch(bodies.len())?;
        let total: usize = bodies.iter().map(|b| b.len()).sum();
        if total > self.settings.max_message_bytes {
            return Err(Error::MessageTooLarge {
                size: total,
                limit: self.settings.max_message_bytes,
            });
        }
        let name = self.name.clone();
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
                        "INSERT INTO message_bodies (seq, body) VALUES (?1, ?2)",
                    )?;
                    for b in &bodies {
                        let id = uuid::Uuid::new_v4().to_string();
                        st.execute(params![name, id, now])?;
                        put.execute(params![tx.last_insert_rowid(), b])?;
                        ids.push(id);
                    }
                }
                tx.commit()?;
                Ok(ids)
            })
            .await?;
        self.db.sent.notify_waiters();
        Ok(ids)
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
            .run(move |c, _| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let mut failed = Vec::new();
                for (i, r) in receipts.iter().enumerate() {
                    match parse_receipt(r) {
                        Some(seq) => {
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
            .run(move |c, _| {
                c.execute("DELETE FROM messages WHERE queue = ?1", [name])
                    .map(|_| ())
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
}
