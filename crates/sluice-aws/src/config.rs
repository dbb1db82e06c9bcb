//! AWS settings: the standard chain (environment, `AWS_PROFILE`, shared config files, SSO,
//! instance roles) with sluice.toml's `[aws]` section as a fallback for what the environment
//! does not set.
//!
//! Endpoint of a service, first that is set: `AWS_ENDPOINT_URL_<SERVICE>`,
//! `[aws.endpoints] <service>`, `AWS_ENDPOINT_URL`, `[aws] endpoint_url`, the AWS default.
//! Credentials are never read from sluice.toml: they come from the credential chain only, so
//! there is no secret in sluice's own configuration to leak.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use serde::Deserialize;
use sluice_core::{Error, Result};
use tokio::sync::Mutex;

/// The `[aws]` section of sluice.toml.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// Region, if neither `AWS_REGION` nor the profile sets one.
    pub region: Option<String>,
    /// Named profile of the shared config files, unless `AWS_PROFILE` is set.
    pub profile: Option<String>,
    /// Endpoint of every service (an S3/SQS-compatible server), unless `AWS_ENDPOINT_URL` is set.
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub endpoints: ServiceEndpoints,
    #[serde(default)]
    pub athena: AthenaSettings,
    /// S3 with virtual-hosted-style addressing (`bucket.host`); path style otherwise, which is
    /// what S3-compatible servers expect.
    #[serde(default)]
    pub virtual_hosted_style: bool,
}

/// Per-service endpoints (`[aws.endpoints]`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceEndpoints {
    pub sqs: Option<String>,
    pub s3: Option<String>,
    pub glue: Option<String>,
    pub athena: Option<String>,
}

/// `[aws.athena]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AthenaSettings {
    /// Workgroup of the queries (default `primary`).
    pub workgroup: Option<String>,
    /// Where Athena writes results (`s3://bucket/prefix/`), unless the workgroup sets it.
    pub output_location: Option<String>,
}

/// An AWS service sluice talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Sqs,
    S3,
    Glue,
    Athena,
}

impl Service {
    fn env(self) -> &'static str {
        match self {
            Service::Sqs => "AWS_ENDPOINT_URL_SQS",
            Service::S3 => "AWS_ENDPOINT_URL_S3",
            Service::Glue => "AWS_ENDPOINT_URL_GLUE",
            Service::Athena => "AWS_ENDPOINT_URL_ATHENA",
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Loaded AWS configuration, shared by every client sluice makes.
#[derive(Clone)]
pub struct Aws {
    pub sdk: aws_config::SdkConfig,
    pub settings: AwsSettings,
}

impl std::fmt::Debug for Aws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SdkConfig's own Debug does not print secrets, but print only what helps.
        f.debug_struct("Aws")
            .field("region", &self.region())
            .field("settings", &self.settings)
            .finish()
    }
}

impl Aws {
    /// Loads the standard chain with `settings` as fallbacks.
    pub async fn load(settings: AwsSettings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // Adaptive retry: exponential back-off with jitter, and client-side rate limiting
            // when AWS throttles.
            .retry_config(RetryConfig::adaptive().with_max_attempts(8));
        if env("AWS_PROFILE").is_none()
            && let Some(p) = &settings.profile
        {
            loader = loader.profile_name(p);
        }
        let mut sdk = loader.load().await;
        if sdk.region().is_none() {
            let region = settings
                .region
                .clone()
                .unwrap_or_else(|| "us-east-1".to_string());
            sdk = sdk
                .into_builder()
                .region(aws_config::Region::new(region))
                .build();
        }
        Aws { sdk, settings }
    }

    pub fn region(&self) -> String {
        self.sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_string())
    }

    /// The endpoint override of `service`, if any (see the module documentation).
    pub fn endpoint(&self, service: Service) -> Option<String> {
        let per_service = match service {
            Service::Sqs => &self.settings.endpoints.sqs,
            Service::S3 => &self.settings.endpoints.s3,
            Service::Glue => &self.settings.endpoints.glue,
            Service::Athena => &self.settings.endpoints.athena,
        };
        env(service.env())
            .or_else(|| per_service.clone())
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| self.settings.endpoint_url.clone())
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        let mut b = aws_sdk_sqs::config::Builder::from(&self.sdk);
        if let Some(e) = self.endpoint(Service::Sqs) {
            b = b.endpoint_url(e);
        }
        aws_sdk_sqs::Client::from_conf(b.build())
    }

    pub fn glue(&self) -> aws_sdk_glue::Client {
        let mut b = aws_sdk_glue::config::Builder::from(&self.sdk);
        if let Some(e) = self.endpoint(Service::Glue) {
            b = b.endpoint_url(e);
        }
        aws_sdk_glue::Client::from_conf(b.build())
    }

    pub fn athena(&self) -> aws_sdk_athena::Client {
        let mut b = aws_sdk_athena::config::Builder::from(&self.sdk);
        if let Some(e) = self.endpoint(Service::Athena) {
            b = b.endpoint_url(e);
        }
        aws_sdk_athena::Client::from_conf(b.build())
    }

    /// Credentials for object_store, from the same chain, cached until shortly before expiry.
    pub fn object_store_credentials(&self) -> Result<Arc<ChainCredentials>> {
        let provider = self.sdk.credentials_provider().ok_or_else(|| {
            Error::Config(
                "no AWS credentials provider: set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where an instance role is available".into(),
            )
        })?;
        Ok(Arc::new(ChainCredentials {
            provider,
            cached: Mutex::new(None),
        }))
    }
}

/// object_store's credential provider over the AWS SDK's credential chain.
pub struct ChainCredentials {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<(Arc<object_store::aws::AwsCredential>, Option<SystemTime>)>>,
}

impl std::fmt::Debug for ChainCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainCredentials(<redacted>)")
    }
}

#[async_trait::async_trait]
impl object_store::CredentialProvider for ChainCredentials {
    type Credential = object_store::aws::AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        let mut cached = self.cached.lock().await;
        if let Some((c, expiry)) = &*cached {
            let fresh = match expiry {
                None => true,
                Some(t) => *t > SystemTime::now() + Duration::from_secs(300),
            };
            if fresh {
                return Ok(c.clone());
            }
        }
        let creds = self.provider.provide_credentials().await.map_err(|e| {
            object_store::Error::Generic {
                store: "S3",
                // The error names the provider that failed, never a secret.
                source: format!("cannot load AWS credentials: {e}").into(),
            }
        })?;
        let c = Arc::new(object_store::aws::AwsCredential {
            key_id: creds.access_key_id().to_string(),
            secret_key: creds.secret_access_key().to_string(),
            token: creds.session_token().map(str::to_string),
        });
        *cached = Some((c.clone(), creds.expiry()));
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse_unknown_keys() {
        let s: AwsSettings = toml_like(
            r#"{"region":"eu-west-1","endpoints":{"s3":"http://127.0.0.1:9000"},"athena":{"workgroup":"wg"}}"#,
        );
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.endpoints.s3.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.athena.workgroup.as_deref(), Some("wg"));
        assert!(
            serde_json::from_str::<AwsSettings>(r#"{"secret_access_key":"x"}"#).is_err(),
            "credentials are not a setting"
        );
    }

    fn toml_like(json: &str) -> AwsSettings {
        serde_json::from_str(json).unwrap()
    }
}
