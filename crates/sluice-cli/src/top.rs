//! `sluice top`: a live terminal view of running consumers (their metrics endpoints) and of the
//! home's queues and tables, redrawn every interval, like `vector top`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::Ctx;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// A consumer's metrics endpoint: http://HOST:PORT/metrics, HOST:PORT or PORT (repeatable;
    /// see `--metrics-addr`). Without one, only the home's queues and tables are shown.
    #[arg(long = "metrics-url", value_name = "URL")]
    urls: Vec<String>,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Print one view (rates over the first interval) and exit.
    #[arg(long)]
    once: bool,
}

/// Samples of one scrape: "name{labels}" → value.
type Samples = BTreeMap<String, f64>;

/// Parses Prometheus' text format (the samples; comments skipped).
fn parse(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if let Ok(v) = value.parse::<f64>() {
            let key = if key.contains('{') {
                key.to_string()
            } else {
                format!("{key}{{}}")
            };
            out.insert(key, v);
        }
    }
    out
}

/// The sum of every sample of metric `name` whose labels contain each of `labels`.
fn sum(s: &Samples, name: &str, labels: &[&str]) -> f64 {
    s.iter()
        .filter(|(k, _)| {
            k.split_once('{').is_some_and(|(n, rest)| {
                n == name && labels.iter().all(|l| rest.contains(l))
            })
        })
        .map(|(_, v)| v)
        .sum::<f64>()
        // An empty sum is -0.0.
        + 0.0
}

/// `http://host:port/metrics` for what the user typed.
fn endpoint(s: &str) -> Result<(String, String)> {
    let s = s.trim();
    let rest = s.strip_prefix("http://").unwrap_or(s);
    let (hostport, path) = match rest.split_once('/') {
        Some((h, p)) => (h.to_string(), format!("/{p}")),
        None => (rest.to_string(), "/metrics".to_string()),
    };
    let hostport = if hostport.parse::<u16>().is_ok() {
        format!("127.0.0.1:{hostport}")
    } else {
        hostport
    };
    Ok((hostport, path))
}

/// `GET` over plain HTTP/1.1 (the endpoints are sluice's own).
async fn scrape(hostport: &str, path: &str) -> Result<Samples> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(hostport);
    let mut stream = tokio::time::timeout(Duration::from_secs(3), connect)
        .await
        .context("timed out")??;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .context("timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("not an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("{}", head.lines().next().unwrap_or(""));
    }
    Ok(parse(body))
}

fn rate(now: &Samples, before: Option<&Samples>, secs: f64, name: &str, labels: &[&str]) -> f64 {
    match before {
        Some(b) if secs > 0.0 => ((sum(now, name, labels) - sum(b, name, labels)) / secs).max(0.0),
        _ => 0.0,
    }
}

fn human(n: f64) -> String {
    if n >= 1e9 {
        format!("{:.1}G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1}M", n / 1e6)
    } else if n >= 1e4 {
        format!("{:.1}k", n / 1e3)
    } else if n == n.trunc() {
        format!("{n:.0}")
    } else {
        format!("{n:.1}")
    }
}

/// One endpoint's block of the view.
fn endpoint_view(out: &mut String, url: &str, now: &Samples, before: Option<&Samples>, secs: f64) {
    use sluice_core::metrics as m;
    let r = |name: &str, labels: &[&str]| rate(now, before, secs, name, labels);
    let t = |name: &str, labels: &[&str]| sum(now, name, labels);
    let _ = writeln!(out, "{url}");
    let _ = writeln!(
        out,
        "  rows      in {:>8}/s  written {:>8}/s  quarantined {:>6}/s  duplicate {:>6}/s   total written {}",
        human(r(m::ROWS_IN, &[])),
        human(r(m::ROWS_WRITTEN, &[])),
        human(r(m::ROWS_QUARANTINED, &[])),
        human(r(m::ROWS_DUPLICATE, &[])),
        human(t(m::ROWS_WRITTEN, &[])),
    );
    let _ = writeln!(
        out,
        "  messages  in {:>8}/s  deleted {:>8}/s  failed {:>6} total   produced rows {:>8}/s",
        human(r(m::MESSAGES_CONSUMED, &[])),
        human(r(m::MESSAGES_DELETED, &[])),
        human(t(m::MESSAGES_FAILED, &[])),
        human(r(m::ROWS_PRODUCED, &[])),
    );
    let _ = writeln!(
        out,
        "  commits   {:>8}/s  conflicts {} total   files {:>6}/s  {} MB/s   compactions {}  schema changes {}",
        human(r(m::COMMITS, &[])),
        human(t(m::COMMIT_CONFLICTS, &[])),
        human(r(m::FILES_WRITTEN, &[])),
        human(r(m::BYTES_WRITTEN, &[]) / 1e6),
        human(t(m::COMPACTIONS, &[])),
        human(t(m::SCHEMA_CHANGES, &[])),
    );
    // Mean production-to-commit time over the interval (or since start).
    let (dc, ds) = match before {
        Some(b) => (
            t(&format!("{}_count", m::COMMIT_LATENCY), &[])
                - sum(b, &format!("{}_count", m::COMMIT_LATENCY), &[]),
            t(&format!("{}_sum", m::COMMIT_LATENCY), &[])
                - sum(b, &format!("{}_sum", m::COMMIT_LATENCY), &[]),
        ),
        None => (
            t(&format!("{}_count", m::COMMIT_LATENCY), &[]),
            t(&format!("{}_sum", m::COMMIT_LATENCY), &[]),
        ),
    };
    let latency = if dc > 0.0 {
        format!("{:.2} s", ds / dc)
    } else {
        "-".into()
    };
    let _ = writeln!(
        out,
        "  freshness oldest message {:.1} s   production → commit {}   held {}  open files {}  buffered {} MB",
        t(m::OLDEST_MESSAGE_AGE, &[]),
        latency,
        human(t(m::HELD_MESSAGES, &[])),
        human(t(m::OPEN_FILES, &[])),
        human(t(m::BUFFERED_BYTES, &[]) / 1e6),
    );
    let _ = writeln!(
        out,
        "  queue     visible {}  in flight {}  dead letters {}   requests {}/s  billed SQS units {}/s  S3 requests {}/s",
        human(t(m::QUEUE_DEPTH, &["state=\"visible\""])),
        human(t(m::QUEUE_DEPTH, &["state=\"in_flight\""])),
        human(t(m::QUEUE_DEPTH, &["state=\"dead_letter\""])),
        human(r(m::QUEUE_REQUESTS, &[])),
        human(r(m::QUEUE_BILLED_UNITS, &[])),
        human(r(m::STORE_REQUESTS, &[])),
    );
}

/// The home's queues and tables (embedded backends, or whatever the global options name).
async fn home_view(ctx: &Ctx, out: &mut String) {
    if let Ok(targets) = ctx.open.local_queues().await
        && !targets.is_empty()
    {
        let _ = writeln!(out, "queues ({})", ctx.home.root.display());
        for target in targets {
            let Ok((admin, name)) = ctx.open.queue_admin(&target).await else {
                continue;
            };
            let Ok(q) = admin.open(&name).await else {
                continue;
            };
            let s = q.stats().await.unwrap_or_default();
            let dlq = match admin.dead_letter_queue(&name).await {
                Ok(Some(d)) => d
                    .stats()
                    .await
                    .map(|s| s.visible + s.in_flight)
                    .unwrap_or(0),
                _ => 0,
            };
            let oldest = s
                .oldest_age
                .map(|a| format!("{:.1} s", a.as_secs_f64()))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "  {name:<24} visible {:>7}  in flight {:>5}  dead letters {:>5}  oldest {oldest}",
                s.visible, s.in_flight, dlq
            );
        }
    }
    let Ok(catalog) = ctx.open.catalog().await else {
        return;
    };
    let Ok(lake) = ctx.open.lake().await else {
        return;
    };
    let Ok(tables) = catalog.list_tables(ctx.database()).await else {
        return;
    };
    let _ = writeln!(out, "tables ({})", lake.url);
    for t in tables {
        let dir = sluice_core::lake::Lake::table_dir(&t.name);
        match sluice_core::delta::log::history(&lake, &dir, 1).await {
            Ok(h) if !h.is_empty() => {
                let last = &h[0];
                let at = chrono::DateTime::from_timestamp_millis(last.timestamp_ms)
                    .map(|d| d.format("%H:%M:%S").to_string())
                    .unwrap_or_default();
                let ago = (chrono::Utc::now().timestamp_millis() - last.timestamp_ms) as f64 / 1e3;
                let _ = writeln!(
                    out,
                    "  {:<24} version {:>6}  last commit {at} ({ago:.0} s ago, {}, {} rows)",
                    t.name,
                    last.version,
                    last.operation,
                    last.rows
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "-".into())
                );
            }
            _ => {
                let _ = writeln!(out, "  {:<24} no commits yet", t.name);
            }
        }
    }
}

pub async fn run(ctx: &Ctx, a: &TopArgs) -> Result<()> {
    let endpoints = a
        .urls
        .iter()
        .map(|u| endpoint(u))
        .collect::<Result<Vec<_>>>()?;
    let interval = Duration::from_secs_f64(a.interval.max(0.1));
    let mut before: Vec<Option<(Instant, Samples)>> = vec![None; endpoints.len()];
    if a.once {
        // Rates need two scrapes.
        for (i, (hp, path)) in endpoints.iter().enumerate() {
            if let Ok(s) = scrape(hp, path).await {
                before[i] = Some((Instant::now(), s));
            }
        }
        tokio::time::sleep(interval).await;
    }
    loop {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sluice top   {}   every {:.1} s (Ctrl-C to quit)\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
            interval.as_secs_f64()
        );
        for (i, (hp, path)) in endpoints.iter().enumerate() {
            let url = format!("http://{hp}{path}");
            match scrape(hp, path).await {
                Ok(now) => {
                    let t = Instant::now();
                    let prev = before[i].as_ref();
                    let secs = prev.map(|(pt, _)| (t - *pt).as_secs_f64()).unwrap_or(0.0);
                    endpoint_view(&mut out, &url, &now, prev.map(|(_, s)| s), secs);
                    before[i] = Some((t, now));
                }
                Err(e) => {
                    let _ = writeln!(out, "{url}\n  unreachable: {e}");
                }
            }
            out.push('\n');
        }
        home_view(ctx, &mut out).await;
        if a.once {
            print!("{out}");
            return Ok(());
        }
        // Clear the screen and draw from the top.
        print!("\x1b[H\x1b[2J{out}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_sums_samples() {
        let s = parse(
            "# HELP x y\n# TYPE a_total counter\na_total 3\nb{role=\"p\",op=\"put\"} 2\nb{role=\"c\",op=\"put\"} 5\nb{role=\"c\",op=\"get\"} 1\n",
        );
        assert_eq!(sum(&s, "a_total", &[]), 3.0);
        assert_eq!(sum(&s, "b", &["op=\"put\""]), 7.0);
        assert_eq!(sum(&s, "b", &[]), 8.0);
        assert_eq!(sum(&s, "c", &[]), 0.0);
        assert_eq!(
            endpoint("9898").unwrap(),
            ("127.0.0.1:9898".into(), "/metrics".into())
        );
        assert_eq!(
            endpoint("http://h:1/m").unwrap(),
            ("h:1".into(), "/m".into())
        );
    }
}
