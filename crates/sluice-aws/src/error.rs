//! AWS SDK errors as sluice errors.

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
pub(crate) fn sdk<E, R>(service: &'static str, operation: &'static str, e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().map(str::to_string);
    let (message, retryable) = match &e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            let msg = err
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| err.to_string());
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
