//! `produce`, `consume` and `run`: the pipeline through the queue.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_core::catalog::Catalog;
use sluice_core::lake::Lake;
use sluice_core::pipeline::consumer::{Consumer, ConsumerOptions, ConsumerStats};
use sluice_core::pipeline::producer::{ProduceStats, Producer, ProducerOptions, Progress};
use sluice_core::pipeline::setup::TableSettings;
use sluice_core::schema::partition::PartitionSpec;
use sluice_core::schema::{Column, ColumnType};
use sluice_core::source::csv::CsvFormat;
use sluice_core::table::policy::SchemaPolicy;
use sluice_core::writer_id;

use crate::Ctx;
use crate::args::*;
use crate::backends::Backends;
use crate::tables::*;
use crate::{convert, output};

pub(crate) fn table_settings(ctx: &Ctx, lake: &Lake, t: &TableArgs) -> Result<TableSettings> {
    let tc = ctx.table_config(&t.table);
    let spec_s = t.partition_by.clone().or(tc.partition_by.clone());
    // Without a spec, a new table is unpartitioned (an existing one keeps its partitioning).
    let spec = PartitionSpec::parse(spec_s.as_deref().unwrap_or(""))?;
    let mut opts = TableSettings::new(&t.table, spec, lake.url_of(&Lake::table_dir(&t.table)));
    opts.database = ctx.database().to_string();
    let mut nulls = tc.null_values.clone();
    nulls.extend(t.null_values.iter().cloned());
    let ascii = |c: char, what: &str| -> Result<u8> {
        if c.is_ascii() {
            Ok(c as u8)
        } else {
            bail!("--{what} must be an ASCII character, not {c:?}")
        }
    };
    opts.format = CsvFormat {
        delimiter: match t
            .delimiter
            .or(tc.delimiter.as_deref().and_then(|s| s.chars().next()))
        {
            Some(c) => ascii(c, "delimiter")?,
            None => b',',
        },
        quote: match t
            .quote
            .or(tc.quote.as_deref().and_then(|s| s.chars().next()))
        {
            Some(c) => ascii(c, "quote")?,
            None => b'"',
        },
        null_values: nulls,
    };
    opts.date_format = t.date_format.clone().or(tc.date_format.clone());
    opts.exact_decimals = t.exact_decimals || tc.exact_decimals;
    opts.column_names = match (t.column_names, tc.column_names.as_deref()) {
        (Some(n), _) => n,
        (None, Some(s)) => sluice_core::schema::ColumnNames::parse(s)
            .with_context(|| format!("tables.{}.column_names", t.table))?,
        (None, None) => sluice_core::schema::ColumnNames::SnakeCase,
    };
    opts.schema_policy = match (t.schema_policy, tc.schema_policy.as_deref()) {
        (Some(p), _) => p,
        (None, Some(s)) => {
            SchemaPolicy::parse(s).with_context(|| format!("tables.{}.schema_policy", t.table))?
        }
        (None, None) => SchemaPolicy::default(),
    };
    if let Some(key) = t.merge_key.as_ref().or(tc.merge_key.as_ref()) {
        opts.keys = Some(sluice_core::table::keyed::KeySpec::new(
            key,
            t.op_column.clone().or(tc.op_column.clone()),
            t.sequence_by.clone().or(tc.sequence_by.clone()),
            t.keep_op_column || tc.keep_op_column,
        )?);
    } else if t.op_column.is_some() || tc.op_column.is_some() || tc.sequence_by.is_some() {
        bail!(
            "tables.{}: op_column and sequence_by need merge_key",
            t.table
        );
    }
    if let Some(cols) = &tc.columns {
        opts.columns = Some(
            cols.iter()
                .map(|(n, ty)| {
                    let ty = ty.as_str().with_context(|| {
                        format!("tables.{}.columns.{n}: the type must be a string", t.table)
                    })?;
                    Ok(Column::new(n, ColumnType::parse(ty)?))
                })
                .collect::<Result<Vec<_>>>()?,
        );
    }
    Ok(opts)
}

pub(crate) fn progress_bar(label: &str) -> (Option<Progress>, Option<indicatif::ProgressBar>) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed_precise}]")
                .expect("template"),
        );
        pb.set_prefix(label.to_string());
        pb.enable_steady_tick(Duration::from_millis(200));
        let start = Instant::now();
        let pb2 = pb.clone();
        let p: Progress = Arc::new(move |bytes, rows| {
            let secs = start.elapsed().as_secs_f64().max(1e-3);
            pb2.set_message(format!(
                "{rows} rows, {:.1} MB, {:.0} rows/s",
                bytes as f64 / 1e6,
                rows as f64 / secs
            ));
        });
        (Some(p), Some(pb))
    } else {
        let start = Instant::now();
        let last = Arc::new(std::sync::Mutex::new(Instant::now()));
        let label = label.to_string();
        let p: Progress = Arc::new(move |bytes, rows| {
            let mut l = last.lock().unwrap_or_else(|p| p.into_inner());
            if l.elapsed() >= Duration::from_secs(10) {
                *l = Instant::now();
                let secs = start.elapsed().as_secs_f64().max(1e-3);
                eprintln!(
                    "{label}: {rows} rows, {:.1} MB, {:.0} rows/s",
                    bytes as f64 / 1e6,
                    rows as f64 / secs
                );
            }
        });
        (Some(p), None)
    }
}

pub(crate) async fn produce(
    ctx: &Ctx,
    b: &Backends,
    sources: &[sluice_core::source::Source],
    t: &TableArgs,
    send: &SendArgs,
    max_backlog: Option<u64>,
) -> Result<(ProduceStats, sluice_core::metrics::MeterSnapshot)> {
    let table = table_settings(ctx, &b.lake, t)?;
    prepare_table(ctx, &*b.catalog, &b.lake, t, &table).await?;
    let mut opts = ProducerOptions::new(table);
    opts.zstd_level = send.zstd_level;
    opts.max_backlog = max_backlog;
    let m = b.metered("producer", send.claim_bytes());
    let producer = Producer::new(m.queue.clone(), b.catalog.clone(), opts)?;
    let (progress, pb) = progress_bar("produce");
    let r = producer.produce_sources(sources, progress).await;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    Ok((r?, m.meter.snapshot()))
}

/// Before writing to a table: registers it from its Delta log when the lake has it and the
/// catalog does not (another engine's table, or one made from another home), refusing a
/// `--partition-by` its log disagrees with; then checks the settings given against the table.
pub(crate) async fn prepare_table(
    ctx: &Ctx,
    catalog: &dyn Catalog,
    lake: &Lake,
    t: &TableArgs,
    opts: &TableSettings,
) -> Result<()> {
    let tc = ctx.table_config(&t.table);
    let asked = t
        .partition_by
        .as_ref()
        .or(tc.partition_by.as_ref())
        .map(|s| PartitionSpec::parse(s))
        .transpose()?;
    sluice_core::delta::adopt::adopt(
        catalog,
        lake,
        &sluice_core::delta::adopt::Adoption {
            database: ctx.database(),
            table: &t.table,
            location: &opts.location,
            partition_by: asked.as_ref(),
            schema_policy: opts.schema_policy.name(),
            // The consumer and `convert` evaluate CHECK constraints (with DataFusion).
            capabilities: sluice_core::delta::Capabilities { constraints: true },
        },
    )
    .await?;
    if let Ok(def) = catalog.get_table(ctx.database(), &t.table).await {
        check_table(&def, t, opts)?;
    }
    Ok(())
}

/// Checks the settings given on the command line against an existing table: its partitioning,
/// and its schema policy (changed with `sluice catalog alter`, never implicitly).
pub(crate) fn check_table(
    def: &sluice_core::catalog::TableDef,
    t: &TableArgs,
    opts: &TableSettings,
) -> Result<()> {
    if t.partition_by.is_some() {
        check_spec(def, &opts.partition_by)?;
    }
    if let Some(p) = t.schema_policy {
        let current = SchemaPolicy::of_def(def)?;
        if current != p {
            bail!(
                "table {} has schema policy {current}, not {p}: change it with `sluice catalog alter {} --schema-policy {p}`",
                def.name,
                def.name
            );
        }
    }
    Ok(())
}

pub(crate) fn check_spec(def: &sluice_core::catalog::TableDef, spec: &PartitionSpec) -> Result<()> {
    let current = def
        .parameters
        .get(sluice_core::catalog::PARAM_PARTITION_BY)
        .cloned()
        .unwrap_or_default();
    let current = PartitionSpec::parse(&current).ok();
    // Named as the table names its columns (`year(Order Date)` is `year(order_date)`).
    let spec = &spec.named(def.column_names()?);
    if current.as_ref() != Some(spec) {
        bail!(
            "table {} is partitioned by {}, not by {}: leave --partition-by out to write with the table's partitioning",
            def.name,
            current
                .map(|c| c.describe())
                .unwrap_or_else(|| "an unknown spec".into()),
            spec.describe()
        );
    }
    Ok(())
}

pub(crate) async fn check_partitioning(
    catalog: &dyn Catalog,
    database: &str,
    table: &str,
    spec: &str,
) -> Result<()> {
    let def = catalog.get_table(database, table).await?;
    check_spec(&def, &PartitionSpec::parse(spec)?)
}

pub(crate) fn consumer_options(
    ctx: &Ctx,
    table: &str,
    a: &ConsumerArgs,
    once: bool,
    id: String,
) -> ConsumerOptions {
    let c = &ctx.config.consumer;
    // The spool directory is the one `Consumer::start` claims.
    let mut o =
        ConsumerOptions::new(table, PathBuf::new()).with_memory_limit(a.memory_limit as usize);
    o.max_uncommitted_bytes = a.max_uncommitted.max(1);
    o.database = ctx.database().to_string();
    o.writer_id = id;
    o.once = once;
    o.dead_letter_log = Some(ctx.home.failure_log());
    if let Some(v) = a.rotate_rows.or(c.rotate_rows) {
        o.write.rotate_rows = v.max(1);
    }
    if let Some(v) = a.rotate_bytes.or(c.rotate_bytes) {
        o.write.rotate_bytes = v.max(1);
    }
    if let Some(v) = a.rotate_age.or(c.rotate_age_secs) {
        o.rotate_age = Duration::from_secs(v);
    }
    o.checkpointer = Some(sluice_delta::checkpointer());
    o.constraints = Some(Arc::new(sluice_query::constraints::DataFusionConstraints));
    o.auto_compact = !a.no_auto_compact;
    o.compact_small_files = a.auto_compact_files;
    o.compact_every = Duration::from_secs(a.auto_compact_every.max(1));
    o.visibility_timeout = a
        .visibility_timeout
        .or(c.visibility_timeout_secs)
        .map(Duration::from_secs);
    o
}

pub(crate) async fn consume(
    ctx: &Ctx,
    b: &Backends,
    table: &str,
    a: &ConsumerArgs,
    once: bool,
    producer_done: Option<Arc<AtomicBool>>,
) -> Result<(ConsumerStats, sluice_core::metrics::MeterSnapshot)> {
    let mut opts = consumer_options(ctx, table, a, once, writer_id());
    // An SQS queue may carry S3 event notifications: the objects they name are landed.
    opts.object_stores = ctx.open.notification_stores().await;
    if let Some(addr) = a.metrics_addr {
        let health = Arc::new(sluice_core::pipeline::health::Health::default());
        let bound = ctx.telemetry.serve(addr, Some(health.clone())).await?;
        eprintln!("metrics at http://{bound}/metrics, probes at /healthz and /readyz");
        opts.health = Some(health);
        opts.report_queue_depth = true;
        let target = ctx.open.queue_target(Some(table))?;
        opts.dead_letter_queue = ctx.open.dead_letter_queue(&target).await?;
    }
    // Pointers of claim-checked messages are resolved whatever mode the producer used.
    let m = b.metered("consumer", None);
    let started = Consumer::start(
        opts,
        &ctx.home.spools(),
        m.queue.clone(),
        b.catalog.clone(),
        m.lake.clone(),
    )
    .await
    .with_context(|| format!("cannot start the consumer of table {table}"))?;
    for (t, removed) in &started.recovered {
        eprintln!(
            "recovery: removed {} uncommitted file(s) of {t}",
            removed.len()
        );
    }
    let signals = crate::stop::listen()?;
    let stats = started
        .consumer
        .hold_until(producer_done)
        .run_until(
            signals.first(),
            signals.cut_short(Duration::from_secs(a.stop_timeout)),
        )
        .await?;
    if stats.released_unfinished > 0 {
        eprintln!(
            "stopped before committing everything: {} message(s) given back to the queue, to be delivered again",
            stats.released_unfinished
        );
    }
    Ok((stats, m.meter.snapshot()))
}

pub(crate) async fn run_pipeline(ctx: &Ctx, a: RunArgs) -> Result<()> {
    let table = a.table.table.clone();
    let b = ctx.backends(Some(&table)).await?;
    // The table must exist before the consumer starts.
    let settings = table_settings(ctx, &b.lake, &a.table)?;
    prepare_table(ctx, &*b.catalog, &b.lake, &a.table, &settings).await?;
    let producer = Producer::new(
        b.queue.clone(),
        b.catalog.clone(),
        ProducerOptions::new(settings.clone()),
    )?;
    let sources = convert::expand_sources(ctx, &a.files, a.table.format).await?;
    let first = sources.first().context("no input files")?;
    let def = producer.ensure_table_for(first).await?;
    sluice_core::delta::open::refuse_legacy_log(&b.lake, &table).await?;
    check_table(&def, &a.table, &settings)?;
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    // On a queue on this machine's disk (the embedded one) the producer, much faster than the
    // consumer, would otherwise put most of the input there before the consumer caught up.
    let backlog = sluice_core::pipeline::producer::backlog_beside_consumer(&*b.queue);
    let prod = {
        let (sources, done, t, b2, send) = (
            sources.clone(),
            done.clone(),
            a.table.clone(),
            b.clone(),
            a.send.clone(),
        );
        async move {
            let r = produce(ctx, &b2, &sources, &t, &send, backlog).await;
            done.store(true, Ordering::SeqCst);
            r
        }
    };
    // The consumer runs as its own task, so its Parquet encoding never stalls the producer.
    let cons = tokio::spawn({
        let (ctx, b, table, args, done) = (
            ctx.clone(),
            b.clone(),
            table.clone(),
            a.consumer.clone(),
            done.clone(),
        );
        async move { consume(&ctx, &b, &table, &args, true, Some(done)).await }
    });
    // A consumer that stops with an error ends the run: a producer waiting for the backlog to
    // shrink would wait forever.
    tokio::pin!(prod);
    let mut cons = cons;
    let (p, (c, cm)) = tokio::select! {
        p = &mut prod => (p, cons.await??),
        c = &mut cons => {
            // The consumer ends before the producer only when a signal stopped it: stop
            // producing too (a producer held back by the backlog would wait for it forever).
            let c = c??;
            let stopped = if done.load(Ordering::SeqCst) {
                prod.await
            } else {
                Err(anyhow::anyhow!(
                    "run was stopped before every source was sent; what was sent stays in the queue (`sluice consume --once` lands it)"
                ))
            };
            (stopped, c)
        }
    };
    if crate::stop::signalled() {
        eprintln!("{}", consume_summary(&c, &cm));
        bail!(
            "run was stopped by a signal: what it committed stays, what it sent and did not commit stays in the queue (`sluice consume --once` lands it)"
        );
    }
    let elapsed = started.elapsed();
    match &p {
        Ok((ps, pm)) => {
            eprintln!("{}", produce_summary(ps, pm));
        }
        Err(_) => {
            eprintln!("producer stopped early; everything it sent before the error is committed")
        }
    }
    eprintln!("{}", consume_summary(&c, &cm));
    ctx.write_metrics()?;
    let (p, _) = p?;
    eprintln!(
        "run: {} rows in {:.2}s ({:.0} rows/s, {:.1} MB/s of CSV)",
        p.rows,
        elapsed.as_secs_f64(),
        p.rows as f64 / elapsed.as_secs_f64().max(1e-9),
        p.csv_bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
    );
    let sql = a.query.unwrap_or_else(|| {
        if def.partition_keys.is_empty() {
            return format!("SELECT count(*) AS rows FROM \"{table}\"");
        }
        let keys = def
            .partition_keys
            .iter()
            .map(|k| format!("\"{}\"", k.name))
            .collect::<Vec<_>>()
            .join(", ");
        format!("SELECT {keys}, count(*) AS rows FROM \"{table}\" GROUP BY {keys} ORDER BY {keys}")
    });
    query(
        ctx,
        &QueryArgs {
            sql,
            format: output::Format::Table,
            output: None,
            engine: Engine::Embedded,
            as_of: None,
            workgroup: None,
            results: None,
        },
    )
    .await
}

pub(crate) fn produce_summary(s: &ProduceStats, m: &sluice_core::metrics::MeterSnapshot) -> String {
    format!(
        "produced: {} file(s), {} rows, {:.1} MB of CSV in {} chunk(s) ({:.1} MB of messages), {} row(s) rejected\nproducer {m}",
        s.files,
        s.rows,
        s.csv_bytes as f64 / 1e6,
        s.chunks,
        s.message_bytes as f64 / 1e6,
        s.rejected_rows
    )
}

pub(crate) fn consume_summary(
    s: &ConsumerStats,
    m: &sluice_core::metrics::MeterSnapshot,
) -> String {
    format!(
        "consumed: {} message(s), {} rows in, {} written, {} quarantined, {} duplicate(s) dropped; {} file(s), {:.1} MB, {} commit(s); {} deleted{}{}\nconsumer {m}",
        s.messages,
        s.rows_in,
        s.write.rows_written,
        s.write.rows_quarantined,
        s.write.rows_duplicate,
        s.write.files,
        s.write.bytes_written as f64 / 1e6,
        s.write.commits,
        s.deleted,
        if s.compactions > 0 {
            format!("; {} background compaction(s)", s.compactions)
        } else {
            String::new()
        },
        if s.undecodable_messages > 0 {
            format!(
                "; {} message(s) could not be processed",
                s.undecodable_messages
            )
        } else {
            String::new()
        }
    )
}

/// `sluice produce`.
pub(crate) async fn produce_cmd(ctx: &Ctx, a: &ProduceArgs) -> Result<()> {
    let b = ctx.backends(Some(&a.table.table)).await?;
    let sources = convert::expand_sources(ctx, &a.files, a.table.format).await?;
    let (stats, meter) = produce(ctx, &b, &sources, &a.table, &a.send, None).await?;
    eprintln!("{}", produce_summary(&stats, &meter));
    ctx.write_metrics()
}

/// `sluice consume`.
pub(crate) async fn consume_cmd(ctx: &Ctx, a: &ConsumeArgs) -> Result<()> {
    let b = ctx.backends(Some(&a.table)).await?;
    if let Some(p) = &a.partition_by {
        check_partitioning(&*b.catalog, &b.database, &a.table, p).await?;
    }
    let (stats, meter) = consume(ctx, &b, &a.table, &a.consumer, a.once, None).await?;
    eprintln!("{}", consume_summary(&stats, &meter));
    ctx.write_metrics()
}
