//! `sluice serve` end to end in headless Chromium (Debian's `chromium`, driven by playwright-core
//! from npm with `executablePath`): the tables page lists the table and its partitions, a SQL
//! query shows its rows and a chart, `DROP TABLE` is refused, queues and the quarantine show;
//! a non-loopback address needs a token and a request without it is refused. Screenshots are
//! kept in `<target>/tmp/console-screenshots/`.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, ok, run_employment, sluice};

/// `GET path` on 127.0.0.1:`port`: (status line, body), or None while nothing listens.
fn get(port: u16, path: &str, auth: Option<&str>) -> Option<(String, String)> {
    let headers: Vec<String> = auth
        .map(|t| format!("Authorization: Bearer {t}"))
        .into_iter()
        .collect();
    let (head, body) = common::http(port, "GET", path, &headers, "")?;
    Some((head.lines().next()?.to_string(), body))
}

/// `POST path` with a JSON body and the token: (status line, body).
fn post(port: u16, path: &str, token: &str, body: &str) -> (String, String) {
    let headers = [
        format!("Authorization: Bearer {token}"),
        "Content-Type: application/json".to_string(),
    ];
    let (head, body) =
        common::http(port, "POST", path, &headers, body).expect("the console answers");
    (head.lines().next().unwrap().to_string(), body)
}

/// Starts `sluice serve ARGS` and waits (bounded) until `port` answers.
fn serve(home: &Path, args: &[&str], port: u16) -> Child {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let mut child = common::command(home, &all)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(port, "/", None).is_none() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("sluice serve exited ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "sluice serve never listened");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

#[test]
fn the_console_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    run_employment(&home);
    // A table with a quarantined row, for the quarantine page.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "id,day,v\n1,2024-01-01,1\n2,2024-01-02\n").unwrap();
    ok(&sluice(
        &home,
        &[
            "run",
            bad.to_str().unwrap(),
            "--table",
            "bad",
            "--partition-by",
            "year(day)",
        ],
    ));
    let port = free_port();
    let mut server = serve(&home, &["--addr", &format!("127.0.0.1:{port}")], port);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/console.mjs");
    let modules = std::env::var("SLUICE_NODE_MODULES").expect(
        "SLUICE_NODE_MODULES: the node_modules with playwright-core (bash .ci/run sets it)",
    );
    // An ES module resolves packages from its own directory upwards: link them beside it.
    let work = dir.path().join("console");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(&script, work.join("console.mjs")).unwrap();
    std::os::unix::fs::symlink(&modules, work.join("node_modules")).unwrap();
    let out = std::process::Command::new("node")
        .arg(work.join("console.mjs"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg(&shots)
        .output()
        .expect("node");
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "the browser run failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let found: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("one JSON line");
    let tables: Vec<&str> = found["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(tables, ["bad", "employment"], "{found}");
    let partitions: Vec<&str> = found["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(partitions.len(), 10, "{found}");
    assert_eq!(partitions[0], "year=2006", "{found}");
    assert!(found["history_rows"].as_u64().unwrap() >= 2, "{found}");
    assert_eq!(found["sql_rows"], 10, "{found}");
    assert_eq!(found["sql_first"][0], "2006", "{found}");
    assert_eq!(found["sql_first"][1], "12", "{found}");
    assert_eq!(found["chart_bars"], 10, "{found}");
    assert!(
        found["refused"].as_str().unwrap().contains("read-only"),
        "{found}"
    );
    let queues = found["queues"].as_array().unwrap();
    assert!(queues.iter().any(|q| q == "employment"), "{found}");
    assert_eq!(found["quarantine_rows"], 1, "{found}");
    assert!(
        found["quarantine_text"]
            .as_str()
            .unwrap()
            .contains("expected 3 fields, found 2"),
        "{found}"
    );
    for shot in ["tables", "sql", "refused", "queues", "quarantine"] {
        assert!(shots.join(format!("{shot}.png")).is_file(), "{shot}.png");
    }
}

#[test]
fn a_console_off_loopback_needs_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    run_employment(&home);
    let port = free_port();
    let refused = sluice(&home, &["serve", "--addr", &format!("0.0.0.0:{port}")]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("needs --token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let mut server = serve(
        &home,
        &["--addr", &format!("0.0.0.0:{port}"), "--token", "s3cret"],
        port,
    );
    let (status, body) = get(port, "/api/tables", None).unwrap();
    assert!(status.contains("401"), "{status}");
    assert!(body.contains("needs its token"), "{body}");
    let (status, _) = get(port, "/api/tables", Some("wrong")).unwrap();
    assert!(status.contains("401"), "{status}");
    let (status, body) = get(port, "/api/tables", Some("s3cret")).unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("\"name\":\"employment\""), "{body}");
    let (status, _) = get(port, "/api/tables?token=s3cret", None).unwrap();
    assert!(status.contains("200"), "{status}");
    // The API behind the page: redrive (nothing dead-lettered here), DDL refused.
    let (status, body) = post(port, "/api/queues/employment/redrive", "s3cret", "");
    assert!(status.contains("200"), "{status} {body}");
    assert_eq!(body, r#"{"moved":0}"#);
    let (status, body) = post(
        port,
        "/api/query",
        "s3cret",
        r#"{"sql": "DROP TABLE employment"}"#,
    );
    assert!(status.contains("400"), "{status} {body}");
    assert!(body.contains("read-only"), "{body}");
    let _ = server.kill();
    let _ = server.wait();
}
