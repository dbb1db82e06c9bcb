//! Why messages failed: consumers append a record for each message they could not process to a
//! JSON-lines log, so that the dead letters of a queue that does not record reasons (SQS) can be
//! explained.

use std::path::Path;

use crate::error::{Error, Result};

/// One message that could not be processed, as recorded by a consumer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailureRecord {
    /// The queue the message came from.
    pub queue: String,
    /// The message's id.
    pub message_id: String,
    /// How often it had been received.
    pub receive_count: u32,
    /// Why it could not be processed.
    pub reason: String,
    /// When, in milliseconds since the epoch.
    pub at_ms: i64,
}

/// Appends why a message could not be processed to a JSON-lines log. Queues move such a message
/// to their dead-letter queue after maxReceiveCount deliveries; the log says why.
pub(crate) fn record_failure(
    log: &Path,
    queue: &str,
    message_id: &str,
    receive_count: u32,
    reason: &str,
) -> Result<()> {
    use std::io::Write;
    let rec = FailureRecord {
        queue: queue.to_string(),
        message_id: message_id.to_string(),
        receive_count,
        reason: reason.to_string(),
        at_ms: chrono::Utc::now().timestamp_millis(),
    };
    let line = serde_json::to_string(&rec).expect("record serializes");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io(log, e))?;
    writeln!(f, "{line}").map_err(|e| Error::io(log, e))
}

/// The latest recorded failure of each message, by message id.
pub fn read_failures(log: &Path) -> std::collections::HashMap<String, FailureRecord> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<FailureRecord>(l).ok())
        .map(|r| (r.message_id.clone(), r))
        .collect()
}
