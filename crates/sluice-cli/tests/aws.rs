//! The `sluice` binary on AWS APIs, over the wire against an S3/SQS/Glue-compatible server
//! (moto, started by `.ci/run`): CSV → SQS → S3 → Glue, then `sluice query` reading s3://.

mod common;

use std::path::Path;
use std::process::Command;

use common::ok;
use sluice_testkit::wire::{endpoint, http, unique};

/// A secret that must never be printed.
const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY";

/// `sluice` with AWS settings in the environment, as a user would run it.
fn aws_cmd(home: &Path, args: &[&str]) -> Command {
    let mut c = common::command(home, args);
    c.env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ACCESS_KEY_ID", "AKIATESTSLUICE")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("SLUICE_CATALOG");
    c
}

fn assert_no_secret(what: &str, o: &std::process::Output) {
    for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(SECRET) && !text.contains(&SECRET[..16]),
            "{what}: the secret key appears in {stream}"
        );
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    home: std::path::PathBuf,
    globals: Vec<String>,
    bucket: String,
    db: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let bucket = unique("lake");
    sluice_testkit::wire::create_bucket(&bucket);
    let queue = unique("events");
    let db = unique("analytics").replace('-', "_");
    let globals = vec![
        "--queue".to_string(),
        format!("sqs://{queue}"),
        "--lake".to_string(),
        format!("s3://{bucket}/raw"),
        "--catalog".to_string(),
        format!("glue://{db}"),
    ];
    Setup {
        _dir: dir,
        home,
        globals,
        bucket,
        db,
    }
}

impl Setup {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = self.globals.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        let o = aws_cmd(&self.home, &all).output().unwrap();
        assert_no_secret(&args.join(" "), &o);
        o
    }
}

#[test]
fn csv_to_sqs_to_s3_to_glue_then_query_from_s3() {
    let s = setup();
    let init = ok(&s.run(&["init", "--visibility-timeout", "60"]));
    assert!(init.contains("dead-letter queue"), "{init}");
    assert!(init.contains("writable"), "{init}");
    // Idempotent.
    ok(&s.run(&["init", "--visibility-timeout", "60"]));

    let (csv, sum) =
        sluice_testkit::fixtures::write_events_csv(s._dir.path(), "events.csv", 3_000, 1);
    let o = s.run(&[
        "-v",
        "run",
        csv.to_str().unwrap(),
        "--table",
        "events",
        "--partition-by",
        "year(day)",
    ]);
    let out = ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("2019") && out.contains("2024"), "{out}");
    assert!(err.contains("billed SQS unit"), "{err}");
    assert!(err.contains("object store:"), "{err}");

    // The embedded engine reads the committed files from s3:// through the Glue catalog.
    let q = ok(&s.run(&[
        "query",
        "SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(amount_cents) AS total FROM events",
        "--format",
        "csv",
    ]));
    assert_eq!(q, format!("n,ids,total\n3000,3000,{sum}\n"));
    // A reader sluice does not control reads the Delta table on S3: the `deltalake` package.
    let script = r#"
import os, sys, deltalake, pyarrow.compute as pc
opts = {"AWS_ENDPOINT_URL": sys.argv[2], "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
t = deltalake.DeltaTable(sys.argv[1], storage_options=opts).to_pyarrow_table()
print(t.num_rows, pc.sum(t["amount_cents"]).as_py(), flush=True)
# The Rust reader's thread pool can abort the interpreter's teardown: the answer is printed.
os._exit(0)
"#;
    let got = common::python(
        script,
        &[&format!("s3://{}/raw/events", s.bucket), &endpoint()],
        "deltalake",
    );
    assert_eq!(got, format!("3000 {sum}"));

    let parts = ok(&s.run(&["catalog", "partitions", "events"]));
    assert_eq!(parts.lines().count(), 1 + 6, "{parts}");
    assert!(
        parts.contains(&format!("s3://{}/raw/events/year=2019/", s.bucket)),
        "{parts}"
    );
    let schema = ok(&s.run(&["catalog", "schema", "events"]));
    assert!(
        schema.contains(&format!("table {}.events at s3://", s.db)),
        "{schema}"
    );
    let ddl = ok(&s.run(&["catalog", "ddl", "events"]));
    assert!(
        ddl.contains(&format!(
            "CREATE EXTERNAL TABLE IF NOT EXISTS `{}`.`events`",
            s.db
        )),
        "{ddl}"
    );
    assert!(
        ddl.contains(&format!("LOCATION 's3://{}/raw/events/'", s.bucket)),
        "{ddl}"
    );
    assert!(
        ddl.contains("TBLPROPERTIES ('table_type'='DELTA')"),
        "{ddl}"
    );

    let stats = ok(&s.run(&["queue", "stats"]));
    assert!(stats.contains("0 visible, 0 in flight"), "{stats}");
    assert!(stats.contains("dead-letter queue"), "{stats}");

    // Producing the same file again adds nothing: chunk ids are deduplicated at commit.
    ok(&s.run(&["produce", csv.to_str().unwrap(), "--table", "events"]));
    ok(&s.run(&["consume", "--table", "events", "--once"]));
    let q = ok(&s.run(&[
        "query",
        "SELECT count(*) AS n FROM events",
        "--format",
        "csv",
    ]));
    assert_eq!(q, "n\n3000\n");

    // A later file with its columns reordered and one more: the Delta schema gains it, and so
    // do Glue's table columns (read back from Glue by `catalog schema`).
    let more = s._dir.path().join("more.csv");
    std::fs::write(
        &more,
        "channel,note,amount_cents,day,id\nweb,x,5,2024-03-01,3001\n,y,6,2024-03-02,3002\n",
    )
    .unwrap();
    ok(&s.run(&["run", more.to_str().unwrap(), "--table", "events"]));
    let schema = ok(&s.run(&["catalog", "schema", "events"]));
    assert!(
        schema.contains("channel                          string"),
        "{schema}"
    );
    assert!(schema.contains("added channel string  from "), "{schema}");
    let q = ok(&s.run(&[
        "query",
        "SELECT count(*) AS n, count(channel) AS channels, sum(amount_cents) AS total FROM events",
        "--format",
        "csv",
    ]));
    assert_eq!(q, format!("n,channels,total\n3002,1,{}\n", sum + 11));
}

#[test]
fn claim_check_carries_pointers_and_cleans_up() {
    let s = setup();
    ok(&s.run(&["init"]));
    let (csv, sum) =
        sluice_testkit::fixtures::write_events_csv(s._dir.path(), "big.csv", 40_000, 1);
    let metrics = s._dir.path().join("producer.prom");
    let o = s.run(&[
        "--metrics",
        metrics.to_str().unwrap(),
        "produce",
        csv.to_str().unwrap(),
        "--table",
        "big",
        "--partition-by",
        "year(day)",
        "--claim-check",
        "--claim-check-mib",
        "1",
    ]);
    ok(&o);
    let prom = std::fs::read_to_string(&metrics).unwrap();
    let sent_units: u64 = prom
        .lines()
        .find(|l| l.starts_with("sluice_queue_billed_units_total{role=\"producer\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no billed units in {prom}"));
    let puts: u64 = prom
        .lines()
        .find(|l| l.starts_with("sluice_store_requests_total{role=\"producer\",op=\"put\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    // ~2 MB of CSV in 1 MiB claim chunks: a few objects, and one small send per ten chunks.
    assert!(puts >= 1, "{prom}");
    assert!(sent_units <= puts.div_ceil(10) + 1, "{prom}");

    ok(&s.run(&["consume", "--table", "big", "--once"]));
    let q = ok(&s.run(&[
        "query",
        "SELECT count(*) AS n, sum(amount_cents) AS total FROM big",
        "--format",
        "csv",
    ]));
    assert_eq!(q, format!("n,total\n40000,{sum}\n"));

    // Claim objects are deleted after their messages are.
    let listing = http(
        "GET",
        &format!("/{}?list-type=2&prefix=raw/_sluice/claims/", s.bucket),
        "",
    );
    assert!(!listing.contains("<Key>"), "claims left behind: {listing}");
}

#[test]
fn athena_requests_and_results() {
    let s = setup();
    ok(&s.run(&["init"]));
    // The server runs no SQL; results queued here are what its next query returns.
    let seeded = serde_json::json!({
        "region": "us-east-1",
        "results": [{
            "rows": [
                {"Data": [{"VarCharValue": "year"}, {"VarCharValue": "n"}]},
                {"Data": [{"VarCharValue": "2019"}, {"VarCharValue": "500"}]},
                {"Data": [{"VarCharValue": "2020"}, {}]}
            ],
            "column_info": [
                {"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": "year", "Label": "year", "Type": "bigint", "Precision": 19, "Scale": 0, "Nullable": "UNKNOWN", "CaseSensitive": false},
                {"CatalogName": "hive", "SchemaName": "", "TableName": "", "Name": "n", "Label": "n", "Type": "bigint", "Precision": 19, "Scale": 0, "Nullable": "UNKNOWN", "CaseSensitive": false}
            ]
        }]
    });
    http(
        "POST",
        "/moto-api/static/athena/query-results",
        &seeded.to_string(),
    );
    let results = format!("s3://{}/athena/", s.bucket);
    let o = s.run(&[
        "query",
        "--engine",
        "athena",
        "--results",
        &results,
        "SELECT year, count(*) AS n FROM events GROUP BY year",
        "--format",
        "csv",
    ]);
    let out = ok(&o);
    assert_eq!(out, "year,n\n2019,500\n2020,\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("athena: query"), "{err}");
    assert!(err.contains("workgroup primary"), "{err}");

    // Athena needs the Glue catalog.
    let o = aws_cmd(&s.home, &["query", "--engine", "athena", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--catalog glue://"));
}

#[test]
fn secrets_stay_out_of_help_logs_and_errors() {
    let s = setup();
    let help = aws_cmd(&s.home, &["--help"]).output().unwrap();
    ok(&help);
    assert_no_secret("--help", &help);
    // A queue that does not exist: a clear error, no secret, at every log level.
    let mut globals = s.globals.clone();
    globals[1] = format!("sqs://{}", unique("missing"));
    let mut args: Vec<&str> = globals.iter().map(String::as_str).collect();
    args.extend(["-vv", "consume", "--table", "t", "--once"]);
    let o = aws_cmd(&s.home, &args).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does not exist") && err.contains("init"),
        "{err}"
    );
    assert_no_secret("missing queue", &o);
    // An unreachable endpoint.
    let o = aws_cmd(&s.home, &args)
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_no_secret("unreachable endpoint", &o);
    // Debug logs of a whole successful run.
    ok(&s.run(&["init"]));
    let (csv, _) = sluice_testkit::fixtures::write_events_csv(s._dir.path(), "e.csv", 50, 1);
    ok(&s.run(&[
        "-vv",
        "run",
        csv.to_str().unwrap(),
        "--table",
        "e",
        "--partition-by",
        "year(day)",
    ]));
}

#[test]
fn convert_reads_an_s3_prefix_of_mixed_objects_exactly_once() {
    let s = setup();
    let landing = unique("landing");
    sluice_testkit::wire::create_bucket(&landing);
    let dir = s._dir.path();
    let (a, sum_a) = sluice_testkit::fixtures::write_events_csv(dir, "a.csv", 3_000, 1);
    let (b, sum_b) = sluice_testkit::fixtures::write_events_csv(dir, "b.csv", 2_000, 3_001);
    let (c, sum_c) = sluice_testkit::fixtures::write_events_csv(dir, "c.csv", 1_000, 5_001);
    // Objects: gzipped CSV, Parquet, JSON lines, and a `_SUCCESS` marker that is skipped.
    let script = r#"
import sys, gzip, json, boto3, pyarrow as pa, pyarrow.compute as pcomp, pyarrow.csv as pc, pyarrow.parquet as pq, io
endpoint, bucket, a, b, c = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
read = lambda p: pc.read_csv(p, parse_options=pc.ParseOptions(newlines_in_values=True),
                             convert_options=pc.ConvertOptions(column_types={"day": pa.string()}))
s3.put_object(Bucket=bucket, Key="exports/2024/a.csv.gz", Body=gzip.compress(open(a, "rb").read()))
t = read(b)
t = t.set_column(1, "day", pcomp.cast(pcomp.strptime(t["day"], "%Y-%m-%d", "s"), pa.date32()))
buf = io.BytesIO(); pq.write_table(t, buf, row_group_size=500)
s3.put_object(Bucket=bucket, Key="exports/2024/b.parquet", Body=buf.getvalue())
lines = "".join(json.dumps(r) + "\n" for r in read(c).to_pylist())
s3.put_object(Bucket=bucket, Key="exports/2025/c.jsonl", Body=lines.encode())
s3.put_object(Bucket=bucket, Key="exports/_SUCCESS", Body=b"")
"#;
    common::python(
        script,
        &[
            &endpoint(),
            &landing,
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            c.to_str().unwrap(),
        ],
        "boto3 and pyarrow",
    );
    let prefix = format!("s3://{landing}/exports/");
    let args = [
        "convert",
        prefix.as_str(),
        "--table",
        "events",
        "--partition-by",
        "year(day)",
    ];
    let o = s.run(&args);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("3 source(s) (0 converted before, 0 failed), 0 piece(s) committed before, 6000 rows read (6000 written"),
        "{err}"
    );
    let script = r#"
import os, sys, deltalake, pyarrow.compute as pc
opts = {"AWS_ENDPOINT_URL": sys.argv[2], "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
t = deltalake.DeltaTable(sys.argv[1], storage_options=opts).to_pyarrow_table()
print(t.num_rows, len(pc.unique(t["id"])), pc.sum(t["amount_cents"]).as_py(), flush=True)
os._exit(0)
"#;
    let read = || {
        common::python(
            script,
            &[&format!("s3://{}/raw/events", s.bucket), &endpoint()],
            "deltalake",
        )
    };
    let want = format!("6000 6000 {}", sum_a + sum_b + sum_c);
    assert_eq!(read(), want);
    // DuckDB's Delta extension over S3 recounts each year against the sources.
    let years_script = r#"
import os, sys, duckdb
table, endpoint = sys.argv[1:]
con = duckdb_connect("httpfs", "delta")
con.execute(f"CREATE SECRET (TYPE s3, KEY_ID 'testing', SECRET 'testing', REGION 'us-east-1', "
            f"ENDPOINT '{endpoint.split('://')[1]}', URL_STYLE 'path', USE_SSL false)")
for r in con.execute(f"SELECT year, count(*), sum(amount_cents), min(id), max(id) FROM delta_scan('{table}') GROUP BY year ORDER BY year").fetchall():
    print(*r)
con.close()
os._exit(0)
"#;
    let years = common::python(
        years_script,
        &[&format!("s3://{}/raw/events", s.bucket), &endpoint()],
        "duckdb with its httpfs and delta extensions",
    );
    assert_eq!(years, common::expected_years(6_000, 1));
    // Again: every object is known, none is read.
    let o = s.run(&args);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "3 source(s) (3 converted before, 0 failed), 0 piece(s) committed before, 0 rows read"
        ),
        "{err}"
    );
    assert_eq!(read(), want);
    // The same objects through the queue: `run` reads the prefix as a producer.
    ok(&s.run(&["init", "--visibility-timeout", "60"]));
    ok(&s.run(&[
        "run",
        prefix.as_str(),
        "--table",
        "piped",
        "--partition-by",
        "year(day)",
    ]));
    let piped = common::python(
        script,
        &[&format!("s3://{}/raw/piped", s.bucket), &endpoint()],
        "deltalake",
    );
    assert_eq!(piped, want);
    // A prefix with no objects: an error naming it.
    let none = format!("s3://{landing}/nothing/");
    let o = s.run(&["convert", &none, "--table", "events"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&none) && err.contains("no CSV, JSON-lines or Parquet objects"),
        "{err}"
    );
}

#[test]
fn s3_event_notifications_land_each_object_version_once() {
    let s = setup();
    // Short visibility and two receives, so that an object that cannot be read is
    // dead-lettered within the test.
    ok(&s.run(&[
        "init",
        "--visibility-timeout",
        "2",
        "--max-receive-count",
        "2",
    ]));
    let queue = s.globals[1].trim_start_matches("sqs://").to_string();
    let landing = unique("landing");
    sluice_testkit::wire::create_bucket(&landing);
    let dir = s._dir.path();
    let (a, sum_a) = sluice_testkit::fixtures::write_events_csv(dir, "a.csv", 3_000, 1);
    let (b, sum_b) = sluice_testkit::fixtures::write_events_csv(dir, "b.csv", 2_000, 3_001);
    let (c, _) = sluice_testkit::fixtures::write_events_csv(dir, "c.csv", 2_000, 10_001);
    // The usual wiring: S3 sends ObjectCreated notifications to the SQS queue (moto sends
    // real notification bodies, and an s3:TestEvent first).
    let script = r#"
import sys, gzip, json, io, boto3, pyarrow as pa, pyarrow.compute as pcomp, pyarrow.csv as pc, pyarrow.parquet as pq
endpoint, bucket, queue, a, b, c = sys.argv[1:]
kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
s3 = boto3.client("s3", **kw)
sqs = boto3.client("sqs", **kw)
s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [
    {"QueueArn": f"arn:aws:sqs:us-east-1:123456789012:{queue}", "Events": ["s3:ObjectCreated:*"]}]})
s3.put_object(Bucket=bucket, Key="in/a.csv.gz", Body=gzip.compress(open(a, "rb").read()))
t = pc.read_csv(b, parse_options=pc.ParseOptions(newlines_in_values=True),
                convert_options=pc.ConvertOptions(column_types={"day": pa.string()}))
t = t.set_column(1, "day", pcomp.cast(pcomp.strptime(t["day"], "%Y-%m-%d", "s"), pa.date32()))
buf = io.BytesIO(); pq.write_table(t, buf, row_group_size=300)
s3.put_object(Bucket=bucket, Key="in/b data.parquet", Body=buf.getvalue())
# A gzip cut in half: cannot be read, so its message ends in the dead-letter queue.
s3.put_object(Bucket=bucket, Key="in/cut.csv.gz", Body=gzip.compress(open(c, "rb").read())[:2000])
# SQS delivers at least once: the same notification of b again.
url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
msgs = []
while True:
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get("Messages", [])
    if not got:
        break
    msgs += got
for m in msgs:
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
bodies = [m["Body"] for m in msgs]
dup = [x for x in bodies if "b+data.parquet" in x or "b%20data.parquet" in x]
assert len(dup) == 1, bodies
sqs.send_message(QueueUrl=url, MessageBody=dup[0])
print(len(set(bodies)) + 1)
"#;
    let sent = common::python(
        script,
        &[
            &endpoint(),
            &landing,
            &queue,
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            c.to_str().unwrap(),
        ],
        "boto3 and pyarrow",
    );
    // The test event, three objects, and the duplicate.
    assert_eq!(sent, "5");
    // The table comes from converting the first object; its notification then finds it done.
    ok(&s.run(&[
        "convert",
        &format!("s3://{landing}/in/a.csv.gz"),
        "--table",
        "events",
        "--partition-by",
        "year(day)",
    ]));
    let o = s.run(&["-v", "consume", "--table", "events", "--once"]);
    let err = String::from_utf8_lossy(&o.stderr);
    ok(&o);
    assert!(err.contains("cut.csv.gz"), "{err}");
    let script = r#"
import os, sys, deltalake, pyarrow.compute as pc
opts = {"AWS_ENDPOINT_URL": sys.argv[2], "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
t = deltalake.DeltaTable(sys.argv[1], storage_options=opts).to_pyarrow_table()
print(t.num_rows, len(pc.unique(t["id"])), pc.sum(t["amount_cents"]).as_py(), flush=True)
os._exit(0)
"#;
    let got = common::python(
        script,
        &[&format!("s3://{}/raw/events", s.bucket), &endpoint()],
        "deltalake",
    );
    // a.csv.gz once (converted, then its notification found it done), b once (two
    // notifications), and whatever whole rows the cut gzip gave before its end, each once.
    let (n, rest) = got.split_once(' ').unwrap();
    let (ids, _) = rest.split_once(' ').unwrap();
    assert_eq!(n, ids, "a row landed twice: {got}");
    let n: u64 = n.parse().unwrap();
    assert!((5_000..8_000).contains(&n), "{got}");
    let exact = ok(&s.run(&[
        "query",
        "SELECT count(*) AS n, sum(amount_cents) AS total FROM events WHERE id <= 5000",
        "--format",
        "csv",
    ]));
    assert_eq!(exact, format!("n,total\n5000,{}\n", sum_a + sum_b));
    let stats = ok(&s.run(&["queue", "stats"]));
    assert!(stats.contains("0 visible, 0 in flight"), "{stats}");
    assert!(stats.contains("cut.csv.gz"), "{stats}");
}

/// Consumers on two machines (two homes) share one SQS queue, S3 lake and Glue catalog, and are
/// SIGKILLed at random moments in both; then each home drains. A third home reads the table with
/// `sluice query`, and the `deltalake` package and Polars read it from S3: every row once, the
/// sum exact, every committed file present, and no uncommitted file of sluice's left in the table
/// once both homes have recovered.
#[test]
fn two_homes_under_sigkills_land_every_row_once() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let s = setup();
    ok(&s.run(&[
        "init",
        "--visibility-timeout",
        "8",
        "--max-message-bytes",
        "16384",
    ]));
    let rows = 20_000u64;
    let (csv, sum) = sluice_testkit::fixtures::write_events_csv(s._dir.path(), "e.csv", rows, 1);
    ok(&s.run(&[
        "produce",
        csv.to_str().unwrap(),
        "--table",
        "events",
        "--partition-by",
        "year(day)",
    ]));
    let homes = [
        s._dir.path().join("machine-a"),
        s._dir.path().join("machine-b"),
    ];
    let args = |extra: &[&str]| {
        let mut all: Vec<String> = s.globals.clone();
        all.extend(
            [
                "consume",
                "--table",
                "events",
                "--rotate-rows",
                "1500",
                "--rotate-age",
                "1",
            ]
            .map(String::from),
        );
        all.extend(extra.iter().map(|x| x.to_string()));
        all
    };
    let mut seed = 0x5eed_u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut kills = 0;
    for _ in 0..5 {
        let mut children: Vec<_> = homes
            .iter()
            .map(|h| {
                let a = args(&[]);
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                aws_cmd(h, &a)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let end = Instant::now() + Duration::from_millis(500 + next(2_500));
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in &mut children {
            if c.try_wait().unwrap().is_none() {
                kills += 1;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    assert!(kills > 0, "no consumer was killed");
    // Each machine drains (its start-up removes what its killed consumers uploaded and never
    // committed); messages the killed ones held return after the visibility timeout.
    for h in &homes {
        let a = args(&["--once"]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        ok(&aws_cmd(h, &a).output().unwrap());
    }
    // A third machine reads.
    let q = ok(&s.run(&[
        "query",
        "SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(amount_cents) AS total FROM events",
        "--format",
        "csv",
    ]));
    assert_eq!(q, format!("n,ids,total\n{rows},{rows},{sum}\n"));
    let script = r#"
import os, sys, boto3, deltalake, polars as pl, pyarrow.compute as pc
url, endpoint, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
opts = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
dt = deltalake.DeltaTable(url, storage_options=opts)
t = dt.to_pyarrow_table()
print(t.num_rows, len(pc.unique(t["id"])), pc.sum(t["amount_cents"]).as_py())
print(*pl.scan_delta(url, storage_options=opts).select(pl.len(), pl.col("id").n_unique(), pl.col("amount_cents").sum()).collect().row(0))
committed = {u[len(url) + 1:] for u in dt.file_uris()}
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
listed = set()
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="raw/events/"):
    for o in page.get("Contents", []):
        key = o["Key"][len("raw/events/"):]
        if not key.startswith("_delta_log/"):
            listed.add(key)
print(len(committed - listed), len(listed - committed), flush=True)
os._exit(0)
"#;
    let got = common::python(
        script,
        &[
            &format!("s3://{}/raw/events", s.bucket),
            &endpoint(),
            &s.bucket,
        ],
        "deltalake, polars and boto3",
    );
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 3, "{got}");
    assert_eq!(lines[0], format!("{rows} {rows} {sum}"), "deltalake: {got}");
    assert_eq!(lines[1], format!("{rows} {rows} {sum}"), "Polars: {got}");
    assert_eq!(
        lines[2], "0 0",
        "(committed files missing, files left uncommitted): {got}"
    );
}

/// A moto server of this test's own, on loopback, that enforces IAM once its first three
/// requests (which make an administrator) are through; stopped by PID when dropped.
struct IamMoto {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for IamMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl IamMoto {
    fn start() -> Self {
        let python = std::env::var("SLUICE_PYTHON").expect("SLUICE_PYTHON (bash .ci/run sets it)");
        let server = Path::new(&python).with_file_name("moto_server");
        let port = common::free_port();
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(30),
                "moto did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        IamMoto { child, endpoint }
    }

    /// Runs a boto3 script with `ENDPOINT` defined; its standard output.
    fn python(&self, script: &str, args: &[&str]) -> String {
        common::python(
            &format!(
                "import boto3, json, sys\nENDPOINT = {:?}\n{script}",
                self.endpoint
            ),
            args,
            "boto3 (moto[server])",
        )
    }
}

/// Least privilege, enforced: on a server that checks IAM, each role's policy as `sluice
/// iam-policy` prints it (producer, consumer, converter, reader, admin) lets the role's commands
/// through, and a command outside the role fails at once with the denied action and resource
/// named, having written nothing. moto evaluates SQS (and Glue) calls against the resource `*`
/// only, and a batch call by its own name where AWS uses the single action's (`sqs:SendMessage`
/// for `SendMessageBatch`), so the SQS statements' resources are widened to `*` and their batch
/// names added here; it also authorizes a multi-object delete against the bucket where AWS does
/// so key by key, so `s3:DeleteObject` statements also name the bucket. The other S3 statements
/// are used exactly as printed; the catalog is the embedded one.
#[test]
fn each_role_s_policy_suffices_and_other_commands_are_denied_by_name() {
    let moto = IamMoto::start();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let admin = moto.python(
        r#"
iam = boto3.client("iam", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id="boot", aws_secret_access_key="boot")
iam.create_user(UserName="admin")
iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="admin")["AccessKey"]
s3 = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id=k["AccessKeyId"], aws_secret_access_key=k["SecretAccessKey"])
s3.create_bucket(Bucket="lake")
# Sources for `convert`: a prefix the converter may read, and one it may not.
s3.create_bucket(Bucket="exports")
rows = "id,day,amount_cents,note\n" + "".join(f"{i},20{19 + i % 6}-03-0{1 + i % 9},{i},n\n" for i in range(10001, 11001))
s3.put_object(Bucket="exports", Key="2024/a.csv", Body=rows.encode())
s3.put_object(Bucket="exports", Key="secret/b.csv", Body=rows.encode())
print(k["AccessKeyId"], k["SecretAccessKey"])
"#,
        &[],
    );
    let (admin_key, admin_secret) = admin.split_once(' ').unwrap();
    let globals = ["--queue", "sqs://events", "--lake", "s3://lake/raw"];
    let run = |key: &str, secret: &str, args: &[&str]| {
        let mut all: Vec<&str> = globals.to_vec();
        all.extend_from_slice(args);
        let o = common::command(&home, &all)
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .env("AWS_ACCESS_KEY_ID", key)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .env_remove("SLUICE_CATALOG")
            .output()
            .unwrap();
        // A refusal is reported once, not retried: no command waits on one.
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("retrying"), "{args:?}:\n{err}");
        o
    };
    ok(&run(admin_key, admin_secret, &["init"]));
    let mut keys = std::collections::HashMap::new();
    for role in ["producer", "consumer", "converter", "reader", "admin"] {
        let policy = ok(&run(
            admin_key,
            admin_secret,
            &[
                "iam-policy",
                "--role",
                role,
                "--account",
                "123456789012",
                "--source",
                "s3://exports/2024",
            ],
        ));
        let k = moto.python(
            r#"
key, secret, role, policy = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
for s in policy["Statement"]:
    assert "*" not in s["Action"], s
    if any(a.startswith("sqs:") for a in s["Action"]):
        s["Resource"] = "*"
        # AWS authorizes a batch call by its single action; moto by the call's own name.
        s["Action"] = s["Action"] + [a + "Batch" for a in s["Action"] if a in ("sqs:SendMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility")]
    if "s3:DeleteObject" in s["Action"]:
        # AWS authorizes a multi-object delete (POST ?delete) key by key; moto against the bucket.
        s["Resource"] = ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]) + ["arn:aws:s3:::lake"]
iam = boto3.client("iam", endpoint_url=ENDPOINT, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret)
iam.create_user(UserName="sluice-" + role)
iam.put_user_policy(UserName="sluice-" + role, PolicyName="sluice", PolicyDocument=json.dumps(policy))
k = iam.create_access_key(UserName="sluice-" + role)["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"])
"#,
            &[admin_key, admin_secret, role, &policy],
        );
        let (a, s) = k.split_once(' ').unwrap();
        keys.insert(role, (a.to_string(), s.to_string()));
    }
    let as_role = |role: &str, args: &[&str]| {
        let (a, s) = &keys[role];
        run(a, s, args)
    };
    let denied = |o: &std::process::Output, action: &str| {
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("not authorized to perform: {action}")),
            "expected {action} denied:\n{err}"
        );
    };
    let (csv, _) = sluice_testkit::fixtures::write_events_csv(dir.path(), "e.csv", 2_000, 1);
    let csv = csv.to_str().unwrap();
    // The producer's role produces, and cannot consume.
    ok(&as_role(
        "producer",
        &[
            "produce",
            csv,
            "--table",
            "events",
            "--partition-by",
            "year(day)",
        ],
    ));
    // (The consumer's first write is the table's Delta log, which the producer's role may
    // read but not write.)
    let o = as_role("producer", &["consume", "--table", "events", "--once"]);
    denied(&o, "s3:PutObject on raw/events/_delta_log/");
    // The consumer's role consumes every row, and cannot produce.
    ok(&as_role(
        "consumer",
        &["consume", "--table", "events", "--once"],
    ));
    let n = ok(&as_role(
        "consumer",
        &[
            "query",
            "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(n, "n,ids\n2000,2000\n");
    denied(
        &as_role("consumer", &["produce", csv, "--table", "events"]),
        "sqs:SendMessage",
    );
    // Nothing the refused commands tried is in the queue or the table.
    let again = ok(&as_role(
        "consumer",
        &[
            "query",
            "SELECT count(*) AS n FROM events",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(again, "n\n2000\n");

    // The converter's role converts the prefix it may read, and nothing else.
    ok(&as_role(
        "converter",
        &[
            "convert",
            "s3://exports/2024/",
            "--table",
            "archive",
            "--partition-by",
            "year(day)",
        ],
    ));
    denied(
        &as_role(
            "converter",
            &["convert", "s3://exports/secret/", "--table", "archive"],
        ),
        "s3:GetObject on secret/b.csv",
    );
    denied(
        &as_role("converter", &["produce", csv, "--table", "events"]),
        "sqs:",
    );
    // A second batch, so that each of the table's partitions has two files to compact.
    let (csv2, _) = sluice_testkit::fixtures::write_events_csv(dir.path(), "e2.csv", 500, 2_001);
    ok(&as_role(
        "producer",
        &["produce", csv2.to_str().unwrap(), "--table", "events"],
    ));
    ok(&as_role(
        "consumer",
        &["consume", "--table", "events", "--once"],
    ));
    // The reader's role reads both tables, and writes nothing.
    let n = ok(&as_role(
        "reader",
        &[
            "query",
            "SELECT (SELECT count(*) FROM events) AS e, (SELECT count(DISTINCT id) FROM archive) AS a",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(n, "e,a\n2500,1000\n");
    denied(
        &as_role("reader", &["compact", "--table", "events"]),
        "s3:PutObject on raw/events/",
    );
    denied(
        &as_role("reader", &["convert", csv, "--table", "events"]),
        "s3:PutObject on raw/events/",
    );
    // The admin's role maintains the lake and the queue, and reads no source.
    let compacted = ok(&as_role(
        "admin",
        &["compact", "--table", "events", "--target-size", "1MiB"],
    ));
    assert!(compacted.contains("rewritten as"), "{compacted}");
    ok(&as_role("admin", &["repair", "--table", "events"]));
    ok(&as_role("admin", &["queue", "stats"]));
    denied(
        &as_role(
            "admin",
            &["convert", "s3://exports/2024/", "--table", "archive"],
        ),
        "s3:ListBucket on exports (prefix 2024/)",
    );
    // After all of it: every row once, in both tables.
    let n = ok(&as_role(
        "reader",
        &[
            "query",
            "SELECT (SELECT count(DISTINCT id) FROM events) AS e, (SELECT count(*) FROM archive) AS a",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(n, "e,a\n2500,1000\n");
}
