//! Clean stops and health probes of a following consumer, as an orchestrator (ECS,
//! Kubernetes, systemd) drives it: SIGTERM at any moment commits what is held (or, past
//! `--stop-timeout` or on a second signal, gives it back to the queue) and exits 0; nothing is
//! lost, nothing lands twice. `/healthz` answers while the process lives, `/readyz` once the
//! queue, lake and catalog have answered.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, ok, sluice};

fn follow(home: &Path, extra: &[&str]) -> Child {
    let mut args = vec![
        "consume",
        "--table",
        "events",
        "--rotate-rows",
        "1500",
        "--rotate-age",
        "1",
    ];
    args.extend_from_slice(extra);
    common::command(home, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Waits (at most a minute) for the child to exit; its status and standard error.
fn wait(mut child: Child) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (st, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the consumer did not stop within a minute of its signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rows and distinct ids of the table `events`, counted by DuckDB's Delta extension.
fn count(home: &Path) -> (u64, u64) {
    common::duckdb_count(&home.join("lake/events"), "id")
}

/// Status and body of GET `path`, or None while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let (head, body) = common::http(port, "GET", path, &[], "")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body))
}

#[test]
fn probes_answer_and_a_sigterm_commits_what_is_held_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    common::produce_in_small_messages(dir.path(), &home, 20_000, 4096);
    let port = free_port();
    let consumer = follow(&home, &["--metrics-addr", &port.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut alive = false;
    let mut not_ready = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "never ready (alive: {alive}; last answer: {not_ready:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
        if let Some((200, body)) = get(port, "/healthz") {
            assert_eq!(body, "alive\n");
            alive = true;
        }
        match get(port, "/readyz") {
            Some((200, body)) => {
                assert_eq!(body, "ready\n");
                break;
            }
            Some((503, body)) => {
                assert!(body.starts_with("not ready: "), "{body}");
                not_ready = Some(body);
            }
            other => not_ready = other.map(|(s, b)| format!("{s} {b}")),
        }
    }
    assert!(alive);
    // Stopped while it works: what it holds is committed, and it exits 0.
    signal(&consumer, "-TERM");
    let (st, err) = wait(consumer);
    assert!(st.success(), "{st:?}: {err}");
    assert!(!err.contains("given back"), "{err}");
    // Whatever it had not received yet is still queued: a draining run lands it.
    ok(&sluice(&home, &["consume", "--table", "events", "--once"]));
    assert_eq!(count(&home), (20000, 20000));
}

#[test]
fn stop_signals_at_random_moments_lose_nothing_and_land_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    common::produce_in_small_messages(dir.path(), &home, 30_000, 4096);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut r = seed | 1;
    let mut next = |n: u64| {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        r % n
    };
    let mut cut_short = 0;
    for round in 0..8 {
        // Every third round has no time to commit (the stop is cut short at once); every
        // other round after that gets a second signal soon after the first.
        let timeout = if round % 3 == 0 { "0" } else { "25" };
        let consumer = follow(&home, &["--stop-timeout", timeout]);
        std::thread::sleep(Duration::from_millis(200 + next(1_500)));
        signal(&consumer, if round % 2 == 0 { "-TERM" } else { "-INT" });
        if round % 3 == 2 {
            std::thread::sleep(Duration::from_millis(next(300)));
            signal(&consumer, "-TERM");
        }
        let (st, err) = wait(consumer);
        assert!(st.success(), "round {round} (seed {seed}): {st:?}: {err}");
        if err.contains("given back to the queue") {
            cut_short += 1;
        }
    }
    ok(&sluice(&home, &["consume", "--table", "events", "--once"]));
    assert_eq!(count(&home), (30000, 30000), "seed {seed}");
    eprintln!("{cut_short} of 8 stops were cut short");
}

/// `convert` stopped by SIGTERM (or SIGINT) stops between pieces, commits what it wrote and
/// says so (exit 1: not everything was converted); the same command resumes, skipping what was
/// committed, and every row lands once.
#[test]
fn convert_stops_between_pieces_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    let total = common::write_event_parts(&data, 6, 200_000);
    let args = [
        "convert",
        data.to_str().unwrap(),
        "--table",
        "events",
        "--partition-by",
        "year(day)",
        "--rotate-rows",
        "20000",
        "--threads",
        "1",
    ];
    let log = home.join("lake/events/_delta_log");
    let versions = || {
        std::fs::read_dir(&log)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .count()
            })
            .unwrap_or(0)
    };
    let mut stopped = 0;
    for (round, sig) in ["-TERM", "-INT", "-TERM"].into_iter().enumerate() {
        let before = versions();
        let child = common::command(&home, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Signalled once this run has committed something (at most 30 s on).
        let t0 = Instant::now();
        while versions() <= before.max(1) && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
        signal(&child, sig);
        let (st, err) = wait(child);
        if st.success() {
            // Finished before the signal.
            continue;
        }
        assert!(
            err.contains("convert was stopped before every source was read"),
            "round {round}: {st:?}: {err}"
        );
        stopped += 1;
    }
    assert!(stopped >= 1, "no run was stopped");
    let last = ok_err(&common::command(&home, &args).output().unwrap());
    assert!(
        last.contains("converted before")
            && !last.contains("0 converted before, 0 failed), 0 piece(s)"),
        "the last run resumed nothing: {last}"
    );
    assert_eq!(total, 1_200_000);
    assert_eq!(count(&home), (total, total));
}

/// Standard error of a successful run.
fn ok_err(o: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    err
}

/// `run` stopped by SIGTERM stops its consumer and its producer (which the backlog of the
/// embedded queue may be holding back) and ends, saying so; what was sent stays in the queue,
/// and a draining consumer lands it once.
#[test]
fn a_run_stopped_by_sigterm_ends_and_what_it_sent_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (csv, _) = sluice_testkit::fixtures::write_events_csv(dir.path(), "e.csv", 1_500_000, 1);
    let child = common::command(
        &home,
        &[
            "run",
            csv.to_str().unwrap(),
            "--table",
            "events",
            "--partition-by",
            "year(day)",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    signal(&child, "-TERM");
    let (st, err) = wait(child);
    // 1.5 million rows take a run more than a second: the signal came before the end.
    assert!(!st.success(), "the run ended before its signal: {err}");
    assert!(
        err.contains("run was stopped before every source was sent")
            || err.contains("run was stopped by a signal"),
        "{st:?}: {err}"
    );
    ok(&sluice(&home, &["consume", "--table", "events", "--once"]));
    let (rows, ids) = count(&home);
    assert_eq!(rows, ids, "a row landed twice");
    assert!(rows <= 1_500_000, "{rows}");
}

/// Files staged by a `convert` that is held up (here: stopped with SIGSTOP) between their upload
/// and its commit are leased in the lake: another home's `repair --grace 0` on the same lake
/// leaves them, and the convert, continued, commits every row once.
#[test]
fn another_home_leaves_a_held_up_writers_staged_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake_arg = lake.to_str().unwrap().to_string();
    let (a, b) = (dir.path().join("home-a"), dir.path().join("home-b"));
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (src, _) = sluice_testkit::fixtures::write_events_csv(&data, "big.csv", 600_000, 1);
    let table = lake.join("events");
    let parquet_files = || common::data_files(&table).len();
    let commits = || {
        std::fs::read_dir(table.join("_delta_log"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .count()
            })
            .unwrap_or(0)
    };
    let child = common::command(
        &a,
        &[
            "--lake",
            &lake_arg,
            "convert",
            src.to_str().unwrap(),
            "--table",
            "events",
            "--partition-by",
            "year(day)",
            "--rotate-rows",
            "20000",
            "--threads",
            "1",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Held up once it has staged files and committed none of them (the table's creation is
    // its only version).
    let t0 = Instant::now();
    while parquet_files() < 2 && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&child, "-STOP");
    std::thread::sleep(Duration::from_millis(100));
    let staged = parquet_files();
    assert_eq!(commits(), 1, "the convert committed before it was held up");
    assert!(staged >= 2, "nothing staged");
    // Another home, on the same lake: its repair with no grace at all leaves them.
    let repaired = sluice(
        &b,
        &[
            "--lake", &lake_arg, "repair", "--table", "events", "--grace", "0",
        ],
    );
    let out = ok(&repaired);
    assert_eq!(parquet_files(), staged, "{out}");
    assert!(out.contains(&format!("kept {staged} younger")), "{out}");
    signal(&child, "-CONT");
    let (status, err) = wait(child);
    assert!(status.success(), "{err}");
    assert_eq!(common::duckdb_count(&table, "id"), (600_000, 600_000));
    // Every data file is committed: nothing staged is left behind, and the lease is gone.
    let listed = common::files_in_log(&table).len();
    assert_eq!(parquet_files(), listed);
    assert_eq!(
        std::fs::read_dir(table.join("_sluice/pending"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

/// A `convert` stopped part-way through one large source commits none of it, and keeps the files
/// it staged: the next run takes them over (they are committed as they are, not written again)
/// and lands every row once.
#[test]
fn a_convert_stopped_part_way_through_a_source_resumes_with_the_files_it_staged() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (src, _) = sluice_testkit::fixtures::write_events_csv(&data, "big.csv", 600_000, 1);
    let table = home.join("lake/events");
    // File names: the log lists them so.
    let staged_files = || -> Vec<String> {
        common::data_files(&table)
            .iter()
            .map(|f| f.rsplit('/').next().unwrap_or(f).to_string())
            .collect()
    };
    let args = [
        "convert",
        src.to_str().unwrap(),
        "--table",
        "events",
        "--partition-by",
        "year(day)",
        "--rotate-rows",
        "20000",
        "--threads",
        "1",
    ];
    let child = common::command(&home, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while staged_files().len() < 3 && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&child, "-TERM");
    let (status, err) = wait(child);
    assert!(!status.success(), "finished before the signal: {err}");
    assert!(
        err.contains("convert was stopped before every source was read"),
        "{err}"
    );
    // Nothing of the source is visible.
    assert_eq!(count(&home), (0, 0));
    let staged = staged_files();
    assert!(staged.len() >= 3, "{staged:?}");
    let last = ok_err(&common::command(&home, &args).output().unwrap());
    assert_eq!(count(&home), (600_000, 600_000), "{last}");
    // Every file the stopped run staged is committed as it was.
    let listed = common::files_in_log(&table);
    for f in &staged {
        assert!(
            listed.contains(f),
            "{f} was not taken over: {listed:?}\n{last}"
        );
    }
    assert_eq!(staged_files().len(), listed.len());
}
