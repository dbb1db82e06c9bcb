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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_queue_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let queues = Arc::new(EmbeddedQueues::open(dir.path().join("q.db")).unwrap());
    sluice_testkit::queue::run_all(|name| {
        let queues = queues.clone();
        async move {
            queues.create_queue(name, &settings()).await.unwrap();
            Box::new(queues.queue(name).await.unwrap()) as Box<dyn Queue>
        }
    })
    .await;
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
    q.send_batch(&["again".to_string()]).await.unwrap();
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
        qa.send_batch(&bodies).await.unwrap();
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

/// The layers production stacks over a backend run the same suite: a wrapper that skipped or
/// changed a behaviour of the contract would fail here, not in a pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_queues_conformance() {
    use sluice_core::lake::Lake;
    use sluice_core::metrics::{Meter, MeteredQueue};
    use sluice_core::queue::claim::ClaimCheckQueue;
    let dir = tempfile::tempdir().unwrap();
    let queues = Arc::new(EmbeddedQueues::open(dir.path().join("q.db")).unwrap());
    let lake = Lake::local(&dir.path().join("lake")).unwrap();
    // Metered, as every command's queue is.
    sluice_testkit::queue::run_all(|name| {
        let queues = queues.clone();
        async move {
            let name = format!("m_{name}");
            queues.create_queue(&name, &settings()).await.unwrap();
            let q: Arc<dyn Queue> = Arc::new(queues.queue(&name).await.unwrap());
            Box::new(MeteredQueue::new(q, Meter::new())) as Box<dyn Queue>
        }
    })
    .await;
    // Claim-check over metered, as consumers use it (pointers resolved, bodies passed through),
    // and as a claim-check producer uses it (every body stored in the lake).
    for store_bytes in [None, Some(1 << 20)] {
        sluice_testkit::queue::run_all(|name| {
            let (queues, lake) = (queues.clone(), lake.clone());
            async move {
                let name = format!("c{}_{name}", store_bytes.is_some() as u8);
                queues.create_queue(&name, &settings()).await.unwrap();
                let q: Arc<dyn Queue> = Arc::new(queues.queue(&name).await.unwrap());
                let metered: Arc<dyn Queue> = Arc::new(MeteredQueue::new(q, Meter::new()));
                Box::new(ClaimCheckQueue::new(metered, lake, store_bytes)) as Box<dyn Queue>
            }
        })
        .await;
    }
}
