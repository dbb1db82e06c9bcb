//! The S3/SQS/Glue-compatible server the wire tests run against (moto, started by `.ci/run`).

#![allow(dead_code)]

pub mod scripted;

use sluice_aws::{Aws, AwsSettings};

#[allow(unused_imports)] // Not every test file uses both.
pub use sluice_testkit::wire::{endpoint, unique};

/// AWS configuration pointing every service at the test server.
pub async fn aws() -> Aws {
    Aws::load(AwsSettings {
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint()),
        ..Default::default()
    })
    .await
}
