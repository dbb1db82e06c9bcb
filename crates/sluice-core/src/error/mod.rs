//! The one public error type of `sluice-core`.

pub mod retry;

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in sluice. Callers branch on the variant; the message is for people.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A queue, table, database or object does not exist.
    #[error("{what} not found: {name}")]
    NotFound {
        /// What kind of thing: `queue`, `table`, `database`, …
        what: &'static str,
        /// Its name.
        name: String,
    },

    /// Something that must be unique already exists.
    #[error("{what} already exists: {name}")]
    AlreadyExists {
        /// What kind of thing.
        what: &'static str,
        /// Its name.
        name: String,
    },

    /// A concurrent writer changed the same state first; retrying after a refresh may succeed.
    #[error("conflict: {0}")]
    Conflict(String),

    /// Another writer changed a keyed table's rows after a merge read them: the merge is to be
    /// planned again against the new version (nothing was committed).
    #[error(
        "table {table}: version {version} changed rows after the merge read version {read}; the merge must be planned again"
    )]
    MergeStale {
        /// The table's URL.
        table: String,
        /// The version the merge read.
        read: u64,
        /// The version that changed rows.
        version: u64,
    },

    /// Input data is wrong. `file` and `line` name where, when known.
    #[error("{}", fmt_input(.file, .line, .message))]
    InvalidInput {
        /// The file, object or message.
        file: Option<String>,
        /// The line (1 for the first).
        line: Option<u64>,
        /// What is wrong.
        message: String,
    },

    /// A setting, flag or configuration file is wrong.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A queue message is larger than the queue accepts.
    #[error("message of {size} bytes exceeds the queue's limit of {limit} bytes")]
    MessageTooLarge {
        /// The message's size in bytes.
        size: usize,
        /// The queue's limit in bytes.
        limit: usize,
    },

    /// A message body is not a message sluice can decode.
    #[error("undecodable message: {0}")]
    Undecodable(String),

    /// The local queue or catalog database failed.
    #[error("database error at {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },

    /// Object storage (the lake) failed.
    #[error("object store: {0}")]
    ObjectStore(#[source] object_store::Error),

    /// The object store refused a request for want of a permission: the action and the path,
    /// once (the store's own error repeats its request in every layer).
    #[error("object store: {message}")]
    StoreDenied {
        /// What was refused, with the S3 action it needed.
        message: String,
    },

    /// Parquet encoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    /// Arrow failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// A source object (being converted or produced) could not be listed or read.
    #[error("{name}: {}", store_text(.source))]
    SourceRead {
        /// The source, as the user named it (`s3://bucket/key`).
        name: String,
        /// What the store said.
        #[source]
        source: object_store::Error,
    },

    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },

    /// A table's commit log has a gap or a version (or checkpoint) that cannot be read.
    #[error("commit log {path}: {message}")]
    CorruptLog {
        /// The log, or the file of it.
        path: String,
        /// What is wrong.
        message: String,
    },

    /// A Delta table uses a feature that sluice does not implement for this operation: nothing
    /// was written.
    #[error(
        "table {table} uses the Delta feature {feature}, so sluice will not {operation} it: {reason}"
    )]
    UnsupportedFeature {
        /// The table (its location).
        table: String,
        /// The Delta feature (`deletionVectors`, …).
        feature: String,
        /// What was refused: `append to`, `compact`, …
        operation: &'static str,
        /// Why sluice cannot do it with the feature.
        reason: String,
    },

    /// Another writer changed the table's schema, partitioning or protocol in a way the
    /// commit being made was not written for: nothing was committed.
    #[error("table {table} was changed by version {version} of another writer: {message}")]
    TableChanged {
        /// The table (its location).
        table: String,
        /// The version that changed it.
        version: u64,
        /// What changed.
        message: String,
    },

    /// Rows break a table's CHECK constraint or invariant: the chunk holding them was refused
    /// whole, nothing of it written.
    #[error(
        "table {table}: {rows} row(s) of {chunk} break the constraint {constraint} ({expression}); none of its rows were written"
    )]
    ConstraintViolated {
        /// The table (its location).
        table: String,
        /// The chunk refused.
        chunk: String,
        /// The constraint's name.
        constraint: String,
        /// Its condition.
        expression: String,
        /// Rows of the chunk that break it.
        rows: usize,
    },

    /// A step kept failing with retryable errors; `source` is the last one.
    #[error("{what} failed after {attempts} attempts: {source}")]
    RetriesExhausted {
        /// The step (`upload`, `commit`, …).
        what: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        source: Box<Error>,
    },

    /// A background task panicked or was cancelled.
    #[error("task failed: {0}")]
    Task(String),

    /// The work was stopped before it finished: a stop was asked for, or the side it fed went
    /// away. Whatever was committed before stays committed.
    #[error("stopped: {0}")]
    Stopped(String),

    /// sluice broke one of its own rules: a bug. The message says which; please report it.
    #[error("internal error (a bug in sluice): {0}")]
    Internal(String),

    /// Compressing or decompressing failed.
    #[error("{what}: {source}")]
    Compression {
        /// What was being compressed (`zstd`, …).
        what: String,
        /// The codec's error.
        #[source]
        source: std::io::Error,
    },

    /// A table has a column of a type sluice does not write (or read, for `operation`):
    /// nothing was written.
    #[error(
        "table {table}: column {column:?} is of Delta type {ty}, which sluice does not {operation}"
    )]
    UnsupportedType {
        /// The table (its location).
        table: String,
        /// The column.
        column: String,
        /// Its Delta type.
        ty: String,
        /// What sluice does not do with it (`write`, …).
        operation: &'static str,
    },

    /// A table is not what the settings given, or its catalog entry, say it is (its
    /// partitioning, a column or a column's type): nothing was written.
    #[error("{message}")]
    TableMismatch {
        /// The table.
        table: String,
        /// How it differs, for people.
        message: String,
    },

    /// A catalog entry cannot be read, or lacks what sluice keeps in it.
    #[error("catalog entry of {table}: {message}")]
    CorruptCatalog {
        /// The table whose entry it is.
        table: String,
        /// What is wrong with it.
        message: String,
    },

    /// A table still has the commit log of an earlier sluice: `sluice upgrade` converts it.
    #[error(
        "table {table} was written by an earlier sluice (its commit log is {log}); run `sluice upgrade --table {table}` to convert it to a Delta Lake table in place"
    )]
    NeedsUpgrade {
        /// The table.
        table: String,
        /// Where the earlier log is.
        log: String,
    },

    /// A CHECK constraint, invariant or generated column of a table cannot be compiled or
    /// evaluated: nothing was written.
    #[error("{what} {name} ({expression}) {message}")]
    Constraint {
        /// `constraint` or `generated column`.
        what: &'static str,
        /// Its name (the column, for a generated column).
        name: String,
        /// Its SQL expression.
        expression: String,
        /// What went wrong.
        message: String,
    },

    /// A remote service (SQS, Glue, Athena) refused or failed a call. `code` is the service's
    /// error code when it sent one; the message never carries credentials.
    #[error("{service} {operation}: {message}")]
    Service {
        /// `SQS`, `Glue`, `Athena`, …
        service: &'static str,
        /// The call (`SendMessageBatch`, …).
        operation: &'static str,
        /// The service's error code, when it sent one.
        code: Option<String>,
        /// What it said.
        message: String,
        /// Whether the call may succeed if repeated (throttling, a server error).
        retryable: bool,
    },
}

impl From<sluice_parquet::Error> for Error {
    fn from(e: sluice_parquet::Error) -> Self {
        match e {
            sluice_parquet::Error::Parquet(e) => Error::Parquet(e),
            sluice_parquet::Error::Arrow(e) => Error::Arrow(e),
            sluice_parquet::Error::Compression { what, source } => {
                Error::Compression { what, source }
            }
            sluice_parquet::Error::Internal(m) => Error::Internal(m),
            other => Error::Internal(other.to_string()),
        }
    }
}

fn fmt_input(file: &Option<String>, line: &Option<u64>, message: &str) -> String {
    match (file, line) {
        (Some(f), Some(l)) => format!("{f}:{l}: {message}"),
        (Some(f), None) => format!("{f}: {message}"),
        (None, Some(l)) => format!("line {l}: {message}"),
        (None, None) => message.to_string(),
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        match &e {
            object_store::Error::PermissionDenied { path, source }
            | object_store::Error::Unauthenticated { path, source } => Error::StoreDenied {
                message: denied_message(path, &source.to_string()),
            },
            object_store::Error::Generic { .. } => match refused_request(&e.to_string()) {
                Some(path) => Error::StoreDenied {
                    message: denied_message(&path, &e.to_string()),
                },
                None => Error::ObjectStore(e),
            },
            _ => Error::ObjectStore(e),
        }
    }
}

/// What the store said: a refusal once, with the S3 action it needed (see [`denied_message`]),
/// anything else as the store says it.
fn store_text(e: &object_store::Error) -> String {
    match e {
        object_store::Error::PermissionDenied { path, source }
        | object_store::Error::Unauthenticated { path, source } => {
            denied_message(path, &source.to_string())
        }
        other => {
            let text = other.to_string();
            match refused_request(&text) {
                Some(path) => denied_message(&path, &text),
                None => text,
            }
        }
    }
}

/// The method and URL of the HTTP request a store's error reports (`… performing GET http://…`).
fn request_line(text: &str) -> Option<(&str, &str)> {
    text.split("performing ").skip(1).find_map(|r| {
        let mut words = r.split_whitespace();
        let method = words.next()?;
        matches!(method, "GET" | "HEAD" | "PUT" | "POST" | "DELETE")
            .then_some(())
            .and_then(|_| Some((method, words.next()?)))
    })
}

/// The object a request the store refused was for, when the store's error is a generic one
/// (a list is reported so): `bucket (prefix p)` for a list, else the URL's path.
fn refused_request(text: &str) -> Option<String> {
    // A multi-object delete reports each key it could not delete.
    if let Some(rest) = text.split("DeleteObjects request failed for key ").nth(1)
        && let Some((key, why)) = rest.split_once(": ")
        && why.starts_with("Access Denied")
    {
        return Some(key.to_string());
    }
    if !(text.contains("<Code>AccessDenied</Code>") || text.contains("403 Forbidden")) {
        return None;
    }
    let (_, url) = request_line(text)?;
    let path = url.split("://").nth(1)?.split_once('/')?.1;
    Some(match path.split_once('?') {
        Some((bucket, query)) if query.contains("list-type") => {
            let prefix = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("prefix="))
                .unwrap_or("");
            let prefix = url::form_urlencoded::parse(format!("p={prefix}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            format!("{bucket} (prefix {prefix})")
        }
        Some((p, _)) => p.to_string(),
        None => path.to_string(),
    })
}

/// A refusal, once: its reason, the S3 action the request needed and the path.
fn denied_message(path: &str, text: &str) -> String {
    let method = if text.contains("DeleteObjects request failed") {
        "DELETE"
    } else {
        request_line(text).map_or("", |(m, _)| m)
    };
    let action = match method {
        "PUT" | "POST" => "s3:PutObject",
        "GET" | "HEAD" if text.contains("list-type") => "s3:ListBucket",
        "GET" | "HEAD" => "s3:GetObject",
        "DELETE" => "s3:DeleteObject",
        _ => "access",
    };
    let why = text
        .split("<Message>")
        .nth(1)
        .and_then(|r| r.split("</Message>").next())
        .unwrap_or(if text.contains("Access Denied") {
            "Access Denied"
        } else {
            "permission denied"
        });
    format!("{why}: not authorized to perform: {action} on {path}")
}

impl Error {
    /// An [`Error::InvalidInput`] without a location.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput {
            file: None,
            line: None,
            message: message.into(),
        }
    }

    /// An [`Error::InvalidInput`] at a file and line.
    pub fn invalid_at(
        file: impl Into<String>,
        line: Option<u64>,
        message: impl Into<String>,
    ) -> Self {
        Error::InvalidInput {
            file: Some(file.into()),
            line,
            message: message.into(),
        }
    }

    /// An [`Error::SourceRead`] of the object `name`.
    pub fn from_store(name: impl Into<String>, source: object_store::Error) -> Self {
        Error::SourceRead {
            name: name.into(),
            source,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Conflict(_) => true,
            Error::Service { retryable, .. } => *retryable,
            Error::Database { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            Error::ObjectStore(e) => !matches!(
                e,
                object_store::Error::NotFound { .. }
                    | object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            ),
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.into(),
        }
    }

    /// A refusal the store reports as a generic error (a list, a multi-object delete) reads as
    /// one, with the S3 action and what it was for, and is not retried.
    #[test]
    fn refusals_reported_as_generic_errors_name_the_action_and_the_object() {
        let list = generic(
            "Error performing list request: Error performing GET http://127.0.0.1:1/exports?list-type=2&prefix=2024%2F in 4ms - Server returned non-2xx status code: 403 Forbidden: <Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
        );
        let delete = generic(
            "DeleteObjects request failed for key raw/t/_sluice/pending/w.json: Access Denied (AccessDenied)",
        );
        let other = generic("Error performing GET http://127.0.0.1:1/x in 1ms - connection reset");
        let e = Error::from(list);
        assert_eq!(
            e.to_string(),
            "object store: Access Denied: not authorized to perform: s3:ListBucket on exports (prefix 2024/)"
        );
        assert!(!e.is_retryable());
        assert_eq!(
            Error::from(delete).to_string(),
            "object store: Access Denied: not authorized to perform: s3:DeleteObject on raw/t/_sluice/pending/w.json"
        );
        assert!(matches!(Error::from(other), Error::ObjectStore(_)));
    }
}
