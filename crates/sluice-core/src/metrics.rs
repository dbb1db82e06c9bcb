//! Cost accounting: requests sent to the queue and the object store, counted on the wire.
//!
//! A [`Meter`] is shared by a [`crate::queue::MeteredQueue`] and a [`crate::lake::MeteredStore`]; commands print it in
//! their summaries. Each request is counted once, in the meter and, through the `metrics`
//! facade, in whatever recorder the program installed (the CLI's serves Prometheus' format),
//! labelled with the meter's role. SQS bills each 64 KiB of a request's payload as one request
//! (`crate::queue::billed_units`); S3 bills per request, with one LIST request per 1,000 keys.
//!
//! [`describe`] names and explains every metric sluice emits; the events themselves are
//! counted where they happen (the consumer, the writing stage, the producer).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Records `n` events of the counter `metric` once, where they happen: in the `metrics` facade
/// (served at `/metrics`, written by `--metrics FILE`) and in `tally`, the field of the run's
/// summary that counts the same events.
pub fn count(tally: &mut u64, metric: &'static str, n: u64) {
    *tally += n;
    metrics::counter!(metric).increment(n);
}

/// [`count`] for a counter with one label.
pub(crate) fn count_labelled(
    tally: &mut u64,
    metric: &'static str,
    label: (&'static str, &'static str),
    n: u64,
) {
    *tally += n;
    metrics::counter!(metric, label.0 => label.1).increment(n);
}

/// Request counters. Cheap to share; every field counts since creation.
#[derive(Debug, Default)]
pub struct Meter {
    /// The `role` label of the metrics (`producer`, `consumer`, …).
    pub role: &'static str,
    /// Send calls (single or batch).
    pub queue_send_calls: AtomicU64,
    /// Receive calls.
    pub queue_receive_calls: AtomicU64,
    /// Receive calls that returned no message.
    pub queue_empty_receives: AtomicU64,
    /// Delete calls.
    pub queue_delete_calls: AtomicU64,
    /// Change-visibility calls.
    pub queue_visibility_calls: AtomicU64,
    /// Other calls (stats, purge).
    pub queue_other_calls: AtomicU64,
    /// Messages sent.
    pub queue_messages_sent: AtomicU64,
    /// Messages received.
    pub queue_messages_received: AtomicU64,
    /// Bytes of message bodies sent and received.
    pub queue_payload_bytes: AtomicU64,
    /// SQS billed request units (64 KiB each) of every call.
    pub queue_billed_units: AtomicU64,
    /// PUT requests.
    pub store_put: AtomicU64,
    /// GET and HEAD requests.
    pub store_get: AtomicU64,
    /// LIST requests (one per 1,000 keys).
    pub store_list: AtomicU64,
    /// DELETE requests.
    pub store_delete: AtomicU64,
    /// COPY requests.
    pub store_copy: AtomicU64,
    /// Multipart requests: create, each part, complete or abort.
    pub store_multipart: AtomicU64,
    /// Bytes written.
    pub store_bytes_put: AtomicU64,
}

/// What a meter counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum C {
    QueueSend,
    QueueReceive,
    QueueEmpty,
    QueueDelete,
    QueueVisibility,
    QueueOther,
    MessagesSent,
    MessagesReceived,
    QueuePayload,
    Billed,
    StorePut,
    StoreGet,
    StoreList,
    StoreDelete,
    StoreCopy,
    StoreMultipart,
    StoreBytesPut,
}

// Metric names. Counters end in `_total`, sizes are bytes, times seconds.
/// Queue API requests, by operation.
pub const QUEUE_REQUESTS: &str = "sluice_queue_requests_total";
/// Receive requests that returned no message.
pub(crate) const QUEUE_EMPTY_RECEIVES: &str = "sluice_queue_empty_receives_total";
/// Messages sent and received.
pub(crate) const QUEUE_MESSAGES: &str = "sluice_queue_messages_total";
/// Bytes of message bodies sent and received.
pub(crate) const QUEUE_PAYLOAD_BYTES: &str = "sluice_queue_payload_bytes_total";
/// SQS billed request units (64 KiB of payload each).
pub const QUEUE_BILLED_UNITS: &str = "sluice_queue_billed_units_total";
/// Object store requests, by kind (one LIST per 1,000 keys).
pub const STORE_REQUESTS: &str = "sluice_store_requests_total";
/// Bytes written to the object store.
pub(crate) const STORE_BYTES_PUT: &str = "sluice_store_bytes_put_total";
/// Rows the producer sent.
pub const ROWS_PRODUCED: &str = "sluice_rows_produced_total";
/// Chunk messages the producer sent.
pub(crate) const CHUNKS_SENT: &str = "sluice_chunks_sent_total";
/// Messages the consumer took in (deliveries).
pub const MESSAGES_CONSUMED: &str = "sluice_messages_consumed_total";
/// Messages deleted after their rows were committed.
pub const MESSAGES_DELETED: &str = "sluice_messages_deleted_total";
/// Deliveries that could not be processed (dead-lettered after maxReceiveCount).
pub const MESSAGES_FAILED: &str = "sluice_messages_failed_total";
/// Rows read from messages, pieces and objects.
pub const ROWS_IN: &str = "sluice_rows_in_total";
/// Rows written to data files.
pub const ROWS_WRITTEN: &str = "sluice_rows_written_total";
/// Rows written to the quarantine.
pub const ROWS_QUARANTINED: &str = "sluice_rows_quarantined_total";
/// Rows dropped because they were already committed.
pub const ROWS_DUPLICATE: &str = "sluice_rows_duplicate_total";
/// Files committed.
pub const FILES_WRITTEN: &str = "sluice_files_written_total";
/// Bytes of files committed.
pub const BYTES_WRITTEN: &str = "sluice_bytes_written_total";
/// Delta commits, by log (data, quarantine).
pub const COMMITS: &str = "sluice_commits_total";
/// Commits that found some of their rows committed by another writer.
pub const COMMIT_CONFLICTS: &str = "sluice_commit_conflicts_total";
/// Compactions committed.
pub const COMPACTIONS: &str = "sluice_compactions_total";
/// Versions that added columns to a table.
pub const SCHEMA_CHANGES: &str = "sluice_schema_changes_total";
/// Files being written (not yet committed).
pub const OPEN_FILES: &str = "sluice_open_files";
/// Memory held by buffered row groups.
pub const BUFFERED_BYTES: &str = "sluice_buffered_bytes";
/// Messages received and not yet deleted.
pub const HELD_MESSAGES: &str = "sluice_held_messages";
/// Messages in the queue, by state (visible, in_flight, dead_letter).
pub const QUEUE_DEPTH: &str = "sluice_queue_depth_messages";
/// Age of the oldest message not yet consumed (0 when the queue is drained).
pub const OLDEST_MESSAGE_AGE: &str = "sluice_oldest_message_age_seconds";
/// Time from a chunk's production to the deletion of its message (all its rows committed).
pub const COMMIT_LATENCY: &str = "sluice_chunk_commit_latency_seconds";

/// Describes every metric sluice emits to the installed recorder (call once after installing
/// it).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(QUEUE_REQUESTS, "Queue API requests, by operation.");
    describe_counter!(
        QUEUE_EMPTY_RECEIVES,
        "Receive requests that returned no message."
    );
    describe_counter!(QUEUE_MESSAGES, "Messages sent and received.");
    describe_counter!(
        QUEUE_PAYLOAD_BYTES,
        Unit::Bytes,
        "Bytes of message bodies sent and received."
    );
    describe_counter!(
        QUEUE_BILLED_UNITS,
        "SQS billed request units (64 KiB of payload each)."
    );
    describe_counter!(
        STORE_REQUESTS,
        "Object store requests, by kind (one LIST per 1,000 keys)."
    );
    describe_counter!(
        STORE_BYTES_PUT,
        Unit::Bytes,
        "Bytes written to the object store."
    );
    describe_counter!(ROWS_PRODUCED, "Rows the producer sent.");
    describe_counter!(CHUNKS_SENT, "Chunk messages the producer sent.");
    describe_counter!(
        MESSAGES_CONSUMED,
        "Messages the consumer took in (deliveries)."
    );
    describe_counter!(
        MESSAGES_DELETED,
        "Messages deleted after their rows were committed."
    );
    describe_counter!(
        MESSAGES_FAILED,
        "Deliveries that could not be processed (dead-lettered after maxReceiveCount)."
    );
    describe_counter!(ROWS_IN, "Rows read from messages, pieces and objects.");
    describe_counter!(ROWS_WRITTEN, "Rows written to data files.");
    describe_counter!(ROWS_QUARANTINED, "Rows written to the quarantine.");
    describe_counter!(
        ROWS_DUPLICATE,
        "Rows dropped because they were already committed."
    );
    describe_counter!(FILES_WRITTEN, "Files committed.");
    describe_counter!(BYTES_WRITTEN, Unit::Bytes, "Bytes of files committed.");
    describe_counter!(COMMITS, "Delta commits, by log (data, quarantine).");
    describe_counter!(
        COMMIT_CONFLICTS,
        "Commits that found some of their rows committed by another writer."
    );
    describe_counter!(COMPACTIONS, "Compactions committed.");
    describe_counter!(SCHEMA_CHANGES, "Versions that added columns to a table.");
    describe_gauge!(OPEN_FILES, "Files being written (not yet committed).");
    describe_gauge!(
        BUFFERED_BYTES,
        Unit::Bytes,
        "Memory held by buffered row groups."
    );
    describe_gauge!(HELD_MESSAGES, "Messages received and not yet deleted.");
    describe_gauge!(
        QUEUE_DEPTH,
        "Messages in the queue, by state (visible, in_flight, dead_letter)."
    );
    describe_gauge!(
        OLDEST_MESSAGE_AGE,
        Unit::Seconds,
        "Age of the oldest message not yet consumed (0 when the queue is drained)."
    );
    describe_histogram!(
        COMMIT_LATENCY,
        Unit::Seconds,
        "Time from a chunk's production to the deletion of its message (all its rows committed)."
    );
}

/// A point-in-time copy of a [`Meter`]: each field is the count of the [`Meter`] field of the
/// same name.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MeterSnapshot {
    pub queue_send_calls: u64,
    pub queue_receive_calls: u64,
    pub queue_empty_receives: u64,
    pub queue_delete_calls: u64,
    pub queue_visibility_calls: u64,
    pub queue_other_calls: u64,
    pub queue_messages_sent: u64,
    pub queue_messages_received: u64,
    pub queue_payload_bytes: u64,
    pub queue_billed_units: u64,
    pub store_put: u64,
    pub store_get: u64,
    pub store_list: u64,
    pub store_delete: u64,
    pub store_copy: u64,
    pub store_multipart: u64,
    pub store_bytes_put: u64,
}

impl Meter {
    /// A meter whose metrics are labelled `role="process"`.
    pub fn new() -> Arc<Self> {
        Self::for_role("process")
    }

    /// A meter whose metrics are labelled `role`.
    pub fn for_role(role: &'static str) -> Arc<Self> {
        Arc::new(Meter {
            role,
            ..Default::default()
        })
    }

    pub(crate) fn count(&self, c: C, n: u64) {
        let role = self.role;
        let (cell, name, label) = match c {
            C::QueueSend => (&self.queue_send_calls, QUEUE_REQUESTS, Some(("op", "send"))),
            C::QueueReceive => (
                &self.queue_receive_calls,
                QUEUE_REQUESTS,
                Some(("op", "receive")),
            ),
            C::QueueDelete => (
                &self.queue_delete_calls,
                QUEUE_REQUESTS,
                Some(("op", "delete")),
            ),
            C::QueueVisibility => (
                &self.queue_visibility_calls,
                QUEUE_REQUESTS,
                Some(("op", "change_visibility")),
            ),
            C::QueueOther => (
                &self.queue_other_calls,
                QUEUE_REQUESTS,
                Some(("op", "other")),
            ),
            C::QueueEmpty => (&self.queue_empty_receives, QUEUE_EMPTY_RECEIVES, None),
            C::MessagesSent => (
                &self.queue_messages_sent,
                QUEUE_MESSAGES,
                Some(("direction", "sent")),
            ),
            C::MessagesReceived => (
                &self.queue_messages_received,
                QUEUE_MESSAGES,
                Some(("direction", "received")),
            ),
            C::QueuePayload => (&self.queue_payload_bytes, QUEUE_PAYLOAD_BYTES, None),
            C::Billed => (&self.queue_billed_units, QUEUE_BILLED_UNITS, None),
            C::StorePut => (&self.store_put, STORE_REQUESTS, Some(("op", "put"))),
            C::StoreGet => (&self.store_get, STORE_REQUESTS, Some(("op", "get"))),
            C::StoreList => (&self.store_list, STORE_REQUESTS, Some(("op", "list"))),
            C::StoreDelete => (&self.store_delete, STORE_REQUESTS, Some(("op", "delete"))),
            C::StoreCopy => (&self.store_copy, STORE_REQUESTS, Some(("op", "copy"))),
            C::StoreMultipart => (
                &self.store_multipart,
                STORE_REQUESTS,
                Some(("op", "multipart")),
            ),
            C::StoreBytesPut => (&self.store_bytes_put, STORE_BYTES_PUT, None),
        };
        cell.fetch_add(n, Ordering::Relaxed);
        match label {
            Some((k, v)) => metrics::counter!(name, "role" => role, k => v).increment(n),
            None => metrics::counter!(name, "role" => role).increment(n),
        }
    }

    /// The counts now.
    pub fn snapshot(&self) -> MeterSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MeterSnapshot {
            queue_send_calls: g(&self.queue_send_calls),
            queue_receive_calls: g(&self.queue_receive_calls),
            queue_empty_receives: g(&self.queue_empty_receives),
            queue_delete_calls: g(&self.queue_delete_calls),
            queue_visibility_calls: g(&self.queue_visibility_calls),
            queue_other_calls: g(&self.queue_other_calls),
            queue_messages_sent: g(&self.queue_messages_sent),
            queue_messages_received: g(&self.queue_messages_received),
            queue_payload_bytes: g(&self.queue_payload_bytes),
            queue_billed_units: g(&self.queue_billed_units),
            store_put: g(&self.store_put),
            store_get: g(&self.store_get),
            store_list: g(&self.store_list),
            store_delete: g(&self.store_delete),
            store_copy: g(&self.store_copy),
            store_multipart: g(&self.store_multipart),
            store_bytes_put: g(&self.store_bytes_put),
        }
    }
}

impl MeterSnapshot {
    /// Queue calls of every kind.
    pub fn queue_calls(&self) -> u64 {
        self.queue_send_calls
            + self.queue_receive_calls
            + self.queue_delete_calls
            + self.queue_visibility_calls
            + self.queue_other_calls
    }

    /// Object-store requests of every kind.
    pub fn store_requests(&self) -> u64 {
        self.store_put
            + self.store_get
            + self.store_list
            + self.store_delete
            + self.store_copy
            + self.store_multipart
    }
}

impl fmt::Display for MeterSnapshot {
    /// One summary line: `SQS 12 calls (…), 30 billed units; S3 40 requests (…)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "queue: {} call(s) ({} send, {} receive of which {} empty, {} delete, {} visibility, {} other), {} billed SQS unit(s); object store: {} request(s) ({} put, {} get, {} list, {} delete, {} multipart)",
            self.queue_calls(),
            self.queue_send_calls,
            self.queue_receive_calls,
            self.queue_empty_receives,
            self.queue_delete_calls,
            self.queue_visibility_calls,
            self.queue_other_calls,
            self.queue_billed_units,
            self.store_requests(),
            self.store_put,
            self.store_get,
            self.store_list,
            self.store_delete,
            self.store_multipart,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::MeteredStore;
    use crate::queue::{EmbeddedQueues, QueueSettings};
    use crate::queue::{MeteredQueue, Queue, ReceiveOptions};
    use futures::StreamExt;
    use object_store::ObjectStore;
    use object_store::ObjectStoreExt;
    use object_store::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn counts_calls_units_and_requests() {
        let dir = tempfile::tempdir().unwrap();
        let qs = EmbeddedQueues::open(dir.path().join("q.db")).unwrap();
        qs.create_queue("q", &QueueSettings::default())
            .await
            .unwrap();
        let meter = Meter::new();
        let q = MeteredQueue::new(Arc::new(qs.queue("q").await.unwrap()), meter.clone());
        // 100 KiB in one call: two billed units.
        q.send_batch(vec!["x".repeat(100 * 1024)]).await.unwrap();
        let opts = ReceiveOptions {
            wait: Duration::ZERO,
            ..Default::default()
        };
        let got = q.receive(opts).await.unwrap();
        assert!(q.receive(opts).await.unwrap().is_empty());
        q.delete_batch(&[got[0].receipt.clone()]).await.unwrap();
        let s = meter.snapshot();
        assert_eq!(
            (
                s.queue_send_calls,
                s.queue_receive_calls,
                s.queue_empty_receives
            ),
            (1, 2, 1)
        );
        assert_eq!(s.queue_delete_calls, 1);
        assert_eq!(s.queue_billed_units, 2 + 2 + 1 + 1);

        let store = MeteredStore::new(
            Arc::new(object_store::memory::InMemory::new()),
            meter.clone(),
        );
        for i in 0..3 {
            store
                .put(
                    &Path::from(format!("a/{i}")),
                    bytes::Bytes::from_static(b"abc").into(),
                )
                .await
                .unwrap();
        }
        store.get(&Path::from("a/1")).await.unwrap();
        let listed: Vec<_> = store.list(Some(&Path::from("a"))).collect().await;
        assert_eq!(listed.len(), 3);
        store.delete(&Path::from("a/0")).await.unwrap();
        let s = meter.snapshot();
        assert_eq!(
            (s.store_put, s.store_get, s.store_list, s.store_delete),
            (3, 1, 1, 1)
        );
        assert_eq!(s.store_bytes_put, 9);
    }
}
