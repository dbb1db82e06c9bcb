//! Least-privilege IAM policies for each role sluice plays, scoped to the queue, the lake
//! prefix and the Glue database it is configured with: exact actions (never `*` ones), and
//! resources named by ARN wherever the service allows it.
//!
//! What each role calls (and so needs):
//! - `producer`: sends chunk messages (and, with `--claim-check`, stores their bodies under the
//!   lake's `_sluice/claims/`), reads the queue's attributes, creates the table if missing
//!   (Glue), reads the table's Delta log to adopt or check it, and reads `s3://` sources.
//! - `consumer`: receives, extends, releases and deletes messages, reads its dead-letter
//!   queue's depth, writes data files and Delta versions and removes what compaction and
//!   recovery remove, reads and updates the table in Glue (schema evolution), reads the objects
//!   S3 notifications name.
//! - `converter`: what `convert` does: the lake and Glue as the consumer, `s3://` sources.
//! - `reader`: `sluice query` with DataFusion or Athena: the lake read-only, Glue read-only,
//!   Athena queries in its workgroup and their results.
//! - `admin`: `init`, `queue create|purge|redrive|stats`, `repair`, `vacuum`, `compact`,
//!   `upgrade`: the queues' lifecycle, Glue databases and tables, the lake read-write.

use serde_json::{Value, json};

/// The roles a policy is printed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `produce` (and the producing half of `run`).
    Producer,
    /// `consume` (and the consuming half of `run`).
    Consumer,
    /// `convert`.
    Converter,
    /// `query` (DataFusion or Athena) and `catalog` reads.
    Reader,
    /// Setting up and maintaining queues, tables and the lake.
    Admin,
}

impl Role {
    /// Parses `producer`, `consumer`, `converter`, `reader` or `admin`.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "producer" => Role::Producer,
            "consumer" => Role::Consumer,
            "converter" => Role::Converter,
            "reader" => Role::Reader,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

/// What the policy is scoped to.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The AWS partition (`aws`, `aws-cn`, `aws-us-gov`).
    pub partition: String,
    pub region: String,
    /// The account id (`*` when it is not known: scoped by name in every account).
    pub account: String,
    /// The queue's name (its dead-letter queue is `<name>_dlq`).
    pub queue: Option<String>,
    /// The lake: bucket and prefix (no slashes around it; empty for the whole bucket).
    pub lake: Option<(String, String)>,
    /// The Glue database.
    pub database: Option<String>,
    /// `s3://` sources read by `produce`, `convert` and S3 notifications: buckets and prefixes.
    pub sources: Vec<(String, String)>,
    /// Athena's workgroup and its results location (bucket, prefix).
    pub athena: Option<(String, Option<(String, String)>)>,
}

fn object_arns(partition: &str, bucket: &str, prefix: &str) -> String {
    if prefix.is_empty() {
        format!("arn:{partition}:s3:::{bucket}/*")
    } else {
        format!("arn:{partition}:s3:::{bucket}/{prefix}/*")
    }
}

fn list_statement(sid: &str, partition: &str, bucket: &str, prefix: &str) -> Value {
    let mut s = json!({
        "Sid": sid,
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": format!("arn:{partition}:s3:::{bucket}"),
    });
    if !prefix.is_empty() {
        s["Condition"] =
            json!({"StringLike": {"s3:prefix": [prefix.to_string(), format!("{prefix}/*")]}});
    }
    s
}

/// The policy document of `role` within `scope`.
pub fn policy(role: Role, scope: &Scope) -> Value {
    let (p, r, a) = (&scope.partition, &scope.region, &scope.account);
    let mut st: Vec<Value> = Vec::new();
    let queue_arns = |q: &str| {
        vec![
            format!("arn:{p}:sqs:{r}:{a}:{q}"),
            format!("arn:{p}:sqs:{r}:{a}:{q}_dlq"),
        ]
    };
    let glue = |db: &str, write: bool, create_db: bool| {
        let mut actions = vec![
            "glue:GetDatabase",
            "glue:GetDatabases",
            "glue:GetTable",
            "glue:GetTables",
        ];
        if write {
            actions.extend(["glue:CreateTable", "glue:UpdateTable"]);
        }
        if create_db {
            actions.push("glue:CreateDatabase");
        }
        json!({
            "Sid": if write { "GlueTables" } else { "GlueRead" },
            "Effect": "Allow",
            "Action": actions,
            "Resource": [
                format!("arn:{p}:glue:{r}:{a}:catalog"),
                format!("arn:{p}:glue:{r}:{a}:database/{db}"),
                format!("arn:{p}:glue:{r}:{a}:table/{db}/*"),
            ],
        })
    };
    let lake_read = |st: &mut Vec<Value>, sid: &str| {
        if let Some((bucket, prefix)) = &scope.lake {
            st.push(list_statement(&format!("{sid}List"), p, bucket, prefix));
            st.push(json!({
                "Sid": format!("{sid}Read"),
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": object_arns(p, bucket, prefix),
            }));
        }
    };
    let lake_write = |st: &mut Vec<Value>| {
        if let Some((bucket, prefix)) = &scope.lake {
            st.push(list_statement("LakeList", p, bucket, prefix));
            st.push(json!({
                "Sid": "LakeReadWrite",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                "Resource": object_arns(p, bucket, prefix),
            }));
        }
    };
    let sources = |st: &mut Vec<Value>| {
        for (i, (bucket, prefix)) in scope.sources.iter().enumerate() {
            st.push(list_statement(&format!("Source{i}List"), p, bucket, prefix));
            st.push(json!({
                "Sid": format!("Source{i}Read"),
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": object_arns(p, bucket, prefix),
            }));
        }
    };
    match role {
        Role::Producer => {
            if let Some(q) = &scope.queue {
                st.push(json!({
                    "Sid": "QueueSend",
                    "Effect": "Allow",
                    "Action": ["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
                    "Resource": vec![queue_arns(q)[0].clone()],
                }));
            }
            if let Some((bucket, prefix)) = &scope.lake {
                // The table's log (adoption and checks), and claim-checked bodies.
                lake_read(&mut st, "Lake");
                let claims = if prefix.is_empty() {
                    "_sluice/claims".to_string()
                } else {
                    format!("{prefix}/_sluice/claims")
                };
                st.push(json!({
                    "Sid": "ClaimCheckBodies",
                    "Effect": "Allow",
                    "Action": ["s3:PutObject"],
                    "Resource": object_arns(p, bucket, &claims),
                }));
            }
            if let Some(db) = &scope.database {
                st.push(glue(db, true, false));
            }
            sources(&mut st);
        }
        Role::Consumer => {
            if let Some(q) = &scope.queue {
                st.push(json!({
                    "Sid": "QueueConsume",
                    "Effect": "Allow",
                    "Action": [
                        "sqs:ReceiveMessage",
                        "sqs:DeleteMessage",
                        "sqs:ChangeMessageVisibility",
                        "sqs:GetQueueAttributes",
                        "sqs:GetQueueUrl",
                    ],
                    "Resource": queue_arns(q),
                }));
            }
            lake_write(&mut st);
            if let Some(db) = &scope.database {
                st.push(glue(db, true, false));
            }
            sources(&mut st);
        }
        Role::Converter => {
            lake_write(&mut st);
            if let Some(db) = &scope.database {
                st.push(glue(db, true, true));
            }
            sources(&mut st);
        }
        Role::Reader => {
            lake_read(&mut st, "Lake");
            if let Some(db) = &scope.database {
                st.push(glue(db, false, false));
            }
            if let Some((workgroup, results)) = &scope.athena {
                st.push(json!({
                    "Sid": "AthenaQueries",
                    "Effect": "Allow",
                    "Action": [
                        "athena:StartQueryExecution",
                        "athena:GetQueryExecution",
                        "athena:GetQueryResults",
                        "athena:StopQueryExecution",
                    ],
                    "Resource": format!("arn:{p}:athena:{r}:{a}:workgroup/{workgroup}"),
                }));
                if let Some((bucket, prefix)) = results {
                    st.push(list_statement("AthenaResultsList", p, bucket, prefix));
                    st.push(json!({
                        "Sid": "AthenaResults",
                        "Effect": "Allow",
                        "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
                        "Resource": object_arns(p, bucket, prefix),
                    }));
                }
            }
        }
        Role::Admin => {
            if let Some(q) = &scope.queue {
                st.push(json!({
                    "Sid": "QueueAdmin",
                    "Effect": "Allow",
                    "Action": [
                        "sqs:CreateQueue",
                        "sqs:SetQueueAttributes",
                        "sqs:GetQueueAttributes",
                        "sqs:GetQueueUrl",
                        "sqs:PurgeQueue",
                        "sqs:ReceiveMessage",
                        "sqs:SendMessage",
                        "sqs:DeleteMessage",
                        "sqs:ChangeMessageVisibility",
                        "sqs:ListDeadLetterSourceQueues",
                    ],
                    "Resource": queue_arns(q),
                }));
                st.push(json!({
                    "Sid": "QueueList",
                    "Effect": "Allow",
                    "Action": ["sqs:ListQueues"],
                    "Resource": format!("arn:{p}:sqs:{r}:{a}:*"),
                }));
            }
            lake_write(&mut st);
            if let Some(db) = &scope.database {
                st.push(glue(db, true, true));
            }
        }
    }
    json!({"Version": "2012-10-17", "Statement": st})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            partition: "aws".into(),
            region: "eu-west-1".into(),
            account: "123456789012".into(),
            queue: Some("events".into()),
            lake: Some(("my-lake".into(), "raw".into())),
            database: Some("analytics".into()),
            sources: vec![("exports".into(), "2024".into())],
            athena: Some(("primary".into(), Some(("my-lake".into(), "athena".into())))),
        }
    }

    fn actions(p: &Value) -> Vec<String> {
        p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["Action"].as_array().unwrap().clone())
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    fn resources(p: &Value) -> Vec<String> {
        p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| match &s["Resource"] {
                Value::Array(a) => a.iter().map(|r| r.as_str().unwrap().to_string()).collect(),
                Value::String(r) => vec![r.clone()],
                other => panic!("{other}"),
            })
            .collect()
    }

    #[test]
    fn every_role_is_scoped_and_names_exact_actions() {
        for role in [
            Role::Producer,
            Role::Consumer,
            Role::Converter,
            Role::Reader,
            Role::Admin,
        ] {
            let p = policy(role, &scope());
            let acts = actions(&p);
            assert!(!acts.is_empty(), "{role:?}");
            for a in &acts {
                assert!(!a.contains('*'), "{role:?}: {a}");
                assert!(
                    a.split_once(':')
                        .is_some_and(|(s, n)| !s.is_empty() && !n.is_empty())
                );
            }
            for r in resources(&p) {
                assert_ne!(r, "*", "{role:?}");
                assert!(
                    r.contains("events")
                        || r.contains("my-lake")
                        || r.contains("analytics")
                        || r.contains("exports")
                        || r.ends_with(":catalog")
                        || r.contains("workgroup/primary")
                        || r.ends_with(":*"),
                    "{role:?}: {r}"
                );
            }
        }
        let consumer = policy(Role::Consumer, &scope());
        let acts = actions(&consumer);
        for a in [
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "s3:PutObject",
            "glue:UpdateTable",
        ] {
            assert!(acts.iter().any(|x| x == a), "{a}");
        }
        assert!(
            !acts
                .iter()
                .any(|x| x == "sqs:SendMessage" || x == "sqs:CreateQueue")
        );
        assert!(resources(&consumer).contains(&"arn:aws:s3:::my-lake/raw/*".to_string()));
        let reader = policy(Role::Reader, &scope());
        assert!(!actions(&reader).iter().any(|a| a == "glue:UpdateTable"));
        // It writes only Athena's results.
        let writes: Vec<String> = reader["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                s["Action"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a == "s3:PutObject")
            })
            .map(|s| s["Resource"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(writes, ["arn:aws:s3:::my-lake/athena/*"]);
        let producer = policy(Role::Producer, &scope());
        assert!(
            resources(&producer).contains(&"arn:aws:s3:::my-lake/raw/_sluice/claims/*".to_string())
        );
        assert!(!actions(&producer).iter().any(|a| a == "s3:DeleteObject"));
    }
}
