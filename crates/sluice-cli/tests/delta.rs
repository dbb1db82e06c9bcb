//! The lake as Delta Lake tables, checked by readers sluice does not control (DuckDB's Delta
//! extension, Polars, the `deltalake` package), and the exactly-once records through
//! checkpoints and the upgrade of lakes written by earlier versions.

use std::path::Path;
use std::process::Output;

mod common;
use common::{expected, ok, run_employment, sample, sluice};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Counts of a Delta table by three independent readers: "duckdb n sum | polars n sum |
/// deltalake n sum".
fn independent_counts(table_dir: &Path, value_col: &str) -> String {
    let script = r#"
import os, sys, duckdb, polars as pl, deltalake, pyarrow.compute as pc
path, col = sys.argv[1], sys.argv[2]
con = duckdb_connect("delta")
d = con.execute(f"SELECT count(*), sum({col}) FROM delta_scan('{path}')").fetchone()
p = pl.scan_delta(path).select(pl.len(), pl.col(col).sum()).collect().row(0)
t = deltalake.DeltaTable(path).to_pyarrow_table()
print(f"{d[0]} {d[1]} | {p[0]} {p[1]} | {t.num_rows} {pc.sum(t[col]).as_py()}", flush=True)
# DuckDB's Delta extension and the Rust readers' thread pools can abort the interpreter's
# teardown ("terminate called without an active exception"): the answer is printed, leave now.
con.close()
os._exit(0)
"#;
    common::python(
        script,
        &[table_dir.to_str().unwrap(), value_col],
        "duckdb (delta extension), polars and deltalake",
    )
}

#[test]
fn independent_delta_readers_count_exactly_the_committed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    run_employment(&home);
    let table = home.join("lake/employment");
    assert!(table.join("_delta_log/00000000000000000000.json").is_file());
    // An upload whose commit never happened: readers of the Delta log never count it.
    let year = table.join("year=2010");
    let committed = std::fs::read_dir(&year)
        .unwrap()
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .unwrap()
        .path();
    std::fs::copy(&committed, year.join("part-00000000-uncommitted.parquet")).unwrap();
    let (n, sum) = expected();
    let want = format!("{n} {sum} | {n} {sum} | {n} {sum}");
    assert_eq!(independent_counts(&table, "nonfarm"), want);
    // The same CSV again: every chunk part is recognised, nothing is added.
    let again = run_employment(&home);
    assert!(
        stderr(&again).contains(&format!(
            "0 written, 0 quarantined, {n} duplicate(s) dropped"
        )),
        "{}",
        stderr(&again)
    );
    assert_eq!(independent_counts(&table, "nonfarm"), want);
    // History lists the versions; time travel reads the first data version alone.
    let h = ok(&sluice(&home, &["catalog", "history", "employment"]));
    let lines: Vec<&str> = h.lines().collect();
    assert!(lines[0].starts_with("version\t"), "{h}");
    assert!(
        lines.last().unwrap().starts_with("0\t") && h.contains("CREATE TABLE"),
        "{h}"
    );
    assert!(h.contains("WRITE"), "{h}");
    let v1_rows: u64 = lines
        .iter()
        .find(|l| l.starts_with("1\t"))
        .and_then(|l| l.split('\t').nth(3))
        .and_then(|r| r.parse().ok())
        .expect("version 1 with rows");
    let at_v1 = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n FROM employment",
            "--format",
            "csv",
            "--as-of",
            "1",
        ],
    ));
    assert_eq!(at_v1, format!("n\n{v1_rows}\n"));
    let at_v0 = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n FROM employment",
            "--format",
            "csv",
            "--as-of",
            "0",
        ],
    ));
    assert_eq!(at_v0, "n\n0\n");
    // A time: the newest version committed by then.
    let now = chrono::Utc::now().to_rfc3339();
    let at_now = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n FROM employment",
            "--format",
            "csv",
            "--as-of",
            &now,
        ],
    ));
    assert_eq!(at_now, format!("n\n{n}\n"));
    let before = sluice(
        &home,
        &[
            "query",
            "SELECT count(*) FROM employment",
            "--as-of",
            "2000-01-01",
        ],
    );
    assert!(!before.status.success());
    assert!(
        stderr(&before).contains("table version not found")
            && stderr(&before).contains("as of 2000-01-01"),
        "{}",
        stderr(&before)
    );
    // Partitions come from the log.
    let parts = ok(&sluice(&home, &["catalog", "partitions", "employment"]));
    let total: u64 = parts
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, n, "{parts}");
    assert_eq!(parts.lines().count(), 11, "{parts}");
}

/// Writes `count` one-row CSV files with years spread over 2001..=2005.
fn tiny_files(dir: &Path, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let p = dir.join(format!("f{i:03}.csv"));
            std::fs::write(
                &p,
                format!("id,d,v\n{i},{}-06-01,{}\n", 2001 + i % 5, i * 10),
            )
            .unwrap();
            p.to_string_lossy().into_owned()
        })
        .collect()
}

/// `produce` of `files` into table `t`, partitioned by `year(d)`.
fn produce_files(home: &Path, files: &[String]) {
    let mut args = vec!["produce"];
    args.extend(files.iter().map(String::as_str));
    args.extend(["--table", "t", "--partition-by", "year(d)"]);
    ok(&sluice(home, &args));
}

#[test]
fn checkpoints_keep_the_exactly_once_records() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let files = tiny_files(dir.path(), 105);
    let produce = |home: &Path| produce_files(home, &files);
    produce(&home);
    // One file per message: one commit per chunk part, past the checkpoint interval.
    let c = sluice(
        &home,
        &["consume", "--table", "t", "--once", "--rotate-rows", "1"],
    );
    ok(&c);
    assert!(stderr(&c).contains("105 commit(s)"), "{}", stderr(&c));
    let table = home.join("lake/t");
    assert!(
        table
            .join("_delta_log/00000000000000000100.checkpoint.parquet")
            .is_file(),
        "no checkpoint at version 100"
    );
    // The same files again: the consumer reads the checkpoint and the versions after it, and
    // recognises every chunk part.
    produce(&home);
    let c = sluice(&home, &["consume", "--table", "t", "--once"]);
    ok(&c);
    assert!(
        stderr(&c).contains("0 written, 0 quarantined, 105 duplicate(s) dropped"),
        "{}",
        stderr(&c)
    );
    let sum: usize = (0..105).map(|i| i * 10).sum();
    assert_eq!(
        independent_counts(&table, "v"),
        format!("105 {sum} | 105 {sum} | 105 {sum}")
    );
    let q = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n, sum(v) AS s FROM t",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(q, format!("n,s\n105,{sum}\n"));
}

#[test]
fn a_lake_of_an_earlier_version_is_refused_then_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    run_employment(&home);
    let lake = home.join("lake");
    let table = lake.join("employment");
    // Turn the table into what an earlier sluice wrote: the same files, named by a
    // `_sluice/log` commit with the same chunk parts, and no Delta log.
    let mut add = Vec::new();
    let mut chunks = Vec::new();
    for name in ["employment", "_quarantine/employment"] {
        let log = lake.join(name).join("_delta_log");
        for e in std::fs::read_dir(&log).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                if let Some(a) = v.get("add") {
                    let path = a["path"].as_str().unwrap();
                    let partition = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    let stats: serde_json::Value =
                        serde_json::from_str(a["stats"].as_str().unwrap()).unwrap();
                    let q = name.starts_with('_');
                    add.push(serde_json::json!({
                        "path": format!("{name}/{path}"),
                        "partition": if q { "" } else { partition },
                        "rows": stats["numRecords"],
                        "bytes": a["size"],
                        "kind": if q { "quarantine" } else { "data" },
                    }));
                }
                if let Some(t) = v.get("txn") {
                    let id = t["appId"]
                        .as_str()
                        .unwrap()
                        .strip_prefix("sluice/")
                        .unwrap();
                    let (chunk, partition) = id.split_once('/').unwrap();
                    chunks.push(serde_json::json!({"chunk": chunk, "partition": partition}));
                }
            }
        }
        std::fs::remove_dir_all(&log).unwrap();
    }
    let legacy = table.join("_sluice/log");
    std::fs::create_dir_all(&legacy).unwrap();
    let commit = serde_json::json!({
        "version": 1, "id": "old", "committed_at_ms": 0, "writer": "old",
        "add": add, "remove": [], "chunks": chunks,
    });
    std::fs::write(
        legacy.join("00000000000000000001.json"),
        serde_json::to_vec(&commit).unwrap(),
    )
    .unwrap();
    // Writing is refused with the command that upgrades.
    let refused = sluice(
        &home,
        &[
            "run",
            sample().to_str().unwrap(),
            "--table",
            "employment",
            "--partition-by",
            "year(month)",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("sluice upgrade --table employment"),
        "{}",
        stderr(&refused)
    );
    // A query is an error naming the upgrade too, never an empty answer.
    let q = sluice(&home, &["query", "SELECT count(*) FROM employment"]);
    assert!(!q.status.success());
    assert!(
        stderr(&q).contains("sluice upgrade --table employment") && !stderr(&q).contains("ERROR"),
        "{}",
        stderr(&q)
    );
    let up = ok(&sluice(&home, &["upgrade", "--table", "employment"]));
    let (n, sum) = expected();
    assert!(up.contains(&format!("({n} rows)")), "{up}");
    // Running it again changes nothing.
    let again = ok(&sluice(&home, &["upgrade", "--table", "employment"]));
    assert!(again.contains("Delta version 1"), "{again}");
    assert_eq!(
        independent_counts(&table, "nonfarm"),
        format!("{n} {sum} | {n} {sum} | {n} {sum}")
    );
    // The chunk parts came along: the same CSV adds nothing.
    let rerun = run_employment(&home);
    assert!(
        stderr(&rerun).contains(&format!(
            "0 written, 0 quarantined, {n} duplicate(s) dropped"
        )),
        "{}",
        stderr(&rerun)
    );
}

/// Data files of a table on disk (not the log's checkpoints).
fn data_files(table: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![table.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() && !e.file_name().to_string_lossy().starts_with('_') {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn compaction_keeps_rows_exactly_once_and_earlier_versions_readable() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let files = tiny_files(dir.path(), 60);
    let produce = |home: &Path| produce_files(home, &files);
    produce(&home);
    ok(&sluice(
        &home,
        &["consume", "--table", "t", "--once", "--rotate-rows", "1"],
    ));
    let table = home.join("lake/t");
    let sum: usize = (0..60).map(|i| i * 10).sum();
    let want = format!("60 {sum} | 60 {sum} | 60 {sum}");
    assert_eq!(independent_counts(&table, "v"), want);
    assert_eq!(data_files(&table), 60);
    // One partition first, then the rest.
    let one = ok(&sluice(
        &home,
        &["compact", "--table", "t", "--where", "year = 2001"],
    ));
    assert!(
        one.contains("12 file(s)") && one.contains("in 1 partition(s); Delta version 61"),
        "{one}"
    );
    let rest = ok(&sluice(&home, &["compact", "--table", "t"]));
    assert!(
        rest.contains("48 file(s)") && rest.contains("in 4 partition(s)"),
        "{rest}"
    );
    let again = ok(&sluice(&home, &["compact", "--table", "t"]));
    assert!(again.contains("nothing to compact"), "{again}");
    // One file per partition now, the same rows for every reader.
    let parts = ok(&sluice(&home, &["catalog", "partitions", "t"]));
    assert_eq!(parts.lines().count(), 1 + 5, "{parts}");
    assert!(
        parts
            .lines()
            .skip(1)
            .all(|l| l.split('\t').nth(1) == Some("1")),
        "{parts}"
    );
    assert_eq!(independent_counts(&table, "v"), want);
    // The exactly-once records survive: the same files again add nothing.
    produce(&home);
    let c = sluice(&home, &["consume", "--table", "t", "--once"]);
    ok(&c);
    assert!(
        stderr(&c).contains("0 written, 0 quarantined, 60 duplicate(s) dropped"),
        "{}",
        stderr(&c)
    );
    // The replaced files stay for earlier versions: repair keeps them, time travel reads them.
    let r = ok(&sluice(&home, &["repair", "--table", "t"]));
    assert!(r.contains("removed 0 uncommitted file(s)"), "{r}");
    assert_eq!(data_files(&table), 60 + 5);
    let before = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n, sum(v) AS s FROM t",
            "--format",
            "csv",
            "--as-of",
            "60",
        ],
    ));
    assert_eq!(before, format!("n,s\n60,{sum}\n"));
    // Vacuum: nothing is old enough under the default retention; with none, the 60 replaced
    // files go (listed first by a dry run) and the table still reads the same.
    let kept = ok(&sluice(&home, &["vacuum", "--table", "t", "--dry-run"]));
    assert!(kept.contains("would delete 0 file(s)"), "{kept}");
    let dry = ok(&sluice(
        &home,
        &["vacuum", "--table", "t", "--retain", "0h", "--dry-run"],
    ));
    assert!(dry.contains("would delete 60 file(s)"), "{dry}");
    assert_eq!(
        dry.lines().filter(|l| l.contains(".parquet")).count(),
        60,
        "{dry}"
    );
    assert_eq!(data_files(&table), 60 + 5);
    let done = ok(&sluice(
        &home,
        &["vacuum", "--table", "t", "--retain", "0h"],
    ));
    assert!(done.contains("deleted 60 file(s)"), "{done}");
    assert_eq!(data_files(&table), 5);
    assert_eq!(independent_counts(&table, "v"), want);
}

/// "rows distinct_ids sum(v)" by DuckDB's Delta extension, Polars and `deltalake`, one line each.
fn three_readers(table_dir: &Path) -> String {
    let script = r#"
import os, sys, duckdb, polars as pl, deltalake, pyarrow.compute as pc
path = sys.argv[1]
con = duckdb_connect("delta")
print(*con.execute(f"SELECT count(*), count(DISTINCT id), sum(v) FROM delta_scan('{path}')").fetchone())
print(*pl.scan_delta(path).select(pl.len(), pl.col("id").n_unique(), pl.col("v").sum()).collect().row(0))
t = deltalake.DeltaTable(path).to_pyarrow_table()
print(t.num_rows, len(pc.unique(t["id"])), pc.sum(t["v"]).as_py(), flush=True)
con.close()
os._exit(0)
"#;
    common::python(
        script,
        &[table_dir.to_str().unwrap()],
        "duckdb (delta extension), polars and deltalake",
    )
}

/// 300 small commits (one per message, 40 rows over 5 partitions each), compacted to a target
/// size: every partition holds at most ceil(bytes / target) + 1 files, three readers count the
/// same rows, distinct ids and sum before and after, and the files produced again add nothing.
#[test]
fn three_hundred_small_commits_compact_to_files_of_the_target_size() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let files: Vec<String> = (0..300u64)
        .map(|i| {
            let p = dir.path().join(format!("f{i:03}.csv"));
            let mut text = String::from("id,d,v,note\n");
            for j in 0..40 {
                let k = i * 40 + j;
                text.push_str(&format!(
                    "{k},{}-06-{:02},{},note {k} of the compaction test\n",
                    2001 + k % 5,
                    1 + k % 28,
                    k * 7
                ));
            }
            std::fs::write(&p, text).unwrap();
            p.to_string_lossy().into_owned()
        })
        .collect();
    produce_files(&home, &files);
    let c = sluice(
        &home,
        &["consume", "--table", "t", "--once", "--rotate-rows", "1"],
    );
    ok(&c);
    assert!(stderr(&c).contains("300 commit(s)"), "{}", stderr(&c));
    let table = home.join("lake/t");
    let sum: u64 = (0..12_000u64).map(|k| k * 7).sum();
    let line = format!("12000 12000 {sum}");
    let want = format!("{line}\n{line}\n{line}");
    assert_eq!(three_readers(&table), want);
    assert_eq!(data_files(&table), 1500);
    let target = 16 * 1024u64;
    let out = ok(&sluice(
        &home,
        &["compact", "--table", "t", "--target-size", "16KiB"],
    ));
    assert!(
        out.contains("1500 file(s)") && out.contains("in 5 partition(s)"),
        "{out}"
    );
    let parts = ok(&sluice(&home, &["catalog", "partitions", "t"]));
    let mut total = 0;
    for l in parts.lines().skip(1) {
        let f: Vec<&str> = l.split('\t').collect();
        let (files, bytes): (u64, u64) = (f[1].parse().unwrap(), f[3].parse().unwrap());
        assert!(files <= bytes.div_ceil(target) + 1, "{parts}");
        total += files;
    }
    assert!(total < 100, "{parts}");
    assert_eq!(three_readers(&table), want);
    // Nothing left worth rewriting.
    let again = ok(&sluice(
        &home,
        &["compact", "--table", "t", "--target-size", "16KiB"],
    ));
    assert!(again.contains("nothing to compact"), "{again}");
    // The exactly-once records survive: the same files again add nothing.
    produce_files(&home, &files);
    let c = sluice(&home, &["consume", "--table", "t", "--once"]);
    ok(&c);
    assert!(
        stderr(&c).contains("0 written, 0 quarantined, 12000 duplicate(s) dropped"),
        "{}",
        stderr(&c)
    );
    assert_eq!(three_readers(&table), want);
}

/// Timestamps without zone are Delta's `timestamp_ntz` (protocol 3/7 with that feature only),
/// with zone `timestamp`; the readers get both types and values back, and a filter on the exact
/// largest value finds its row (the log's maximum is rounded up to the millisecond, never down).
#[test]
fn timestamps_with_and_without_zone_read_back_in_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let csv = dir.path().join("ts.csv");
    std::fs::write(
        &csv,
        "id,ts,at,v\n1,2024-01-02 03:04:05.123456,2024-01-02T03:04:05Z,1.5\n\
         2,2023-05-06 07:08:09,2023-05-06T07:08:09+02:00,2.5\n3,,,\n",
    )
    .unwrap();
    ok(&sluice(
        &home,
        &[
            "run",
            csv.to_str().unwrap(),
            "--table",
            "n",
            "--partition-by",
            "year(ts)",
        ],
    ));
    let v0 =
        std::fs::read_to_string(home.join("lake/n/_delta_log/00000000000000000000.json")).unwrap();
    assert!(
        v0.contains(r#""readerFeatures":["timestampNtz"]"#)
            && v0.contains(r#"\"type\":\"timestamp_ntz\""#),
        "{v0}"
    );
    let script = r#"
import os, sys, duckdb, polars as pl, deltalake
p = sys.argv[1]
con = duckdb_connect("delta")
print(*con.execute(f"SELECT count(*), max(ts)::VARCHAR, max(\"at\")::VARCHAR, sum(v) FROM delta_scan('{p}')").fetchone(), sep="|")
print(*con.execute(f"SELECT count(*) FROM delta_scan('{p}') WHERE ts >= TIMESTAMP '2024-01-02 03:04:05.123456'").fetchone())
r = pl.scan_delta(p).select(pl.len(), pl.col("ts").max(), pl.col("at").max()).collect().row(0)
print(r[0], r[1].isoformat(), r[2].isoformat(), sep="|")
t = deltalake.DeltaTable(p).to_pyarrow_table()
print(t.num_rows, t.schema.field("ts").type, t.schema.field("at").type, sep="|", flush=True)
con.close()
os._exit(0)
"#;
    let got = common::python(
        script,
        &[home.join("lake/n").to_str().unwrap()],
        "duckdb (delta extension), polars and deltalake",
    );
    assert_eq!(
        got,
        "3|2024-01-02 03:04:05.123456|2024-01-02 03:04:05+00|4.0\n\
         1\n\
         3|2024-01-02T03:04:05.123456|2024-01-02T03:04:05+00:00\n\
         3|timestamp[us]|timestamp[us, tz=UTC]"
    );
}

/// A following consumer compacts partitions with many small files in the background while it
/// keeps consuming; rows stay exactly once for every reader.
#[test]
fn a_following_consumer_compacts_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let files = tiny_files(dir.path(), 40);
    produce_files(&home, &files);
    let child = common::command(
        &home,
        &[
            "consume",
            "--table",
            "t",
            "--rotate-rows",
            "1",
            "--auto-compact-files",
            "4",
            "--auto-compact-every",
            "1",
        ],
    )
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // Bounded wait until every partition holds at most 4 live files (8 were committed to each).
    let mut compacted = false;
    for _ in 0..300 {
        let parts = ok(&sluice(&home, &["catalog", "partitions", "t"]));
        let counts: Vec<u64> = parts
            .lines()
            .skip(1)
            .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
            .collect();
        let rows: u64 = parts
            .lines()
            .skip(1)
            .map(|l| l.split('\t').nth(2).unwrap().parse::<u64>().unwrap())
            .sum();
        if counts.len() == 5 && rows == 40 && counts.iter().all(|c| *c <= 4) {
            compacted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(compacted, "partitions were not compacted: {err}");
    assert!(out.status.success(), "{err}");
    assert!(err.contains("background compaction(s)"), "{err}");
    let sum: usize = (0..40).map(|i| i * 10).sum();
    assert_eq!(
        independent_counts(&home.join("lake/t"), "v"),
        format!("40 {sum} | 40 {sum} | 40 {sum}")
    );
}

/// "YYYY-MM-DD hh:mm:ss" of seconds since 1970 (the civil calendar of Howard Hinnant's
/// `civil_from_days`).
fn format_epoch_seconds(s: i64) -> String {
    let (days, rem) = (s.div_euclid(86_400), s.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The lines a reader script printed, after checking that the first four (DuckDB's Delta
/// extension, Polars, `deltalake`, pyarrow) each read `want`, and that one line follows them.
fn four_readers_agree<'a>(got: &'a str, want: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 5, "{got}");
    for (reader, line) in ["DuckDB", "Polars", "deltalake", "pyarrow"]
        .iter()
        .zip(&lines)
    {
        assert_eq!(*line, want, "{reader}: {got}");
    }
    lines
}

/// Columns with too many values for a dictionary are written in Parquet's delta encodings
/// (integers and timestamps DELTA_BINARY_PACKED, text DELTA_LENGTH_BYTE_ARRAY): DuckDB's Delta
/// extension, Polars, the `deltalake` package and pyarrow on the bare files read back every
/// value.
#[test]
fn columns_in_delta_encodings_read_back_in_every_reader() {
    assert_eq!(format_epoch_seconds(0), "1970-01-01 00:00:00");
    assert_eq!(format_epoch_seconds(1_709_251_199), "2024-02-29 23:59:59");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let csv = dir.path().join("wide.csv");
    let words = [
        "quick", "lazy", "fox", "dog", "river", "stone", "amber", "north",
    ];
    let mut seed = 11u64;
    let mut next = move |m: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % m
    };
    let n = 12_000i64;
    let mut text = String::from("id,part,ts,note\n");
    let (mut sum_part, mut sum_len) = (0i64, 0usize);
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    let mut notes = std::collections::HashSet::new();
    for id in 1..=n {
        let part = next(1_000_000_000) as i64;
        // Two years from 2021-01-01, to the second.
        let ts = 1_609_459_200 + next(2 * 365 * 86_400) as i64;
        let note: Vec<&str> = (0..3 + next(5))
            .map(|_| words[next(words.len() as u64) as usize])
            .collect();
        let note = format!("{} {}", note.join(" "), next(100_000));
        sum_part += part;
        sum_len += note.len();
        min_ts = min_ts.min(ts);
        max_ts = max_ts.max(ts);
        notes.insert(note.clone());
        text.push_str(&format!(
            "{id},{part},{},{note}\n",
            format_epoch_seconds(ts)
        ));
    }
    std::fs::write(&csv, text).unwrap();
    ok(&common::convert(&home, &csv, "wide", "year(ts)"));
    let script = r#"
import os, sys, glob, duckdb, polars as pl, deltalake, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
p = sys.argv[1]
con = duckdb_connect("delta")
print(*con.execute(f"SELECT count(*), sum(id), sum(part), sum(strlen(note)), count(DISTINCT note), epoch_us(min(ts)), epoch_us(max(ts)) FROM delta_scan('{p}')").fetchone())
print(*pl.scan_delta(p).select(pl.len(), pl.col("id").sum(), pl.col("part").sum(), pl.col("note").str.len_bytes().sum().alias("bytes"), pl.col("note").n_unique(), pl.col("ts").dt.epoch("us").min().alias("lo"), pl.col("ts").dt.epoch("us").max().alias("hi")).collect().row(0))
def figures(t):
    ts = t["ts"].cast(pa.int64())
    return (t.num_rows, pc.sum(t["id"]).as_py(), pc.sum(t["part"]).as_py(), pc.sum(pc.binary_length(t["note"])).as_py(), pc.count_distinct(t["note"]).as_py(), pc.min(ts).as_py(), pc.max(ts).as_py())
print(*figures(deltalake.DeltaTable(p).to_pyarrow_table()))
files = sorted(glob.glob(f"{p}/year=*/*.parquet"))
print(*figures(pa.concat_tables(pq.read_table(f, schema=pq.read_schema(files[0])) for f in files)))
enc = {}
for f in files:
    md = pq.ParquetFile(f).metadata
    for g in range(md.num_row_groups):
        for c in range(md.num_columns):
            col = md.row_group(g).column(c)
            enc.setdefault(col.path_in_schema, set()).update(col.encodings)
print(" ".join(f"{k}={'+'.join(sorted(v))}" for k, v in sorted(enc.items())), flush=True)
con.close()
os._exit(0)
"#;
    let got = common::python(
        script,
        &[home.join("lake/wide").to_str().unwrap()],
        "duckdb (delta extension), polars, deltalake and pyarrow",
    );
    let want = format!(
        "{n} {} {sum_part} {sum_len} {} {} {}",
        n * (n + 1) / 2,
        notes.len(),
        min_ts * 1_000_000,
        max_ts * 1_000_000
    );
    let lines = four_readers_agree(&got, &want);
    // What the readers read: the files really are in those encodings.
    assert_eq!(
        lines[4],
        "id=DELTA_BINARY_PACKED+RLE note=DELTA_LENGTH_BYTE_ARRAY+RLE \
         part=DELTA_BINARY_PACKED+RLE ts=DELTA_BINARY_PACKED+RLE",
        "{got}"
    );
}

/// Columns that keep their dictionary (dates, integers, floats, timestamps and text, with
/// nulls, two data pages per file) are encoded by sluice itself: DuckDB's Delta extension,
/// Polars, the `deltalake` package and pyarrow read back every value, pyarrow finds them
/// dictionary-encoded, and each row group's statistics (min, max, nulls) are those pyarrow
/// computes from the values it reads.
#[test]
fn dictionary_columns_read_back_with_true_statistics_in_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let csv = dir.path().join("dict.csv");
    let tags = [
        "north",
        "süd",
        "ouest",
        "東",
        "amber stone",
        "river",
        "",
        "lazy fox",
        "dog",
    ];
    let mut seed = 7u64;
    let mut next = move |m: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % m
    };
    let n = 50_000i64;
    let mut text = String::from("id,day,qty,price,at,tag\n");
    let (mut sum_qty, mut tagged) = (0i64, 0i64);
    let mut days = std::collections::BTreeSet::new();
    for id in 1..=n {
        // Two years from 2021-01-01: two partitions of about 25,000 rows, two pages each.
        let day = next(730) as i64;
        let qty = 1 + next(50) as i64;
        let price = match next(40) {
            0 => "-0.0".to_string(),
            1 => "0.0".to_string(),
            2 => String::new(),
            k => format!("{}.{:02}", k * 7, k),
        };
        let at = 1_609_459_200 + next(300) as i64 * 3600;
        let tag = tags[next(tags.len() as u64) as usize];
        sum_qty += qty;
        tagged += i64::from(!tag.is_empty());
        days.insert(day);
        text.push_str(&format!(
            "{id},{},{qty},{price},{},{tag}\n",
            &format_epoch_seconds(1_609_459_200 + day * 86_400)[..10],
            format_epoch_seconds(at)
        ));
    }
    std::fs::write(&csv, text).unwrap();
    ok(&common::convert(&home, &csv, "dict", "year(day)"));
    let script = r#"
import os, sys, glob, duckdb, polars as pl, deltalake, pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
p = sys.argv[1]
con = duckdb_connect("delta")
print(*con.execute(f"SELECT count(*), sum(id), sum(qty), count(tag), count(DISTINCT day), count(DISTINCT tag) FROM delta_scan('{p}')").fetchone())
print(*pl.scan_delta(p).select(pl.len(), pl.col("id").sum(), pl.col("qty").sum(), pl.col("tag").count().alias("tagged"), pl.col("day").n_unique(), pl.col("tag").drop_nulls().n_unique().alias("tags")).collect().row(0))
def figures(t):
    return (t.num_rows, pc.sum(t["id"]).as_py(), pc.sum(t["qty"]).as_py(), pc.count(t["tag"]).as_py(), pc.count_distinct(t["day"]).as_py(), pc.count_distinct(t["tag"]).as_py())
print(*figures(deltalake.DeltaTable(p).to_pyarrow_table()))
files = sorted(glob.glob(f"{p}/year=*/*.parquet"))
print(*figures(pa.concat_tables(pq.read_table(f, schema=pq.read_schema(files[0])) for f in files)))
wrong = []
for f in files:
    pf = pq.ParquetFile(f)
    md = pf.metadata
    for g in range(md.num_row_groups):
        data = pf.read_row_group(g)
        for c in range(md.num_columns):
            col = md.row_group(g).column(c)
            name = col.path_in_schema
            if name == "id":
                continue
            if "RLE_DICTIONARY" not in col.encodings:
                wrong.append(f"{name}: {col.encodings}")
            v = data[name]
            if pa.types.is_date32(v.type):
                v = v.cast(pa.int32())
            elif pa.types.is_timestamp(v.type):
                v = v.cast(pa.int64())
            elif pa.types.is_string(v.type) or pa.types.is_large_string(v.type):
                v = v.cast(pa.binary())
            mm = pc.min_max(v)
            st = col.statistics
            got = (st.min_raw, st.max_raw, st.null_count)
            want = (mm["min"].as_py(), mm["max"].as_py(), v.null_count)
            if got != want:
                wrong.append(f"{name}: statistics {got}, values {want}")
print("statistics", "true" if not wrong else wrong, len(files), flush=True)
con.close()
os._exit(0)
"#;
    let got = common::python(
        script,
        &[home.join("lake/dict").to_str().unwrap()],
        "duckdb (delta extension), polars, deltalake and pyarrow",
    );
    let want = format!(
        "{n} {} {sum_qty} {tagged} {} {}",
        n * (n + 1) / 2,
        days.len(),
        tags.len() - 1
    );
    let lines = four_readers_agree(&got, &want);
    assert_eq!(lines[4], "statistics true 2", "{got}");
}
