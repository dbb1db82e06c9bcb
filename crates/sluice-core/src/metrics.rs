//! Cost accounting: requests sent to the queue and the object store, counted on the wire.
//!
//! A [`Meter`] is shared by a [`MeteredQueue`] and a [`MeteredStore`]; commands print it in
//! their summaries and write it in Prometheus' text format (`--metrics FILE`). SQS bills each
//! 64 KiB of a request's payload as one request ([`billed_units`]); S3 bills per request, with
//! one LIST request per 1,000 keys.

use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

use crate::error::Result;
use crate::queue::{
    BatchFailure, Queue, QueueStats, ReceiveOptions, ReceivedMessage, billed_units,
};

/// Request counters. Cheap to share; every field counts since creation.
#[derive(Debug, Default)]
pub struct Meter {
    pub queue_send_calls: AtomicU64,
    pub queue_receive_calls: AtomicU64,
    pub queue_empty_receives: AtomicU64,
    pub queue_delete_calls: AtomicU64,
    pub queue_visibility_calls: AtomicU64,
    pub queue_other_calls: AtomicU64,
    pub queue_messages_sent: AtomicU64,
    pub queue_messages_received: AtomicU64,
    /// Bytes of message bodies sent and received.
    pub queue_payload_bytes: AtomicU64,
    /// SQS billed request units (64 KiB each) of every call.
    pub queue_billed_units: AtomicU64,
    pub store_put: AtomicU64,
    pub store_get: AtomicU64,
    pub store_list: AtomicU64,
    pub store_delete: AtomicU64,
    pub store_copy: AtomicU64,
    /// Multipart requests: create, each part, complete or abort.
    pub store_multipart: AtomicU64,
    pub store_bytes_put: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A point-in-time copy of a [`Meter`].
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
    pub fn new() -> Arc<Self> {
        Arc::new(Meter::default())
    }

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
    pub fn queue_calls(&self) -> u64 {
        self.queue_send_calls
            + self.queue_receive_calls
            + self.queue_delete_calls
            + self.queue_visibility_calls
            + self.queue_other_calls
    }

    pub fn store_requests(&self) -> u64 {
        self.store_put
            + self.store_get
            + self.store_list
            + self.store_delete
            + self.store_copy
            + self.store_multipart
    }

    /// Prometheus text exposition of the counters, labelled with `role` (producer, consumer).
    pub fn prometheus(&self, role: &str) -> String {
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, labels: &[(&str, &str, u64)]| {
            let _ = writeln!(s, "# HELP sluice_{name} {help}");
            let _ = writeln!(s, "# TYPE sluice_{name} counter");
            for (k, v, n) in labels {
                if k.is_empty() {
                    let _ = writeln!(s, "sluice_{name}{{role=\"{role}\"}} {n}");
                } else {
                    let _ = writeln!(s, "sluice_{name}{{role=\"{role}\",{k}=\"{v}\"}} {n}");
                }
            }
        };
        counter(
            "queue_calls_total",
            "Queue API calls.",
            &[
                ("op", "send", self.queue_send_calls),
                ("op", "receive", self.queue_receive_calls),
                ("op", "delete", self.queue_delete_calls),
                ("op", "change_visibility", self.queue_visibility_calls),
                ("op", "other", self.queue_other_calls),
            ],
        );
        counter(
            "queue_empty_receives_total",
            "Receive calls that returned no message.",
            &[("", "", self.queue_empty_receives)],
        );
        counter(
            "queue_billed_units_total",
            "SQS billed request units (64 KiB of payload each).",
            &[("", "", self.queue_billed_units)],
        );
        counter(
            "queue_messages_total",
            "Messages sent and received.",
            &[
                ("direction", "sent", self.queue_messages_sent),
                ("direction", "received", self.queue_messages_received),
            ],
        );
        counter(
            "queue_payload_bytes_total",
            "Bytes of message bodies sent and received.",
            &[("", "", self.queue_payload_bytes)],
        );
        counter(
            "store_requests_total",
            "Object store requests (one LIST per 1,000 keys).",
            &[
                ("op", "put", self.store_put),
                ("op", "get", self.store_get),
                ("op", "list", self.store_list),
                ("op", "delete", self.store_delete),
                ("op", "copy", self.store_copy),
                ("op", "multipart", self.store_multipart),
            ],
        );
        counter(
            "store_bytes_put_total",
            "Bytes written to the object store.",
            &[("", "", self.store_bytes_put)],
        );
        s
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

/// A queue that counts its calls in a [`Meter`].
#[derive(Debug)]
pub struct MeteredQueue {
    inner: Arc<dyn Queue>,
    meter: Arc<Meter>,
}

impl MeteredQueue {
    pub fn new(inner: Arc<dyn Queue>, meter: Arc<Meter>) -> Self {
        MeteredQueue { inner, meter }
    }
}

#[async_trait]
impl Queue for MeteredQueue {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes()
    }

    fn billing_unit_bytes(&self) -> Option<usize> {
        self.inner.billing_unit_bytes()
    }

    fn visibility_timeout(&self) -> Duration {
        self.inner.visibility_timeout()
    }

    fn max_batch_bytes(&self) -> usize {
        self.inner.max_batch_bytes()
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<Vec<String>> {
        let m = &self.meter;
        add(&m.queue_send_calls, 1);
        let bytes: usize = bodies.iter().map(String::len).sum();
        add(&m.queue_billed_units, billed_units(bytes));
        let ids = self.inner.send_batch(bodies).await?;
        add(&m.queue_messages_sent, bodies.len() as u64);
        add(&m.queue_payload_bytes, bytes as u64);
        Ok(ids)
    }

    async fn receive(&self, opts: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        let m = &self.meter;
        add(&m.queue_receive_calls, 1);
        let got = self.inner.receive(opts).await;
        match &got {
            Ok(msgs) => {
                let bytes: usize = msgs.iter().map(|m| m.body.len()).sum();
                add(&m.queue_billed_units, billed_units(bytes));
                add(&m.queue_payload_bytes, bytes as u64);
                add(&m.queue_messages_received, msgs.len() as u64);
                if msgs.is_empty() {
                    add(&m.queue_empty_receives, 1);
                }
            }
            Err(_) => add(&m.queue_billed_units, 1),
        }
        got
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<BatchFailure>> {
        add(&self.meter.queue_delete_calls, 1);
        let bytes: usize = receipts.iter().map(String::len).sum();
        add(&self.meter.queue_billed_units, billed_units(bytes));
        self.inner.delete_batch(receipts).await
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>> {
        add(&self.meter.queue_visibility_calls, 1);
        let bytes: usize = entries.iter().map(|(r, _)| r.len()).sum();
        add(&self.meter.queue_billed_units, billed_units(bytes));
        self.inner.change_visibility_batch(entries).await
    }

    async fn stats(&self) -> Result<QueueStats> {
        add(&self.meter.queue_other_calls, 1);
        add(&self.meter.queue_billed_units, 1);
        self.inner.stats().await
    }

    async fn purge(&self) -> Result<()> {
        add(&self.meter.queue_other_calls, 1);
        add(&self.meter.queue_billed_units, 1);
        self.inner.purge().await
    }
}

/// An object store that counts its requests in a [`Meter`].
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
    meter: Arc<Meter>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn ObjectStore>, meter: Arc<Meter>) -> Self {
        MeteredStore { inner, meter }
    }
}

impl fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

#[derive(Debug)]
struct MeteredUpload {
    inner: Box<dyn MultipartUpload>,
    meter: Arc<Meter>,
}

#[async_trait]
impl MultipartUpload for MeteredUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        add(&self.meter.store_multipart, 1);
        add(&self.meter.store_bytes_put, data.content_length() as u64);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        add(&self.meter.store_multipart, 1);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        add(&self.meter.store_multipart, 1);
        self.inner.abort().await
    }
}

/// Counts one LIST request per 1,000 keys of a listing stream (the first when it starts).
fn count_list(
    s: BoxStream<'static, object_store::Result<ObjectMeta>>,
    meter: Arc<Meter>,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    add(&meter.store_list, 1);
    let mut n = 0u64;
    s.inspect(move |_| {
        n += 1;
        if n.is_multiple_of(1000) {
            add(&meter.store_list, 1);
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        add(&self.meter.store_put, 1);
        add(&self.meter.store_bytes_put, payload.content_length() as u64);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        add(&self.meter.store_multipart, 1);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(MeteredUpload {
            inner,
            meter: self.meter.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        add(&self.meter.store_get, 1);
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let meter = self.meter.clone();
        self.inner.delete_stream(
            locations
                .inspect(move |_| add(&meter.store_delete, 1))
                .boxed(),
        )
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        count_list(self.inner.list(prefix), self.meter.clone())
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        count_list(
            self.inner.list_with_offset(prefix, offset),
            self.meter.clone(),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        add(&self.meter.store_list, 1);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        add(&self.meter.store_copy, 1);
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{EmbeddedQueues, QueueSettings};
    use object_store::ObjectStoreExt;

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
        q.send_batch(&["x".repeat(100 * 1024)]).await.unwrap();
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
        let text = s.prometheus("consumer");
        assert!(
            text.contains("sluice_queue_billed_units_total{role=\"consumer\"} 6"),
            "{text}"
        );
        assert!(text.contains("sluice_store_requests_total{role=\"consumer\",op=\"put\"} 3"));
    }
}
