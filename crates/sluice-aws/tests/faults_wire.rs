//! Failures the emulator cannot produce, over the wire against scripted endpoints: SQS batch
//! calls where single entries fail (retried alone, or reported), and S3 throttling (retried
//! with back-off).

mod common;

use std::sync::{Arc, Mutex};

use common::scripted;
use object_store::ObjectStoreExt;
use serde_json::json;
use sluice_aws::config::ServiceEndpoints;
use sluice_aws::sqs::{QueueRef, SqsQueue};
use sluice_aws::{Aws, AwsSettings};
use sluice_core::queue::Queue;

const SQS_JSON: &str = "application/x-amz-json-1.0";

async fn aws_with(endpoints: ServiceEndpoints) -> Aws {
    Aws::load(AwsSettings {
        region: Some("us-east-1".into()),
        endpoints,
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_entries_that_fail_are_retried_alone_or_reported() {
    let sends = Arc::new(Mutex::new(0u32));
    let deletes = Arc::new(Mutex::new(0u32));
    let (endpoint, log) = scripted::start(move |req| {
        let target = req.header("x-amz-target").unwrap_or_default();
        let body = req.json();
        let ids: Vec<String> = body["Entries"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["Id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let answer = match target {
            "AmazonSQS.GetQueueAttributes" => json!({"Attributes": {
                "MaximumMessageSize": "262144", "VisibilityTimeout": "45"
            }}),
            "AmazonSQS.SendMessageBatch" => {
                let mut n = sends.lock().unwrap();
                *n += 1;
                // Entry 1 is throttled on the first call only.
                let (ok, failed): (Vec<_>, Vec<_>) =
                    ids.iter().partition(|id| !(*n == 1 && id.as_str() == "1"));
                json!({
                    "Successful": ok.iter().map(|id| json!({
                        "Id": id, "MessageId": format!("m{id}-call{n}"), "MD5OfMessageBody": "x"
                    })).collect::<Vec<_>>(),
                    "Failed": failed.iter().map(|id| json!({
                        "Id": id, "SenderFault": false, "Code": "InternalError", "Message": "try again"
                    })).collect::<Vec<_>>()
                })
            }
            "AmazonSQS.DeleteMessageBatch" => {
                let mut n = deletes.lock().unwrap();
                *n += 1;
                // Entry 0 fails once (ours to retry); entry 1's receipt is invalid (reported).
                let mut ok = Vec::new();
                let mut failed = Vec::new();
                for id in &ids {
                    match (id.as_str(), *n) {
                        ("0", 1) => failed.push(json!({"Id": id, "SenderFault": false, "Code": "InternalError", "Message": "later"})),
                        ("1", _) => failed.push(json!({"Id": id, "SenderFault": true, "Code": "ReceiptHandleIsInvalid", "Message": "bad receipt"})),
                        _ => ok.push(json!({"Id": id})),
                    }
                }
                json!({"Successful": ok, "Failed": failed})
            }
            other => panic!("unexpected {other}"),
        };
        scripted::json(answer, SQS_JSON)
    });
    let aws = aws_with(ServiceEndpoints {
        sqs: Some(endpoint.clone()),
        ..Default::default()
    })
    .await;
    let q = SqsQueue::open(
        &aws,
        &QueueRef::Url(format!("{endpoint}/123456789012/events")),
    )
    .await
    .unwrap();
    assert_eq!(q.max_message_bytes(), 262_144);
    assert_eq!(q.visibility_timeout().as_secs(), 45);

    let ids = q
        .send_batch(vec!["a".into(), "b".into(), "c".into()])
        .await
        .unwrap();
    assert_eq!(ids, vec!["m0-call1", "m1-call2", "m2-call1"]);

    let failed = q
        .delete_batch(&["r0".into(), "r1".into(), "r2".into()])
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (failed[0].index, failed[0].code.as_str()),
        (1, "ReceiptHandleIsInvalid")
    );

    let entries = |target: &str| -> Vec<Vec<String>> {
        log.lock()
            .unwrap()
            .iter()
            .filter(|r| r.header("x-amz-target") == Some(target))
            .map(|r| {
                r.json()["Entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["Id"].as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        entries("AmazonSQS.SendMessageBatch"),
        vec![s(&["0", "1", "2"]), s(&["1"])],
        "only the throttled entry is sent again"
    );
    assert_eq!(
        entries("AmazonSQS.DeleteMessageBatch"),
        vec![s(&["0", "1", "2"]), s(&["0"])],
        "the caller's fault is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_throttling_is_retried_with_back_off() {
    let puts = Arc::new(Mutex::new(0u32));
    let (endpoint, log) = scripted::start(move |req| {
        assert_eq!(req.method, "PUT");
        let mut n = puts.lock().unwrap();
        *n += 1;
        if *n <= 2 {
            (
                503,
                vec![("Content-Type".into(), "application/xml".into())],
                b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>".to_vec(),
            )
        } else {
            (
                200,
                vec![("ETag".into(), "\"0123abcd\"".into())],
                Vec::new(),
            )
        }
    });
    let aws = aws_with(ServiceEndpoints {
        s3: Some(endpoint),
        ..Default::default()
    })
    .await;
    let lake = sluice_aws::s3::s3_lake(&aws, "s3://lake/raw").unwrap();
    let started = std::time::Instant::now();
    lake.store
        .put(
            &lake.path("t/_sluice/log/00000000000000000001.json"),
            bytes::Bytes::from_static(b"{}").into(),
        )
        .await
        .unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 3, "two throttled attempts, then success");
    // Path-style addressing: the bucket is the first path segment.
    assert!(
        log.iter()
            .all(|r| r.path == "/lake/raw/t/_sluice/log/00000000000000000001.json"),
        "{:?}",
        log.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert!(
        log[0]
            .header("authorization")
            .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256")),
        "requests are signed"
    );
    // Back-off: at least the first two pauses (100 ms, then more) passed.
    assert!(
        started.elapsed().as_millis() >= 150,
        "{:?}",
        started.elapsed()
    );
}
