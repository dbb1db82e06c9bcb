//! # sluice-core
//!
//! CSV (and JSON lines, and Parquet) to a Delta Lake table, through a queue, exactly once. The
//! modules are the stages a row passes through, in order; a stage uses only those before it:
//!
//! ```text
//!  source ─► chunk ─► queue ─► decode ─► parquet ─► delta ─► catalog
//!  (files,    (chunk   (SQS      (typing   (file     (the log,   (tables,
//!   objects,   messages) semantics) rows)     writer,   commits,    schemas)
//!   CSV)                                      encoders) compaction)
//! ```
//!
//! - [`schema`], [`table`]: column types, partition specs, a table's layout and schema policy.
//! - [`catalog`]: tables in Glue's model; [`catalog::SqliteCatalog`] is the embedded one.
//! - [`lake`]: the object store the tables live in, and the spools files are written in first.
//! - [`source`]: local files, globs and object-store prefixes; CSV, JSON lines, Parquet.
//! - [`chunk`]: the message format; [`queue`]: the queue trait, with SQS semantics on SQLite
//!   ([`queue::EmbeddedQueues`]).
//! - [`decode`]: messages to typed Arrow rows, with the quarantine for rows that do not parse.
//! - [`parquet`]: the Parquet file writer and sluice's own column encoders.
//! - [`delta`]: the Delta Lake log, its protocol, compaction, vacuum, repair, schema evolution.
//! - [`pipeline`]: the producer, the consumer and `convert`, and their start-up.
//! - [`home`]: the embedded default, every backend under one directory.
//! - [`error`] (with the one retry helper) and [`metrics`] serve every stage.
//!
//! Heavy integrations (`deltalake` for checkpoints, DataFusion, the AWS SDK) live in other
//! crates.
//!
//! ## Embedding a consumer
//!
//! A program that lands a CSV file through the embedded queue into a table, as `sluice run`
//! does:
//!
//! ```
//! // The consumer needs a multi-threaded runtime (it types rows on blocking threads).
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use sluice_core::home::Home;
//! use sluice_core::pipeline::consumer::{Consumer, ConsumerOptions};
//! use sluice_core::pipeline::producer::{Producer, ProducerOptions};
//! use sluice_core::pipeline::setup::TableSettings;
//! use sluice_core::schema::partition::PartitionSpec;
//!
//! let dir = tempfile::tempdir()?;
//! let home = Home::new(dir.path().join("home"));
//! // The embedded queue `events` (and its dead-letter queue), catalog and lake.
//! let backends = home.open("events").await?;
//! let csv = dir.path().join("events.csv");
//! std::fs::write(&csv, "id,ts,amount\n1,2024-05-01T10:00:00,9.5\n2,2025-01-02T11:30:00,3.25\n")?;
//!
//! // Produce: the table is created from the file's header and a sample of its rows, and its
//! // records go to the queue as chunk messages.
//! let table = TableSettings::new(
//!     "events",
//!     PartitionSpec::parse("year(ts)")?,
//!     backends.table_location("events"),
//! );
//! let producer = Producer::new(backends.queue.clone(), backends.catalog.clone(), ProducerOptions::new(table))?;
//! producer.produce(&[csv], None).await?;
//!
//! // Consume: claim a private spool (removing what dead consumers left), then land every
//! // message in Delta commits, and stop once the queue is empty (`once`).
//! let mut opts = ConsumerOptions::new("events", std::path::PathBuf::new());
//! opts.once = true;
//! let started = Consumer::start(
//!     opts,
//!     &home.spools(),
//!     backends.queue.clone(),
//!     backends.catalog.clone(),
//!     backends.lake.clone(),
//! )
//! .await?;
//! let stats = started.consumer.run(std::future::pending()).await?;
//! assert_eq!(stats.write.rows_written, 2);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod catalog;
pub mod chunk;
pub mod decode;
pub mod delta;
pub mod error;
pub mod home;
pub mod lake;
pub mod metrics;
pub mod parquet;
pub mod pipeline;
pub mod queue;
pub mod schema;
pub mod source;
pub mod table;

pub use error::{Error, Result};

/// The catalog database sluice uses unless told otherwise.
pub const DEFAULT_DATABASE: &str = "sluice";

/// An id for this process's commits: host, process id and a random suffix.
pub fn writer_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &rand[..8])
}
