//! The embedded queue runs the shared queue conformance suite.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::queue::{EmbeddedQueues, Queue, QueueSettings};

fn settings() -> QueueSettings {
    QueueSettings {
        visibility_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

/// The embedded queue, one test per case of the suite.
mod embedded {
    use super::*;

    async fn make(name: &'static str) -> (tempfile::TempDir, Box<dyn Queue>) {
        let dir = tempfile::tempdir().unwrap();
        let queues = EmbeddedQueues::open(dir.path().join("q.db")).unwrap();
        queues.create_queue(name, &settings()).await.unwrap();
        let q = Box::new(queues.queue(name).await.unwrap()) as Box<dyn Queue>;
        (dir, q)
    }

    sluice_testkit::queue_conformance_tests!(make);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_queue_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let queues = EmbeddedQueues::open(dir.path().join("q.db")).unwrap();
    queues.create_queue("dlq", &settings()).await.unwrap();
    let s = QueueSettings {
        max_receive_count: 2,
        dead_letter_queue: Some("dlq".into()),
        ..settings()
    };
    queues.create_queue("main", &s).await.unwrap();
    let q = queues.queue("main").await.unwrap();
    let d = queues.queue("dlq").await.unwrap();
    sluice_testkit::queue::dead_letter(&q, &d).await;
    // Redrive brings it back with a fresh receive count.
    q.send_batch(vec!["again".to_string()]).await.unwrap();
    for _ in 0..2 {
        let got = q
            .receive(sluice_core::queue::ReceiveOptions {
                visibility_timeout: Some(Duration::ZERO),
                wait: Duration::ZERO,
                max_messages: 1,
            })
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
    }
    assert!(
        q.receive(sluice_core::queue::ReceiveOptions {
            wait: Duration::ZERO,
            ..Default::default()
        })
        .await
        .unwrap()
        .is_empty()
    );
    let reasons = queues.dead_letter_reasons("dlq").await.unwrap();
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].1.contains("received 2 times"), "{reasons:?}");
    assert_eq!(queues.redrive("dlq", "main").await.unwrap(), 1);
    let got = q
        .receive(sluice_core::queue::ReceiveOptions {
            wait: Duration::ZERO,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].receive_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_never_share_a_message() {
    // Two connections (as two processes would have) claim disjoint sets.
    let dir = tempfile::tempdir().unwrap();
    let a = EmbeddedQueues::open(dir.path().join("q.db")).unwrap();
    let b = EmbeddedQueues::open(dir.path().join("q.db")).unwrap();
    a.create_queue("q", &settings()).await.unwrap();
    let qa = Arc::new(a.queue("q").await.unwrap());
    let qb = Arc::new(b.queue("q").await.unwrap());
    for i in 0..20 {
        let bodies: Vec<String> = (0..10).map(|j| format!("{i}-{j}")).collect();
        qa.send_batch(bodies).await.unwrap();
    }
    let take = |q: Arc<sluice_core::queue::SqliteQueue>| async move {
        let mut got = Vec::new();
        loop {
            let m = q
                .receive(sluice_core::queue::ReceiveOptions {
                    wait: Duration::from_millis(200),
                    ..Default::default()
                })
                .await
                .unwrap();
            if m.is_empty() {
                return got;
            }
            got.extend(m.into_iter().map(|m| m.body));
        }
    };
    let (x, y) = tokio::join!(tokio::spawn(take(qa)), tokio::spawn(take(qb)));
    let mut all: Vec<String> = x.unwrap().into_iter().chain(y.unwrap()).collect();
    assert_eq!(all.len(), 200);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 200, "no message delivered to both");
}

/// The layers production stacks over a backend run the same suite, one test per case: a
/// wrapper that skipped or changed a behaviour of the contract would fail here, not in a
/// pipeline.
mod layered {
    use super::*;
    use sluice_core::lake::Lake;
    use sluice_core::metrics::Meter;
    use sluice_core::queue::MeteredQueue;
    use sluice_core::queue::claim::ClaimCheckQueue;

    /// The embedded queue `name` in a fresh directory, metered as every command's queue is.
    async fn metered_queue(name: &'static str) -> (tempfile::TempDir, MeteredQueue) {
        let dir = tempfile::tempdir().unwrap();
        let queues = EmbeddedQueues::open(dir.path().join("q.db")).unwrap();
        queues.create_queue(name, &settings()).await.unwrap();
        let q: Arc<dyn Queue> = Arc::new(queues.queue(name).await.unwrap());
        (dir, MeteredQueue::new(q, Meter::new()))
    }

    mod metered {
        use super::*;

        async fn make(name: &'static str) -> (tempfile::TempDir, Box<dyn Queue>) {
            let (dir, q) = metered_queue(name).await;
            (dir, Box::new(q))
        }

        sluice_testkit::queue_conformance_tests!(make);
    }

    /// Claim-check over metered, as consumers use it: pointers resolved, bodies passed through.
    mod claim_check_passing {
        use super::*;

        async fn make(name: &'static str) -> (tempfile::TempDir, Box<dyn Queue>) {
            let (dir, q) = metered_queue(name).await;
            let lake = Lake::local(&dir.path().join("lake")).unwrap();
            (dir, Box::new(ClaimCheckQueue::new(Arc::new(q), lake, None)))
        }

        sluice_testkit::queue_conformance_tests!(make);
    }

    /// Claim-check over metered, as a claim-check producer uses it: every body in the lake.
    mod claim_check_storing {
        use super::*;

        async fn make(name: &'static str) -> (tempfile::TempDir, Box<dyn Queue>) {
            let (dir, q) = metered_queue(name).await;
            let lake = Lake::local(&dir.path().join("lake")).unwrap();
            (
                dir,
                Box::new(ClaimCheckQueue::new(Arc::new(q), lake, Some(1 << 20))),
            )
        }

        sluice_testkit::queue_conformance_tests!(make);
    }
}
