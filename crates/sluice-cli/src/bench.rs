//! `sluice bench`: `run` on generated TPC-H lineitem, with peers timed in the same session.
//!
//! Each measured program runs as a child process; its wall time and peak resident memory
//! (VmHWM, sampled from /proc every 20 ms) are reported, with ratios against sluice.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const PEERS_PY: &str = include_str!("../../../bench/peers.py");

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// TPC-H scale factor: 1 is 6 million lineitem rows, about 760 MB of CSV.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Working directory for the data and the lakes (kept; the CSV is reused by later runs).
    #[arg(long, default_value = "sluice-bench")]
    dir: PathBuf,
    /// Also time DuckDB, Polars and pyarrow writing the same year-partitioned Parquet
    /// (each must be importable by --python).
    #[arg(long)]
    peers: bool,
    /// Python interpreter for --peers.
    #[arg(long, default_value = "python3")]
    python: String,
}

struct Measured {
    name: String,
    wall: Duration,
    peak_rss_kib: u64,
    ok: bool,
    stderr: String,
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn measure(name: &str, cmd: &mut Command) -> Result<Measured> {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let pid = child.id();
    let mut peak = 0;
    let mut stderr_pipe = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = stderr_pipe.as_mut() {
            use std::io::Read;
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let status = loop {
        if let Some(k) = peak_rss_kib(pid) {
            peak = peak.max(k);
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = start.elapsed();
    let stderr = reader.join().unwrap_or_default();
    Ok(Measured {
        name: name.to_string(),
        wall,
        peak_rss_kib: peak,
        ok: status.success(),
        stderr,
    })
}

fn generate(path: &Path, scale: f64) -> Result<u64> {
    use tpchgen::csv::LineItemCsv;
    use tpchgen::generators::LineItemGenerator;
    let tmp = path.with_extension("csv.partial");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
    writeln!(w, "{}", LineItemCsv::header())?;
    let mut rows = 0u64;
    let generator = LineItemGenerator::new(scale, 1, 1);
    for item in generator.iter() {
        writeln!(w, "{}", LineItemCsv::new(item))?;
        rows += 1;
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, path)?;
    Ok(rows)
}

fn dir_stats(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                // `_delta_log/` holds checkpoints, not data.
                if !e.file_name().to_string_lossy().starts_with('_') {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files += 1;
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    (files, bytes)
}

pub async fn run(a: BenchArgs) -> Result<()> {
    if a.scale <= 0.0 {
        bail!("--scale must be positive");
    }
    std::fs::create_dir_all(&a.dir)?;
    let csv = a.dir.join(format!("lineitem-sf{}.csv", a.scale));
    if !csv.exists() {
        eprintln!(
            "generating TPC-H lineitem at scale {} into {} …",
            a.scale,
            csv.display()
        );
        let t = Instant::now();
        let rows = tokio::task::spawn_blocking({
            let (csv, scale) = (csv.clone(), a.scale);
            move || generate(&csv, scale)
        })
        .await??;
        eprintln!("generated {rows} rows in {:.1}s", t.elapsed().as_secs_f64());
    }
    let csv_bytes = std::fs::metadata(&csv)?.len();
    let rows = {
        let f = std::fs::File::open(&csv)?;
        let mut r = std::io::BufReader::with_capacity(1 << 20, f);
        let mut n = 0u64;
        let mut buf = Vec::new();
        use std::io::BufRead;
        while r.read_until(b'\n', &mut buf)? > 0 {
            n += 1;
            buf.clear();
        }
        n - 1
    };
    let home = a.dir.join("sluice-home");
    let _ = std::fs::remove_dir_all(&home);
    let exe = std::env::current_exe()?;
    let mut results = Vec::new();
    let m = measure(
        "sluice run",
        Command::new(&exe)
            .arg("--home")
            .arg(&home)
            .arg("run")
            .arg(&csv)
            .args([
                "--table",
                "lineitem",
                "--partition-by",
                "year(l_shipdate)",
                "--query",
                "SELECT count(*) FROM lineitem",
            ]),
    )?;
    if !m.ok {
        bail!("sluice run failed:\n{}", m.stderr);
    }
    let (files, bytes) = dir_stats(&home.join("lake").join("lineitem"));
    results.push((m, files, bytes));
    if a.peers {
        let script = a.dir.join("peers.py");
        std::fs::write(&script, PEERS_PY)?;
        for engine in ["polars", "duckdb", "pyarrow"] {
            let out = a.dir.join(format!("out-{engine}"));
            let _ = std::fs::remove_dir_all(&out);
            let m = measure(
                engine,
                Command::new(&a.python)
                    .arg(&script)
                    .arg(engine)
                    .arg(&csv)
                    .arg(&out),
            )?;
            if !m.ok {
                eprintln!(
                    "{engine}: failed or not installed: {}",
                    m.stderr.lines().last().unwrap_or("")
                );
                continue;
            }
            let (files, bytes) = dir_stats(&out);
            results.push((m, files, bytes));
        }
    }
    println!(
        "TPC-H lineitem SF{}: {rows} rows, {:.1} MB of CSV",
        a.scale,
        csv_bytes as f64 / 1e6
    );
    println!(
        "{:<12} {:>9} {:>12} {:>9} {:>12} {:>10} {:>7} {:>14}",
        "program",
        "wall s",
        "rows/s",
        "CSV MB/s",
        "peak RSS MB",
        "out MB",
        "files",
        "sluice speedup"
    );
    let base = results[0].0.wall.as_secs_f64();
    for (m, files, bytes) in &results {
        let s = m.wall.as_secs_f64();
        println!(
            "{:<12} {:>9.2} {:>12.0} {:>9.1} {:>12.1} {:>10.1} {:>7} {:>14.2}",
            m.name,
            s,
            rows as f64 / s,
            csv_bytes as f64 / 1e6 / s,
            m.peak_rss_kib as f64 / 1024.0,
            *bytes as f64 / 1e6,
            files,
            s / base
        );
    }
    Ok(())
}
