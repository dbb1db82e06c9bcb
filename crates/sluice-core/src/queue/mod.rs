//! The message queue: a small trait with SQS semantics, and its embedded backend.
//!
//! ```text
//!  send_batch ──► [visible] ──receive──► [in flight until visibility timeout] ──delete──► gone
//!                     ▲                        │ timeout expires / change_visibility(0)
//!                     └────────────────────────┘
//!  a message received max_receive_count times and visible again moves to the dead-letter queue
//! ```

pub mod failures;
pub mod metered;

pub use metered::MeteredQueue;

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};

pub mod admin;
pub mod claim;
pub mod sqlite;

pub use claim::ClaimCheckQueue;
pub use sqlite::{EmbeddedQueues, SqliteQueue};

/// Most messages in one send, receive or delete call, as in SQS.
pub const MAX_BATCH: usize = 10;
/// Largest message body and largest batch request, as in SQS (1 MiB).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Largest message of a new embedded queue: its bodies are files, and a chunk of a few
/// megabytes costs less per row to send, receive and write than one of 1 MiB.
pub(crate) const EMBEDDED_MESSAGE_BYTES: usize = 4 << 20;
/// Largest message an embedded queue can be given.
pub(crate) const EMBEDDED_MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Longest long-poll wait, as in SQS.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// SQS bills each 64 KiB of a request's payload as one request.
pub const BILLING_UNIT_BYTES: usize = 64 * 1024;

/// Settings of a queue, fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// How long a received message stays invisible unless deleted or changed.
    pub visibility_timeout: Duration,
    /// Receives after which a message moves to the dead-letter queue (if there is one).
    pub max_receive_count: u32,
    /// The dead-letter queue's name.
    pub dead_letter_queue: Option<String>,
    /// How long an undeleted message is kept.
    pub retention: Duration,
    /// Largest message accepted.
    pub max_message_bytes: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            visibility_timeout: Duration::from_secs(300),
            max_receive_count: 5,
            dead_letter_queue: None,
            retention: Duration::from_secs(14 * 24 * 3600),
            max_message_bytes: MAX_MESSAGE_BYTES,
        }
    }
}

impl QueueSettings {
    /// The defaults of a new embedded queue: `EMBEDDED_MESSAGE_BYTES` messages.
    pub fn embedded() -> Self {
        QueueSettings {
            max_message_bytes: EMBEDDED_MESSAGE_BYTES,
            ..Default::default()
        }
    }
}

/// Options of one receive call.
#[derive(Debug, Clone, Copy)]
pub struct ReceiveOptions {
    /// 1 to [`MAX_BATCH`].
    pub max_messages: usize,
    /// Long-poll wait: return as soon as a message is there, or empty after this long.
    pub wait: Duration,
    /// Visibility timeout for these messages instead of the queue's.
    pub visibility_timeout: Option<Duration>,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        ReceiveOptions {
            max_messages: MAX_BATCH,
            wait: MAX_WAIT,
            visibility_timeout: None,
        }
    }
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Stable id of the message, the same on every delivery.
    pub message_id: String,
    /// Handle for delete and change_visibility, new on every delivery.
    pub receipt: String,
    /// The message's body.
    pub body: String,
    /// How many times the message has been received, this delivery included.
    pub receive_count: u32,
}

/// Approximate counts, as SQS reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages that a receive could return now.
    pub visible: u64,
    /// Messages received and neither deleted nor visible again.
    pub in_flight: u64,
    /// Age of the oldest message in the queue (visible or in flight), when the backend knows it
    /// (the embedded queue; SQS reports it only to CloudWatch).
    pub oldest_age: Option<Duration>,
}

/// One entry of a batch call that failed while the others succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFailure {
    /// Index of the entry in the request.
    pub index: usize,
    /// Machine-readable reason, e.g. `MessageNotInflight`.
    pub code: String,
    /// Why, for people.
    pub message: String,
}

/// A queue with SQS semantics.
///
/// # Contract
/// - **At-least-once**: a sent message is delivered until deleted; a delivery may repeat.
/// - `send_batch` takes 1 to [`MAX_BATCH`] bodies, each at most [`Queue::max_message_bytes`],
///   whose total size is at most [`Queue::max_batch_bytes`]; a larger request fails whole with
///   `MessageTooLarge`.
///   Once it returns `Ok`, every message is durable.
/// - `receive` returns up to `max_messages` visible messages, making each invisible for the
///   visibility timeout and incrementing its receive count; with a `wait`, it returns as soon
///   as a message is available, or empty when the wait ends.
/// - A message whose receive count has reached `max_receive_count` is moved to the dead-letter
///   queue instead of being delivered again, if the queue has one.
/// - `delete_batch` is idempotent: deleting an already deleted message, or with a receipt
///   from an earlier delivery, succeeds (the latter deletes nothing, as in SQS).
/// - `change_visibility_batch` sets a new timeout counted from now for in-flight messages; a
///   receipt that is not the latest delivery of an in-flight message fails its entry with
///   code `MessageNotInflight`. A timeout of zero makes the message visible at once.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// The queue's name or URL, for messages.
    fn name(&self) -> &str;

    /// Largest body (and batch request) accepted.
    fn max_message_bytes(&self) -> usize;

    /// The queue's default visibility timeout.
    fn visibility_timeout(&self) -> Duration;

    /// The unit each request is billed by (SQS: 64 KiB), if the service bills by size. The
    /// producer compresses harder for such queues.
    fn billing_unit_bytes(&self) -> Option<usize>;

    /// Whether chunks should travel as plain text ([`crate::chunk::Codec::Text`]): the queue
    /// keeps large bodies where their size costs little (the embedded queue writes them to
    /// files), so compressing them would cost more CPU than the bytes it saves. No by default.
    fn prefers_text_chunks(&self) -> bool {
        false
    }

    /// Whether the queue keeps its messages on this machine's disk (the embedded queue): a
    /// producer feeding a consumer in the same process then holds back
    /// ([`crate::pipeline::producer::backlog_beside_consumer`]) instead of putting its input on
    /// the disk ahead of the consumer. No by default.
    fn on_local_disk(&self) -> bool {
        false
    }

    /// Largest total of the bodies of one `send_batch` call.
    fn max_batch_bytes(&self) -> usize {
        self.max_message_bytes()
    }

    /// Sends 1 to 10 messages; returns their message ids in order. The bodies are moved in:
    /// a chunk's body is megabytes, and a queue that keeps it need not copy it.
    async fn send_batch(&self, bodies: Vec<String>) -> Result<Vec<String>>;

    /// Whether the queue can hold messages back itself ([`Queue::send_held`]): the producer
    /// then stores a source's messages in it, undelivered, until the source has been read to
    /// its end, instead of keeping them aside. SQS cannot.
    fn holds_messages(&self) -> bool {
        false
    }

    /// Sends `bodies` held in `group`: stored, never delivered until [`Queue::release_held`].
    async fn send_held(&self, _group: &str, _bodies: Vec<String>) -> Result<()> {
        Err(Error::Internal(format!(
            "queue {} does not hold messages",
            self.name()
        )))
    }

    /// Makes the messages held in `group` deliverable, all at once; returns how many.
    async fn release_held(&self, _group: &str) -> Result<u64> {
        Err(Error::Internal(format!(
            "queue {} does not hold messages",
            self.name()
        )))
    }

    /// Removes the messages held in `group` (their source failed).
    async fn drop_held(&self, _group: &str) -> Result<()> {
        Ok(())
    }

    /// Receives up to `opts.max_messages` messages.
    async fn receive(&self, opts: ReceiveOptions) -> Result<Vec<ReceivedMessage>>;

    /// Deletes 1 to 10 messages by receipt.
    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<BatchFailure>>;

    /// Changes the visibility timeout of 1 to 10 in-flight messages.
    async fn change_visibility_batch(
        &self,
        entries: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>>;

    /// Approximate counts.
    async fn stats(&self) -> Result<QueueStats>;

    /// Deletes every message.
    async fn purge(&self) -> Result<()>;
}

/// Conveniences over [`Queue`] built from its required methods only.
#[async_trait]
pub trait QueueExt: Queue {
    /// Deletes any number of messages, 10 per call.
    async fn delete_all(&self, receipts: &[String]) -> Result<Vec<BatchFailure>> {
        let mut failed = Vec::new();
        for (n, chunk) in receipts.chunks(MAX_BATCH).enumerate() {
            for mut f in self.delete_batch(chunk).await? {
                f.index += n * MAX_BATCH;
                failed.push(f);
            }
        }
        Ok(failed)
    }

    /// Changes visibility of any number of messages, 10 per call.
    async fn change_visibility_all(
        &self,
        receipts: &[String],
        timeout: Duration,
    ) -> Result<Vec<BatchFailure>> {
        let mut failed = Vec::new();
        for (n, chunk) in receipts.chunks(MAX_BATCH).enumerate() {
            let entries: Vec<_> = chunk.iter().map(|r| (r.clone(), timeout)).collect();
            for mut f in self.change_visibility_batch(&entries).await? {
                f.index += n * MAX_BATCH;
                failed.push(f);
            }
        }
        Ok(failed)
    }
}

impl<Q: Queue + ?Sized> QueueExt for Q {}

/// Billed SQS request units for a request carrying `payload` bytes.
pub(crate) fn billed_units(payload: usize) -> u64 {
    (payload.max(1)).div_ceil(BILLING_UNIT_BYTES) as u64
}

/// Name of the dead-letter queue of `queue`.
pub fn dead_letter_name(queue: &str) -> String {
    format!("{queue}_dlq")
}
