//! The embedded catalog: one SQLite file, safe for several processes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Catalog, TableDef};
use crate::error::{Error, Result};

/// The embedded catalog.
#[derive(Debug, Clone)]
pub struct SqliteCatalog {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS databases (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS tables (
    database TEXT NOT NULL,
    name TEXT NOT NULL,
    definition TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (database, name)
);
";

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

impl SqliteCatalog {
    /// Opens (creating if needed) the catalog at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let err = |e| Error::Database {
            path: path.clone(),
            source: e,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(SqliteCatalog {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await?
    }

    fn db_err(&self) -> impl Fn(rusqlite::Error) -> Error + Send + Clone + 'static {
        let path = self.path.clone();
        move |e| Error::Database {
            path: path.clone(),
            source: e,
        }
    }
}

fn database_exists(c: &Connection, name: &str) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT 1 FROM databases WHERE name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
}

#[async_trait]
impl Catalog for SqliteCatalog {
    async fn create_database(&self, name: &str) -> Result<()> {
        crate::schema::validate_name("database", name)?;
        let (n, err) = (name.to_string(), self.db_err());
        self.run(move |c| {
            let added = c
                .execute("INSERT OR IGNORE INTO databases VALUES (?1)", [&n])
                .map_err(&err)?;
            if added == 0 {
                return Err(Error::AlreadyExists {
                    what: "database",
                    name: n,
                });
            }
            Ok(())
        })
        .await
    }

    async fn list_databases(&self) -> Result<Vec<String>> {
        let err = self.db_err();
        self.run(move |c| {
            let mut st = c
                .prepare("SELECT name FROM databases ORDER BY name")
                .map_err(&err)?;
            let rows = st.query_map([], |r| r.get(0)).map_err(&err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(&err)
        })
        .await
    }

    async fn create_table(&self, table: &TableDef) -> Result<()> {
        crate::schema::validate_name("table", &table.name)?;
        let (t, err) = (table.clone(), self.db_err());
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&err)?;
            if !database_exists(&tx, &t.database).map_err(&err)? {
                return Err(Error::NotFound {
                    what: "database",
                    name: t.database,
                });
            }
            let mut def = t.clone();
            def.version = 1;
            let json = serde_json::to_string(&def)
                .map_err(json_err)
                .map_err(&err)?;
            let added = tx
                .execute(
                    "INSERT OR IGNORE INTO tables VALUES (?1, ?2, ?3, 1)",
                    params![t.database, t.name, json],
                )
                .map_err(&err)?;
            if added == 0 {
                return Err(Error::AlreadyExists {
                    what: "table",
                    name: format!("{}.{}", t.database, t.name),
                });
            }
            tx.commit().map_err(&err)
        })
        .await
    }

    async fn get_table(&self, database: &str, name: &str) -> Result<TableDef> {
        let (d, n, err) = (database.to_string(), name.to_string(), self.db_err());
        self.run(move |c| {
            let json: Option<String> = c
                .query_row(
                    "SELECT definition FROM tables WHERE database = ?1 AND name = ?2",
                    params![d, n],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&err)?;
            let json = json.ok_or_else(|| Error::NotFound {
                what: "table",
                name: format!("{d}.{n}"),
            })?;
            serde_json::from_str(&json).map_err(|e| Error::CorruptCatalog {
                table: format!("{d}.{n}"),
                message: e.to_string(),
            })
        })
        .await
    }

    async fn list_tables(&self, database: &str) -> Result<Vec<TableDef>> {
        let (d, err) = (database.to_string(), self.db_err());
        self.run(move |c| {
            let mut st = c
                .prepare("SELECT definition FROM tables WHERE database = ?1 ORDER BY name")
                .map_err(&err)?;
            let rows = st
                .query_map([&d], |r| r.get::<_, String>(0))
                .map_err(&err)?;
            let mut out = Vec::new();
            for json in rows {
                let json = json.map_err(&err)?;
                out.push(
                    serde_json::from_str(&json).map_err(|e| Error::CorruptCatalog {
                        table: format!("a table of {d}"),
                        message: e.to_string(),
                    })?,
                );
            }
            Ok(out)
        })
        .await
    }

    async fn update_table(&self, table: &TableDef) -> Result<TableDef> {
        let (t, err) = (table.clone(), self.db_err());
        self.run(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&err)?;
            let stored: Option<i64> = tx
                .query_row(
                    "SELECT version FROM tables WHERE database = ?1 AND name = ?2",
                    params![t.database, t.name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(&err)?;
            match stored {
                None => {
                    return Err(Error::NotFound {
                        what: "table",
                        name: format!("{}.{}", t.database, t.name),
                    });
                }
                Some(v) if v as u64 != t.version => {
                    return Err(Error::Conflict(format!(
                        "table {}.{} is at version {v}, the update starts from {}",
                        t.database, t.name, t.version
                    )));
                }
                Some(_) => {}
            }
            let mut def = t.clone();
            def.version += 1;
            let json = serde_json::to_string(&def)
                .map_err(json_err)
                .map_err(&err)?;
            tx.execute(
                "UPDATE tables SET definition = ?3, version = ?4 WHERE database = ?1 AND name = ?2",
                params![def.database, def.name, json, def.version as i64],
            )
            .map_err(&err)?;
            tx.commit().map_err(&err)?;
            Ok(def)
        })
        .await
    }
}
