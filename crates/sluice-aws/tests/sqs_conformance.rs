//! The SQS backend runs the shared queue conformance suite over the wire.

mod common;

use std::time::Duration;

use sluice_aws::sqs::{QueueRef, SqsAdmin, SqsQueue};
use sluice_core::queue::{Queue, QueueSettings};

fn settings() -> QueueSettings {
    QueueSettings {
        visibility_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

/// SQS (moto), one test per case of the suite.
mod sqs {
    use super::*;

    async fn make(name: &'static str) -> ((), Box<dyn Queue>) {
        let aws = common::aws().await;
        let q = common::unique(&format!("conf-{}", name.replace('_', "-")));
        SqsAdmin::new(&aws)
            .ensure_queue(&q, &format!("{q}-dlq"), &settings())
            .await
            .unwrap();
        let queue = SqsQueue::open(&aws, &QueueRef::Name(q)).await.unwrap();
        assert_eq!(queue.visibility_timeout(), Duration::from_secs(30));
        ((), Box::new(queue) as Box<dyn Queue>)
    }

    sluice_testkit::queue_conformance_tests!(make);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_dead_letter_and_redrive() {
    let aws = common::aws().await;
    let admin = SqsAdmin::new(&aws);
    let name = common::unique("dlq");
    let dlq_name = format!("{name}-dlq");
    let s = QueueSettings {
        max_receive_count: 2,
        ..settings()
    };
    let url = admin.ensure_queue(&name, &dlq_name, &s).await.unwrap();
    // Idempotent: a second call returns the same queue.
    assert_eq!(admin.ensure_queue(&name, &dlq_name, &s).await.unwrap(), url);
    let q = SqsQueue::open(&aws, &QueueRef::Url(url.clone()))
        .await
        .unwrap();
    assert_eq!(q.name(), name);
    let d = q
        .dead_letter_queue()
        .await
        .unwrap()
        .expect("redrive policy names the DLQ");
    assert_eq!(d.name(), dlq_name);
    // The limit comes from the queue's attributes.
    assert_eq!(q.max_message_bytes(), s.max_message_bytes);
    sluice_testkit::queue::dead_letter(&q, &d).await;
    d.send_batch(vec!["back".to_string()]).await.unwrap();
    assert_eq!(sluice_aws::sqs::redrive(&d, &q).await.unwrap(), 1);
    let got = q
        .receive(sluice_core::queue::ReceiveOptions {
            wait: Duration::from_secs(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "back");
    assert_eq!(got[0].receive_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_refuses_unknown_queues_and_bad_names() {
    let aws = common::aws().await;
    let e = SqsQueue::open(&aws, &QueueRef::Name(common::unique("missing")))
        .await
        .unwrap_err();
    assert!(matches!(e, sluice_core::Error::NotFound { .. }), "{e}");
    assert!(QueueRef::parse("sqs://bad name").is_err());
    assert!(QueueRef::parse("events").is_err());
    assert_eq!(
        QueueRef::parse("https://sqs.eu-west-1.amazonaws.com/123456789012/events")
            .unwrap()
            .name(),
        "events"
    );
}
