//! SQL on Amazon Athena over the Glue catalog: start, poll with back-off, page the results.

use std::time::{Duration, Instant};

use aws_sdk_athena::types::{QueryExecutionContext, QueryExecutionState, ResultConfiguration};
use sluice_core::{Error, Result};
use tracing::debug;

use crate::config::Aws;
use crate::error::{incomplete_reply, sdk};

/// Where and how a query runs.
#[derive(Debug, Clone)]
pub struct AthenaOptions {
    pub database: String,
    pub workgroup: String,
    /// `s3://bucket/prefix/`; `None` uses the workgroup's result location.
    pub output_location: Option<String>,
    /// Give up (and cancel the query) after this long.
    pub timeout: Duration,
    /// Longest pause between two polls.
    pub max_poll: Duration,
    /// Rows per GetQueryResults page (at most 1,000).
    pub page_size: i32,
}

impl AthenaOptions {
    pub fn new(database: &str) -> Self {
        AthenaOptions {
            database: database.to_string(),
            workgroup: "primary".to_string(),
            output_location: None,
            timeout: Duration::from_secs(30 * 60),
            max_poll: Duration::from_secs(5),
            page_size: 1000,
        }
    }
}

/// A finished query's results, as Athena returns them (text values, `None` for NULL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AthenaResult {
    pub query_execution_id: String,
    /// Column names and Athena types (`bigint`, `double`, `varchar`, `date`, …).
    pub columns: Vec<(String, String)>,
    pub rows: Vec<Vec<Option<String>>>,
    pub data_scanned_bytes: Option<i64>,
    pub engine_millis: Option<i64>,
    /// GetQueryExecution calls made while waiting.
    pub polls: u32,
    /// GetQueryResults pages read.
    pub pages: u32,
}

/// Pause before poll `n` (0-based): 100 ms doubling up to `max`.
pub fn poll_delay(n: u32, max: Duration) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << n.min(10))).min(max)
}

/// Runs `sql` and returns every row.
pub async fn query(aws: &Aws, sql: &str, opts: &AthenaOptions) -> Result<AthenaResult> {
    let client = aws.athena();
    let mut req = client
        .start_query_execution()
        .query_string(sql)
        // Idempotent start: the SDK's own retries cannot run the query twice.
        .client_request_token(uuid::Uuid::new_v4().to_string())
        .query_execution_context(
            QueryExecutionContext::builder()
                .catalog("AwsDataCatalog")
                .database(&opts.database)
                .build(),
        )
        .work_group(&opts.workgroup);
    if let Some(out) = &opts.output_location {
        req = req.result_configuration(ResultConfiguration::builder().output_location(out).build());
    }
    let started = req
        .send()
        .await
        .map_err(|e| sdk("Athena", "StartQueryExecution", e))?;
    let id = started
        .query_execution_id()
        .ok_or_else(|| incomplete_reply("Athena", "StartQueryExecution", "query execution id"))?
        .to_string();
    let begin = Instant::now();
    let mut polls = 0u32;
    let execution = loop {
        let out = client
            .get_query_execution()
            .query_execution_id(&id)
            .send()
            .await
            .map_err(|e| sdk("Athena", "GetQueryExecution", e))?;
        polls += 1;
        let qe = out
            .query_execution()
            .cloned()
            .ok_or_else(|| incomplete_reply("Athena", "GetQueryExecution", "query execution"))?;
        let status = qe.status();
        match status.and_then(|s| s.state()) {
            Some(QueryExecutionState::Succeeded) => break qe,
            Some(QueryExecutionState::Failed) | Some(QueryExecutionState::Cancelled) => {
                let reason = status
                    .and_then(|s| s.state_change_reason())
                    .unwrap_or("no reason given");
                return Err(Error::Service {
                    service: "Athena",
                    operation: "query",
                    code: status
                        .and_then(|s| s.athena_error())
                        .and_then(|e| e.error_type())
                        .map(|t| t.to_string()),
                    message: format!("query {id} failed: {reason}"),
                    retryable: false,
                });
            }
            state => {
                if begin.elapsed() > opts.timeout {
                    let _ = client
                        .stop_query_execution()
                        .query_execution_id(&id)
                        .send()
                        .await;
                    return Err(Error::Service {
                        service: "Athena",
                        operation: "query",
                        code: None,
                        message: format!(
                            "query {id} still {state:?} after {:?}; cancelled",
                            opts.timeout
                        ),
                        retryable: true,
                    });
                }
                debug!(query = %id, ?state, "waiting for Athena");
                tokio::time::sleep(poll_delay(polls - 1, opts.max_poll)).await;
            }
        }
    };
    let stats = execution.statistics();
    let mut result = AthenaResult {
        query_execution_id: id.clone(),
        data_scanned_bytes: stats.and_then(|s| s.data_scanned_in_bytes()),
        engine_millis: stats.and_then(|s| s.engine_execution_time_in_millis()),
        polls,
        ..Default::default()
    };
    let mut token: Option<String> = None;
    loop {
        let out = client
            .get_query_results()
            .query_execution_id(&id)
            .max_results(opts.page_size.clamp(1, 1000))
            .set_next_token(token.clone())
            .send()
            .await
            .map_err(|e| sdk("Athena", "GetQueryResults", e))?;
        result.pages += 1;
        let Some(rs) = out.result_set() else { break };
        if result.columns.is_empty()
            && let Some(meta) = rs.result_set_metadata()
        {
            result.columns = meta
                .column_info()
                .iter()
                .map(|c| (c.name().to_string(), c.r#type().to_string()))
                .collect();
        }
        for (i, row) in rs.rows().iter().enumerate() {
            let values: Vec<Option<String>> = row
                .data()
                .iter()
                .map(|d| d.var_char_value().map(str::to_string))
                .collect();
            // The first row of a SELECT's first page repeats the column names.
            if result.pages == 1
                && i == 0
                && !result.columns.is_empty()
                && values
                    .iter()
                    .map(|v| v.as_deref())
                    .eq(result.columns.iter().map(|(n, _)| Some(n.as_str())))
            {
                continue;
            }
            result.rows.push(values);
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_to_the_maximum() {
        let max = Duration::from_secs(5);
        let d: Vec<u64> = (0..8)
            .map(|n| poll_delay(n, max).as_millis() as u64)
            .collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}
