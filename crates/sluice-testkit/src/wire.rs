//! The S3/SQS/Glue-compatible server the wire tests share (moto, started by `.ci/run`).

use std::io::{Read, Write};
use std::net::TcpStream;

/// The server's endpoint, from `SLUICE_TEST_AWS_ENDPOINT`.
pub fn endpoint() -> String {
    match std::env::var("SLUICE_TEST_AWS_ENDPOINT") {
        Ok(e) if !e.is_empty() => e,
        _ => panic!(
            "the AWS wire tests need an S3/SQS/Glue-compatible server: run them with `bash .ci/run`, \
             which starts moto, or export SLUICE_TEST_AWS_ENDPOINT=http://127.0.0.1:PORT together \
             with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ),
    }
}

/// A name unique to this test run, for queues, databases and buckets on the shared server.
pub fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros();
    format!("{prefix}-{}-{}", std::process::id(), t % 1_000_000_000)
}

/// An unsigned HTTP request to the server (creating buckets, seeding results through its
/// API); asserts a 2xx answer and returns the whole response.
pub fn http(method: &str, path: &str, body: &str) -> String {
    let ep = endpoint();
    let host = ep.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(host).expect("connect to the test server");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(
        out.starts_with("HTTP/1.1 2") || out.starts_with("HTTP/1.0 2"),
        "{method} {path}: {out}"
    );
    out
}

/// Creates a bucket, as a user would outside sluice.
pub fn create_bucket(name: &str) {
    http("PUT", &format!("/{name}"), "");
}
