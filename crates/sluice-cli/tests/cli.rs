//! The `sluice` binary end to end, on the embedded default, through the interface that
//! acceptance checks use.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{expected, ok, sample, sluice};

fn run_main_job(dir: &Path) -> PathBuf {
    let home = dir.join("home");
    let out = common::run_employment(&home);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2006") && stdout.contains("2015"),
        "{stdout}"
    );
    home
}

#[test]
fn main_job_counts_match_the_csv() {
    let dir = tempfile::tempdir().unwrap();
    let home = run_main_job(dir.path());
    let (n, sum) = expected();
    let csv = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n, sum(nonfarm) AS s FROM employment",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(csv, format!("n,s\n{n},{sum}\n"));
    let parts = ok(&sluice(&home, &["catalog", "partitions", "employment"]));
    let rows: Vec<&str> = parts.lines().skip(1).collect();
    assert_eq!(rows.len(), 10, "{parts}");
    assert!(rows[0].starts_with("2006\t1\t12\t"), "{parts}");
    // Files live in Hive directories under <home>/lake/<table>/.
    assert!(home.join("lake/employment/year=2010").is_dir());
    let schema = ok(&sluice(&home, &["catalog", "schema", "employment"]));
    assert!(
        schema.contains("month")
            && schema.contains("date")
            && schema.contains("year")
            && schema.contains("partition key"),
        "{schema}"
    );
    // Partition pruning: a filter on the partition column reads one partition's files.
    let year = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n FROM employment WHERE year = 2010",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(year, "n\n12\n");
    let plan = ok(&sluice(
        &home,
        &[
            "query",
            "EXPLAIN SELECT sum(nonfarm) FROM employment WHERE year = 2010",
            "--format",
            "csv",
        ],
    ));
    assert!(plan.contains("year=2010"), "{plan}");
    assert!(!plan.contains("year=2011"), "pruned: {plan}");
    // File skipping on the log's statistics: a filter on a data column (min/max of `month`)
    // reads one file, and a count is answered from the log's row counts without reading any.
    let plan = ok(&sluice(
        &home,
        &[
            "query",
            "EXPLAIN SELECT sum(nonfarm) FROM employment WHERE month >= '2015-01-01'",
            "--format",
            "csv",
        ],
    ));
    assert!(plan.contains("year=2015/"), "{plan}");
    assert!(
        !plan.contains("year=2014/"),
        "skipped by statistics: {plan}"
    );
    let plan = ok(&sluice(
        &home,
        &[
            "query",
            "EXPLAIN SELECT count(*) FROM employment WHERE year = 2010",
            "--format",
            "csv",
        ],
    ));
    assert!(
        plan.contains("12 as count(*)") && !plan.contains(".parquet"),
        "{plan}"
    );
    // Running the same file again adds nothing.
    let again = common::run_employment(&home);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("120 duplicate(s) dropped"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let csv = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n FROM employment",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(csv, format!("n\n{n}\n"));
}

#[test]
fn query_is_read_only_and_formats_work() {
    let dir = tempfile::tempdir().unwrap();
    let home = run_main_job(dir.path());
    for sql in [
        "CREATE TABLE x AS SELECT 1",
        "DROP TABLE employment",
        "INSERT INTO employment SELECT * FROM employment",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let o = sluice(&home, &["query", sql]);
        assert!(!o.status.success(), "{sql} must be refused");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("read-only"), "{sql}: {err}");
    }
    let json = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT year, count(*) AS n FROM employment WHERE year < 2008 GROUP BY year ORDER BY year",
            "--format",
            "json",
        ],
    ));
    assert_eq!(json, "{\"year\":2006,\"n\":12}\n{\"year\":2007,\"n\":12}\n");
    let table = ok(&sluice(
        &home,
        &["query", "SELECT min(month) AS first FROM employment"],
    ));
    assert!(table.contains("2006-01-01"), "{table}");
    let pq = dir.path().join("out.parquet");
    ok(&sluice(
        &home,
        &[
            "query",
            "SELECT * FROM employment",
            "--format",
            "parquet",
            "--output",
            pq.to_str().unwrap(),
        ],
    ));
    assert!(std::fs::metadata(&pq).unwrap().len() > 1000);
    let bad = sluice(&home, &["query", "SELECT nope FROM employment"]);
    assert!(!bad.status.success());
}

#[test]
fn stray_files_are_never_read_and_repair_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let home = run_main_job(dir.path());
    // A stray upload named as sluice names its files, and another engine's upload in flight.
    let stray =
        home.join("lake/employment/year=2010/part-01938f5c-6c2e-7b3a-8d4e-5f6a7b8c9d0e.parquet");
    std::fs::write(&stray, b"not parquet at all").unwrap();
    let theirs = home.join(
        "lake/employment/year=2010/part-00000-4f1c7d3e-1b2a-4c3d-9e8f-0a1b2c3d4e5f-c000.snappy.parquet",
    );
    std::fs::write(&theirs, b"another engine's upload, not committed yet").unwrap();
    let csv = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n FROM employment",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(csv, "n\n120\n");
    // By default a fresh upload is within the grace period.
    let r = ok(&sluice(&home, &["repair", "--table", "employment"]));
    assert!(r.contains("removed 0 uncommitted file"), "{r}");
    assert!(stray.exists());
    let r = ok(&sluice(
        &home,
        &["repair", "--table", "employment", "--grace", "0"],
    ));
    assert!(r.contains("removed 1 uncommitted file"), "{r}");
    assert!(!stray.exists());
    assert!(theirs.exists(), "another engine's file was removed");
}

#[test]
fn bad_input_is_named_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let csv = dir.path().join("t.csv");
    std::fs::write(
        &csv,
        "id;when;amount\n1;03/15/2020;NA\n2;12/31/2021;2.5\n3;01/01/2022;oops\n4;;4\n",
    )
    .unwrap();
    // Declared types (in sluice.toml, read from the working directory): inference would call
    // `amount` text because of "oops".
    std::fs::write(
        dir.path().join("sluice.toml"),
        "[tables.t]\ncolumns = { id = \"int64\", when = \"date\", amount = \"float64\" }\n",
    )
    .unwrap();
    let o = sluice(
        &home,
        &[
            "run",
            csv.to_str().unwrap(),
            "--table",
            "t",
            "--partition-by",
            "year(when)",
            "--date-format",
            "%m/%d/%Y",
            "--null-value",
            "NA",
            "--delimiter",
            ";",
        ],
    );
    let out = ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 quarantined"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("2020") && out.contains("2021"), "{out}");
    let q = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT table_name, line, raw, reason FROM quarantine",
            "--format",
            "csv",
        ],
    ));
    assert!(q.contains("t,4,3;01/01/2022;oops,"), "{q}");
    assert!(q.contains("cannot parse \"\"oops\"\" as float64"), "{q}");
    let rows = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT id, year FROM t ORDER BY id",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(rows, "id,year\n1,2020\n2,2021\n4,\n");
    let missing = sluice(&home, &["produce", "nope.csv", "--table", "t"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.csv"));
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "id;day;total\n1;03/15/2020;1\n").unwrap();
    let mismatch = sluice(
        &home,
        &[
            "produce",
            other.to_str().unwrap(),
            "--table",
            "t",
            "--delimiter",
            ";",
        ],
    );
    assert!(!mismatch.status.success());
    let err = String::from_utf8_lossy(&mismatch.stderr);
    assert!(
        err.contains("other.csv:1: the header lacks when, which table t is partitioned by"),
        "{err}"
    );
}

#[test]
fn produce_then_consume_and_queue_commands() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let s = sample();
    ok(&sluice(
        &home,
        &[
            "produce",
            s.to_str().unwrap(),
            "--table",
            "employment",
            "--partition-by",
            "year(month)",
        ],
    ));
    let stats = ok(&sluice(&home, &["queue", "stats"]));
    assert!(
        stats.contains("queue employment: 1 visible, 0 in flight"),
        "{stats}"
    );
    // A new embedded queue takes 4 MiB messages; SQS is refused more than 1 MiB up front.
    assert!(stats.contains("largest message 4194304 bytes"), "{stats}");
    // The sample's one chunk is small enough for the database; a larger one is a file.
    assert!(
        stats.contains("body files of the home's queues: 0 (0.0 MB)"),
        "{stats}"
    );
    let big = dir.path().join("big.csv");
    let rows: String = (0..20_000).map(|i| format!("{i},2020-01-01\n")).collect();
    std::fs::write(&big, format!("id,d\n{rows}")).unwrap();
    ok(&sluice(
        &home,
        &[
            "produce",
            big.to_str().unwrap(),
            "--table",
            "big",
            "--partition-by",
            "year(d)",
        ],
    ));
    let stats = ok(&sluice(&home, &["queue", "stats", "--queue", "big"]));
    assert!(
        stats.contains("body files of the home's queues: 1 (0.3 MB)"),
        "{stats}"
    );
    ok(&sluice(&home, &["queue", "purge", "--queue", "big"]));
    let stats = ok(&sluice(&home, &["queue", "stats", "--queue", "big"]));
    assert!(
        stats.contains("body files of the home's queues: 0 (0.0 MB)"),
        "{stats}"
    );
    // A table produced into but never consumed (no directory in the lake yet) is empty to
    // queries, and does not stop queries of the others.
    let csv = ok(&sluice(
        &home,
        &["query", "SELECT count(*) AS n FROM big", "--format", "csv"],
    ));
    assert_eq!(csv, "n\n0\n");
    let o = sluice(
        &home,
        &[
            "--queue",
            "sqs://q",
            "init",
            "--max-message-bytes",
            "2000000",
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("SQS takes messages of at most 1048576 bytes, not 2000000"),
        "{err}"
    );
    ok(&sluice(
        &home,
        &[
            "consume",
            "--table",
            "employment",
            "--once",
            "--visibility-timeout",
            "30",
        ],
    ));
    let stats = ok(&sluice(&home, &["queue", "stats", "--queue", "employment"]));
    assert!(stats.contains("0 visible, 0 in flight"), "{stats}");
    assert!(
        stats.contains("dead-letter queue employment_dlq: 0 message(s)"),
        "{stats}"
    );
    let csv = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n FROM employment",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(csv, "n\n120\n");
    let tables = ok(&sluice(&home, &["catalog", "tables"]));
    assert!(
        tables.lines().any(|l| l.starts_with("employment\tfile://")),
        "{tables}"
    );
    ok(&sluice(&home, &["queue", "purge", "--queue", "employment"]));
    let help = ok(&Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--help")
        .output()
        .unwrap());
    assert!(help.contains("Examples:"), "{help}");
}

/// The Hive layout stays readable without a Delta reader: DuckDB and pyarrow read the main
/// job's folders with Hive partitioning (no checkpoint exists yet to confuse a glob) and get
/// the CSV's row count and sum. `bash .ci/run` installs both.
#[test]
fn duckdb_and_pyarrow_read_the_lake() {
    let dir = tempfile::tempdir().unwrap();
    let home = run_main_job(dir.path());
    let lake = home.join("lake/employment");
    let script = r#"
import sys, duckdb, pyarrow.dataset as ds, pyarrow.compute as pc
lake = sys.argv[1]
con = duckdb_connect()
n, s, years, ty = con.execute(f"SELECT count(*), sum(nonfarm), count(DISTINCT year), any_value(typeof(year)) FROM read_parquet('{lake}/**/*.parquet', hive_partitioning = 1)").fetchone()
meta = con.execute(f"SELECT DISTINCT compression FROM parquet_metadata('{lake}/**/*.parquet')").fetchall()
d = ds.dataset(lake, format="parquet", partitioning="hive")
t = d.to_table()
print(n, s, years, ty, ",".join(sorted(m[0] for m in meta)), t.num_rows, pc.sum(t["nonfarm"]).as_py())
"#;
    let got = common::python(script, &[lake.to_str().unwrap()], "duckdb and pyarrow");
    let (n, sum) = expected();
    assert_eq!(got, format!("{n} {sum} 10 BIGINT ZSTD {n} {sum}"));
}

/// `consume` without `--once` follows the queue; Ctrl-C (SIGINT) makes it commit what it holds,
/// delete those messages, and exit cleanly.
#[test]
fn following_consumer_commits_on_interrupt() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let s = sample();
    ok(&sluice(
        &home,
        &[
            "produce",
            s.to_str().unwrap(),
            "--table",
            "employment",
            "--partition-by",
            "year(month)",
        ],
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--home")
        .arg(&home)
        .args(["consume", "--table", "employment"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until the consumer holds the message.
    let mut held = false;
    for _ in 0..150 {
        let st = ok(&sluice(&home, &["queue", "stats"]));
        if st.contains("0 visible, 1 in flight") {
            held = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(held, "the consumer never received the message");
    // Nothing is committed while the file stays open (rotation is 5 minutes away).
    let before = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n FROM employment",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(before, "n\n0\n");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut status = None;
    for _ in 0..300 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("consumer did not exit within 30 s of SIGINT");
    };
    assert!(status.success(), "{status:?}");
    let after = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n FROM employment",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(after, "n\n120\n");
    let st = ok(&sluice(&home, &["queue", "stats"]));
    assert!(st.contains("0 visible, 0 in flight"), "{st}");
}

/// Partition values and names cannot write outside the table's directory.
#[test]
fn hostile_values_stay_inside_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let csv = dir.path().join("h.csv");
    let long = "x".repeat(300);
    let content = format!(
        "id,c\n1,../x\n2,/\n3,%2F\n4,..\n5,a\u{0}b\n6,{long}\n7,.\n8,\"a/../../b\"\n9,C:\\evil\n"
    );
    std::fs::write(&csv, content).unwrap();
    let out = sluice(
        &home,
        &[
            "run",
            csv.to_str().unwrap(),
            "--table",
            "h",
            "--partition-by",
            "c",
        ],
    );
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("8 written, 1 quarantined"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every file is a descendant of lake/h/, one level of c=… directories.
    let lake = home.join("lake");
    let mut stack = vec![lake.clone()];
    let mut parquet = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                parquet += 1;
                let rel = p.strip_prefix(&lake).unwrap();
                let parts: Vec<_> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if parts[0] == "_quarantine" {
                    continue;
                }
                assert_eq!(parts.len(), 3, "{rel:?}");
                assert_eq!(parts[0], "h");
                assert!(parts[1].starts_with("c="), "{rel:?}");
            }
        }
    }
    assert_eq!(parquet, 9, "8 partitions and the quarantine");
    assert!(!dir.path().join("x").exists() && !home.join("x").exists() && !lake.join("x").exists());
    // The values read back as they were written.
    let rows = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT id, c FROM h ORDER BY id",
            "--format",
            "json",
        ],
    ));
    let want = [
        "../x",
        "/",
        "%2F",
        "..",
        "a\\u0000b",
        ".",
        "a/../../b",
        "C:\\\\evil",
    ];
    for w in want {
        assert!(rows.contains(&format!("\"c\":\"{w}\"")), "{w} in {rows}");
    }
    let q = ok(&sluice(
        &home,
        &["query", "SELECT reason FROM quarantine", "--format", "csv"],
    ));
    assert!(q.contains("too long for a directory name"), "{q}");
    // Table and column names are validated.
    for bad in ["../t", "a/b", "t;drop", ""] {
        let o = sluice(
            &home,
            &[
                "run",
                csv.to_str().unwrap(),
                "--table",
                bad,
                "--partition-by",
                "c",
            ],
        );
        assert!(!o.status.success(), "{bad}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("is not valid"),
            "{bad}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let badcol = dir.path().join("badcol.csv");
    std::fs::write(&badcol, "id,a/b\n1,2\n").unwrap();
    // Kept as it comes, a name with a `/` would be a path: refused. (Named by the default rule
    // it is `a_b`.)
    let o = sluice(
        &home,
        &[
            "run",
            badcol.to_str().unwrap(),
            "--table",
            "bc",
            "--partition-by",
            "id",
            "--column-names",
            "as-is",
        ],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("column name \"a/b\" is not valid"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
