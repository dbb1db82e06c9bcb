//! # sluice-core
//!
//! CSV files to a query-ready lake, through a queue:
//!
//! ```text
//!  CSV ─► producer ─► Queue ─► consumer ─► Parquet in Hive dirs ─► Delta log commit ─► Catalog
//! ```
//!
//! This crate holds the domain types and the embedded backends: [`queue::EmbeddedQueues`]
//! (SQS semantics on SQLite), [`catalog::SqliteCatalog`] (Glue's model on SQLite), the Delta
//! Lake commit protocol [`ledger`] (on any `object_store`), the [`producer`] and the
//! [`consumer`]. Heavy integrations (`deltalake` for checkpoints, DataFusion, the AWS SDK) live in
//! other crates.
//!
//! ```no_run
//! # async fn demo() -> sluice_core::Result<()> {
//! use std::sync::Arc;
//! use sluice_core::{home::Home, partition::PartitionSpec, producer::{Producer, ProducerOptions}};
//! let home = Home::new("sluice-data");
//! let backends = home.open("events").await?;
//! let opts = ProducerOptions::new("events", PartitionSpec::parse("year(ts)")?, backends.table_location("events"));
//! let producer = Producer::new(backends.queue.clone(), backends.catalog.clone(), opts)?;
//! producer.produce(&["events.csv"], None).await?;
//! # Ok(()) }
//! ```

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
