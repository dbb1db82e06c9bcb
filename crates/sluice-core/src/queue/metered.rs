//! A queue that counts its calls in a [`Meter`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::metrics::{C, Meter};
use crate::queue::{
    BatchFailure, Queue, QueueStats, ReceiveOptions, ReceivedMessage, billed_units,
};

/// A queue that counts its calls in a [`Meter`].
#[derive(Debug)]
pub struct MeteredQueue {
    inner: Arc<dyn Queue>,
    meter: Arc<Meter>,
}

impl MeteredQueue {
    /// `inner`, counting its calls in `meter`.
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

    fn on_local_disk(&self) -> bool {
        self.inner.on_local_disk()
    }

    fn prefers_text_chunks(&self) -> bool {
        self.inner.prefers_text_chunks()
    }

    fn visibility_timeout(&self) -> Duration {
        self.inner.visibility_timeout()
    }

    fn max_batch_bytes(&self) -> usize {
        self.inner.max_batch_bytes()
    }

    async fn send_batch(&self, bodies: Vec<String>) -> Result<Vec<String>> {
        let m = &self.meter;
        m.count(C::QueueSend, 1);
        let bytes: usize = bodies.iter().map(String::len).sum();
        m.count(C::Billed, billed_units(bytes));
        let sent = bodies.len() as u64;
        let ids = self.inner.send_batch(bodies).await?;
        m.count(C::MessagesSent, sent);
        m.count(C::QueuePayload, bytes as u64);
        Ok(ids)
    }

    fn holds_messages(&self) -> bool {
        self.inner.holds_messages()
    }

    async fn send_held(&self, group: &str, bodies: Vec<String>) -> Result<()> {
        let m = &self.meter;
        m.count(C::QueueSend, 1);
        let bytes: usize = bodies.iter().map(String::len).sum();
        m.count(C::Billed, billed_units(bytes));
        let sent = bodies.len() as u64;
        self.inner.send_held(group, bodies).await?;
        m.count(C::MessagesSent, sent);
        m.count(C::QueuePayload, bytes as u64);
        Ok(())
    }

    async fn release_held(&self, group: &str) -> Result<u64> {
        self.inner.release_held(group).await
    }

    async fn drop_held(&self, group: &str) -> Result<()> {
        self.inner.drop_held(group).await
    }

    async fn receive(&self, opts: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        let m = &self.meter;
        m.count(C::QueueReceive, 1);
        let got = self.inner.receive(opts).await;
        match &got {
            Ok(msgs) => {
                let bytes: usize = msgs.iter().map(|m| m.body.len()).sum();
                m.count(C::Billed, billed_units(bytes));
                m.count(C::QueuePayload, bytes as u64);
                m.count(C::MessagesReceived, msgs.len() as u64);
                if msgs.is_empty() {
                    m.count(C::QueueEmpty, 1);
                }
            }
            Err(_) => m.count(C::Billed, 1),
        }
        got
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<BatchFailure>> {
        self.meter.count(C::QueueDelete, 1);
        let bytes: usize = receipts.iter().map(String::len).sum();
        self.meter.count(C::Billed, billed_units(bytes));
        self.inner.delete_batch(receipts).await
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>> {
        self.meter.count(C::QueueVisibility, 1);
        let bytes: usize = entries.iter().map(|(r, _)| r.len()).sum();
        self.meter.count(C::Billed, billed_units(bytes));
        self.inner.change_visibility_batch(entries).await
    }

    async fn stats(&self) -> Result<QueueStats> {
        self.meter.count(C::QueueOther, 1);
        self.meter.count(C::Billed, 1);
        self.inner.stats().await
    }

    async fn purge(&self) -> Result<()> {
        self.meter.count(C::QueueOther, 1);
        self.meter.count(C::Billed, 1);
        self.inner.purge().await
    }
}
