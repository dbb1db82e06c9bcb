//! Queue administration behind one trait: creating a queue with its dead-letter queue, opening
//! it, reading and redriving its dead letters, purging, listing. The embedded queue implements
//! it here, SQS in `sluice-aws`; `init`, `queue stats|redrive|purge|create` and `top` use it
//! without asking which backend they have.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::queue::{EmbeddedQueues, Queue, QueueSettings};

/// One dead-lettered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message's id.
    pub message_id: String,
    /// Why it was moved, when the backend records it (the embedded queue does; SQS does not:
    /// consumers record their reasons in the home's failure log).
    pub reason: Option<String>,
}

/// A queue as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedQueue {
    /// The queue's name (embedded) or URL (SQS).
    pub address: String,
    /// The name of its dead-letter queue.
    pub dead_letter: String,
}

/// Administration of one backend's queues.
///
/// # Contract
/// - `create` is idempotent: the queue and its dead-letter queue exist afterwards, the queue
///   moving a message there after `settings.max_receive_count` receives.
/// - `open` fails with `NotFound` for a queue that does not exist.
/// - `dead_letters` lists at most `limit` messages of the dead-letter queue without consuming
///   them; `redrive` moves every one back to the queue and returns how many moved.
/// - `list` gives the queues that are not dead-letter queues, by name.
#[async_trait]
pub trait QueueAdmin: Send + Sync + std::fmt::Debug {
    /// Where the queues are, for people: a file, or a region's endpoint.
    fn location(&self) -> String;
    /// Creates `name` and its dead-letter queue (idempotent).
    async fn create(&self, name: &str, settings: &QueueSettings) -> Result<CreatedQueue>;
    /// Opens `name`; `NotFound` if it does not exist.
    async fn open(&self, name: &str) -> Result<Arc<dyn Queue>>;
    /// The dead-letter queue of `name`, if it has one.
    async fn dead_letter_queue(&self, name: &str) -> Result<Option<Arc<dyn Queue>>>;
    /// Up to `limit` messages of `name`'s dead-letter queue, without consuming them.
    async fn dead_letters(&self, name: &str, limit: usize) -> Result<Vec<DeadLetter>>;
    /// Moves every message of `name`'s dead-letter queue back to it; returns how many moved.
    async fn redrive(&self, name: &str) -> Result<u64>;
    /// Deletes every message of `name`.
    async fn purge(&self, name: &str) -> Result<()> {
        self.open(name).await?.purge().await
    }
    /// The queues that are not dead-letter queues, by name.
    async fn list(&self) -> Result<Vec<String>>;
}

/// The embedded queues of one database file.
#[derive(Debug, Clone)]
pub struct EmbeddedAdmin {
    /// The queues.
    pub queues: EmbeddedQueues,
    /// The database file.
    pub path: std::path::PathBuf,
}

#[async_trait]
impl QueueAdmin for EmbeddedAdmin {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn create(&self, name: &str, settings: &QueueSettings) -> Result<CreatedQueue> {
        self.queues.ensure_with_dead_letter(name, settings).await?;
        Ok(CreatedQueue {
            address: name.to_string(),
            dead_letter: crate::queue::dead_letter_name(name),
        })
    }

    async fn open(&self, name: &str) -> Result<Arc<dyn Queue>> {
        Ok(Arc::new(self.queues.queue(name).await?))
    }

    async fn dead_letter_queue(&self, name: &str) -> Result<Option<Arc<dyn Queue>>> {
        let q = self.queues.queue(name).await?;
        Ok(match &q.settings().dead_letter_queue {
            Some(d) => Some(Arc::new(self.queues.queue(d).await?)),
            None => None,
        })
    }

    async fn dead_letters(&self, name: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let Some(d) = self.dead_letter_queue(name).await? else {
            return Ok(Vec::new());
        };
        Ok(self
            .queues
            .dead_letter_reasons(d.name())
            .await?
            .into_iter()
            .take(limit)
            .map(|(message_id, reason)| DeadLetter {
                message_id,
                reason: (!reason.is_empty()).then_some(reason),
            })
            .collect())
    }

    async fn redrive(&self, name: &str) -> Result<u64> {
        let Some(d) = self.dead_letter_queue(name).await? else {
            return Ok(0);
        };
        self.queues.redrive(d.name(), name).await
    }

    async fn list(&self) -> Result<Vec<String>> {
        let all = self.queues.list().await?;
        let dead: Vec<String> = all
            .iter()
            .filter_map(|(_, s)| s.dead_letter_queue.clone())
            .collect();
        Ok(all
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !dead.contains(n))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::ReceiveOptions;
    use std::time::Duration;

    #[tokio::test]
    async fn embedded_admin_creates_lists_and_redrives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let admin = EmbeddedAdmin {
            queues: EmbeddedQueues::open(&path).unwrap(),
            path,
        };
        let settings = QueueSettings {
            max_receive_count: 1,
            ..Default::default()
        };
        let c = admin.create("events", &settings).await.unwrap();
        assert_eq!(c.dead_letter, "events_dlq");
        assert_eq!(admin.create("events", &settings).await.unwrap(), c);
        assert_eq!(admin.list().await.unwrap(), ["events"]);
        let q = admin.open("events").await.unwrap();
        q.send_batch(vec!["x".to_string()]).await.unwrap();
        let opts = ReceiveOptions {
            wait: Duration::ZERO,
            visibility_timeout: Some(Duration::ZERO),
            ..Default::default()
        };
        assert_eq!(q.receive(opts).await.unwrap().len(), 1);
        // Past max_receive_count: the next receive moves it to the dead-letter queue.
        assert!(q.receive(opts).await.unwrap().is_empty());
        let dead = admin.dead_letters("events", 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(admin.redrive("events").await.unwrap(), 1);
        assert!(admin.dead_letters("events", 10).await.unwrap().is_empty());
        assert_eq!(q.stats().await.unwrap().visible, 1);
        admin.purge("events").await.unwrap();
        assert_eq!(q.stats().await.unwrap().visible, 0);
        assert!(matches!(
            admin.open("nope").await,
            Err(crate::Error::NotFound { .. })
        ));
    }
}
