//! `sluice convert`: sources at rest straight into a table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use sluice_core::pipeline::convert::{ConvertOptions, ConvertProgress, ConvertStats};
use sluice_core::source::{Format, Source, expand_local, expand_store};
use sluice_core::writer_id;

use crate::Ctx;
use crate::args::TableArgs;
use crate::ingest::{prepare_table, table_settings};

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Files, directories (read recursively; names starting with `_` or `.` are skipped), glob
    /// patterns (quote them), or s3://BUCKET/PREFIX.
    #[arg(required = true, value_name = "SOURCE")]
    sources: Vec<String>,
    #[command(flatten)]
    table: TableArgs,
    /// Close a partition's file at this many rows.
    #[arg(long)]
    rotate_rows: Option<u64>,
    /// Close a partition's file at this many bytes (default 128 MiB).
    #[arg(long)]
    rotate_bytes: Option<u64>,
    /// Pieces typed at once (default: the number of cores, within the memory limit).
    #[arg(long)]
    threads: Option<usize>,
    /// Memory for rows in flight (pieces being read and typed, buffered row groups); the
    /// process takes some tens of MB more.
    #[arg(long, default_value = "256MiB", value_parser = crate::args::parse_size)]
    memory_limit: u64,
}

/// Expands SOURCE arguments, in order; duplicates (a file named twice) are read once.
pub(crate) async fn expand_sources(
    ctx: &Ctx,
    args: &[String],
    format: Option<Format>,
) -> Result<Vec<Source>> {
    let mut out: Vec<Source> = Vec::new();
    for arg in args {
        let found = match arg.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    bail!("{arg}: no bucket named");
                }
                let store = ctx.open.source_store(bucket).await?;
                expand_store(store, &format!("s3://{bucket}"), prefix, format).await?
            }
            None => expand_local(arg, format)?,
        };
        for s in found {
            if !out.iter().any(|o| o.name == s.name) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

pub async fn run(ctx: &Ctx, a: &ConvertArgs) -> Result<()> {
    let table = a.table.table.clone();
    let lake = ctx.open.lake().await?;
    let catalog = ctx.open.catalog().await?;
    let topts = table_settings(ctx, &lake, &a.table)?;
    prepare_table(ctx, &*catalog, &lake, &a.table, &topts).await?;
    let sources = expand_sources(ctx, &a.sources, a.table.format).await?;
    let total_bytes: u64 = sources.iter().map(|s| s.size).sum();
    let id = writer_id();
    ctx.open.ensure_home()?;
    // Uploads of an earlier run (or a consumer) that died before committing.
    let started =
        sluice_core::pipeline::startup::start(&ctx.home.spools(), &lake, &table, &id, None).await?;
    let spool = started.spool;
    let resume = started.staged;
    for (t, removed) in started.recovered {
        eprintln!(
            "recovery: removed {} uncommitted file(s) of {t}",
            removed.len()
        );
    }
    let mut opts = ConvertOptions::new(topts, spool.path().to_path_buf());
    opts.writer_id = id;
    opts.resume = resume;
    opts.checkpointer = Some(sluice_delta::checkpointer());
    opts.constraints = Some(Arc::new(sluice_query::constraints::DataFusionConstraints));
    let c = &ctx.config.consumer;
    if let Some(v) = a.rotate_rows.or(c.rotate_rows) {
        opts.write.rotate_rows = v.max(1);
    }
    if let Some(v) = a.rotate_bytes.or(c.rotate_bytes) {
        opts.write.rotate_bytes = v.max(1);
    }
    if let Some(t) = a.threads {
        opts.parallelism = t.max(1);
    }
    opts = opts.with_memory_limit(a.memory_limit as usize);
    // SIGTERM or SIGINT: stop between pieces, commit what is written; a second signal (or a
    // minute later) ends the process at once, which is as safe (a run after it resumes).
    let signals = crate::stop::listen()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    opts.stop = Some(stop_rx);
    tokio::spawn({
        let signals = signals.clone();
        async move {
            signals.first().await;
            eprintln!(
                "stopping between pieces: committing what is written (a second signal stops at once)"
            );
            let _ = stop_tx.send(true);
            signals.cut_short(Duration::from_secs(60)).await;
            eprintln!("stopped at once: run the same command again to resume");
            std::process::exit(1);
        }
    });
    let (progress, bar) = progress_bar(total_bytes);
    let started = Instant::now();
    let r = sluice_core::pipeline::convert::convert(sources, catalog, lake, opts, progress).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let done = r.with_context(|| format!("convert into table {table} stopped"))?;
    drop(spool);
    eprintln!("{}", summary(&done.stats, started.elapsed()));
    for (name, e) in &done.failed {
        eprintln!("  failed: {name}: {e}");
    }
    if done.stopped {
        bail!(
            "convert was stopped before every source was read; what it committed stays. Run the same command again to resume: what is converted is skipped"
        );
    }
    if !done.failed.is_empty() {
        bail!(
            "{} source(s) failed; none of their rows is committed, every other source is. Fix them and run the same command again: what is converted is skipped",
            done.failed.len()
        );
    }
    Ok(())
}

fn summary(s: &ConvertStats, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    format!(
        "convert: {} source(s) ({} converted before, {} failed), {} piece(s) committed before, {} rows read ({} written, {} quarantined, {} already committed), {} file(s), {:.1} MB written, {} commit(s); {:.2}s, {:.0} rows/s, {:.1} MB/s of source",
        s.sources,
        s.sources_skipped,
        s.sources_failed,
        s.pieces_skipped,
        s.rows_in,
        s.write.rows_written,
        s.write.rows_quarantined,
        s.write.rows_duplicate,
        s.write.files,
        s.write.bytes_written as f64 / 1e6,
        s.write.commits,
        secs,
        s.rows_in as f64 / secs,
        s.bytes_read as f64 / 1e6 / secs,
    )
}

/// A bar over the sources' stored bytes, with rows and time left, on a terminal; a line every
/// 10 seconds otherwise.
fn progress_bar(total: u64) -> (Option<ConvertProgress>, Option<indicatif::ProgressBar>) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new(total);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {msg} [{elapsed_precise}, {eta} left]",
            )
            .expect("template"),
        );
        pb.enable_steady_tick(Duration::from_millis(200));
        let pb2 = pb.clone();
        let p: ConvertProgress = Arc::new(move |bytes, rows| {
            pb2.set_position(bytes.min(total));
            pb2.set_message(format!("{rows} rows"));
        });
        (Some(p), Some(pb))
    } else {
        let start = Instant::now();
        let last = Arc::new(std::sync::Mutex::new(Instant::now()));
        let p: ConvertProgress = Arc::new(move |bytes, rows| {
            let mut l = last.lock().unwrap_or_else(|p| p.into_inner());
            if l.elapsed() >= Duration::from_secs(10) {
                *l = Instant::now();
                let secs = start.elapsed().as_secs_f64().max(1e-3);
                let left = if bytes > 0 {
                    (total.saturating_sub(bytes)) as f64 * secs / bytes as f64
                } else {
                    0.0
                };
                eprintln!(
                    "convert: {rows} rows, {:.1} of {:.1} MB, {:.0} rows/s, about {left:.0}s left",
                    bytes as f64 / 1e6,
                    total as f64 / 1e6,
                    rows as f64 / secs
                );
            }
        });
        (Some(p), None)
    }
}
