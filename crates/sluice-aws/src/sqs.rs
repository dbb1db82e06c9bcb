//! The [`Queue`] on Amazon SQS.
//!
//! Batch calls whose entries fail one by one (throttling, internal errors) are retried entry by
//! entry with back-off; entries that fail for the caller's fault are returned or raised. The
//! queue's maximum message size and visibility timeout come from its attributes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use sluice_core::error::retry::Backoff;
use sluice_core::queue::admin::{CreatedQueue, DeadLetter, QueueAdmin};
use sluice_core::queue::{
    BatchFailure, MAX_BATCH, MAX_WAIT, Queue, QueueSettings, QueueStats, ReceiveOptions,
    ReceivedMessage,
};
use sluice_core::{Error, Result};
use tracing::{debug, warn};

use crate::config::Aws;
use crate::error::{code_of, incomplete_reply, sdk};

/// Attempts of a batch entry that fails with a retryable error.
const ENTRY_ATTEMPTS: u32 = 6;

/// A queue named by `sqs://NAME` or by its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueRef {
    Name(String),
    Url(String),
}

impl QueueRef {
    /// Parses `sqs://NAME`, `https://sqs.<region>.amazonaws.com/<account>/<name>` or any
    /// `http(s)://host/<account>/<name>` of an SQS-compatible server.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(name) = s.strip_prefix("sqs://") {
            let name = name.trim_end_matches('/');
            validate_queue_name(name)?;
            return Ok(QueueRef::Name(name.to_string()));
        }
        if s.starts_with("https://") || s.starts_with("http://") {
            let u = url::Url::parse(s).map_err(|e| Error::Config(format!("queue URL {s}: {e}")))?;
            let segs: Vec<&str> = u.path_segments().map(|p| p.collect()).unwrap_or_default();
            if segs.len() != 2 || segs[1].is_empty() {
                return Err(Error::Config(format!(
                    "queue URL {s}: expected <endpoint>/<account id>/<queue name>"
                )));
            }
            return Ok(QueueRef::Url(s.to_string()));
        }
        Err(Error::Config(format!(
            "queue {s:?}: expected sqs://NAME or an SQS queue URL"
        )))
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        match self {
            QueueRef::Name(n) => n,
            QueueRef::Url(u) => u.trim_end_matches('/').rsplit('/').next().unwrap_or(u),
        }
    }
}

/// SQS queue names: 1 to 80 of `[A-Za-z0-9_-]`, `.fifo` suffix for FIFO queues.
pub fn validate_queue_name(name: &str) -> Result<()> {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    if base.is_empty()
        || name.len() > 80
        || !base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::Config(format!(
            "queue name {name:?}: SQS allows 1 to 80 letters, digits, '-' and '_'"
        )));
    }
    Ok(())
}

/// An SQS queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    name: String,
    max_message_bytes: usize,
    visibility_timeout: Duration,
}

fn attr(map: &HashMap<QueueAttributeName, String>, k: QueueAttributeName) -> Option<u64> {
    map.get(&k).and_then(|v| v.parse().ok())
}

impl SqsQueue {
    /// Opens an existing queue, reading its attributes.
    pub async fn open(aws: &Aws, queue: &QueueRef) -> Result<Self> {
        let client = aws.sqs();
        let url = match queue {
            QueueRef::Url(u) => u.clone(),
            QueueRef::Name(n) => queue_url(&client, n).await?,
        };
        Self::with_url(client, url, queue.name().to_string()).await
    }

    async fn with_url(client: aws_sdk_sqs::Client, url: String, name: String) -> Result<Self> {
        let attrs = get_attributes(&client, &url).await?;
        let max_message_bytes =
            attr(&attrs, QueueAttributeName::MaximumMessageSize).unwrap_or(262_144) as usize;
        let visibility_timeout =
            Duration::from_secs(attr(&attrs, QueueAttributeName::VisibilityTimeout).unwrap_or(30));
        Ok(SqsQueue {
            client,
            url,
            name,
            max_message_bytes,
            visibility_timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// All attributes of the queue.
    pub async fn attributes(&self) -> Result<HashMap<QueueAttributeName, String>> {
        get_attributes(&self.client, &self.url).await
    }

    /// The dead-letter queue named by the queue's redrive policy, if any.
    pub async fn dead_letter_queue(&self) -> Result<Option<SqsQueue>> {
        let attrs = self.attributes().await?;
        let Some(policy) = attrs.get(&QueueAttributeName::RedrivePolicy) else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_str(policy)
            .map_err(|e| Error::Config(format!("queue {}: bad RedrivePolicy: {e}", self.name)))?;
        let Some(arn) = v.get("deadLetterTargetArn").and_then(|a| a.as_str()) else {
            return Ok(None);
        };
        let name = arn.rsplit(':').next().unwrap_or(arn).to_string();
        let url = queue_url(&self.client, &name).await?;
        Ok(Some(
            Self::with_url(self.client.clone(), url, name.clone()).await?,
        ))
    }

    async fn send_once(&self, entries: Vec<(usize, String)>) -> Result<EntryOutcome<String>> {
        let req: Vec<SendMessageBatchRequestEntry> = entries
            .iter()
            .map(|(i, b)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(b.as_str())
                    .build()
                    .map_err(|e| Error::invalid(e.to_string()))
            })
            .collect::<Result<_>>()?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(req))
            .send()
            .await
            .map_err(|e| sdk("SQS", "SendMessageBatch", e))?;
        let ok = out
            .successful()
            .iter()
            .filter_map(|s| Some((s.id().parse().ok()?, s.message_id().to_string())))
            .collect();
        Ok((ok, entry_results("SendMessageBatch", out.failed())))
    }
}

fn entry_error(operation: &'static str, f: &aws_sdk_sqs::types::BatchResultErrorEntry) -> Error {
    Error::Service {
        service: "SQS",
        operation,
        code: Some(f.code().to_string()),
        message: format!("{}: {}", f.code(), f.message().unwrap_or("entry failed")),
        retryable: !f.sender_fault(),
    }
}

async fn queue_url(client: &aws_sdk_sqs::Client, name: &str) -> Result<String> {
    match client.get_queue_url().queue_name(name).send().await {
        Ok(o) => o
            .queue_url()
            .map(str::to_string)
            .ok_or_else(|| Error::NotFound {
                what: "queue",
                name: name.to_string(),
            }),
        Err(e) => {
            let e = sdk("SQS", "GetQueueUrl", e);
            if matches!(
                code_of(&e),
                Some(
                    "AWS.SimpleQueueService.NonExistentQueue"
                        | "QueueDoesNotExist"
                        | "NonExistentQueue"
                )
            ) {
                Err(Error::NotFound {
                    what: "queue",
                    name: name.to_string(),
                })
            } else {
                Err(e)
            }
        }
    }
}

async fn get_attributes(
    client: &aws_sdk_sqs::Client,
    url: &str,
) -> Result<HashMap<QueueAttributeName, String>> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| sdk("SQS", "GetQueueAttributes", e))?;
    Ok(out.attributes().cloned().unwrap_or_default())
}

/// Outcome of one batch call: entries that succeeded (with their result) and entries that
/// failed, by index in the original request.
type EntryOutcome<R> = (Vec<(usize, R)>, Vec<(usize, Error)>);

/// Calls `call` with the pending entries until none fails retryably: entries that fail with a
/// retryable error (throttling, internal errors: not the caller's fault) are sent again, alone,
/// after a back-off, up to [`ENTRY_ATTEMPTS`] times. Returns what succeeded and what failed for
/// good.
async fn retry_entries<T, R, F, Fut>(
    entries: Vec<(usize, T)>,
    mut call: F,
) -> Result<EntryOutcome<R>>
where
    T: Clone,
    F: FnMut(Vec<(usize, T)>) -> Fut,
    Fut: std::future::Future<Output = Result<EntryOutcome<R>>>,
{
    let mut pending = entries;
    let mut done = Vec::new();
    let mut failed_for_good = Vec::new();
    for attempt in 0..ENTRY_ATTEMPTS {
        let (ok, failed) = call(pending.clone()).await?;
        done.extend(ok);
        let mut retry = Vec::new();
        for (i, e) in failed {
            if e.is_retryable() && attempt + 1 < ENTRY_ATTEMPTS {
                warn!(entry = i, error = %e, "batch entry failed, retrying it");
                retry.push(i);
            } else {
                failed_for_good.push((i, e));
            }
        }
        if retry.is_empty() {
            break;
        }
        pending.retain(|(i, _)| retry.contains(i));
        tokio::time::sleep(ENTRY_BACKOFF.delay(attempt + 1)).await;
    }
    failed_for_good.sort_by_key(|(i, _)| *i);
    Ok((done, failed_for_good))
}

fn batch_failure(index: usize, e: &Error) -> BatchFailure {
    match e {
        Error::Service { code, message, .. } => BatchFailure {
            index,
            code: code.clone().unwrap_or_default(),
            message: message.clone(),
        },
        other => BatchFailure {
            index,
            code: String::new(),
            message: other.to_string(),
        },
    }
}

fn entry_results<'a>(
    operation: &'static str,
    failed: impl IntoIterator<Item = &'a aws_sdk_sqs::types::BatchResultErrorEntry>,
) -> Vec<(usize, Error)> {
    failed
        .into_iter()
        .filter_map(|f| Some((f.id().parse().ok()?, entry_error(operation, f))))
        .collect()
}

/// Waits before an entry is sent again: 25–50 ms, 50–100 ms, … (the core's back-off, jittered).
const ENTRY_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(25),
    max: Duration::from_millis(3_200),
    retries: ENTRY_ATTEMPTS - 1,
};

fn check_batch(n: usize, what: &str) -> Result<()> {
    if n == 0 || n > MAX_BATCH {
        return Err(Error::invalid(format!(
            "{what} takes 1 to {MAX_BATCH} entries, got {n}"
        )));
    }
    Ok(())
}

fn secs(d: Duration) -> i32 {
    d.as_secs().min(43_200) as i32
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    fn billing_unit_bytes(&self) -> Option<usize> {
        Some(sluice_core::queue::BILLING_UNIT_BYTES)
    }

    fn visibility_timeout(&self) -> Duration {
        self.visibility_timeout
    }

    async fn send_batch(&self, bodies: Vec<String>) -> Result<Vec<String>> {
        check_batch(bodies.len(), "SendMessageBatch")?;
        let total: usize = bodies.iter().map(String::len).sum();
        if total > self.max_message_bytes {
            return Err(Error::MessageTooLarge {
                size: total,
                limit: self.max_message_bytes,
            });
        }
        let sent = bodies.len();
        let entries: Vec<(usize, String)> = bodies.into_iter().enumerate().collect();
        let (ok, failed) = retry_entries(entries, |e| self.send_once(e)).await?;
        if let Some((_, e)) = failed.into_iter().next() {
            // Entries sent so far stay sent; the caller retries the call, and consumers drop
            // duplicates by chunk id.
            return Err(e);
        }
        let mut ids: Vec<Option<String>> = vec![None; sent];
        for (i, id) in ok {
            ids[i] = Some(id);
        }
        ids.into_iter()
            .map(|id| id.ok_or_else(|| incomplete_reply("SQS", "SendMessageBatch", "message id")))
            .collect()
    }

    async fn receive(&self, opts: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        // Whole seconds, rounded up: any wait at all makes it a long poll, which asks every
        // SQS server, so an empty answer means the queue had no visible message.
        let wait_secs = opts.wait.min(MAX_WAIT).as_millis().div_ceil(1000) as i32;
        let mut req = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(opts.max_messages.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait_secs)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount);
        if let Some(vt) = opts.visibility_timeout {
            req = req.visibility_timeout(secs(vt));
        }
        let out = req
            .send()
            .await
            .map_err(|e| sdk("SQS", "ReceiveMessage", e))?;
        let msgs = out
            .messages()
            .iter()
            .map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                ReceivedMessage {
                    message_id: m.message_id().unwrap_or_default().to_string(),
                    receipt: m.receipt_handle().unwrap_or_default().to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    receive_count,
                }
            })
            .collect::<Vec<_>>();
        debug!(queue = %self.name, n = msgs.len(), "received");
        Ok(msgs)
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<Vec<BatchFailure>> {
        check_batch(receipts.len(), "DeleteMessageBatch")?;
        let entries: Vec<(usize, &String)> = receipts.iter().enumerate().collect();
        let (_, failed) = retry_entries(entries, |pending| async move {
            let req = pending
                .iter()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r.as_str())
                        .build()
                        .map_err(|e| Error::invalid(e.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(req))
                .send()
                .await
                .map_err(|e| sdk("SQS", "DeleteMessageBatch", e))?;
            Ok((
                Vec::<(usize, ())>::new(),
                entry_results("DeleteMessageBatch", out.failed()),
            ))
        })
        .await?;
        Ok(failed.iter().map(|(i, e)| batch_failure(*i, e)).collect())
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(String, Duration)],
    ) -> Result<Vec<BatchFailure>> {
        check_batch(entries.len(), "ChangeMessageVisibilityBatch")?;
        let indexed: Vec<(usize, &(String, Duration))> = entries.iter().enumerate().collect();
        let (_, failed) = retry_entries(indexed, |pending| async move {
            let req = pending
                .iter()
                .map(|(i, (r, d))| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r.as_str())
                        .visibility_timeout(secs(*d))
                        .build()
                        .map_err(|e| Error::invalid(e.to_string()))
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(req))
                .send()
                .await
                .map_err(|e| sdk("SQS", "ChangeMessageVisibilityBatch", e))?;
            Ok((
                Vec::<(usize, ())>::new(),
                entry_results("ChangeMessageVisibilityBatch", out.failed()),
            ))
        })
        .await?;
        Ok(failed.iter().map(|(i, e)| batch_failure(*i, e)).collect())
    }

    async fn stats(&self) -> Result<QueueStats> {
        let a = self.attributes().await?;
        Ok(QueueStats {
            visible: attr(&a, QueueAttributeName::ApproximateNumberOfMessages).unwrap_or(0),
            in_flight: attr(
                &a,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            )
            .unwrap_or(0),
            oldest_age: None,
        })
    }

    async fn purge(&self) -> Result<()> {
        self.client
            .purge_queue()
            .queue_url(&self.url)
            .send()
            .await
            .map_err(|e| sdk("SQS", "PurgeQueue", e))?;
        Ok(())
    }
}

/// Creating queues and moving dead letters back.
#[derive(Debug, Clone)]
pub struct SqsAdmin {
    client: aws_sdk_sqs::Client,
}

impl SqsAdmin {
    pub fn new(aws: &Aws) -> Self {
        SqsAdmin { client: aws.sqs() }
    }

    /// Creates `name` and its dead-letter queue `dead_letter` with a redrive policy, or
    /// checks that they exist: idempotent, like CreateQueue itself with the same attributes.
    /// Returns the queue's URL.
    pub async fn ensure_queue(
        &self,
        name: &str,
        dead_letter: &str,
        settings: &QueueSettings,
    ) -> Result<String> {
        validate_queue_name(name)?;
        validate_queue_name(dead_letter)?;
        let retention = settings
            .retention
            .as_secs()
            .clamp(60, 1_209_600)
            .to_string();
        let dlq_url = self
            .create(
                dead_letter,
                vec![(QueueAttributeName::MessageRetentionPeriod, "1209600".into())],
            )
            .await?;
        let dlq_arn = get_attributes(&self.client, &dlq_url)
            .await?
            .remove(&QueueAttributeName::QueueArn)
            .ok_or_else(|| incomplete_reply("SQS", "GetQueueAttributes", "QueueArn"))?;
        let policy = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": settings.max_receive_count.to_string(),
        })
        .to_string();
        let attrs = vec![
            (
                QueueAttributeName::VisibilityTimeout,
                settings.visibility_timeout.as_secs().to_string(),
            ),
            (QueueAttributeName::MessageRetentionPeriod, retention),
            (
                QueueAttributeName::MaximumMessageSize,
                settings
                    .max_message_bytes
                    .clamp(1024, 1_048_576)
                    .to_string(),
            ),
            (
                QueueAttributeName::ReceiveMessageWaitTimeSeconds,
                "20".into(),
            ),
            (QueueAttributeName::RedrivePolicy, policy),
        ];
        self.create(name, attrs).await
    }

    async fn create(&self, name: &str, attrs: Vec<(QueueAttributeName, String)>) -> Result<String> {
        let mut req = self.client.create_queue().queue_name(name);
        for (k, v) in &attrs {
            req = req.attributes(k.clone(), v);
        }
        match req.send().await {
            Ok(o) => Ok(o.queue_url().unwrap_or_default().to_string()),
            Err(e) => {
                let e = sdk("SQS", "CreateQueue", e);
                if matches!(code_of(&e), Some("QueueAlreadyExists" | "QueueNameExists")) {
                    // Exists with other attributes: bring them to what was asked.
                    let url = queue_url(&self.client, name).await?;
                    let mut set = self.client.set_queue_attributes().queue_url(&url);
                    for (k, v) in attrs {
                        set = set.attributes(k, v);
                    }
                    set.send()
                        .await
                        .map_err(|e| sdk("SQS", "SetQueueAttributes", e))?;
                    Ok(url)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Deletes a queue (tests and teardown).
    pub async fn delete_queue(&self, url: &str) -> Result<()> {
        self.client
            .delete_queue()
            .queue_url(url)
            .send()
            .await
            .map_err(|e| sdk("SQS", "DeleteQueue", e))?;
        Ok(())
    }
}

/// Moves every message of `from` to `to` (sent before deleted, so nothing is lost; a crash in
/// between leaves a duplicate, which consumers drop). Returns how many moved.
pub async fn redrive(from: &dyn Queue, to: &dyn Queue) -> Result<u64> {
    use sluice_core::queue::QueueExt;
    let mut moved = 0u64;
    loop {
        let msgs = from
            .receive(ReceiveOptions {
                max_messages: MAX_BATCH,
                wait: Duration::from_secs(1),
                visibility_timeout: Some(Duration::from_secs(120)),
            })
            .await?;
        if msgs.is_empty() {
            return Ok(moved);
        }
        let mut batch: Vec<String> = Vec::new();
        let mut receipts = Vec::new();
        let mut bytes = 0;
        for m in msgs {
            if !batch.is_empty() && bytes + m.body.len() > to.max_message_bytes() {
                let n = batch.len() as u64;
                to.send_batch(std::mem::take(&mut batch)).await?;
                from.delete_all(&receipts).await?;
                moved += n;
                receipts.clear();
                bytes = 0;
            }
            bytes += m.body.len();
            batch.push(m.body);
            receipts.push(m.receipt);
        }
        let n = batch.len() as u64;
        to.send_batch(batch).await?;
        from.delete_all(&receipts).await?;
        moved += n;
    }
}

/// The SQS queues of an account and region, as [`QueueAdmin`] sees them. A queue is named
/// `NAME` (or `sqs://NAME`) or by its URL; its dead-letter queue is `NAME_dlq`.
#[derive(Debug, Clone)]
pub struct SqsQueues {
    pub aws: Aws,
}

impl SqsQueues {
    fn reference(name: &str) -> Result<QueueRef> {
        if name.contains("://") {
            QueueRef::parse(name)
        } else {
            QueueRef::parse(&format!("sqs://{name}"))
        }
    }
}

#[async_trait]
impl QueueAdmin for SqsQueues {
    fn location(&self) -> String {
        format!("SQS in {}", self.aws.region())
    }

    async fn create(&self, name: &str, settings: &QueueSettings) -> Result<CreatedQueue> {
        let r = Self::reference(name)?;
        let dlq = sluice_core::queue::dead_letter_name(r.name());
        let url = SqsAdmin::new(&self.aws)
            .ensure_queue(r.name(), &dlq, settings)
            .await?;
        Ok(CreatedQueue {
            address: url,
            dead_letter: dlq,
        })
    }

    async fn open(&self, name: &str) -> Result<Arc<dyn Queue>> {
        Ok(Arc::new(
            SqsQueue::open(&self.aws, &Self::reference(name)?).await?,
        ))
    }

    async fn dead_letter_queue(&self, name: &str) -> Result<Option<Arc<dyn Queue>>> {
        let q = SqsQueue::open(&self.aws, &Self::reference(name)?).await?;
        Ok(q.dead_letter_queue()
            .await?
            .map(|d| Arc::new(d) as Arc<dyn Queue>))
    }

    /// Peeks at the dead-letter queue: receives with a visibility timeout of 0, so that the
    /// messages stay where they are (SQS has no other way to look; each look counts as a
    /// receive of the dead-letter queue, which has no redrive policy of its own).
    async fn dead_letters(&self, name: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let Some(d) = self.dead_letter_queue(name).await? else {
            return Ok(Vec::new());
        };
        let mut seen: Vec<DeadLetter> = Vec::new();
        for _ in 0..limit.div_ceil(MAX_BATCH).max(1) * 2 {
            let got = d
                .receive(ReceiveOptions {
                    max_messages: MAX_BATCH,
                    wait: Duration::ZERO,
                    visibility_timeout: Some(Duration::ZERO),
                })
                .await?;
            if got.is_empty() {
                break;
            }
            for m in got {
                if seen.len() < limit && !seen.iter().any(|s| s.message_id == m.message_id) {
                    seen.push(DeadLetter {
                        message_id: m.message_id,
                        reason: None,
                    });
                }
            }
            if seen.len() >= limit {
                break;
            }
        }
        Ok(seen)
    }

    async fn redrive(&self, name: &str) -> Result<u64> {
        let q = self.open(name).await?;
        let Some(d) = self.dead_letter_queue(name).await? else {
            return Ok(0);
        };
        redrive(&*d, &*q).await
    }

    async fn list(&self) -> Result<Vec<String>> {
        let client = self.aws.sqs();
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = client
                .list_queues()
                .set_next_token(token.clone())
                .max_results(1000)
                .send()
                .await
                .map_err(|e| sdk("SQS", "ListQueues", e))?;
            for url in out.queue_urls() {
                if let Some(n) = url.trim_end_matches('/').rsplit('/').next() {
                    names.push(n.to_string());
                }
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let dead: Vec<String> = names
            .iter()
            .map(|n| sluice_core::queue::dead_letter_name(n))
            .collect();
        names.retain(|n| !dead.contains(n));
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn throttled() -> Error {
        Error::Service {
            service: "SQS",
            operation: "SendMessageBatch",
            code: Some("InternalError".into()),
            message: "try again".into(),
            retryable: true,
        }
    }

    fn refused() -> Error {
        Error::Service {
            service: "SQS",
            operation: "SendMessageBatch",
            code: Some("InvalidMessageContents".into()),
            message: "bad body".into(),
            retryable: false,
        }
    }

    #[tokio::test]
    async fn failed_entries_are_retried_alone_until_they_succeed() {
        let calls = Mutex::new(Vec::new());
        let entries: Vec<(usize, &str)> = vec![(0, "a"), (1, "b"), (2, "c")];
        let (ok, failed) = retry_entries(entries, |pending| {
            let n = {
                let mut c = calls.lock().unwrap();
                c.push(pending.iter().map(|(i, _)| *i).collect::<Vec<_>>());
                c.len()
            };
            async move {
                // Entry 1 is throttled twice, entry 2 refused for good; entry 0 goes through.
                let mut ok = Vec::new();
                let mut failed = Vec::new();
                for (i, v) in pending {
                    match (i, n) {
                        (1, 1 | 2) => failed.push((i, throttled())),
                        (2, _) => failed.push((i, refused())),
                        _ => ok.push((i, v.to_uppercase())),
                    }
                }
                Ok((ok, failed))
            }
        })
        .await
        .unwrap();
        let mut ok = ok;
        ok.sort();
        assert_eq!(ok, vec![(0, "A".to_string()), (1, "B".to_string())]);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, 2);
        assert_eq!(
            batch_failure(2, &failed[0].1).code,
            "InvalidMessageContents"
        );
        // Only failed, retryable entries were sent again.
        assert_eq!(
            *calls.lock().unwrap(),
            vec![vec![0, 1, 2], vec![1], vec![1]]
        );
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let calls = Mutex::new(0u32);
        let (ok, failed) = retry_entries(vec![(0usize, ())], |pending| {
            *calls.lock().unwrap() += 1;
            async move {
                Ok((
                    Vec::<(usize, ())>::new(),
                    pending.into_iter().map(|(i, _)| (i, throttled())).collect(),
                ))
            }
        })
        .await
        .unwrap();
        assert!(ok.is_empty());
        assert_eq!(failed.len(), 1);
        assert_eq!(*calls.lock().unwrap(), ENTRY_ATTEMPTS);
    }
}
