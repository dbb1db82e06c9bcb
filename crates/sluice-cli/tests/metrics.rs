//! Live metrics: a following consumer's `--metrics-addr` endpoint scraped while it works and
//! parsed by `prometheus_client`'s parser, and the `--metrics FILE` of `run` (producer and
//! consumer in one process) accepted by the same strict parser.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{free_port, ok, sluice};

/// `GET /metrics` on 127.0.0.1:`port` (None while nothing listens).
fn scrape(port: u16) -> Option<String> {
    let (head, body) = common::http(port, "GET", "/metrics", &[], "")?;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4")
    );
    Some(body)
}

/// Parses Prometheus text with `prometheus_client` (which refuses a family described twice)
/// and prints "name{labels} value" per sample, sorted.
fn parse(text: &str) -> String {
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out.append(f"{s.name}{{{labels}}} {s.value}")
print("\n".join(sorted(out)))
"#;
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client (bash .ci/run installs it) refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of the sample `name{labels}` (labels sorted, as `parse` prints them).
fn value(samples: &str, sample: &str) -> Option<f64> {
    samples
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_following_consumer_serves_live_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // Small messages: many deliveries, commits and deletions to count.
    common::produce_in_small_messages(dir.path(), &home, 20_000, 4096);
    let port = free_port();
    let mut consumer = common::command(
        &home,
        &[
            "consume",
            "--table",
            "events",
            "--rotate-rows",
            "2000",
            "--rotate-age",
            "1",
            "--metrics-addr",
            &port.to_string(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut scrapes: Vec<String> = Vec::new();
    // Scrape while it works, until every row is written and the queue is drained.
    let last = loop {
        assert!(
            Instant::now() < deadline,
            "the consumer never drained the queue; last scrape:\n{}",
            scrapes.last().map(String::as_str).unwrap_or("(none)")
        );
        std::thread::sleep(Duration::from_millis(300));
        let Some(text) = scrape(port) else { continue };
        let samples = parse(&text);
        scrapes.push(samples.clone());
        let written = value(&samples, "sluice_rows_written_total{}").unwrap_or(0.0);
        let held = value(&samples, "sluice_held_messages{}");
        let visible = value(
            &samples,
            "sluice_queue_depth_messages{queue=\"events\",state=\"visible\"}",
        );
        let age = value(
            &samples,
            "sluice_oldest_message_age_seconds{queue=\"events\"}",
        );
        if written == 20_000.0 && held == Some(0.0) && visible == Some(0.0) && age == Some(0.0) {
            break samples;
        }
    };
    let _ = std::process::Command::new("kill")
        .args(["-INT", &consumer.id().to_string()])
        .status();
    assert!(consumer.wait().unwrap().success());
    // Counters only grow between scrapes.
    for pair in scrapes.windows(2) {
        for name in [
            "sluice_rows_written_total{}",
            "sluice_messages_deleted_total{}",
            "sluice_queue_requests_total{op=\"receive\",role=\"consumer\"}",
        ] {
            let (a, b) = (value(&pair[0], name), value(&pair[1], name));
            assert!(
                a.unwrap_or(0.0) <= b.unwrap_or(0.0),
                "{name}: {a:?} then {b:?}"
            );
        }
    }
    let deleted = value(&last, "sluice_messages_deleted_total{}").unwrap();
    assert!(deleted >= 2.0, "{last}");
    assert_eq!(
        value(&last, "sluice_messages_consumed_total{}"),
        Some(deleted),
        "{last}"
    );
    assert!(value(&last, "sluice_commits_total{log=\"data\"}").unwrap() >= 1.0);
    assert!(value(&last, "sluice_files_written_total{}").unwrap() >= 6.0);
    assert!(value(&last, "sluice_bytes_written_total{}").unwrap() > 0.0);
    // Each Delta commit is a PUT; the data files of a lake in a local directory are linked
    // into place, which is no request to the store.
    let commits = value(&last, "sluice_commits_total{log=\"data\"}").unwrap();
    assert!(
        value(
            &last,
            "sluice_store_requests_total{op=\"put\",role=\"consumer\"}"
        )
        .unwrap()
            >= commits
    );
    assert_eq!(
        value(
            &last,
            "sluice_queue_depth_messages{queue=\"events\",state=\"in_flight\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &last,
            "sluice_queue_depth_messages{queue=\"events\",state=\"dead_letter\"}"
        ),
        Some(0.0),
        "{last}"
    );
    // Every deleted message's production-to-commit time is in the histogram.
    assert_eq!(
        value(&last, "sluice_chunk_commit_latency_seconds_count{}"),
        Some(deleted),
        "{last}"
    );
    assert_eq!(
        value(
            &last,
            "sluice_chunk_commit_latency_seconds_bucket{le=\"+Inf\"}"
        ),
        Some(deleted),
        "{last}"
    );
}

#[test]
fn the_metrics_file_of_run_is_one_valid_exposition() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let (csv, _) = sluice_testkit::fixtures::write_events_csv(dir.path(), "a.csv", 3_000, 1);
    let file = dir.path().join("run.prom");
    ok(&sluice(
        &home,
        &[
            "--metrics",
            file.to_str().unwrap(),
            "run",
            csv.to_str().unwrap(),
            "--table",
            "events",
            "--partition-by",
            "year(day)",
        ],
    ));
    let text = std::fs::read_to_string(&file).unwrap();
    // Each family is described once, however many roles report it.
    assert_eq!(
        text.matches("# TYPE sluice_queue_requests_total counter")
            .count(),
        1,
        "{text}"
    );
    let samples = parse(&text);
    assert_eq!(
        value(&samples, "sluice_rows_produced_total{}"),
        Some(3000.0)
    );
    assert_eq!(value(&samples, "sluice_rows_written_total{}"), Some(3000.0));
    let sent = value(
        &samples,
        "sluice_queue_messages_total{direction=\"sent\",role=\"producer\"}",
    )
    .unwrap();
    assert_eq!(
        value(
            &samples,
            "sluice_queue_messages_total{direction=\"received\",role=\"consumer\"}"
        ),
        Some(sent)
    );
    assert_eq!(value(&samples, "sluice_chunks_sent_total{}"), Some(sent));
}

/// `sluice top` in tmux while a consumer works: the captured pane shows non-zero live rates,
/// then every row written.
#[test]
fn top_shows_live_rates_in_tmux() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    common::produce_in_small_messages(dir.path(), &home, 200_000, 2048);
    let port = free_port();
    let socket = format!("sluice-test-{}-{port}", std::process::id());
    let tmux = |args: &[&str]| {
        let o = std::process::Command::new("tmux")
            .arg("-L")
            .arg(&socket)
            .args(args)
            .output()
            .expect("tmux (bash .ci/run installs it)");
        assert!(
            o.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let top = format!(
        "{} --home {} top --metrics-url {port} --interval 0.5",
        env!("CARGO_BIN_EXE_sluice"),
        home.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "200",
        "-y",
        "50",
        &top,
    ]);
    let mut consumer = common::command(
        &home,
        &[
            "consume",
            "--table",
            "events",
            "--rotate-age",
            "1",
            "--metrics-addr",
            &port.to_string(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut saw_rate, mut saw_total) = (false, false);
    let mut pane = String::new();
    while !(saw_rate && saw_total) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        pane = tmux(&["capture-pane", "-p", "-t", "top"]);
        for line in pane.lines() {
            if let Some(rest) = line.trim_start().strip_prefix("rows      in") {
                // "written <rate>/s": a rate above zero while the consumer works.
                let rate = rest
                    .split("written")
                    .nth(1)
                    .and_then(|r| r.split("/s").next())
                    .map(str::trim)
                    .unwrap_or("0");
                if rate != "0" {
                    saw_rate = true;
                }
                if rest.contains("total written 200.0k") {
                    saw_total = true;
                }
            }
        }
    }
    let _ = tmux(&["kill-server"]);
    let _ = std::process::Command::new("kill")
        .args(["-INT", &consumer.id().to_string()])
        .status();
    let _ = consumer.wait();
    assert!(saw_rate, "no live rate on the pane:\n{pane}");
    assert!(
        saw_total,
        "the pane never showed every row written:\n{pane}"
    );
    assert!(pane.contains("tables ("), "{pane}");
}
