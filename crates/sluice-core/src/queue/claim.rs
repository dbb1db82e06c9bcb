//! Claim-check: large messages stored as objects in the lake, the queue carrying a pointer.
//!
//! As the SQS Extended Client does: `send_batch` uploads each body larger than
//! `INLINE_MAX` to `<lake>/_sluice/claims/<queue>/<uuid>.msg` and sends
//! `sluice.claim.v1 {"key":…,"bytes":…,"xxh3":…}` instead; `receive` fetches and checks the
//! object and returns the original body with a receipt that also names the object;
//! `delete_batch` deletes the message and then the object. An object is deleted only after its
//! message is, so a pointer (into this lake) whose object is gone belongs to a message already
//! processed (a duplicate delivery): it is deleted and not returned. A pointer into another lake
//! is returned as it is, and dead-lettered by the consumer, never deleted.
//!
//! Messages can then be as large as the chunk size chosen (default 8 MiB), and ten go in one
//! send call: a million rows cost a few dozen billed SQS units instead of about 1,700.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::queue::{BatchFailure, MAX_BATCH, Queue, QueueStats, ReceiveOptions, ReceivedMessage};

/// Prefix of a pointer message.
pub(crate) const CLAIM_MAGIC: &str = "sluice.claim.v1 ";
/// Bodies up to this size travel inline even in claim-check mode.
pub(crate) const INLINE_MAX: usize = 8 * 1024;
const RECEIPT_MAGIC: &str = "sluice-claim:";

#[derive(Debug, Serialize, Deserialize)]
struct Pointer {
    /// The lake the object is in; a consumer on another lake must not take the object's
    /// absence for "already processed".
    lake: String,
    key: String,
    bytes: usize,
    xxh3: String,
}

fn digest(body: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(body.as_bytes()))
}

/// A queue whose large messages live in the lake. Without `store_bytes` it only resolves
/// pointers it receives (every consumer does, so producers can switch modes freely).
#[derive(Debug)]
pub struct ClaimCheckQueue {
    inner: Arc<dyn Queue>,
    lake: Lake,
    dir: String,
    store_bytes: Option<usize>,
}

impl ClaimCheckQueue {
    /// `store_bytes`: in claim-check mode, the largest message (and chunk) to produce.
    pub fn new(inner: Arc<dyn Queue>, lake: Lake, store_bytes: Option<usize>) -> Self {
        let dir = format!("_sluice/claims/{}", inner.name());
        ClaimCheckQueue {
            inner,
            lake,
            dir,
            store_bytes,
        }
    }

    async fn store(&self, body: &str) -> Result<String> {
        let key = format!("{}/{}.msg", self.dir, uuid::Uuid::now_v7());
        self.lake
            .store
            .put(
                &self.lake.path(&key),
                bytes::Bytes::copy_from_slice(body.as_bytes()).into(),
            )
            .await?;
        let p = Pointer {
            lake: self.lake.url.to_string(),
            key,
            bytes: body.len(),
            xxh3: digest(body),
        };
        Ok(format!(
            "{CLAIM_MAGIC}{}",
            serde_json::to_string(&p)
                .map_err(|e| Error::Internal(format!("claim pointer: {e}")))?
        ))
    }

    /// Fetches a pointer's body; `None` if the object is gone (already processed).
    async fn fetch(&self, pointer: &Pointer) -> Result<Option<String>> {
        let got = match self.lake.store.get(&self.lake.path(&pointer.key)).await {
            Ok(g) => g.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let body = String::from_utf8(got.to_vec())
            .map_err(|_| Error::Undecodable(format!("claim {} is not UTF-8", pointer.key)))?;
        if body.len() != pointer.bytes || digest(&body) != pointer.xxh3 {
            return Err(Error::Undecodable(format!(
                "claim {} does not match its pointer ({} bytes, expected {})",
                pointer.key,
                body.len(),
                pointer.bytes
            )));
        }
        Ok(Some(body))
    }

    fn split(receipt: &str) -> (Option<&str>, &str) {
        match receipt
            .strip_prefix(RECEIPT_MAGIC)
            .and_then(|r| r.split_once('\n'))
        {
            Some((key, inner)) => (Some(key), inner),
            None => (None, receipt),
        }
    }
}

#[async_trait]
impl Queue for ClaimCheckQueue {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn max_message_bytes(&self) -> usize {
        self.store_bytes
            .unwrap_or_else(|| self.inner.max_message_bytes())
    }

    fn billing_unit_bytes(&self) -> Option<usize> {
        self.inner.billing_unit_bytes()
    }

    /// Stored bodies are objects in the lake, which may be billed by size: compressed.
    fn on_local_disk(&self) -> bool {
        self.inner.on_local_disk()
    }

    fn prefers_text_chunks(&self) -> bool {
        self.store_bytes.is_none() && self.inner.prefers_text_chunks()
    }

    fn max_batch_bytes(&self) -> usize {
        match self.store_bytes {
            Some(b) => b * MAX_BATCH,
            None => self.inner.max_batch_bytes(),
        }
    }

    fn visibility_timeout(&self) -> Duration {
        self.inner.visibility_timeout()
    }

    async fn send_batch(&self, bodies: Vec<String>) -> Result<Vec<String>> {
        let Some(limit) = self.store_bytes else {
            return self.inner.send_batch(bodies).await;
        };
        if bodies.is_empty() || bodies.len() > MAX_BATCH {
            return Err(Error::invalid(format!(
                "a send takes 1 to {MAX_BATCH} messages, got {}",
                bodies.len()
            )));
        }
        if let Some(b) = bodies.iter().find(|b| b.len() > limit) {
            return Err(Error::MessageTooLarge {
                size: b.len(),
                limit,
            });
        }
        let stored = join_all(bodies.into_iter().map(|b| async move {
            if b.len() > INLINE_MAX {
                self.store(&b).await.map(|p| (p, true))
            } else {
                Ok((b, false))
            }
        }))
        .await;
        let mut out = Vec::with_capacity(stored.len());
        let mut first_err = None;
        for r in stored {
            match r {
                Ok(x) => out.push(x),
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        let cleanup = |out: Vec<(String, bool)>| async move {
            for (p, is_ptr) in out {
                if is_ptr
                    && let Some(json) = p.strip_prefix(CLAIM_MAGIC)
                    && let Ok(ptr) = serde_json::from_str::<Pointer>(json)
                {
                    let _ = self.lake.store.delete(&self.lake.path(&ptr.key)).await;
                }
            }
        };
        if let Some(e) = first_err {
            cleanup(out).await;
            return Err(e);
        }
        let msgs: Vec<String> = out.iter().map(|(p, _)| p.clone()).collect();
        match self.inner.send_batch(msgs).await {
            Ok(ids) => Ok(ids),
            Err(e) => {
                cleanup(out).await;
                Err(e)
            }
        }
    }

    async fn receive(&self, opts: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        let msgs = self.inner.receive(opts).await?;
        let resolved = join_all(msgs.into_iter().map(|m| async move {
            let m: ReceivedMessage = m;
            let Some(json) = m.body.strip_prefix(CLAIM_MAGIC) else {
                return Ok::<_, Error>(Some(m));
            };
            let ptr: Pointer = match serde_json::from_str(json) {
                Ok(p) => p,
                // Left as it is: the consumer dead-letters what it cannot decode.
                Err(_) => return Ok(Some(m)),
            };
            if ptr.lake != self.lake.url.as_str() {
                // Left as it is (and so dead-lettered after maxReceiveCount deliveries): this
                // consumer cannot see the object, which does not mean it was processed.
                warn!(
                    claim_lake = %ptr.lake,
                    lake = %self.lake.url,
                    "message points to a claim in another lake; run the consumer with --lake {}",
                    ptr.lake
                );
                return Ok(Some(m));
            }
            match self.fetch(&ptr).await? {
                Some(body) => Ok(Some(ReceivedMessage {
                    receipt: format!("{RECEIPT_MAGIC}{}\n{}", ptr.key, m.receipt),
                    body,
                    ..m
                })),
                None => {
                    warn!(key = %ptr.key, "claim already processed; deleting its duplicate message");
                    self.inner.delete_batch(&[m.receipt]).await?;
                    Ok(None)
                }
            }
        }))
        .await;
        let mut out = Vec::new();
        for r in resolved {
            if let Some(m) = r? {
                out.push(m);
            }
        }
        Ok(out)
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<BatchFailure>> {
        let split: Vec<(Option<&str>, &str)> = receipts.iter().map(|r| Self::split(r)).collect();
        let inner: Vec<String> = split.iter().map(|(_, r)| r.to_string()).collect();
        let failures = self.inner.delete_batch(&inner).await?;
        let failed: std::collections::HashSet<usize> = failures.iter().map(|f| f.index).collect();
        for (i, (key, _)) in split.iter().enumerate() {
            if let Some(key) = key
                && !failed.contains(&i)
                && let Err(e) = self.lake.store.delete(&self.lake.path(key)).await
            {
                warn!(key, error = %e, "claim object not deleted; it is unreferenced now");
            }
        }
        Ok(failures)
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>> {
        let inner: Vec<(String, Duration)> = entries
            .iter()
            .map(|(r, d)| (Self::split(r).1.to_string(), *d))
            .collect();
        self.inner.change_visibility_batch(&inner).await
    }

    async fn stats(&self) -> Result<QueueStats> {
        self.inner.stats().await
    }

    async fn purge(&self) -> Result<()> {
        use futures::TryStreamExt;
        self.inner.purge().await?;
        let prefix = self.lake.path(&self.dir);
        let objects: Vec<_> = self.lake.store.list(Some(&prefix)).try_collect().await?;
        for o in objects {
            self.lake.store.delete(&o.location).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{EmbeddedQueues, QueueExt, QueueSettings};

    async fn setup() -> (tempfile::TempDir, Arc<dyn Queue>) {
        let dir = tempfile::tempdir().unwrap();
        let qs = EmbeddedQueues::open(dir.path().join("q.db")).unwrap();
        qs.create_queue("q", &QueueSettings::default())
            .await
            .unwrap();
        let q: Arc<dyn Queue> = Arc::new(qs.queue("q").await.unwrap());
        (dir, q)
    }

    fn now() -> ReceiveOptions {
        ReceiveOptions {
            wait: Duration::ZERO,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn pointers_round_trip_and_objects_go_after_delete() {
        let (dir, raw) = setup().await;
        let lake = Lake::local(&dir.path().join("lake")).unwrap();
        let q = ClaimCheckQueue::new(raw.clone(), lake.clone(), Some(1 << 20));
        let big = "x".repeat(100_000);
        q.send_batch(vec![big.clone(), "small".to_string()])
            .await
            .unwrap();
        // On the wire: one pointer, one inline body.
        let wire = raw.receive(now()).await.unwrap();
        assert_eq!(wire.len(), 2);
        assert!(
            wire.iter()
                .any(|m| m.body.starts_with(CLAIM_MAGIC) && m.body.len() < 500)
        );
        raw.change_visibility_all(
            &wire.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>(),
            Duration::ZERO,
        )
        .await
        .unwrap();
        let got = q.receive(now()).await.unwrap();
        let mut bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
        bodies.sort();
        assert_eq!(bodies, vec!["small", big.as_str()]);
        let claims = dir.path().join("lake/_sluice/claims/q");
        assert_eq!(std::fs::read_dir(&claims).unwrap().count(), 1);
        let receipts: Vec<String> = got.iter().map(|m| m.receipt.clone()).collect();
        assert!(q.delete_batch(&receipts).await.unwrap().is_empty());
        assert_eq!(std::fs::read_dir(&claims).unwrap().count(), 0);
        assert_eq!(raw.stats().await.unwrap(), Default::default());
    }

    #[tokio::test]
    async fn a_missing_object_is_a_processed_duplicate_but_only_in_the_same_lake() {
        let (dir, raw) = setup().await;
        let lake = Lake::local(&dir.path().join("lake")).unwrap();
        let other = Lake::local(&dir.path().join("other")).unwrap();
        let q = ClaimCheckQueue::new(raw.clone(), lake.clone(), Some(1 << 20));
        q.send_batch(vec!["y".repeat(50_000)]).await.unwrap();
        // A consumer on another lake leaves the message alone.
        let elsewhere = ClaimCheckQueue::new(raw.clone(), other, None);
        let got = elsewhere.receive(now()).await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].body.starts_with(CLAIM_MAGIC));
        elsewhere
            .change_visibility_batch(&[(got[0].receipt.clone(), Duration::ZERO)])
            .await
            .unwrap();
        assert_eq!(raw.stats().await.unwrap().visible, 1);
        // In the same lake, a pointer whose object is gone was processed: dropped and deleted.
        std::fs::remove_dir_all(dir.path().join("lake/_sluice/claims")).unwrap();
        assert!(q.receive(now()).await.unwrap().is_empty());
        assert_eq!(raw.stats().await.unwrap(), Default::default());
    }
}
