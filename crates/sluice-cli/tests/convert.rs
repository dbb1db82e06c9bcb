//! `sluice convert`: every source format, recounted by DuckDB's Delta extension against the
//! source; re-runs and SIGKILLs that never land a row twice; hostile sources named in errors.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

mod common;
use common::{command, convert, data_files, expected_years, ok, sluice};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The same per-year figures, from the Delta table at `table_dir` as DuckDB's Delta extension
/// reads it, plus a last line "total distinct_ids".
fn duckdb_years(table_dir: &Path) -> String {
    let script = r#"
import os, sys, duckdb
con = duckdb_connect("delta")
t = f"delta_scan('{sys.argv[1]}')"
for r in con.execute(f"SELECT year, count(*), sum(amount_cents), min(id), max(id) FROM {t} GROUP BY year ORDER BY year").fetchall():
    print(*r)
print(*con.execute(f"SELECT count(*), count(DISTINCT id) FROM {t}").fetchone(), flush=True)
con.close()
os._exit(0)
"#;
    common::python(
        script,
        &[table_dir.to_str().unwrap()],
        "duckdb with its delta extension",
    )
}

/// Writes the variants of a CSV: gzip, zstd, JSON lines (also gzipped) and Parquet, with
/// pyarrow; returns their paths.
fn variants(csv: &Path) -> Vec<PathBuf> {
    let script = r#"
import sys, json, pyarrow as pa, pyarrow.compute, pyarrow.csv as pc, pyarrow.parquet as pq
src = sys.argv[1]
stem = src[:-4]
raw = open(src, "rb").read()
for ext, codec in (("csv.gz", "gzip"), ("csv.zst", "zstd")):
    with pa.CompressedOutputStream(f"{stem}.{ext}", codec) as f:
        f.write(raw)
t = pc.read_csv(src, parse_options=pc.ParseOptions(newlines_in_values=True),
                convert_options=pc.ConvertOptions(column_types={"day": pa.string()}))
lines = "".join(json.dumps(r) + "\n" for r in t.to_pylist()).encode()
open(f"{stem}.jsonl", "wb").write(lines)
with pa.CompressedOutputStream(f"{stem}.jsonl.gz", "gzip") as f:
    f.write(lines)
t = t.set_column(1, "day", pa.compute.cast(pa.compute.strptime(t["day"], "%Y-%m-%d", "s"), pa.date32()))
pq.write_table(t, f"{stem}.parquet", row_group_size=700)
"#;
    common::python(script, &[csv.to_str().unwrap()], "pyarrow");
    let stem = csv.to_str().unwrap().trim_end_matches(".csv").to_string();
    ["csv.gz", "csv.zst", "jsonl", "jsonl.gz", "parquet"]
        .iter()
        .map(|e| PathBuf::from(format!("{stem}.{e}")))
        .collect()
}

#[test]
fn every_format_lands_exactly_and_a_rerun_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (csv, _) = sluice_testkit::fixtures::write_events_csv(dir.path(), "events.csv", 5_000, 1);
    let mut sources = vec![csv.clone()];
    sources.extend(variants(&csv));
    let want = format!("{}\n5000 5000", expected_years(5_000, 1));
    for (i, src) in sources.iter().enumerate() {
        let table = format!("t{i}");
        let out = convert(&home, src, &table, "year(day)");
        ok(&out);
        assert!(
            stderr(&out).contains("5000 rows read (5000 written, 0 quarantined"),
            "{}: {}",
            src.display(),
            stderr(&out)
        );
        let got = duckdb_years(&home.join("lake").join(&table));
        assert_eq!(got, want, "{}", src.display());
        // Every format gives the same columns and types.
        let schema = ok(&sluice(&home, &["catalog", "schema", &table]));
        assert!(
            schema.contains("id ") && schema.contains("int64") && schema.contains("date"),
            "{schema}"
        );
    }
    // Again: every source is known as converted, nothing is read or added.
    let again = convert(&home, &csv, "t0", "year(day)");
    ok(&again);
    assert!(
        stderr(&again).contains(
            "1 source(s) (1 converted before, 0 failed), 0 piece(s) committed before, 0 rows read"
        ),
        "{}",
        stderr(&again)
    );
    assert_eq!(duckdb_years(&home.join("lake/t0")), want);
}

#[test]
fn a_directory_of_mixed_sources_with_bad_rows_lands_once_with_the_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("2024/_tmp")).unwrap();
    let (a, _) = sluice_testkit::fixtures::write_events_csv(&data, "a.csv", 3_000, 1);
    let (b, _) = sluice_testkit::fixtures::write_events_csv(&data, "b.csv", 2_000, 3_001);
    variants(&b);
    for e in ["b.csv", "b.csv.zst", "b.jsonl", "b.jsonl.gz", "b.parquet"] {
        std::fs::remove_file(data.join(e)).unwrap();
    }
    std::fs::rename(data.join("b.csv.gz"), data.join("2024/b.csv.gz")).unwrap();
    // Skipped: a name starting with `_`.
    std::fs::copy(&a, data.join("2024/_tmp/a.csv")).unwrap();
    // Bad rows: quarantined with file, line and reason, the rest of the file lands.
    std::fs::write(
        data.join("c.csv"),
        "id,day,amount_cents,note\n90001,2020-01-01,5,x\n90002,2020-01-02,five,y\n90003,2020-01-03,7\n90004,2020-01-04,9,z\n",
    )
    .unwrap();
    let args = [
        "convert",
        data.to_str().unwrap(),
        "--table",
        "events",
        "--partition-by",
        "year(day)",
        "--rotate-rows",
        "700",
    ];
    let out = sluice(&home, &args);
    ok(&out);
    assert!(
        stderr(&out).contains("3 source(s) (0 converted before, 0 failed), 0 piece(s) committed before, 5004 rows read (5002 written, 2 quarantined"),
        "{}",
        stderr(&out)
    );
    let q = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT source, line, reason FROM quarantine ORDER BY line",
            "--format",
            "csv",
        ],
    ));
    let c = data.join("c.csv");
    assert!(
        q.contains(&format!(
            "{},3,\"column \"\"amount_cents\"\": cannot parse \"\"five\"\" as int64\"",
            c.display()
        )),
        "{q}"
    );
    assert!(
        q.contains(&format!("{},4,\"expected 4 fields, found 3\"", c.display())),
        "{q}"
    );
    let n = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(n, "n,ids\n5002,5002\n");
    // A second run reads nothing.
    let again = sluice(&home, &args);
    ok(&again);
    assert!(
        stderr(&again).contains(
            "3 source(s) (3 converted before, 0 failed), 0 piece(s) committed before, 0 rows read"
        ),
        "{}",
        stderr(&again)
    );
    let lines = duckdb_years(&home.join("lake/events"));
    assert!(lines.ends_with("5002 5002"), "{lines}");
}

#[test]
fn convert_killed_at_random_points_resumes_and_lands_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    let files = 6u64;
    let total = common::write_event_parts(&data, files, 200_000);
    let args = [
        "convert",
        data.to_str().unwrap(),
        "--table",
        "events",
        "--partition-by",
        "year(day)",
        "--rotate-rows",
        "20000",
    ];
    // A pseudo-random schedule, fixed so that a failure can be replayed.
    let mut seed = 0x5eed_u64;
    let mut kills = 0;
    for _ in 0..5 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Within the first run's time (about 1.3 s for the 1.2 million rows in a debug build):
        // a schedule of 100-1,600 ms missed every run once convert got that fast.
        let after = Duration::from_millis(50 + (seed >> 33) % 600);
        let mut child = command(&home, &args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(after);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        // Readable and exact (no row twice) after every kill.
        let lines = duckdb_years(&home.join("lake/events"));
        let last = lines.lines().last().unwrap_or("0 0").to_string();
        let (n, ids) = last.split_once(' ').unwrap();
        assert_eq!(n, ids, "a row landed twice after a kill: {lines}");
        assert!(n.parse::<u64>().unwrap() <= total);
    }
    assert!(kills > 0, "no run was killed: the schedule is too slow");
    let out = sluice(&home, &args);
    ok(&out);
    let want = format!("{}\n{total} {total}", expected_years(total, 1));
    assert_eq!(duckdb_years(&home.join("lake/events")), want);
    // Once more: nothing read.
    let again = sluice(&home, &args);
    ok(&again);
    assert!(
        stderr(&again).contains(&format!("{files} source(s) ({files} converted before")),
        "{}",
        stderr(&again)
    );
}

#[test]
fn hostile_sources_are_named_and_nothing_committed_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (good, _) = sluice_testkit::fixtures::write_events_csv(dir.path(), "good.csv", 1_000, 1);
    let into_events = |src: &Path| convert(&home, src, "events", "year(day)");
    ok(&into_events(&good));
    let count = || {
        ok(&sluice(
            &home,
            &[
                "query",
                "SELECT count(*) AS n FROM events",
                "--format",
                "csv",
            ],
        ))
    };
    assert_eq!(count(), "n\n1000\n");
    let failing = |src: &Path, what: &str| {
        let o = into_events(src);
        assert!(!o.status.success(), "{} was accepted", src.display());
        let e = stderr(&o);
        assert!(
            e.contains(&src.display().to_string()) && e.contains(what),
            "{}: expected {what:?} in\n{e}",
            src.display()
        );
    };
    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    failing(&empty, "file is empty");
    let header_only = dir.path().join("header-only.csv");
    std::fs::write(&header_only, "id,day,amount_cents,note\n").unwrap();
    failing(&header_only, "a header but no rows");
    let wrong_header = dir.path().join("wrong.csv");
    std::fs::write(
        &wrong_header,
        "id,when,amount_cents,note\n1,2020-01-01,3,x\n",
    )
    .unwrap();
    failing(
        &wrong_header,
        "the header lacks day, which table events is partitioned by",
    );
    // A gzip cut in the middle: the error names it.
    let (more, _) =
        sluice_testkit::fixtures::write_events_csv(dir.path(), "more.csv", 20_000, 5_001);
    let gz = variants(&more)[0].clone();
    let bytes = std::fs::read(&gz).unwrap();
    let cut = dir.path().join("cut.csv.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    failing(&cut, "cut.csv.gz");
    // A Parquet file without the column the table is partitioned by.
    let pq = dir.path().join("other.parquet");
    common::python(
        "import sys, pyarrow as pa, pyarrow.parquet as pq\npq.write_table(pa.table({'id': [1], 'colour': ['red']}), sys.argv[1])",
        &[pq.to_str().unwrap()],
        "pyarrow",
    );
    failing(
        &pq,
        "the file lacks day, which table events is partitioned by",
    );
    let empty_dir = dir.path().join("nothing");
    std::fs::create_dir_all(&empty_dir).unwrap();
    failing(&empty_dir, "no CSV, JSON-lines or Parquet files found");
    failing(&dir.path().join("missing.csv"), "no such file");
    // Several sources, one bad: the good ones land, the bad one is named, the run fails.
    let (late, _) =
        sluice_testkit::fixtures::write_events_csv(dir.path(), "late.csv", 500, 100_001);
    let o = sluice(
        &home,
        &[
            "convert",
            late.to_str().unwrap(),
            empty.to_str().unwrap(),
            "--table",
            "events",
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("failed: {}", empty.display())),
        "{}",
        stderr(&o)
    );
    // Everything committed before is still there, and the truncated gzip gave only whole rows
    // (each once).
    let n = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) - count(DISTINCT id) AS twice, sum(CASE WHEN id <= 1000 THEN 1 ELSE 0 END) AS good, sum(CASE WHEN id > 100000 THEN 1 ELSE 0 END) AS late FROM events",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(n, "twice,good,late\n0,1000,500\n");
}

#[test]
fn partition_specs_hour_several_keys_and_named_keys() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // Flights: a `year` column of its own, a zoned departure time, a region.
    let mut csv = String::from("id,year,time_hour,region,delay\n");
    let mut want = std::collections::BTreeMap::<(u32, &str), (u64, i64)>::new();
    let mut hours = std::collections::BTreeMap::<(u32, u32, u32, u32), u64>::new();
    for i in 1..=3_000u32 {
        let (y, m, d, h) = (2020 + i % 2, 1 + i % 9, 10 + i % 18, i % 24);
        let region = ["eu", "us", "ap"][(i % 3) as usize];
        csv.push_str(&format!(
            "{i},{},{y}-{m:02}-{d:02}T{h:02}:15:00Z,{region},{}\n",
            2013 + i % 3,
            i % 50
        ));
        let e = want.entry((y, region)).or_default();
        e.0 += 1;
        e.1 += (2013 + i % 3) as i64;
        *hours.entry((y, m, d, h)).or_default() += 1;
    }
    let src = dir.path().join("flights.csv");
    std::fs::write(&src, csv).unwrap();
    // `year(time_hour)` would add a second `year`: refused, with the spelling that works.
    let o = convert(&home, &src, "flights", "year(time_hour)");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("year(time_hour) AS time_hour_year"),
        "{}",
        stderr(&o)
    );
    ok(&convert(
        &home,
        &src,
        "flights",
        "year(time_hour) AS dep_year, region",
    ));
    let first = std::fs::read_dir(home.join("lake/flights"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("dep_year="));
    assert!(first.is_some());
    // The hour transform, through the queue (`run`), with its keys named.
    ok(&sluice(
        &home,
        &[
            "run",
            src.to_str().unwrap(),
            "--table",
            "by_hour",
            "--partition-by",
            "hour(time_hour) AS dep",
        ],
    ));
    let script = r#"
import os, sys, duckdb
con = duckdb_connect("delta")
for r in con.execute(f"SELECT dep_year, region, count(*), sum(year) FROM delta_scan('{sys.argv[1]}') GROUP BY ALL ORDER BY ALL").fetchall():
    print(*r)
print("--")
for r in con.execute(f"SELECT dep_year, dep_month, dep_day, dep_hour, count(*) FROM delta_scan('{sys.argv[2]}') GROUP BY ALL ORDER BY ALL").fetchall():
    print(*r)
con.close()
os._exit(0)
"#;
    let got = common::python(
        script,
        &[
            home.join("lake/flights").to_str().unwrap(),
            home.join("lake/by_hour").to_str().unwrap(),
        ],
        "duckdb with its delta extension",
    );
    let mut expect: Vec<String> = want
        .iter()
        .map(|((y, r), (n, s))| format!("{y} {r} {n} {s}"))
        .collect();
    expect.push("--".into());
    expect.extend(
        hours
            .iter()
            .map(|((y, m, d, h), n)| format!("{y} {m} {d} {h} {n}")),
    );
    assert_eq!(got, expect.join("\n"));
}

#[test]
fn produce_and_run_read_the_same_sources_through_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Three id ranges, one per format: gzipped CSV, JSON lines, Parquet.
    let mut want_rows = 0;
    for (i, keep) in ["csv.zst", "jsonl", "parquet"].iter().enumerate() {
        let first = 1 + i as u64 * 2_000;
        let (csv, _) = sluice_testkit::fixtures::write_events_csv(
            &data,
            &format!("part{i}.csv"),
            2_000,
            first,
        );
        for v in variants(&csv) {
            if !v.to_str().unwrap().ends_with(&format!(".{keep}")) {
                std::fs::remove_file(v).unwrap();
            }
        }
        std::fs::remove_file(csv).unwrap();
        want_rows += 2_000;
    }
    let out = sluice(
        &home,
        &[
            "run",
            data.to_str().unwrap(),
            "--table",
            "events",
            "--partition-by",
            "year(day)",
        ],
    );
    ok(&out);
    let want = format!("{}\n{want_rows} {want_rows}", expected_years(want_rows, 1));
    assert_eq!(duckdb_years(&home.join("lake/events")), want);
    // Produced again: every chunk is recognised, nothing is added.
    ok(&sluice(
        &home,
        &["produce", data.to_str().unwrap(), "--table", "events"],
    ));
    let again = sluice(&home, &["consume", "--table", "events", "--once"]);
    ok(&again);
    assert!(
        stderr(&again).contains(&format!("{want_rows} duplicate(s) dropped")),
        "{}",
        stderr(&again)
    );
    assert_eq!(duckdb_years(&home.join("lake/events")), want);
}

/// `produce` reads a source to its end before it sends any of it: a source that fails part-way
/// sends nothing, and its complete version lands once.
#[test]
fn produce_sends_nothing_of_a_source_that_fails_part_way() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    sluice_testkit::fixtures::write_events_csv(&data, "a.csv", 3_000, 1_000_001);
    let (big, _) = sluice_testkit::fixtures::write_events_csv(dir.path(), "big.csv", 100_000, 1);
    let gz = variants(&big)[0].clone();
    let whole = std::fs::read(&gz).unwrap();
    let cut = data.join("b-big.csv.gz");
    std::fs::write(&cut, &whole[..whole.len() * 4 / 5]).unwrap();
    let produce = || {
        sluice(
            &home,
            &[
                "produce",
                data.to_str().unwrap(),
                "--table",
                "events",
                "--partition-by",
                "year(day)",
            ],
        )
    };
    let first = produce();
    assert!(!first.status.success());
    assert!(
        stderr(&first).contains("b-big.csv.gz"),
        "{}",
        stderr(&first)
    );
    ok(&sluice(&home, &["consume", "--table", "events", "--once"]));
    let count = || {
        ok(&sluice(
            &home,
            &[
                "query",
                "SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(CASE WHEN id <= 100000 THEN 1 ELSE 0 END) AS cut FROM events",
                "--format",
                "csv",
            ],
        ))
    };
    assert_eq!(count(), "n,ids,cut\n3000,3000,0\n");
    // The complete file: produced with the rest again, every row once.
    std::fs::write(&cut, &whole).unwrap();
    ok(&produce());
    ok(&sluice(&home, &["consume", "--table", "events", "--once"]));
    assert_eq!(count(), "n,ids,cut\n103000,103000,100000\n");
}

#[test]
fn a_source_that_fails_part_way_contributes_no_rows_and_its_complete_version_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // A good source, then about 28 MB of CSV (four 8 MiB pieces) gzipped and cut at 80%, then
    // another good source: the cut one fails after many of its files were written.
    let (big, _) = sluice_testkit::fixtures::write_events_csv(dir.path(), "big.csv", 500_000, 1);
    let gz = variants(&big)[0].clone();
    let whole = std::fs::read(&gz).unwrap();
    let cut = data.join("b-big.csv.gz");
    std::fs::write(&cut, &whole[..whole.len() * 4 / 5]).unwrap();
    sluice_testkit::fixtures::write_events_csv(&data, "a.csv", 3_000, 1_000_001);
    sluice_testkit::fixtures::write_events_csv(&data, "c.csv", 2_000, 2_000_001);
    let args = [
        "convert",
        data.to_str().unwrap(),
        "--table",
        "events",
        "--partition-by",
        "year(day)",
        "--rotate-rows",
        "40000",
    ];
    let first = sluice(&home, &args);
    assert!(!first.status.success());
    let e = stderr(&first);
    assert!(e.contains("b-big.csv.gz"), "{e}");
    assert!(
        e.contains("3 source(s) (0 converted before, 1 failed)") && e.contains("(5000 written"),
        "{e}"
    );
    let count = || {
        ok(&sluice(
            &home,
            &[
                "query",
                "SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(CASE WHEN id <= 500000 THEN 1 ELSE 0 END) AS cut FROM events",
                "--format",
                "csv",
            ],
        ))
    };
    // The good sources landed whole; nothing of the cut one, though a third of the file's
    // rows had been written to files before it failed.
    assert_eq!(count(), "n,ids,cut\n5000,5000,0\n");
    let table = home.join("lake/events");
    // The files it staged were removed: every data file is one the log names.
    assert_eq!(data_files(&table).len(), common::files_in_log(&table).len());
    // Again: the same failure, nothing added.
    let second = sluice(&home, &args);
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("3 source(s) (2 converted before, 1 failed)"),
        "{}",
        stderr(&second)
    );
    assert_eq!(count(), "n,ids,cut\n5000,5000,0\n");
    // The complete file arrives under the same name: it lands once and in full.
    std::fs::write(&cut, &whole).unwrap();
    let third = sluice(&home, &args);
    ok(&third);
    assert_eq!(count(), "n,ids,cut\n505000,505000,500000\n");
    assert_eq!(data_files(&table).len(), common::files_in_log(&table).len());
    assert_eq!(common::duckdb_count(&table, "id"), (505_000, 505_000));
}

/// Without `--partition-by`, a new table is unpartitioned (a date column makes no partition of
/// its own), an existing table keeps its partitioning, and a spec that disagrees with an
/// existing table's is refused before anything is written.
#[test]
fn without_a_partition_spec_a_table_is_unpartitioned_or_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // A lookup table: no date column at all.
    let lookup = dir.path().join("lookup.csv");
    let mut csv = String::from("code,name,rate\n");
    for i in 0..300 {
        csv.push_str(&format!("C{i:04},name {i},{}.25\n", i % 7));
    }
    std::fs::write(&lookup, csv).unwrap();
    ok(&sluice(
        &home,
        &["convert", lookup.to_str().unwrap(), "--table", "lookup"],
    ));
    let files = data_files(&home.join("lake/lookup"));
    assert!(
        !files.is_empty() && files.iter().all(|f| !f.contains('/')),
        "{files:?}"
    );
    assert_eq!(
        common::duckdb_count(&home.join("lake/lookup"), "code"),
        (300, 300)
    );
    // JSON lines with a date column: still unpartitioned without a spec.
    let (events, _) =
        sluice_testkit::fixtures::write_events_csv(dir.path(), "events.csv", 2_000, 1);
    let jsonl = variants(&events)
        .into_iter()
        .find(|p| p.to_str().unwrap().ends_with(".jsonl"))
        .unwrap();
    ok(&sluice(
        &home,
        &["convert", jsonl.to_str().unwrap(), "--table", "events"],
    ));
    let files = data_files(&home.join("lake/events"));
    assert!(
        !files.is_empty() && files.iter().all(|f| !f.contains('/')),
        "{files:?}"
    );
    assert_eq!(
        common::duckdb_count(&home.join("lake/events"), "id"),
        (2000, 2000)
    );
    // More rows for the lookup table: it stays unpartitioned.
    let more = dir.path().join("more.csv");
    let mut csv = String::from("code,name,rate\n");
    for i in 300..400 {
        csv.push_str(&format!("C{i:04},name {i},{}.5\n", i % 7));
    }
    std::fs::write(&more, csv).unwrap();
    ok(&sluice(
        &home,
        &["convert", more.to_str().unwrap(), "--table", "lookup"],
    ));
    assert!(
        data_files(&home.join("lake/lookup"))
            .iter()
            .all(|f| !f.contains('/'))
    );
    assert_eq!(
        common::duckdb_count(&home.join("lake/lookup"), "code"),
        (400, 400)
    );
    // A spec that disagrees with the table's: refused, nothing written.
    let refused = sluice(
        &home,
        &[
            "convert",
            more.to_str().unwrap(),
            "--table",
            "lookup",
            "--partition-by",
            "code",
        ],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("lookup") && err.contains("code"), "{err}");
    assert_eq!(
        common::duckdb_count(&home.join("lake/lookup"), "code"),
        (400, 400)
    );
    // A partitioned table keeps its partitioning when a later run names none.
    ok(&convert(&home, &events, "by_year", "year(day)"));
    let (later, _) =
        sluice_testkit::fixtures::write_events_csv(dir.path(), "later.csv", 500, 2_001);
    ok(&sluice(
        &home,
        &["convert", later.to_str().unwrap(), "--table", "by_year"],
    ));
    let files = data_files(&home.join("lake/by_year"));
    assert!(files.iter().all(|f| f.starts_with("year=")), "{files:?}");
    assert_eq!(
        common::duckdb_count(&home.join("lake/by_year"), "id"),
        (2500, 2500)
    );
}

/// An unterminated quote at the end of a CSV file and a truncated Parquet file fail as wholes:
/// named, nothing of them committed (the good source beside them lands); their complete versions
/// afterwards land once.
#[test]
fn an_unterminated_quote_and_a_truncated_parquet_commit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    sluice_testkit::fixtures::write_events_csv(&data, "a-good.csv", 1_000, 1);
    let (quote, _) =
        sluice_testkit::fixtures::write_events_csv(&data, "b-quote.csv", 1_000, 10_001);
    let whole_quote = std::fs::read(&quote).unwrap();
    let mut cut = whole_quote.clone();
    cut.extend_from_slice(b"11001,2021-01-01,5,\"never closed\n");
    std::fs::write(&quote, &cut).unwrap();
    let (pq_csv, _) =
        sluice_testkit::fixtures::write_events_csv(dir.path(), "c.csv", 1_000, 20_001);
    let pq = variants(&pq_csv)
        .into_iter()
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .unwrap();
    let whole_pq = std::fs::read(&pq).unwrap();
    let trunc = data.join("c-trunc.parquet");
    std::fs::write(&trunc, &whole_pq[..whole_pq.len() * 7 / 10]).unwrap();
    let args = [
        "convert",
        data.to_str().unwrap(),
        "--table",
        "events",
        "--partition-by",
        "year(day)",
    ];
    let out = sluice(&home, &args);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("b-quote.csv") && e.contains("unterminated"),
        "{e}"
    );
    assert!(e.contains("c-trunc.parquet"), "{e}");
    let count = || {
        ok(&sluice(
            &home,
            &[
                "query",
                "SELECT count(*) AS n, count(DISTINCT id) AS ids, min(id) AS lo, max(id) AS hi FROM events",
                "--format",
                "csv",
            ],
        ))
    };
    assert_eq!(count(), "n,ids,lo,hi\n1000,1000,1,1000\n");
    // The complete versions: each lands once, in full.
    std::fs::write(&quote, &whole_quote).unwrap();
    std::fs::write(&trunc, &whole_pq).unwrap();
    ok(&sluice(&home, &args));
    assert_eq!(count(), "n,ids,lo,hi\n3000,3000,1,21000\n");
}
