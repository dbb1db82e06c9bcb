//! Exactly-once under SIGKILL, redelivery and several consumers, counted by an independent
//! reader (DuckDB). The number of kills is `SLUICE_CRASH_KILLS` (default 50; the long mode
//! runs a few hundred); the random schedule's seed is printed and can be fixed with
//! `SLUICE_CRASH_SEED`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::{command as sluice, ok};
use std::time::{Duration, Instant};

/// A small deterministic generator for kill times.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

fn seed() -> u64 {
    std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        })
}

/// Starts a command and SIGKILLs it after `after`, unless it ended first.
fn run_and_kill(mut cmd: Command, after: Duration) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + after;
    while Instant::now() < end {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    killed
}

/// (rows, distinct ids, sum of amount_cents) of the Delta table, by DuckDB's Delta extension,
/// Polars and the `deltalake` package, which must agree: what every reader of the log sees,
/// whatever orphan files the killed consumers left.
fn readers_count(lake_table: &Path) -> (u64, u64, i64) {
    let script = r#"
import os, sys, duckdb, polars as pl, deltalake, pyarrow.compute as pc
path = sys.argv[1]
con = duckdb_connect("delta")
print(*con.execute(f"SELECT count(*), count(DISTINCT id), sum(amount_cents) FROM delta_scan('{path}')").fetchone())
print(*pl.scan_delta(path).select(pl.len(), pl.col("id").n_unique(), pl.col("amount_cents").sum()).collect().row(0))
t = deltalake.DeltaTable(path).to_pyarrow_table()
print(t.num_rows, len(pc.unique(t["id"])), pc.sum(t["amount_cents"]).as_py(), flush=True)
# The Delta extension can abort the interpreter's teardown: the answers are printed, leave now.
con.close()
os._exit(0)
"#;
    let text = common::python(
        script,
        &[lake_table.to_str().unwrap()],
        "duckdb (delta extension), polars and deltalake",
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines.iter().all(|l| *l == lines[0]),
        "DuckDB, Polars and deltalake disagree: {text}"
    );
    let v: Vec<i64> = lines[0]
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0] as u64, v[1] as u64, v[2])
}

/// Counts the table with DuckDB over and over until `stop`, from another thread: whatever the
/// consumers are doing (uploading, committing, dying), a reader of the log never sees a row
/// twice or more rows than were produced. Returns the number of reads.
fn watch_readers(
    table: PathBuf,
    rows: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut reads = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            if !table.join("_delta_log/00000000000000000000.json").is_file() {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let (n, distinct) = common::duckdb_count(&table, "id");
            assert!(
                n == distinct && n <= rows,
                "a reader saw {n} rows, {distinct} distinct ids (of {rows})"
            );
            reads += 1;
        }
        reads
    })
}

/// `max_message_bytes` of 64 KiB or more puts every chunk's body in a file beside the queue's
/// database, so kills land between a body file and its row too.
fn setup(dir: &Path, rows: u64, max_message_bytes: u32) -> (PathBuf, PathBuf, i64) {
    let home = dir.join("home");
    let (csv, sum) = sluice_testkit::fixtures::write_events_csv(dir, "events.csv", rows, 1);
    // Small messages and a short visibility timeout: many chunks, quick redelivery. Killed
    // consumers run up receive counts far beyond what a real failure would; keep them out of
    // the dead-letter queue.
    ok(&sluice(
        &home,
        &[
            "queue",
            "create",
            "--queue",
            "events",
            "--visibility-timeout",
            "2",
            "--max-message-bytes",
            &max_message_bytes.to_string(),
            "--max-receive-count",
            "1000",
        ],
    )
    .output()
    .unwrap());
    (home, csv, sum)
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let kills: usize = std::env::var("SLUICE_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed = seed();
    eprintln!("crash test: {kills} kills, SLUICE_CRASH_SEED={seed}");
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().unwrap();
    // Chunks in files: 96 KiB messages, about 35 of them per production.
    let rows = 60_000;
    let (home, csv, sum) = setup(dir.path(), rows, 96 * 1024);
    let csv_s = csv.to_str().unwrap().to_string();
    let produce = |home: &Path| {
        sluice(
            home,
            &[
                "produce",
                &csv_s,
                "--table",
                "events",
                "--partition-by",
                "year(day)",
            ],
        )
    };
    // The producer is killed once early, then run to the end; then run again (all duplicates).
    run_and_kill(produce(&home), Duration::from_millis(30 + rng.next(150)));
    ok(&produce(&home).output().unwrap());
    ok(&produce(&home).output().unwrap());
    let consume = |home: &Path, once: bool| {
        let mut args = vec![
            "consume",
            "--table",
            "events",
            "--visibility-timeout",
            "2",
            "--rotate-rows",
            "400",
        ];
        if once {
            args.push("--once");
        }
        sluice(home, &args)
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_readers(home.join("lake/events"), rows + FOREIGN_ROWS, stop.clone());
    // Another writer (the `deltalake` package) appends to the same table while consumers are
    // killed: its rows land beside sluice's, and sluice's exactly-once holds beside them.
    let mut foreign = foreign_writer(&home.join("lake/events"));
    let mut paced = foreign.stdin.take();
    let mut landed_kills = 0;
    for k in 0..kills {
        // The other writer appends once every other kill, until its 20 appends are made.
        if k % 2 == 0
            && k / 2 < 20
            && let Some(w) = paced.as_mut()
        {
            use std::io::Write;
            w.write_all(b"append\n").unwrap();
            w.flush().unwrap();
        }
        // Kill anywhere from start-up to well into receiving, writing, committing and deleting.
        if run_and_kill(
            consume(&home, false),
            Duration::from_millis(20 + rng.next(600)),
        ) {
            landed_kills += 1;
        }
    }
    if let Some(mut w) = paced.take() {
        use std::io::Write;
        for _ in kills.div_ceil(2)..20 {
            w.write_all(b"append\n").unwrap();
        }
    }
    let w = foreign.wait_with_output().unwrap();
    assert!(
        w.status.success(),
        "the other writer failed: {}",
        String::from_utf8_lossy(&w.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&w.stdout).trim(), "20");
    // Its commits and sluice's interleaved: a sluice version between its first and its last.
    let order = common::writers_in_order(&home.join("lake/events"));
    let (first, last) = (order.find('D').unwrap(), order.rfind('D').unwrap());
    assert!(
        order[first..last].contains('S'),
        "seed {seed}: the other writer never wrote between sluice's commits: {order}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let reads = watcher
        .join()
        .expect("no reader saw a duplicate or an uncommitted row");
    eprintln!("crash test: the table was read {reads} time(s) while consumers were killed");
    assert!(reads > 0, "the watcher read the table at least once");
    assert_eq!(
        landed_kills, kills,
        "every consumer was still running when killed"
    );
    let out = consume(&home, true).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    ok(&out);
    let stats = ok(&sluice(&home, &["queue", "stats", "--queue", "events"])
        .output()
        .unwrap());
    assert!(stats.contains("0 visible, 0 in flight"), "{stats}");
    assert!(
        stats.contains("dead-letter queue events_dlq: 0 message(s)"),
        "{stats}"
    );
    // Body files left by a kill between a commit and its removal, swept once an hour old.
    let left = std::fs::read_dir(home.join("queue.db-bodies")).map_or(0, |d| d.count());
    eprintln!("crash test: {left} body file(s) left unreferenced by the kills");
    let (n, distinct, s) = readers_count(&home.join("lake/events"));
    let all = rows + FOREIGN_ROWS;
    assert_eq!(
        (n, distinct, s),
        (all, all, sum + FOREIGN_ROWS as i64),
        "seed {seed}; last consumer: {stderr}"
    );
    // sluice's own engine agrees.
    let q = ok(&sluice(
        &home,
        &[
            "query",
            "SELECT count(*) AS n, count(DISTINCT id) AS d FROM events",
            "--format",
            "csv",
        ],
    )
    .output()
    .unwrap());
    assert_eq!(q, format!("n,d\n{all},{all}\n"));
}

/// Rows the other writer of the crash test appends: 20 appends of 10.
const FOREIGN_ROWS: u64 = 200;

/// Starts the `deltalake` package appending [`FOREIGN_ROWS`] rows to the table at `table` (ids
/// from 10,000,000, `amount_cents` 1, in 2030), 10 at a time: one append for each line on its
/// standard input (the first once the table exists); it prints how many appends it made.
fn foreign_writer(table: &Path) -> std::process::Child {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(python)
        .arg("-c")
        .arg(
            r#"
import datetime, os, sys, time, pyarrow as pa
from deltalake import DeltaTable, write_deltalake
path = sys.argv[1]
deadline = time.time() + 120
while not os.path.exists(os.path.join(path, "_delta_log", "00000000000000000000.json")):
    if time.time() > deadline:
        sys.exit("the table never appeared")
    time.sleep(0.05)
schema = pa.schema(DeltaTable(path).schema().to_arrow())
made = 0
for k in range(20):
    if not sys.stdin.readline():
        break
    ids = [10_000_000 + k * 10 + i for i in range(10)]
    cols = {"id": ids, "day": [datetime.date(2030, 1, 1)] * 10, "amount_cents": [1] * 10,
            "note": ["from deltalake"] * 10, "year": [2030] * 10}
    batch = pa.table({f.name: pa.array(cols[f.name], f.type) for f in schema}, schema=schema)
    write_deltalake(path, batch, mode="append", partition_by=["year"])
    made += 1
print(made, flush=True)
os._exit(0)
"#,
        )
        .arg(table)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python")
}

#[test]
fn four_consumers_at_once_count_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 40_000;
    let (home, csv, sum) = setup(dir.path(), rows, 96 * 1024);
    ok(&sluice(
        &home,
        &[
            "produce",
            csv.to_str().unwrap(),
            "--table",
            "events",
            "--partition-by",
            "year(day)",
        ],
    )
    .output()
    .unwrap());
    let children: Vec<_> = (0..4)
        .map(|_| {
            sluice(
                &home,
                &[
                    "consume",
                    "--table",
                    "events",
                    "--once",
                    "--visibility-timeout",
                    "5",
                    "--rotate-rows",
                    "1000",
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut committed_by = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        if !err.contains(" 0 written") {
            committed_by += 1;
        }
    }
    assert!(committed_by >= 2, "work was shared between consumers");
    let (n, distinct, s) = readers_count(&home.join("lake/events"));
    assert_eq!((n, distinct, s), (rows, rows, sum));
    // The catalog's partition statistics add up to the same count.
    let parts = ok(&sluice(&home, &["catalog", "partitions", "events"])
        .output()
        .unwrap());
    let total: u64 = parts
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, rows, "{parts}");
}

/// A full disk under the lake stops the consumer with a clear error and deletes nothing; once
/// there is room again, everything lands exactly once.
#[test]
#[ignore = "mounts a tmpfs, so it needs root; bash .ci/run runs it"]
fn full_disk_stops_cleanly_and_loses_nothing() {
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake).unwrap();
    // 16 KiB: the 60,000 rows take about 42 KB of Parquet and 5 KB of log (in delta
    // encodings; 64 KiB held them all).
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(&lake)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a tmpfs needs root");
    let _guard = Unmount(lake.clone());
    let home = dir.path().join("home");
    let rows = 60_000;
    let (csv, sum) = sluice_testkit::fixtures::write_events_csv(dir.path(), "events.csv", rows, 1);
    let lake_s = lake.to_str().unwrap();
    ok(&sluice(
        &home,
        &[
            "--lake",
            lake_s,
            "produce",
            csv.to_str().unwrap(),
            "--table",
            "events",
            "--partition-by",
            "year(day)",
        ],
    )
    .output()
    .unwrap());
    let out = sluice(
        &home,
        &["--lake", lake_s, "consume", "--table", "events", "--once"],
    )
    .output()
    .unwrap();
    assert!(
        !out.status.success(),
        "the consumer must fail on a full disk"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No space left on device") && err.contains("failed after 7 attempts"),
        "{err}"
    );
    let stats = ok(&sluice(&home, &["queue", "stats", "--queue", "events"])
        .output()
        .unwrap());
    assert!(
        stats.contains(" 0 in flight") && !stats.contains(": 0 visible"),
        "released, nothing deleted: {stats}"
    );
    let st = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&lake)
        .status()
        .unwrap();
    assert!(st.success());
    ok(&sluice(
        &home,
        &["--lake", lake_s, "consume", "--table", "events", "--once"],
    )
    .output()
    .unwrap());
    let (n, distinct, s) = readers_count(&lake.join("events"));
    assert_eq!((n, distinct, s), (rows, rows, sum));
}

/// Parquet files under `dir`, recursively (the Delta log's checkpoints excluded).
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("_delta_log") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out
}

/// (live files, bytes) per partition from `catalog partitions`.
fn partitions(home: &Path, table: &str) -> Vec<(u64, u64)> {
    let text = ok(&sluice(home, &["catalog", "partitions", table])
        .output()
        .unwrap());
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[1].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect()
}

/// `sluice compact` SIGKILLed at random moments while a following consumer commits new rows:
/// after every kill the table reads exactly (no row twice, none that was not produced); at the
/// end every row is there once for three readers, every partition is at most
/// ceil(bytes / target) + 1 files, the exactly-once records still drop a re-produced file, and
/// `vacuum` removes the files the killed compactions uploaded but never committed.
#[test]
fn compaction_killed_at_random_points_while_a_consumer_commits() {
    let seed = seed();
    eprintln!("compaction crash test: SLUICE_CRASH_SEED={seed}");
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // Small messages: many chunks, so many small commits to compact.
    ok(&sluice(
        &home,
        &[
            "queue",
            "create",
            "--queue",
            "events",
            "--visibility-timeout",
            "5",
            "--max-message-bytes",
            "2048",
            "--max-receive-count",
            "1000",
        ],
    )
    .output()
    .unwrap());
    let table = home.join("lake/events");
    let consumer = sluice(
        &home,
        &[
            "consume",
            "--table",
            "events",
            "--visibility-timeout",
            "5",
            "--rotate-rows",
            "1",
            "--no-auto-compact",
        ],
    );
    let produce = |csv: &Path| {
        ok(&sluice(
            &home,
            &[
                "produce",
                csv.to_str().unwrap(),
                "--table",
                "events",
                "--partition-by",
                "year(day)",
            ],
        )
        .output()
        .unwrap())
    };
    let per_file = 4_000;
    let (first, mut sum) =
        sluice_testkit::fixtures::write_events_csv(dir.path(), "e0.csv", per_file, 1);
    produce(&first);
    let mut consumer = {
        let mut c = consumer;
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let target = "64KiB";
    let mut rows = per_file;
    let mut killed = 0;
    for k in 1..=8u64 {
        // New rows keep arriving while the compaction runs.
        let (csv, s) = sluice_testkit::fixtures::write_events_csv(
            dir.path(),
            &format!("e{k}.csv"),
            per_file,
            1 + k * per_file,
        );
        produce(&csv);
        rows += per_file;
        sum += s;
        let compact = sluice(
            &home,
            &["compact", "--table", "events", "--target-size", target],
        );
        if run_and_kill(compact, Duration::from_millis(10 + rng.next(400))) {
            killed += 1;
        }
        let (n, distinct) = common::duckdb_count(&table, "id");
        assert!(
            n == distinct && n <= rows,
            "seed {seed}: after kill {k} a reader saw {n} rows, {distinct} distinct ids (of {rows})"
        );
    }
    eprintln!("compaction crash test: {killed} of 8 compactions killed before they finished");
    assert!(
        killed > 0,
        "seed {seed}: every compaction finished before its kill"
    );
    // Bounded wait for the consumer to commit everything, then stop it.
    let deadline = Instant::now() + Duration::from_secs(180);
    while common::duckdb_count(&table, "id").0 < rows {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the consumer never caught up"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = Command::new("kill")
        .args(["-INT", &consumer.id().to_string()])
        .status();
    assert!(consumer.wait().unwrap().success());
    ok(&sluice(
        &home,
        &["compact", "--table", "events", "--target-size", target],
    )
    .output()
    .unwrap());
    for (files, bytes) in partitions(&home, "events") {
        assert!(
            files <= bytes.div_ceil(64 * 1024) + 1,
            "seed {seed}: {files} files for {bytes} bytes"
        );
    }
    assert_eq!(readers_count(&table), (rows, rows, sum), "seed {seed}");
    // The exactly-once records survive compaction: the first file again adds nothing.
    produce(&first);
    let o = sluice(&home, &["consume", "--table", "events", "--once"])
        .output()
        .unwrap();
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("0 written"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Files no version names (uploads of killed compactions) and files compaction replaced go
    // with vacuum, once old enough: age them past the one-hour floor for never-committed files.
    let live: u64 = partitions(&home, "events").iter().map(|(f, _)| f).sum();
    let on_disk = parquet_files(&table);
    assert!(on_disk.len() as u64 > live);
    for f in &on_disk {
        let ok = Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(f)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    ok(
        &sluice(&home, &["vacuum", "--table", "events", "--retain", "0h"])
            .output()
            .unwrap(),
    );
    assert_eq!(parquet_files(&table).len() as u64, live, "seed {seed}");
    assert_eq!(readers_count(&table), (rows, rows, sum), "seed {seed}");
}
