//! AWS SDK errors as sluice errors.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use sluice_core::Error;

/// Error codes after which the same call may succeed later.
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "InternalServiceException",
    "InternalServerException",
    "SlowDown",
    "ConcurrentModificationException",
    "KmsThrottled",
];

/// Converts an SDK error. The SDK has already retried transient failures with back-off; a
/// retryable result here tells sluice's own loops that waiting longer may still help.
pub(crate) fn sdk<E>(
    service: &'static str,
    operation: &'static str,
    e: SdkError<E, HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut code = e.code().map(str::to_string);
    let (message, retryable) = match &e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            // A reply the SDK could not read (an S3- or SQS-compatible server answering in
            // another protocol): its status, and the code and message of an XML error in it.
            let unread = || {
                let raw = s.raw();
                let body = String::from_utf8_lossy(raw.body().bytes().unwrap_or_default());
                let tag = |t: &str| {
                    let open = format!("<{t}>");
                    let start = body.find(&open)? + open.len();
                    let end = body[start..].find(&format!("</{t}>"))? + start;
                    Some(body[start..end].to_string())
                };
                (
                    tag("Code"),
                    match tag("Message") {
                        Some(m) => m,
                        None => format!("HTTP status {}", raw.status().as_u16()),
                    },
                )
            };
            let msg = match err.message() {
                Some(m) => m.to_string(),
                None if code.is_none() => {
                    let (c, m) = unread();
                    code = c;
                    m
                }
                None => err.to_string(),
            };
            let retryable = code
                .as_deref()
                .is_some_and(|c| RETRYABLE_CODES.contains(&c));
            (msg, retryable)
        }
        SdkError::TimeoutError(_) => ("timed out".to_string(), true),
        SdkError::DispatchFailure(d) => {
            let msg = format!(
                "cannot reach the service: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            );
            (msg, !d.is_user())
        }
        SdkError::ResponseError(_) => (
            format!(
                "bad response: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            ),
            true,
        ),
        _ => (
            aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
            false,
        ),
    };
    let message = match &code {
        Some(c) if !message.contains(c.as_str()) => format!("{c}: {message}"),
        _ => message,
    };
    Error::Service {
        service,
        operation,
        code,
        message,
        retryable,
    }
}

/// A reply that lacks what the service documents it always carries.
pub(crate) fn incomplete_reply(
    service: &'static str,
    operation: &'static str,
    lacks: &str,
) -> Error {
    Error::Service {
        service,
        operation,
        code: None,
        message: format!("the reply has no {lacks}"),
        retryable: false,
    }
}

/// The error code of a converted error.
pub(crate) fn code_of(e: &Error) -> Option<&str> {
    match e {
        Error::Service { code, .. } => code.as_deref(),
        _ => None,
    }
}
