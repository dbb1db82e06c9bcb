//! # sluice-aws
//!
//! sluice on AWS, through the official AWS SDK for Rust: the [`sqs::SqsQueue`] and
//! [`glue::GlueCatalog`] backends of sluice-core's traits, the lake on S3 ([`s3::s3_lake`],
//! through object_store), Athena queries ([`athena`]) and the DDL Athena users run themselves
//! ([`ddl`]). Endpoints can point at S3/SQS-compatible servers (see [`config`]).

pub mod athena;
pub mod config;
pub mod ddl;
mod error;
pub mod glue;
pub mod iam;
pub mod s3;
pub mod sqs;

pub use config::{Aws, AwsSettings, Service};
