//! The lake on S3 (or an S3-compatible server) through object_store.
//!
//! Path-style addressing unless `[aws] virtual_hosted_style = true`; plain `http://` endpoints
//! are allowed when an endpoint is configured (local S3-compatible servers). Throttling
//! (503 SlowDown, 429) and 5xx responses are retried with exponential back-off; files larger
//! than one part go up as multipart uploads (see `sluice_core::parquet::writer`).

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, RetryConfig};
use sluice_core::lake::{Lake, parse_dir_url};
use sluice_core::{Error, Result};

use crate::config::{Aws, Service};

/// The retry policy of every S3 request: up to 10 retries within 3 minutes, 100 ms doubling to
/// 15 s.
pub fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(180),
    }
}

/// The object store of `bucket`.
pub fn s3_store(aws: &Aws, bucket: &str) -> Result<Arc<dyn ObjectStore>> {
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(aws.region())
        .with_credentials(aws.object_store_credentials()?)
        .with_retry(retry_config())
        .with_virtual_hosted_style_request(aws.settings.virtual_hosted_style);
    if let Some(endpoint) = aws.endpoint(Service::S3) {
        b = b
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint);
    }
    Ok(Arc::new(b.build().map_err(Error::ObjectStore)?))
}

/// The lake at `s3://bucket/prefix/`.
pub fn s3_lake(aws: &Aws, url: &str) -> Result<Lake> {
    let url = parse_dir_url(url)?;
    if url.scheme() != "s3" {
        return Err(Error::Config(format!("{url} is not an s3:// URL")));
    }
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| Error::Config(format!("lake URL {url}: no bucket")))?
        .to_string();
    Lake::from_url_with_store(url, s3_store(aws, &bucket)?)
}

/// Checks that the lake's bucket exists and can be listed.
pub async fn check_lake(lake: &Lake) -> Result<()> {
    use futures::TryStreamExt;
    let mut listing = lake.store.list(Some(&lake.root));
    // One page is enough to prove access.
    match listing.try_next().await {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Config(format!(
            "lake {} is not usable: {e}",
            lake.url
        ))),
    }
}

/// Writes and reads back a probe object, proving write access (used by `sluice init`).
pub async fn probe_lake(lake: &Lake) -> Result<()> {
    let path = lake.path(&format!("_sluice/probe/{}", uuid_like()));
    lake.store
        .put(&path, bytes::Bytes::from_static(b"sluice").into())
        .await
        .map_err(|e| Error::Config(format!("lake {} is not writable: {e}", lake.url)))?;
    lake.store.delete(&path).await?;
    Ok(())
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{}", t.as_nanos(), std::process::id())
}

/// The stores of S3 buckets named by event notifications, with this configuration's endpoint
/// and credentials.
#[derive(Debug, Clone)]
pub struct S3Buckets(pub Aws);

impl sluice_core::pipeline::consumer::BucketStores for S3Buckets {
    fn store(&self, bucket: &str) -> sluice_core::Result<Arc<dyn ObjectStore>> {
        s3_store(&self.0, bucket)
    }
}
