//! Fault injection: an object store that fails writes on demand.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// Wraps a store; its next `fail_next` writes fail with a transient error, and every write fails
/// while `fail_all` is set (a persistent outage, or a full disk).
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    pub fail_next: AtomicU32,
    pub fail_all: AtomicBool,
    /// Writes that failed so far.
    pub failed: AtomicU32,
    /// The next this many writes to a Delta log (`_delta_log/`) land, but report a failure, as
    /// when the reply of a successful request is lost.
    pub lose_log_replies: AtomicU32,
    /// The next this many writes to a Delta log fail before anything is written (a request
    /// that never reached the store); writes of data files go through.
    pub fail_log_writes: AtomicU32,
    /// Milliseconds every write of a data file (not of a Delta log) takes first: a slow upload.
    pub data_write_delay_ms: AtomicU64,
    /// Milliseconds every write to a Delta log takes first: a slow commit.
    pub log_write_delay_ms: AtomicU64,
    /// Writes of data files started so far.
    pub data_writes_started: AtomicU32,
    /// Writes to a Delta log started so far.
    pub log_writes_started: AtomicU32,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultyStore {
            inner,
            fail_next: AtomicU32::new(0),
            fail_all: AtomicBool::new(false),
            failed: AtomicU32::new(0),
            lose_log_replies: AtomicU32::new(0),
            fail_log_writes: AtomicU32::new(0),
            data_write_delay_ms: AtomicU64::new(0),
            log_write_delay_ms: AtomicU64::new(0),
            data_writes_started: AtomicU32::new(0),
            log_writes_started: AtomicU32::new(0),
        }
    }

    /// Counts a write to `location` as started and waits its delay, if any.
    async fn slow_down(&self, location: &Path) {
        let (started, delay) = if location.as_ref().contains("/_delta_log/") {
            (&self.log_writes_started, &self.log_write_delay_ms)
        } else {
            (&self.data_writes_started, &self.data_write_delay_ms)
        };
        started.fetch_add(1, Ordering::SeqCst);
        let ms = delay.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    fn check(&self, what: &str) -> Result<()> {
        let transient = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if transient || self.fail_all.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: format!(
                    "injected failure of {what} (503 Slow Down / no space left on device)"
                )
                .into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.check("put")?;
        self.slow_down(location).await;
        if location.as_ref().contains("/_delta_log/")
            && self
                .fail_log_writes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: "injected failure of a log write (timed out before it was sent)".into(),
            });
        }
        let written = self.inner.put_opts(location, payload, opts).await?;
        if location.as_ref().contains("/_delta_log/")
            && self
                .lose_log_replies
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: format!("injected: {location} was written, its reply lost").into(),
            });
        }
        Ok(written)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.check("multipart upload")?;
        self.slow_down(location).await;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.check("copy")?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// Wraps a queue; its next `fail_receives` receives and `fail_deletes` deletes fail with a
/// transient error (a busy database, a throttled API).
#[derive(Debug)]
pub struct FaultyQueue {
    inner: Arc<dyn sluice_core::queue::Queue>,
    pub fail_receives: AtomicU32,
    pub fail_deletes: AtomicU32,
    pub failed: AtomicU32,
    /// While set, visibility changes (heartbeats) are accepted and silently lost.
    pub lose_heartbeats: AtomicBool,
    /// Milliseconds every receive takes first (before asking the queue).
    pub receive_delay_ms: AtomicU64,
    /// Receives started so far.
    pub receives_started: AtomicU32,
}

impl FaultyQueue {
    pub fn new(inner: Arc<dyn sluice_core::queue::Queue>) -> Self {
        FaultyQueue {
            inner,
            fail_receives: AtomicU32::new(0),
            fail_deletes: AtomicU32::new(0),
            failed: AtomicU32::new(0),
            lose_heartbeats: AtomicBool::new(false),
            receive_delay_ms: AtomicU64::new(0),
            receives_started: AtomicU32::new(0),
        }
    }

    fn check(&self, counter: &AtomicU32) -> sluice_core::Result<()> {
        if counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(sluice_core::Error::Database {
                path: "faulty-queue".into(),
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(5),
                    Some("injected: database is locked".into()),
                ),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl sluice_core::queue::Queue for FaultyQueue {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes()
    }
    fn billing_unit_bytes(&self) -> Option<usize> {
        self.inner.billing_unit_bytes()
    }
    fn on_local_disk(&self) -> bool {
        self.inner.on_local_disk()
    }

    fn prefers_text_chunks(&self) -> bool {
        self.inner.prefers_text_chunks()
    }
    fn visibility_timeout(&self) -> std::time::Duration {
        self.inner.visibility_timeout()
    }
    async fn send_batch(&self, bodies: Vec<String>) -> sluice_core::Result<Vec<String>> {
        self.inner.send_batch(bodies).await
    }
    async fn receive(
        &self,
        opts: sluice_core::queue::ReceiveOptions,
    ) -> sluice_core::Result<Vec<sluice_core::queue::ReceivedMessage>> {
        self.check(&self.fail_receives)?;
        self.receives_started.fetch_add(1, Ordering::SeqCst);
        let ms = self.receive_delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        self.inner.receive(opts).await
    }
    async fn delete_batch(
        &self,
        receipts: &[String],
    ) -> sluice_core::Result<Vec<sluice_core::queue::BatchFailure>> {
        self.check(&self.fail_deletes)?;
        self.inner.delete_batch(receipts).await
    }
    async fn change_visibility_batch(
        &self,
        entries: &[(String, std::time::Duration)],
    ) -> sluice_core::Result<Vec<sluice_core::queue::BatchFailure>> {
        if self.lose_heartbeats.load(Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        self.inner.change_visibility_batch(entries).await
    }
    async fn stats(&self) -> sluice_core::Result<sluice_core::queue::QueueStats> {
        self.inner.stats().await
    }
    async fn purge(&self) -> sluice_core::Result<()> {
        self.inner.purge().await
    }
}
