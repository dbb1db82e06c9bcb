//! `sluice bench`: `convert` and `run` on generated TPC-H lineitem, with peers timed in the
//! same session.
//!
//! Each measured program runs as a child process, `--repeat` times, the programs interleaved
//! so that a noisy neighbour hurts them alike; the median wall time is reported with the CPU
//! time of that run (user + system, sampled from /proc every 20 ms) and the highest peak
//! resident memory (VmHWM) of all runs, with each program's rows/s against Polars'.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const PEERS_PY: &str = include_str!("../../../bench/peers.py");
const KEYED_MERGE_PY: &str = include_str!("../../../bench/keyed_merge.py");

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// TPC-H scale factor: 1 is 6 million lineitem rows, about 760 MB of CSV.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Working directory for the data and the lakes (kept; the CSV is reused by later runs).
    #[arg(long, default_value = "sluice-bench")]
    dir: PathBuf,
    /// Also time Polars (scan_csv → sink_parquet with PartitionBy), DuckDB (COPY … PARTITION_BY)
    /// and pyarrow (open_csv → write_dataset) writing the same year-partitioned zstd Parquet
    /// (each must be importable by --python).
    #[arg(long)]
    peers: bool,
    /// Python interpreter for --peers.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Runs of each program; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Instead: a day of a following consumer's small files (about 288 commits, one file per
    /// partition each, as with 5-minute rotation), the same query timed before and after
    /// `sluice compact` (and with DuckDB's Delta extension, with --peers).
    #[arg(long)]
    compaction: bool,
    /// Instead: the cost of the exactly-once records. A table is given this many recorded chunk
    /// parts (1,000 a version, then a checkpoint), and `convert` of a one-row file into it is
    /// timed (start-up reads every record, then one commit), beside the same on a table of
    /// 1,000 records.
    #[arg(long, value_name = "PARTS")]
    log_parts: Option<u64>,
    /// Instead: a keyed table's merge. A table of 1,000,000 rows × --scale (keyed by `id`,
    /// partitioned by year, ordered by `ts`) takes 100,000 × --scale changes (70% updates, 10%
    /// deletes, 20% inserts, random keys and dates) by `convert`; with --peers, the `deltalake`
    /// package's MERGE of the same changes into a copy of the same table too. Both results are
    /// checked to hold the same rows.
    #[arg(long)]
    keyed: bool,
    /// sluice infers the price columns (l_quantity, l_extendedprice, l_discount, l_tax) as
    /// exact decimals (`--exact-decimals`: decimal(18,2)) instead of float64.
    #[arg(long)]
    exact_decimals: bool,
}

struct Measured {
    wall: Duration,
    cpu: Duration,
    peak_rss_kib: u64,
    ok: bool,
    stderr: String,
}

/// The run of median wall time: (wall s, CPU s), and the peak RSS of all runs (KiB).
fn median(ms: &[Measured]) -> Option<(f64, f64, u64)> {
    let mut w: Vec<&Measured> = ms.iter().collect();
    w.sort_by_key(|m| m.wall);
    let m = w.get(w.len().checked_sub(1)? / 2)?;
    let peak = ms.iter().map(|m| m.peak_rss_kib).max().unwrap_or(0);
    Some((m.wall.as_secs_f64(), m.cpu.as_secs_f64(), peak))
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

/// User + system time of a running process (all its threads), from /proc.
fn cpu_time(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3; utime 14, stime 15.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

fn measure(name: &str, cmd: &mut Command) -> Result<Measured> {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let pid = child.id();
    let (mut peak, mut cpu) = (0, Duration::ZERO);
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
        if let Some(c) = cpu_time(pid) {
            cpu = cpu.max(c);
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = start.elapsed();
    let stderr = reader.join().unwrap_or_default();
    Ok(Measured {
        wall,
        cpu,
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

/// The lineitem CSV of `--scale` (generated on first use): (path, rows, bytes).
async fn lineitem(a: &BenchArgs) -> Result<(PathBuf, u64, u64)> {
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
    Ok((csv, rows, csv_bytes))
}

/// Median wall time of `repeat` runs of `cmd` (which must succeed).
fn median_wall(name: &str, repeat: usize, mut cmd: impl FnMut() -> Command) -> Result<f64> {
    let mut walls = Vec::new();
    for _ in 0..repeat.max(1) {
        let m = measure(name, &mut cmd())?;
        if !m.ok {
            bail!("{name} failed:\n{}", m.stderr);
        }
        walls.push(m.wall.as_secs_f64());
    }
    walls.sort_by(f64::total_cmp);
    Ok(walls[(walls.len() - 1) / 2])
}

/// `sluice bench --compaction`: small files as a following consumer leaves them, queried before
/// and after compaction.
fn compaction(a: &BenchArgs, csv: &Path, rows: u64, csv_bytes: u64) -> Result<()> {
    let exe = std::env::current_exe()?;
    let home = a.dir.join("sluice-compaction");
    let _ = std::fs::remove_dir_all(&home);
    let sluice = |args: &[&str]| {
        let mut c = Command::new(&exe);
        c.arg("--home").arg(&home).args(args);
        c
    };
    let ok = |name: &str, mut c: Command| -> Result<Measured> {
        let m = measure(name, &mut c)?;
        if !m.ok {
            bail!("{name} failed:\n{}", m.stderr);
        }
        Ok(m)
    };
    // About 288 chunks (a day of 5-minute files); lineitem's chunks compress about 8x.
    let message = (csv_bytes / 288 / 8).clamp(16 << 10, 1 << 20).to_string();
    ok(
        "queue create",
        sluice(&[
            "queue",
            "create",
            "--queue",
            "lineitem",
            "--max-message-bytes",
            &message,
        ]),
    )?;
    let csv_s = csv.to_str().context("the CSV path is not UTF-8")?;
    eprintln!("producing …");
    ok(
        "produce",
        sluice(&[
            "produce",
            csv_s,
            "--table",
            "lineitem",
            "--partition-by",
            "year(l_shipdate)",
        ]),
    )?;
    eprintln!("consuming, one commit per message …");
    let consumed = ok(
        "consume",
        sluice(&[
            "consume",
            "--table",
            "lineitem",
            "--once",
            "--rotate-rows",
            "1",
        ]),
    )?;
    let commits = consumed
        .stderr
        .split(" commit(s)")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .unwrap_or("?")
        .to_string();
    let table = home.join("lake").join("lineitem");
    let sql = "SELECT year, count(*) AS n, sum(l_extendedprice) AS revenue, avg(l_discount) AS discount FROM lineitem WHERE l_quantity < 25 GROUP BY year ORDER BY year";
    let duck = |table: &Path| -> Command {
        let mut c = Command::new(&a.python);
        c.arg("-c")
            .arg(format!(
                "import os, duckdb\nfrom duckdb_extensions import import_extension\nimport_extension('delta')\ncon = duckdb.connect()\ncon.execute('SET enable_progress_bar = false')\ncon.execute('LOAD delta')\ncon.execute(\"\"\"{}\"\"\").fetchall()\ncon.close()\nos._exit(0)",
                sql.replace("FROM lineitem", &format!("FROM delta_scan('{}')", table.display()))
            ));
        c
    };
    let time_queries = |label: &str| -> Result<(f64, Option<f64>)> {
        let s = median_wall(&format!("sluice query ({label})"), a.repeat + 2, || {
            sluice(&["query", sql, "--format", "csv"])
        })?;
        let d = if a.peers {
            Some(median_wall(
                &format!("duckdb ({label})"),
                a.repeat + 2,
                || duck(&table),
            )?)
        } else {
            None
        };
        Ok((s, d))
    };
    let before_files = dir_stats(&table);
    let before = time_queries("before")?;
    eprintln!("compacting …");
    let c = ok("compact", sluice(&["compact", "--table", "lineitem"]))?;
    // The replaced files stay for earlier versions: count the live ones.
    ok(
        "vacuum",
        sluice(&["vacuum", "--table", "lineitem", "--retain", "0h"]),
    )?;
    let after_files = dir_stats(&table);
    let after = time_queries("after")?;
    println!(
        "TPC-H lineitem SF{}: {rows} rows, {:.1} MB of CSV, {commits} commits of one message each; median of {} queries",
        a.scale,
        csv_bytes as f64 / 1e6,
        a.repeat + 2
    );
    println!("query: {sql}");
    println!(
        "{:<10} {:>7} {:>9} {:>14} {:>14}",
        "table", "files", "MB", "sluice query s", "duckdb s"
    );
    let show = |label: &str, (files, bytes): (u64, u64), (s, d): (f64, Option<f64>)| {
        println!(
            "{:<10} {:>7} {:>9.1} {:>14.3} {:>14}",
            label,
            files,
            bytes as f64 / 1e6,
            s,
            d.map(|d| format!("{d:.3}")).unwrap_or_else(|| "-".into())
        );
    };
    show("before", before_files, before);
    show("after", after_files, after);
    println!(
        "compact: {:.2} s wall, {:.2} CPU s, {:.1} MB peak RSS",
        c.wall.as_secs_f64(),
        c.cpu.as_secs_f64(),
        c.peak_rss_kib as f64 / 1024.0
    );
    Ok(())
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
    if let Some(parts) = a.log_parts {
        return log_parts(&a, parts).await;
    }
    if a.keyed {
        return keyed(&a);
    }
    let (csv, rows, csv_bytes) = lineitem(&a).await?;
    if a.compaction {
        return compaction(&a, &csv, rows, csv_bytes);
    }
    let exe = std::env::current_exe()?;
    let sluice = |home: &Path, args: &[&str]| {
        let mut c = Command::new(&exe);
        c.arg("--home").arg(home).args(args);
        c
    };
    let spec = ["--table", "lineitem", "--partition-by", "year(l_shipdate)"];
    let csv_s = csv.to_str().context("the CSV path is not UTF-8")?;
    // (name, output directory, command)
    let mut programs: Vec<(String, PathBuf, Command)> = Vec::new();
    for (name, sub) in [("sluice convert", "convert"), ("sluice run", "run")] {
        let home = a.dir.join(format!("sluice-{sub}"));
        let mut args = vec![sub, csv_s];
        args.extend_from_slice(&spec);
        if sub == "run" {
            args.extend_from_slice(&["--query", "SELECT count(*) FROM lineitem"]);
        }
        if a.exact_decimals {
            args.push("--exact-decimals");
        }
        let cmd = sluice(&home, &args);
        programs.push((name.to_string(), home, cmd));
    }
    if a.peers {
        let script = a.dir.join("peers.py");
        std::fs::write(&script, PEERS_PY)?;
        for engine in ["polars", "duckdb", "pyarrow"] {
            let out = a.dir.join(format!("out-{engine}"));
            let mut c = Command::new(&a.python);
            c.arg(&script).arg(engine).arg(&csv).arg(&out);
            programs.push((engine.to_string(), out, c));
        }
    }
    let lake_of = |name: &str, dir: &Path| {
        if name.starts_with("sluice") {
            dir.join("lake").join("lineitem")
        } else {
            dir.to_path_buf()
        }
    };
    let mut runs: Vec<Vec<Measured>> = programs.iter().map(|_| Vec::new()).collect();
    let mut outputs = vec![(0u64, 0u64); programs.len()];
    let mut failed = vec![false; programs.len()];
    for round in 0..a.repeat.max(1) {
        for (i, (name, dir, cmd)) in programs.iter_mut().enumerate() {
            if failed[i] {
                continue;
            }
            let _ = std::fs::remove_dir_all(&*dir);
            eprintln!("round {}: {name} …", round + 1);
            let m = measure(name, cmd)?;
            if !m.ok {
                if name.starts_with("sluice") {
                    bail!("{name} failed:\n{}", m.stderr);
                }
                eprintln!(
                    "{name}: failed or not installed: {}",
                    m.stderr.lines().last().unwrap_or("")
                );
                failed[i] = true;
                continue;
            }
            outputs[i] = dir_stats(&lake_of(name, dir));
            runs[i].push(m);
        }
    }
    println!(
        "TPC-H lineitem SF{}: {rows} rows, {:.1} MB of CSV; median of {} run(s)",
        a.scale,
        csv_bytes as f64 / 1e6,
        a.repeat.max(1)
    );
    println!(
        "{:<15} {:>8} {:>8} {:>11} {:>9} {:>12} {:>9} {:>6} {:>11}",
        "program",
        "wall s",
        "CPU s",
        "rows/s",
        "CSV MB/s",
        "peak RSS MB",
        "out MB",
        "files",
        "vs Polars"
    );
    let polars = programs
        .iter()
        .position(|p| p.0 == "polars")
        .and_then(|i| median(&runs[i]))
        .map(|m| m.0);
    for (i, (name, _, _)) in programs.iter().enumerate() {
        let Some((wall, cpu, peak)) = median(&runs[i]) else {
            continue;
        };
        let (files, bytes) = outputs[i];
        let vs = polars
            .map(|p| format!("{:.2}x", p / wall))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<15} {:>8.2} {:>8.2} {:>11.0} {:>9.1} {:>12.1} {:>9.1} {:>6} {:>11}",
            name,
            wall,
            cpu,
            rows as f64 / wall,
            csv_bytes as f64 / 1e6 / wall,
            peak as f64 / 1024.0,
            bytes as f64 / 1e6,
            files,
            vs
        );
    }
    Ok(())
}

/// `--log-parts`: start-up and commit cost of a table holding `parts` exactly-once records.
async fn log_parts(a: &BenchArgs, parts: u64) -> Result<()> {
    use sluice_core::delta::log::{ChunkPart, CommitDraft, Ledger};
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for (label, n) in [
        ("1,000 records", 1_000u64),
        ("--log-parts", parts.max(1_000)),
    ] {
        let home = a.dir.join(format!("log-parts-{n}"));
        let _ = std::fs::remove_dir_all(&home);
        let seed = a.dir.join("log-parts-seed.csv");
        std::fs::write(&seed, "id,d\n0,2024-01-01\n")?;
        let sluice = |args: &[&str]| {
            let mut c = Command::new(&exe);
            c.arg("--home").arg(&home).args(args);
            c
        };
        let seed_s = seed.to_str().context("path is not UTF-8")?;
        let st = sluice(&[
            "convert",
            seed_s,
            "--table",
            "t",
            "--partition-by",
            "year(d)",
        ])
        .stdout(Stdio::null())
        .status()?;
        if !st.success() {
            bail!("creating the table failed");
        }
        let lake = sluice_core::lake::Lake::local(&home.join("lake"))?;
        let mut log = Ledger::open(&lake, "t", "bench")
            .await?
            .with_checkpointer(Some(sluice_delta::checkpointer()));
        let t = Instant::now();
        let mut made = 0u64;
        // Each commit's time, by whether it wrote a checkpoint and record index too.
        let (mut plain, mut with_checkpoint) = (Vec::new(), Vec::new());
        while made < n {
            let k = (n - made).min(1_000);
            let chunks = (made..made + k)
                .map(|i| ChunkPart {
                    chunk: format!("bench-source-{:016x}-{i:08}", 0x5eed_u64),
                    partition: "year=2024".into(),
                })
                .collect();
            // A file for every thousand records, as a consumer commits them (never read:
            // `convert` appends).
            let add = vec![sluice_core::delta::log::DataFile {
                path: format!("t/year=2024/part-bench-{made:012}.parquet"),
                partition: "year=2024".into(),
                rows: k,
                bytes: k * 100,
                kind: sluice_core::delta::log::FileKind::Data,
                stats: None,
            }];
            let started = Instant::now();
            let c = log
                .commit(CommitDraft {
                    chunks,
                    add,
                    ..Default::default()
                })
                .await?;
            if c.version
                .is_multiple_of(sluice_core::delta::log::CHECKPOINT_INTERVAL)
            {
                with_checkpoint.push(started.elapsed());
            } else {
                plain.push(started.elapsed());
            }
            made += k;
        }
        plain.sort();
        if let (Some(median), Some(last)) = (plain.get(plain.len() / 2), with_checkpoint.last()) {
            eprintln!(
                "{label}: a commit of 1,000 records takes {:.1} ms (median); the one every {} versions that also writes the checkpoint and the record index, at {} records: {:.0} ms",
                median.as_secs_f64() * 1e3,
                sluice_core::delta::log::CHECKPOINT_INTERVAL,
                with_checkpoint.len() as u64 * sluice_core::delta::log::CHECKPOINT_INTERVAL * 1_000,
                last.as_secs_f64() * 1e3
            );
        }
        // A checkpoint at the newest version, as the consumer writes every 100, and its record
        // index, as the consumer writes next.
        sluice_delta::checkpointer()
            .checkpoint(&lake, "t/", log.state().version)
            .await?;
        Ledger::open(&lake, "t", "bench")
            .await?
            .with_checkpointer(Some(sluice_delta::checkpointer()))
            .index_records()
            .await;
        eprintln!(
            "{label}: {n} records in {} versions made in {:.1}s",
            log.state().version,
            t.elapsed().as_secs_f64()
        );
        let one = a.dir.join("log-parts-one.csv");
        std::fs::write(&one, "id,d\n1,2024-06-01\n")?;
        let one_s = one.to_str().context("path is not UTF-8")?;
        let mut runs = Vec::new();
        for _ in 0..a.repeat.max(1) {
            // A new source each run: one commit each time.
            std::fs::write(&one, format!("id,d\n{},2024-06-01\n", runs.len() + 1))?;
            runs.push(measure(
                "sluice convert",
                &mut sluice(&["convert", one_s, "--table", "t"]),
            )?);
        }
        if let Some(bad) = runs.iter().find(|r| !r.ok) {
            bail!("convert failed: {}", bad.stderr);
        }
        runs.sort_by_key(|r| r.wall);
        let m = &runs[runs.len() / 2];
        let peak = runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
        rows.push((label, n, m.wall, m.cpu, peak));
    }
    println!("| table | records | wall | CPU | peak RSS |");
    println!("|---|---:|---:|---:|---:|");
    for (label, n, wall, cpu, peak) in rows {
        println!(
            "| {label} | {n} | {:.2} s | {:.2} s | {:.0} MB |",
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            peak as f64 / 1024.0
        );
    }
    Ok(())
}

/// The keyed data set of `--keyed`: the load (`I` of ids 0..rows, sequence 0) and the changes
/// (sequences 1..), written once and reused.
fn keyed_data(dir: &Path, rows: u64, changes: u64) -> Result<(PathBuf, PathBuf)> {
    use std::io::Write;
    let (load, change) = (
        dir.join(format!("keyed-load-{rows}.csv")),
        dir.join(format!("keyed-changes-{rows}-{changes}.csv")),
    );
    let mut state = 0x5eed_0fc0_ffee_u64;
    let mut next = move |below: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % below
    };
    let day = |next: &mut dyn FnMut(u64) -> u64| {
        format!("{}-{:02}-{:02}", 2019 + next(6), 1 + next(12), 1 + next(28))
    };
    if !load.exists() {
        let tmp = load.with_extension("tmp");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        writeln!(w, "Op,id,name,amount,ts,d")?;
        for i in 0..rows {
            let cents = next(1_000_000);
            let d = day(&mut next);
            writeln!(w, "I,{i},name{i},{}.{:02},0,{d}", cents / 100, cents % 100)?;
        }
        w.flush()?;
        drop(w);
        std::fs::rename(&tmp, &load)?;
    }
    if !change.exists() {
        let tmp = change.with_extension("tmp");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        writeln!(w, "Op,id,name,amount,ts,d")?;
        for s in 1..=changes {
            let op = match next(10) {
                0..=6 => "U",
                7 => "D",
                _ => "I",
            };
            let id = next(rows + rows / 10);
            let cents = next(1_000_000);
            let d = day(&mut next);
            writeln!(
                w,
                "{op},{id},c{s},{}.{:02},{s},{d}",
                cents / 100,
                cents % 100
            )?;
        }
        w.flush()?;
        drop(w);
        std::fs::rename(&tmp, &change)?;
    }
    Ok((load, change))
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// `--keyed`: a merge of changes into a keyed table, beside the `deltalake` package's MERGE.
fn keyed(a: &BenchArgs) -> Result<()> {
    let rows = (1_000_000.0 * a.scale).round().max(1.0) as u64;
    let changes = (100_000.0 * a.scale).round().max(1.0) as u64;
    let (load, change) = keyed_data(&a.dir, rows, changes)?;
    let exe = std::env::current_exe()?;
    let spec = [
        "--table",
        "orders",
        "--partition-by",
        "year(d)",
        "--merge-key",
        "id",
        "--op-column",
        "Op",
        "--sequence-by",
        "ts",
        "--exact-decimals",
    ];
    let convert = |home: &Path, src: &Path| -> Result<Command> {
        let mut c = Command::new(&exe);
        c.arg("--home").arg(home).arg("convert").arg(src).args(spec);
        Ok(c)
    };
    let base = a.dir.join(format!("keyed-base-{rows}"));
    let _ = std::fs::remove_dir_all(&base);
    eprintln!("loading {rows} rows …");
    let loaded = measure("sluice load", &mut convert(&base, &load)?)?;
    if !loaded.ok {
        bail!("loading the keyed table failed:\n{}", loaded.stderr);
    }
    let script = a.dir.join("keyed_merge.py");
    std::fs::write(&script, KEYED_MERGE_PY)?;
    let sluice_home = a.dir.join("keyed-sluice");
    let peer_table = a.dir.join("keyed-deltalake");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut peer_failed = !a.peers;
    for round in 0..a.repeat.max(1) {
        let _ = std::fs::remove_dir_all(&sluice_home);
        copy_dir(&base, &sluice_home)?;
        eprintln!("round {}: sluice convert of {changes} changes …", round + 1);
        let m = measure("sluice", &mut convert(&sluice_home, &change)?)?;
        if !m.ok {
            bail!("sluice convert of the changes failed:\n{}", m.stderr);
        }
        ours.push(m);
        if !peer_failed {
            let _ = std::fs::remove_dir_all(&peer_table);
            copy_dir(&base.join("lake/orders"), &peer_table)?;
            eprintln!("round {}: deltalake merge …", round + 1);
            let mut c = Command::new(&a.python);
            c.arg(&script).arg(&peer_table).arg(&change);
            let m = measure("deltalake", &mut c)?;
            if m.ok {
                theirs.push(m);
            } else {
                eprintln!(
                    "deltalake: failed or not installed: {}",
                    m.stderr.lines().last().unwrap_or("")
                );
                peer_failed = true;
            }
        }
    }
    // Both tables must hold the same rows.
    if !theirs.is_empty() {
        let check = "import os, sys, deltalake, pyarrow.compute as pc\n\
            def f(p):\n    t = deltalake.DeltaTable(p).to_pyarrow_table(columns=['id', 'ts', 'amount'])\n    \
            return (t.num_rows, len(pc.unique(t.column('id'))), pc.sum(t.column('ts')).as_py(), str(pc.sum(t.column('amount')).as_py()))\n\
            a, b = f(sys.argv[1]), f(sys.argv[2])\nprint(a, b)\nsys.stdout.flush()\nos._exit(0 if a == b else 1)";
        let out = Command::new(&a.python)
            .arg("-c")
            .arg(check)
            .arg(sluice_home.join("lake/orders"))
            .arg(&peer_table)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() {
            bail!(
                "sluice's and deltalake's tables differ (rows, keys, sum of ts, sum of amount): {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprintln!("same rows in both tables (rows, keys, sum of ts, sum of amount): {text}");
    }
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "keyed merge: {changes} changes into a {rows}-row table (year-partitioned); median of {} run(s); load average {}",
        a.repeat.max(1),
        load_avg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "(the load itself: {:.2} s wall, {:.2} CPU s, {:.0} MB peak RSS)",
        loaded.wall.as_secs_f64(),
        loaded.cpu.as_secs_f64(),
        loaded.peak_rss_kib as f64 / 1024.0
    );
    println!(
        "{:<12} {:>8} {:>8} {:>12} {:>16} {:>16}",
        "program", "wall s", "CPU s", "peak RSS MB", "wall vs sluice", "CPU vs sluice"
    );
    let us = median(&ours).context("no sluice run")?;
    for (name, ms) in [("sluice", &ours), ("deltalake", &theirs)] {
        let Some((wall, cpu, peak)) = median(ms) else {
            continue;
        };
        println!(
            "{:<12} {:>8.2} {:>8.2} {:>12.1} {:>15.2}x {:>15.2}x",
            name,
            wall,
            cpu,
            peak as f64 / 1024.0,
            wall / us.0,
            cpu / us.1
        );
    }
    Ok(())
}
