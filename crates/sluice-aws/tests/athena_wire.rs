//! Athena over the wire against a scripted Athena endpoint on 127.0.0.1: the requests sluice
//! sends (workgroup, database, result location, idempotency token, page size), polling until
//! the query succeeds, and paging through several GetQueryResults pages. moto runs no SQL and
//! returns one page, so this endpoint stands in for Athena's protocol (AWS JSON 1.1).

mod common;

use std::sync::{Arc, Mutex};

use common::scripted;
use serde_json::{Value, json};
use sluice_aws::athena::{AthenaOptions, query};
use sluice_aws::{Aws, AwsSettings};

fn row(vals: &[&str]) -> Value {
    json!({"Data": vals.iter().map(|v| json!({"VarCharValue": v})).collect::<Vec<_>>()})
}

/// The scripted Athena: the query named "fail" fails; others run for two polls and return
/// five rows in three pages.
fn respond(target: &str, body: &Value, polls: &mut u32, failing: &mut bool) -> Value {
    match target {
        "AmazonAthena.StartQueryExecution" => {
            *failing = body["QueryString"].as_str() == Some("fail");
            *polls = 0;
            json!({"QueryExecutionId": "qid-1"})
        }
        "AmazonAthena.GetQueryExecution" => {
            *polls += 1;
            let state = if *polls < 3 {
                json!({"State": "RUNNING"})
            } else if *failing {
                json!({"State": "FAILED", "StateChangeReason": "COLUMN_NOT_FOUND: line 1:8: Column 'x' cannot be resolved"})
            } else {
                json!({"State": "SUCCEEDED"})
            };
            json!({"QueryExecution": {
                "QueryExecutionId": "qid-1",
                "Status": state,
                "Statistics": {"DataScannedInBytes": 123456, "EngineExecutionTimeInMillis": 789}
            }})
        }
        "AmazonAthena.GetQueryResults" => {
            let meta = json!({"ColumnInfo": [
                {"Name": "year", "Type": "bigint"},
                {"Name": "city", "Type": "varchar"}
            ]});
            match body.get("NextToken").and_then(Value::as_str) {
                None => json!({
                    "ResultSet": {"Rows": [row(&["year", "city"]), row(&["2019", "Oslo"]), row(&["2020", "Lima"])], "ResultSetMetadata": meta},
                    "NextToken": "page-2"
                }),
                Some("page-2") => json!({
                    "ResultSet": {"Rows": [row(&["2021", "year"]), json!({"Data": [{"VarCharValue": "2022"}, {}]})], "ResultSetMetadata": meta},
                    "NextToken": "page-3"
                }),
                _ => json!({
                    "ResultSet": {"Rows": [row(&["2023", "Pune"])], "ResultSetMetadata": meta}
                }),
            }
        }
        other => panic!("unexpected call {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn athena_polls_pages_and_sends_what_it_should() {
    let state = Arc::new(Mutex::new((0u32, false)));
    let (endpoint, log) = scripted::start(move |req| {
        let target = req.header("x-amz-target").unwrap_or_default().to_string();
        let mut st = state.lock().unwrap();
        let (polls, failing) = &mut *st;
        scripted::json(
            respond(&target, &req.json(), polls, failing),
            "application/x-amz-json-1.1",
        )
    });
    let aws = Aws::load(AwsSettings {
        region: Some("eu-west-1".into()),
        endpoints: sluice_aws::config::ServiceEndpoints {
            athena: Some(endpoint),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut opts = AthenaOptions::new("analytics");
    opts.workgroup = "etl".into();
    opts.output_location = Some("s3://lake/athena/".into());
    opts.page_size = 2;
    let r = query(&aws, "SELECT year, city FROM trips", &opts)
        .await
        .unwrap();
    assert_eq!(r.query_execution_id, "qid-1");
    assert_eq!(
        r.columns,
        vec![
            ("year".to_string(), "bigint".to_string()),
            ("city".to_string(), "varchar".to_string())
        ]
    );
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        r.rows,
        vec![
            vec![s("2019"), s("Oslo")],
            vec![s("2020"), s("Lima")],
            // A data row equal to nothing special, on a later page, is kept.
            vec![s("2021"), s("year")],
            vec![s("2022"), None],
            vec![s("2023"), s("Pune")],
        ]
    );
    assert_eq!((r.polls, r.pages), (3, 3));
    assert_eq!(r.data_scanned_bytes, Some(123_456));

    let calls: Vec<(String, Value)> = log
        .lock()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.header("x-amz-target").unwrap_or_default().to_string(),
                r.json(),
            )
        })
        .collect();
    let targets: Vec<&str> = calls
        .iter()
        .map(|(t, _)| t.trim_start_matches("AmazonAthena."))
        .collect();
    assert_eq!(
        targets,
        vec![
            "StartQueryExecution",
            "GetQueryExecution",
            "GetQueryExecution",
            "GetQueryExecution",
            "GetQueryResults",
            "GetQueryResults",
            "GetQueryResults"
        ]
    );
    let start = &calls[0].1;
    assert_eq!(start["QueryString"], "SELECT year, city FROM trips");
    assert_eq!(start["WorkGroup"], "etl");
    assert_eq!(start["QueryExecutionContext"]["Database"], "analytics");
    assert_eq!(start["QueryExecutionContext"]["Catalog"], "AwsDataCatalog");
    assert_eq!(
        start["ResultConfiguration"]["OutputLocation"],
        "s3://lake/athena/"
    );
    assert!(
        start["ClientRequestToken"]
            .as_str()
            .is_some_and(|t| t.len() >= 32),
        "{start}"
    );
    assert_eq!(calls[4].1["MaxResults"], 2);
    assert_eq!(calls[5].1["NextToken"], "page-2");
    assert_eq!(calls[6].1["NextToken"], "page-3");

    // A failed query is an error that carries Athena's reason.
    let e = query(&aws, "fail", &opts).await.unwrap_err();
    assert!(e.to_string().contains("COLUMN_NOT_FOUND"), "{e}");
}
