//! S3 event notifications as a source: the usual S3 → SQS wiring (also S3 → SNS → SQS).
//!
//! A queue that receives `ObjectCreated` notifications can be consumed like any other: the
//! consumer reads each named object (CSV, `.gz`, `.zst`, JSON lines, Parquet) with the same
//! reader as `convert` and deletes the message once every row of its objects is committed.
//! An object version's pieces have the same chunk ids wherever it is read from (a notification
//! delivered twice, or `convert` of its prefix), so it lands once.

use crate::error::{Error, Result};

/// One object named by an `ObjectCreated` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectCreated {
    /// The bucket.
    pub bucket: String,
    /// Decoded (notifications carry keys URL-encoded, spaces as `+`).
    pub key: String,
    /// The object's size, as notified.
    pub size: u64,
    /// Without quotes, as notifications carry it.
    pub etag: Option<String>,
    /// The object's version, when the bucket is versioned.
    pub version_id: Option<String>,
}

/// A notification body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// The objects of the `ObjectCreated` records (other events are left out).
    Objects(Vec<ObjectCreated>),
    /// `s3:TestEvent`, sent when notifications are configured: nothing to land.
    Test,
}

/// Parses a message body if it is an S3 event notification (directly, or inside an SNS
/// envelope); `None` if it is not one.
pub fn parse(body: &str) -> Option<Result<Notification>> {
    let t = body.trim_start();
    // A cheap look first: most bodies are not notifications. (Inside an SNS envelope the
    // quotes around Records are escaped.)
    if !t.starts_with('{') || !(t.contains("Records") || t.contains("s3:TestEvent")) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(t).ok()?;
    // S3 → SNS → SQS: the notification is the envelope's Message, as a string.
    if v.get("Type").and_then(|x| x.as_str()) == Some("Notification")
        && let Some(inner) = v.get("Message").and_then(|m| m.as_str())
    {
        return parse(inner);
    }
    if v.get("Event").and_then(|x| x.as_str()) == Some("s3:TestEvent") {
        return Some(Ok(Notification::Test));
    }
    let records = v.get("Records")?.as_array()?;
    if !records
        .iter()
        .any(|r| r.get("eventSource").and_then(|s| s.as_str()) == Some("aws:s3"))
    {
        return None;
    }
    let mut out = Vec::new();
    for r in records {
        let name = r.get("eventName").and_then(|s| s.as_str()).unwrap_or("");
        if !name.starts_with("ObjectCreated:") {
            continue;
        }
        let s3 = &r["s3"];
        let bucket = s3["bucket"]["name"].as_str();
        let key = s3["object"]["key"].as_str();
        let (Some(bucket), Some(key)) = (bucket, key) else {
            return Some(Err(Error::Undecodable(
                "S3 notification record without bucket name or object key".into(),
            )));
        };
        let obj = &s3["object"];
        out.push(ObjectCreated {
            bucket: bucket.to_string(),
            key: crate::schema::partition::unescape_path_name(&key.replace('+', " ")),
            size: obj["size"].as_u64().unwrap_or(0),
            etag: obj["eTag"]
                .as_str()
                .map(|e| e.trim_matches('"').to_string()),
            version_id: obj["versionId"].as_str().map(str::to_string),
        });
    }
    Some(Ok(Notification::Objects(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"2026-11-29T10:00:00.000Z","eventName":"ObjectCreated:Put","s3":{"s3SchemaVersion":"1.0","configurationId":"c","bucket":{"name":"landing","arn":"arn:aws:s3:::landing"},"object":{"key":"exports/2024/my+file%C3%A9.csv.gz","size":1234,"eTag":"0123abcd","sequencer":"617f08299329d189"}}},{"eventSource":"aws:s3","eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"landing"},"object":{"key":"gone.csv"}}}]}"#;

    #[test]
    fn object_created_records_are_read_and_others_left_out() {
        let Some(Ok(Notification::Objects(o))) = parse(BODY) else {
            panic!("not parsed")
        };
        assert_eq!(
            o,
            vec![ObjectCreated {
                bucket: "landing".into(),
                key: "exports/2024/my fileé.csv.gz".into(),
                size: 1234,
                etag: Some("0123abcd".into()),
                version_id: None,
            }]
        );
    }

    #[test]
    fn sns_envelopes_test_events_and_other_bodies() {
        let sns = serde_json::json!({"Type": "Notification", "MessageId": "m", "Message": BODY})
            .to_string();
        assert!(matches!(parse(&sns), Some(Ok(Notification::Objects(o))) if o.len() == 1));
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-29T10:00:00.000Z","Bucket":"landing"}"#;
        assert_eq!(parse(test).unwrap().unwrap(), Notification::Test);
        assert!(parse(r#"{"id": 1, "Records": 3}"#).is_none());
        assert!(parse("id,day\n1,2024-01-01\n").is_none());
        assert!(
            parse(
                r#"{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{}}]}"#
            )
            .unwrap()
            .is_err()
        );
    }
}
