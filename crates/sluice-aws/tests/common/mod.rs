//! The S3/SQS/Glue-compatible server the wire tests run against (moto, started by `.ci/run`).

#![allow(dead_code)]

pub mod scripted;

use sluice_aws::{Aws, AwsSettings};

/// The server's endpoint, from `SLUICE_TEST_AWS_ENDPOINT`.
pub fn endpoint() -> String {
    match std::env::var("SLUICE_TEST_AWS_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ => panic!(
            "the AWS wire tests need an S3/SQS/Glue-compatible server: run them with `bash .ci/run`, \
             which starts moto, or export SLUICE_TEST_AWS_ENDPOINT=http://127.0.0.1:PORT together \
             with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ),
    }
}

/// AWS configuration pointing every service at the test server.
pub async fn aws() -> Aws {
    Aws::load(AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint()),
        ..Default::default()
    })
    .await
}

/// A name unique to this test run, for queues, databases and buckets on the shared server.
pub fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    format!("{prefix}-{}-{}", std::process::id(), t % 1_000_000_000)
}
