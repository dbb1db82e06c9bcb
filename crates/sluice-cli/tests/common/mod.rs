//! Helpers shared by the CLI test files (each test binary uses some of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `sluice --home HOME ARGS…`, run from the home's parent, ignoring the caller's SLUICE_*.
pub fn command(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.arg("--home").arg(home).args(args);
    for v in [
        "SLUICE_HOME",
        "SLUICE_QUEUE",
        "SLUICE_LAKE",
        "SLUICE_CONFIG",
    ] {
        c.env_remove(v);
    }
    c.current_dir(home.parent().expect("home has a parent"));
    c
}

/// Asserts success and returns stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("utf-8 output")
}

/// `sluice --home HOME ARGS…`, run to completion.
pub fn sluice(home: &Path, args: &[&str]) -> Output {
    command(home, args).output().expect("run sluice")
}

/// `sluice convert SRC --table TABLE --partition-by SPEC`.
pub fn convert(home: &Path, src: &Path, table: &str, spec: &str) -> Output {
    sluice(
        home,
        &[
            "convert",
            src.to_str().unwrap(),
            "--table",
            table,
            "--partition-by",
            spec,
        ],
    )
}

/// The shipped sample CSV.
pub fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/us-employment.csv")
}

/// (rows, sum of nonfarm) of the sample, computed straight from the CSV.
pub fn expected() -> (u64, i64) {
    let text = std::fs::read_to_string(sample()).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let idx = header.iter().position(|h| *h == "nonfarm").unwrap();
    let (mut n, mut sum) = (0, 0);
    for l in lines {
        n += 1;
        sum += l.split(',').nth(idx).unwrap().parse::<i64>().unwrap();
    }
    (n, sum)
}

/// Defined for every script [`python`] runs: a DuckDB connection with `extensions` loaded (from
/// the pinned `duckdb_extensions` wheels, no download) and no progress bar, which DuckDB
/// otherwise prints on stdout, before the figures the tests parse, once a query takes 2 s.
const PYTHON_PRELUDE: &str = r#"
def duckdb_connect(*extensions):
    import duckdb
    from duckdb_extensions import import_extension
    for e in extensions:
        import_extension(e)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    for e in extensions:
        con.execute(f"LOAD {e}")
    return con
"#;

/// Runs a Python script with the test venv's interpreter (`SLUICE_PYTHON`) and returns its
/// trimmed stdout; `needs` names the packages, for the message when they are missing. The
/// script may call `duckdb_connect` ([`PYTHON_PRELUDE`]).
pub fn python(script: &str, args: &[&str], needs: &str) -> String {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg("-c")
        .arg(format!("{PYTHON_PRELUDE}{script}"))
        .args(args)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{python} with {needs} is needed (bash .ci/run installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The main job of README: `run` of the sample into table `employment`, partitioned by
/// `year(month)`; asserts success.
pub fn run_employment(home: &Path) -> Output {
    let out = sluice(
        home,
        &[
            "run",
            sample().to_str().unwrap(),
            "--table",
            "employment",
            "--partition-by",
            "year(month)",
        ],
    );
    ok(&out);
    out
}

/// Per year of `write_events_csv(rows, first_id)`: "year count sum min_id max_id", one line
/// per year: what the lake must hold.
pub fn expected_years(rows: u64, first_id: u64) -> String {
    let mut by_year = std::collections::BTreeMap::<u64, (u64, i64, u64, u64)>::new();
    for i in first_id..first_id + rows {
        let e = by_year.entry(2019 + i % 6).or_insert((0, 0, u64::MAX, 0));
        e.0 += 1;
        e.1 += (i as i64 * 7919) % 100_000 - 20_000;
        e.2 = e.2.min(i);
        e.3 = e.3.max(i);
    }
    by_year
        .iter()
        .map(|(y, (n, s, lo, hi))| format!("{y} {n} {s} {lo} {hi}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A free port on 127.0.0.1 (bound, then released for the program under test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One plain HTTP/1.1 request to 127.0.0.1:`port`: (response head, body), or None while
/// nothing listens there. `headers` are whole lines without their CRLF.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[String],
    body: &str,
) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}

/// Who wrote each version of a Delta table's log, in order: `S` sluice (its `commitInfo` names
/// a `sluiceWriter`), `D` another writer.
pub fn writers_in_order(table: &Path) -> String {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    logs.sort();
    logs.iter()
        .map(|p| match std::fs::read_to_string(p) {
            Ok(t) if t.contains("sluiceWriter") => 'S',
            _ => 'D',
        })
        .collect()
}

/// (rows, distinct values of `key`) of the Delta table at `table_dir`, counted by DuckDB's Delta
/// extension.
pub fn duckdb_count(table_dir: &Path, key: &str) -> (u64, u64) {
    let script = r#"
import os, sys, duckdb
con = duckdb_connect("delta")
print(*con.execute(f"SELECT count(*), count(DISTINCT {sys.argv[2]}) FROM delta_scan('{sys.argv[1]}')").fetchone(), flush=True)
con.close()
os._exit(0)
"#;
    let text = python(
        script,
        &[table_dir.to_str().unwrap(), key],
        "duckdb with its delta extension",
    );
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|x| {
            x.parse()
                .unwrap_or_else(|e| panic!("DuckDB printed {text:?}, not two counts: {e}"))
        })
        .collect();
    (v[0], v[1])
}

/// `rows` events (ids from 1) produced into the queue `events` of table `events` (partitioned
/// by `year(day)`), the queue created with messages of at most `max_message_bytes`: many
/// deliveries and commits from little data.
pub fn produce_in_small_messages(dir: &Path, home: &Path, rows: u64, max_message_bytes: u32) {
    ok(&sluice(
        home,
        &[
            "queue",
            "create",
            "--queue",
            "events",
            "--max-message-bytes",
            &max_message_bytes.to_string(),
        ],
    ));
    let (csv, _) = sluice_testkit::fixtures::write_events_csv(dir, "a.csv", rows, 1);
    ok(&sluice(
        home,
        &[
            "produce",
            csv.to_str().unwrap(),
            "--table",
            "events",
            "--partition-by",
            "year(day)",
        ],
    ));
}

/// A directory `data` of `files` CSV files of `per_file` events each, ids 1 on without a gap
/// (`part-0.csv`, …); returns the number of rows.
pub fn write_event_parts(data: &Path, files: u64, per_file: u64) -> u64 {
    std::fs::create_dir_all(data).unwrap();
    for f in 0..files {
        sluice_testkit::fixtures::write_events_csv(
            data,
            &format!("part-{f}.csv"),
            per_file,
            1 + f * per_file,
        );
    }
    files * per_file
}

/// The Parquet data files under a table directory (not its log, nor `_sluice/`), relative to it,
/// sorted.
pub fn data_files(table_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![table_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("_delta_log") && !p.ends_with("_sluice") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p.strip_prefix(table_dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The data files the Delta table at `table_dir` names at its newest version, as the
/// `deltalake` package lists them (file names only), sorted.
pub fn files_in_log(table_dir: &Path) -> Vec<String> {
    let listed = python(
        "import sys, os, deltalake\nprint('\\n'.join(sorted(os.path.basename(u) for u in deltalake.DeltaTable(sys.argv[1]).file_uris())))",
        &[table_dir.to_str().unwrap()],
        "deltalake",
    );
    listed.lines().map(str::to_string).collect()
}
