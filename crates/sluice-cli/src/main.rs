//! `sluice`: CSV files to a query-ready, year-partitioned Parquet lake through a queue.

mod athena;
mod backends;
mod bench;
mod config;
mod convert;
mod output;
mod serve;
mod telemetry;
mod top;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use sluice_core::catalog::{Catalog, CatalogExt};
use sluice_core::home::Home;
use sluice_core::lake::Lake;
use sluice_core::pipeline::consumer::{Consumer, ConsumerOptions, ConsumerStats};
use sluice_core::pipeline::producer::{ProduceStats, Producer, ProducerOptions, Progress};
use sluice_core::pipeline::setup::TableSettings;
use sluice_core::queue::{MAX_MESSAGE_BYTES, QueueSettings};
use sluice_core::schema::partition::PartitionSpec;
use sluice_core::schema::{Column, ColumnType};
use sluice_core::source::csv::CsvFormat;
use sluice_core::table::policy::SchemaPolicy;
use sluice_core::writer_id;

use crate::backends::{Backends, CatalogTarget, Opener, QueueTarget};
use crate::config::{Config, TableConfig};

const EXAMPLES: &str = "\
Examples:
  sluice run data/us-employment.csv --table employment --partition-by 'year(month)'
  sluice query \"SELECT year, count(*) AS months, avg(nonfarm) FROM employment GROUP BY year ORDER BY year\"
  sluice produce trips-*.csv --table trips --partition-by 'month(pickup)' --null-value NA
  sluice consume --table trips --once
  sluice catalog partitions employment
  sluice queue stats --queue employment
  sluice bench --scale 1

On AWS (endpoints and credentials from the standard AWS variables and profiles):
  sluice --queue sqs://events --lake s3://lake/raw --catalog glue://analytics init
  sluice --queue sqs://events --lake s3://lake/raw --catalog glue://analytics \
     run trips.csv --table trips --partition-by 'year(pickup)'
  sluice --catalog glue://analytics query --engine athena \"SELECT count(*) FROM trips\"
  sluice --lake s3://lake/raw --catalog glue://analytics catalog ddl trips";

/// CSV files to a partitioned Parquet lake, through a queue, with a catalog and SQL.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, after_help = EXAMPLES)]
struct Cli {
    /// Home directory of the embedded queue, catalog and lake.
    #[arg(long, global = true, env = "SLUICE_HOME")]
    home: Option<PathBuf>,
    /// Configuration file (default: ./sluice.toml if it exists).
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Lake: a directory, file:// URL or s3://BUCKET/PREFIX (default: <home>/lake).
    #[arg(long, global = true, env = "SLUICE_LAKE")]
    lake: Option<String>,
    /// Queue: an embedded queue's name, sqs://NAME or an SQS queue URL (default: the embedded
    /// queue named after the table).
    #[arg(long, global = true, env = "SLUICE_QUEUE")]
    queue: Option<String>,
    /// Catalog: glue://DATABASE (default: the embedded catalog in <home>).
    #[arg(long, global = true, env = "SLUICE_CATALOG")]
    catalog: Option<String>,
    /// Write every metric (rows, files, commits, queue calls, billed SQS units, object store
    /// requests, …) in Prometheus' text format to this file when the command ends.
    #[arg(long, global = true, env = "SLUICE_METRICS")]
    metrics: Option<PathBuf>,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the home directory, queue (with its dead-letter queue), catalog and lake.
    Init(InitArgs),
    /// Send CSV files to the queue as chunk messages.
    #[command(
        after_help = "Example:\n  sluice produce data/us-employment.csv --table employment --partition-by 'year(month)'"
    )]
    Produce(ProduceArgs),
    /// Receive chunks and write them to the lake as partitioned Parquet.
    #[command(
        after_help = "Examples:\n  sluice consume --table employment --once\n  sluice consume --table trips            # follow until Ctrl-C"
    )]
    Consume(ConsumeArgs),
    /// Convert files or objects already at rest straight into a table, exactly once: CSV (also
    /// .gz and .zst), JSON lines or Parquet; files, directories, globs or s3://BUCKET/PREFIX.
    #[command(
        after_help = "Examples:\n  sluice convert data/us-employment.csv --table employment --partition-by 'year(month)'\n  sluice convert 's3://raw-bucket/exports/2024/' --table orders --partition-by 'year(order_date)'\n  sluice convert 'dumps/*.jsonl.gz' --table events --partition-by 'day(ts)'\n\nRun it again after a crash or an error: sources already converted are skipped, pieces\nalready committed are not written again."
    )]
    Convert(convert::ConvertArgs),
    /// Produce and consume together, then show the table: the whole pipeline in one command.
    #[command(
        after_help = "Example:\n  sluice run data/us-employment.csv --table employment --partition-by 'year(month)' \\\n     --query 'SELECT year, count(*) FROM employment GROUP BY year ORDER BY year'"
    )]
    Run(RunArgs),
    /// Run read-only SQL over the lake's tables (and the `quarantine` table).
    #[command(
        after_help = "Example:\n  sluice query \"SELECT year, sum(nonfarm) FROM employment WHERE year >= 2010 GROUP BY year\" --format csv"
    )]
    Query(QueryArgs),
    /// Manage queues.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Show tables, schemas and partitions.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Remove data files no Delta version names (uploads of consumers that died before committing).
    Repair(RepairArgs),
    /// Convert a table written by an earlier sluice (`_sluice/log`) into a Delta Lake table in
    /// place: files kept, a Delta log written from the old log, chunk parts carried over.
    Upgrade(UpgradeArgs),
    /// Rewrite a table's small files into files of the target size, per partition, as one Delta
    /// version; consumers may keep committing meanwhile.
    #[command(
        after_help = "Examples:\n  sluice compact --table trips\n  sluice compact --table trips --where 'year = 2024' --target-size 256MiB"
    )]
    Compact(CompactArgs),
    /// Delete the files that compaction replaced, once older than the retention.
    #[command(
        after_help = "Examples:\n  sluice vacuum --table trips --dry-run\n  sluice vacuum --table trips --retain 24h"
    )]
    Vacuum(VacuumArgs),
    /// Benchmark `run` on generated TPC-H lineitem data.
    Bench(bench::BenchArgs),
    /// A live view of running consumers (their --metrics-addr endpoints) and of the home's
    /// queues and tables: rates, depth, freshness, last commits, errors.
    #[command(
        after_help = "Examples:\n  sluice consume --table trips --metrics-addr 9898 &\n  sluice top --metrics-url 9898"
    )]
    Top(top::TopArgs),
    /// A web console: tables with schemas, partitions and history, queues with dead letters
    /// and redrive, the quarantine, and a read-only SQL box (127.0.0.1:7878 by default).
    #[command(
        after_help = "Examples:\n  sluice serve\n  sluice serve --addr 0.0.0.0:7878 --token \"$(openssl rand -hex 16)\""
    )]
    Serve(serve::ServeArgs),
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Visibility timeout of a new queue, in seconds.
    #[arg(long, default_value_t = 300)]
    visibility_timeout: u64,
    /// Deliveries before a message moves to the dead-letter queue.
    #[arg(long, default_value_t = 5)]
    max_receive_count: u32,
    /// Largest message the queue accepts, in bytes: 1 KiB to 1 MiB on SQS (default 1 MiB), to
    /// 64 MiB on the embedded queue (default 4 MiB; its large bodies are files).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    max_message_bytes: Option<u64>,
}

impl InitArgs {
    fn settings(&self, target: &QueueTarget) -> Result<QueueSettings> {
        let base = match target {
            QueueTarget::Embedded(_) => QueueSettings::embedded(),
            QueueTarget::Sqs(_) => QueueSettings::default(),
        };
        let max_message_bytes = match self.max_message_bytes {
            Some(n) if matches!(target, QueueTarget::Sqs(_)) && n as usize > MAX_MESSAGE_BYTES => {
                bail!("SQS takes messages of at most {MAX_MESSAGE_BYTES} bytes, not {n}")
            }
            Some(n) => n as usize,
            None => base.max_message_bytes,
        };
        Ok(QueueSettings {
            visibility_timeout: Duration::from_secs(self.visibility_timeout),
            max_receive_count: self.max_receive_count,
            max_message_bytes,
            ..base
        })
    }
}

#[derive(Debug, Args, Clone)]
pub(crate) struct TableArgs {
    /// Table name (letters, digits, underscores).
    #[arg(long, env = "SLUICE_TABLE")]
    pub(crate) table: String,
    /// Partitioning: year(COL), month(COL), day(COL) or COL (default: from sluice.toml, or the table).
    #[arg(long)]
    partition_by: Option<String>,
    /// strftime pattern for dates that are not ISO 8601, e.g. '%m/%d/%Y'.
    #[arg(long)]
    date_format: Option<String>,
    /// A field value that means NULL (repeatable); the empty field always does.
    #[arg(long = "null-value")]
    null_values: Vec<String>,
    /// Field delimiter.
    #[arg(long)]
    delimiter: Option<char>,
    /// Quote character.
    #[arg(long)]
    quote: Option<char>,
    /// Format of every source: csv, jsonl or parquet (default: from each name's extension,
    /// CSV for a file named on its own with none; .gz and .zst are decompressed either way).
    #[arg(long, value_parser = sluice_core::source::Format::parse)]
    pub(crate) format: Option<sluice_core::source::Format>,
    /// What a new table does with columns a later source adds: evolve (add them, nullable),
    /// freeze (quarantine those rows, dead-letter those messages) or discard-columns (drop
    /// them). Default: from sluice.toml, or evolve. Change an existing table's with `sluice
    /// catalog alter`.
    #[arg(long, value_parser = SchemaPolicy::parse)]
    pub(crate) schema_policy: Option<SchemaPolicy>,
}

#[derive(Debug, Args)]
struct ProduceArgs {
    /// Files, directories, glob patterns or s3://BUCKET/PREFIX: CSV (also .gz, .zst), JSON
    /// lines or Parquet.
    #[arg(required = true, value_name = "SOURCE")]
    files: Vec<String>,
    #[command(flatten)]
    table: TableArgs,
    #[command(flatten)]
    send: SendArgs,
}

#[derive(Debug, Args, Clone)]
struct SendArgs {
    /// Claim-check: store each chunk as an object in the lake and send only a pointer, as the
    /// SQS Extended Client does (objects are deleted after commit). Cuts SQS requests ~50x.
    #[arg(long)]
    claim_check: bool,
    /// Chunk size in claim-check mode, in MiB.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    claim_check_mib: u64,
    /// zstd level of the chunks (default: 1 on the embedded queue, where speed matters; 7 on
    /// SQS, where each 64 KiB of message is billed: about 14% fewer billed units for about
    /// twice the producer's compression time).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=19))]
    zstd_level: Option<i32>,
}

impl SendArgs {
    fn claim_bytes(&self) -> Option<usize> {
        self.claim_check
            .then_some(self.claim_check_mib as usize * 1024 * 1024)
    }
}

#[derive(Debug, Args, Clone)]
struct ConsumerArgs {
    /// Visibility timeout for received messages, in seconds (default: the queue's).
    #[arg(long)]
    visibility_timeout: Option<u64>,
    /// Close a partition's file at this many rows.
    #[arg(long)]
    rotate_rows: Option<u64>,
    /// Close a partition's file at this many bytes.
    #[arg(long)]
    rotate_bytes: Option<u64>,
    /// Close a partition's file this many seconds after it was opened.
    #[arg(long)]
    rotate_age: Option<u64>,
    /// Do not compact partitions in the background while following the queue.
    #[arg(long)]
    no_auto_compact: bool,
    /// Compact a partition in the background once it holds more than this many files smaller
    /// than half the target size (128 MiB).
    #[arg(long, default_value_t = 32)]
    auto_compact_files: usize,
    /// Seconds between looks for partitions to compact.
    #[arg(long, default_value_t = 60)]
    auto_compact_every: u64,
    /// Memory for rows in flight (decoded messages, buffered row groups); the process takes
    /// some tens of MB more.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    memory_limit: u64,
    /// Commit every open file once the messages received and not yet committed reach this
    /// size: the queue keeps their bodies until then (the embedded queue on disk, beside its
    /// database), and a crash makes them be processed again.
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    max_uncommitted: u64,
    /// Serve live metrics (Prometheus' text format) at http://ADDR/metrics while consuming:
    /// PORT (on 127.0.0.1) or HOST:PORT. Also reads the queue's depth every 5 s.
    #[arg(long, value_name = "ADDR", value_parser = telemetry::parse_addr)]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    /// Table name.
    #[arg(long, env = "SLUICE_TABLE")]
    table: String,
    /// Must match the table's partitioning if given.
    #[arg(long)]
    partition_by: Option<String>,
    /// Drain the queue, commit, and exit.
    #[arg(long)]
    once: bool,
    #[command(flatten)]
    consumer: ConsumerArgs,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Files, directories, glob patterns or s3://BUCKET/PREFIX: CSV (also .gz, .zst), JSON
    /// lines or Parquet.
    #[arg(required = true, value_name = "SOURCE")]
    files: Vec<String>,
    #[command(flatten)]
    table: TableArgs,
    #[command(flatten)]
    send: SendArgs,
    #[command(flatten)]
    consumer: ConsumerArgs,
    /// SQL to run when done (default: rows per partition).
    #[arg(long)]
    query: Option<String>,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// One SQL statement.
    sql: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = output::Format::Table)]
    format: output::Format,
    /// File to write (required for --format parquet; default stdout otherwise).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Where the SQL runs: embedded DataFusion over the lake, or Amazon Athena over the Glue
    /// catalog (needs --catalog glue://DATABASE; workgroup and result location from [aws.athena]
    /// or the flags).
    #[arg(long, value_enum, default_value_t = Engine::Embedded)]
    engine: Engine,
    /// Read the tables as they were: a Delta version number, or an RFC 3339 time
    /// (`2026-11-29T08:00:00Z`) or date (the newest version committed by then). Embedded only.
    #[arg(long, value_name = "VERSION|TIMESTAMP")]
    as_of: Option<String>,
    /// Athena workgroup (default: [aws.athena] workgroup, or `primary`).
    #[arg(long)]
    workgroup: Option<String>,
    /// Athena result location, s3://BUCKET/PREFIX/ (default: [aws.athena] output_location, or
    /// the workgroup's).
    #[arg(long)]
    results: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Engine {
    Embedded,
    Athena,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Create the queue and its dead-letter queue (idempotent).
    Create(InitArgs),
    /// Visible, in-flight and dead-lettered messages.
    Stats,
    /// Delete every message of the queue.
    Purge,
    /// Move dead-lettered messages back to the queue.
    Redrive,
}

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// List tables.
    Tables,
    /// Show a table's columns and partition keys.
    Schema { table: String },
    /// List a table's partitions with files, rows and bytes (from its Delta log).
    Partitions { table: String },
    /// List a table's Delta versions: when, who, what, rows and files added.
    History {
        table: String,
        /// Newest versions to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Print the Athena CREATE EXTERNAL TABLE statement of a table.
    Ddl { table: String },
    /// Change a table's settings.
    Alter {
        table: String,
        /// evolve, freeze or discard-columns: what sources with columns the table lacks do.
        #[arg(long, value_parser = SchemaPolicy::parse)]
        schema_policy: SchemaPolicy,
    },
}

#[derive(Debug, Args)]
struct VacuumArgs {
    #[arg(long, env = "SLUICE_TABLE")]
    table: String,
    /// Keep replaced files this long (s, m, h, d), so that readers of earlier versions and
    /// time travel within it still find them.
    #[arg(long, default_value = "168h")]
    retain: String,
    /// List the files (with sizes) instead of deleting them.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct CompactArgs {
    #[arg(long, env = "SLUICE_TABLE")]
    table: String,
    /// Only these partitions: `KEY = VALUE` conditions joined by AND.
    #[arg(long = "where", value_name = "CONDITIONS")]
    filter: Option<String>,
    /// Size of the files to write (bytes, or with KiB, MiB, GiB, KB, MB, GB).
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    target_size: u64,
}

/// `128MiB`, `64MB`, `1048576`.
pub(crate) fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 128MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit (use KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size"))
}

#[derive(Debug, Args)]
struct UpgradeArgs {
    #[arg(long, env = "SLUICE_TABLE")]
    table: String,
}

#[derive(Debug, Args)]
struct RepairArgs {
    #[arg(long, env = "SLUICE_TABLE")]
    table: String,
    /// Only remove uncommitted files older than this many seconds (default an hour: a slow
    /// upload from another machine is committed well within it). Files that running consumers
    /// of this home are uploading are never removed, and only files sluice names its own
    /// (`part-<UUIDv7>.parquet`) are ever removed.
    #[arg(long, default_value_t = sluice_core::delta::repair::REPAIR_GRACE.as_secs())]
    grace: u64,
}

/// Everything resolved from flags, environment and configuration.
#[derive(Clone)]
struct Ctx {
    home: Home,
    open: Opener,
    config: Config,
    metrics: Option<PathBuf>,
    telemetry: telemetry::Telemetry,
}

impl Ctx {
    async fn backends(&self, table: Option<&str>) -> Result<Backends> {
        self.open.open(table).await
    }

    fn database(&self) -> &str {
        self.open.catalog.database()
    }

    /// Writes every metric to the --metrics file, if one was given.
    fn write_metrics(&self) -> Result<()> {
        if let Some(path) = &self.metrics {
            std::fs::write(path, self.telemetry.render())
                .with_context(|| format!("cannot write metrics to {}", path.display()))?;
        }
        Ok(())
    }

    fn table_config(&self, table: &str) -> TableConfig {
        self.config.tables.get(table).cloned().unwrap_or_default()
    }
}

/// glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB), so
/// the 8 MiB pieces and the Parquet pages sluice allocates and frees by the thousand end up in
/// the heap, fragmented, and the peak is never given back: converting TPC-H SF1 peaked at
/// 414 MB of RSS, 288 MB with the threshold fixed at 256 KiB. Fixing it here makes large blocks
/// plain mmaps, returned to the system when freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_malloc_mmap_threshold() {
    // SAFETY: mallopt only changes a malloc tunable; it is called first thing in main, before
    // any other thread exists, with a documented parameter and a valid value.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_malloc_mmap_threshold() {}

/// Blocks below the mmap threshold are freed into glibc's per-thread arenas, whose free pages
/// stay resident until trimmed. Ten times a second, a thread gives them back (`malloc_trim`
/// releases whole free pages inside every arena, not only at its top). Pieces are typed,
/// written and freed every few tens of milliseconds, and RSS swings by 50-60 MB with them;
/// what a slower trim leaves resident is the top of that swing. Converting ten times TPC-H
/// SF1 peaked at 375 MB without the thread, 324-332 MB trimming once a second, 293 MB every
/// 250 ms and 277 MB every 100 ms, for about 0.25 s more system time per SF1.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_malloc_arenas_often() {
    let spawned = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(100));
                // SAFETY: malloc_trim only returns free memory to the system; it takes each
                // arena's lock and is safe to call from any thread at any time.
                #[allow(unsafe_code)]
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
    // Without the thread sluice works the same, with a higher peak.
    drop(spawned);
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_malloc_arenas_often() {}

fn main() -> std::process::ExitCode {
    fix_malloc_mmap_threshold();
    trim_malloc_arenas_often();
    // `sluice … | head`: when the reader of stdout goes away, stop quietly, as Unix tools do
    // (Rust ignores SIGPIPE, and `println!` panics on the broken pipe).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info,datafusion=warn",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Few blocking threads: decoding is CPU-bound, and each thread's allocator arena adds memory.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    let home = cli
        .home
        .clone()
        .or_else(|| config.home.clone().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("sluice-data"));
    let home = Home::new(home);
    let open = Opener {
        home: home.clone(),
        queue: cli.queue.clone().or_else(|| config.queue.clone()),
        lake: cli.lake.clone().or_else(|| config.lake.clone()),
        catalog: CatalogTarget::parse(cli.catalog.as_deref().or(config.catalog.as_deref()))?,
        aws_settings: config.aws.clone().unwrap_or_default(),
        aws: Default::default(),
    };
    let ctx = Ctx {
        home,
        open,
        config,
        metrics: cli.metrics.clone(),
        telemetry: telemetry::install()?,
    };
    match cli.command {
        Command::Init(a) => init(&ctx, &a).await,
        Command::Produce(a) => {
            let b = ctx.backends(Some(&a.table.table)).await?;
            let sources = convert::expand_sources(&ctx, &a.files, a.table.format).await?;
            let (stats, meter) = produce(&ctx, &b, &sources, &a.table, &a.send, None).await?;
            eprintln!("{}", produce_summary(&stats, &meter));
            ctx.write_metrics()
        }
        Command::Consume(a) => {
            let b = ctx.backends(Some(&a.table)).await?;
            if let Some(p) = &a.partition_by {
                check_partitioning(&*b.catalog, &b.database, &a.table, p).await?;
            }
            let (stats, meter) = consume(&ctx, &b, &a.table, &a.consumer, a.once, None).await?;
            eprintln!("{}", consume_summary(&stats, &meter));
            ctx.write_metrics()
        }
        Command::Run(a) => run_pipeline(&ctx, a).await,
        Command::Convert(a) => convert::run(&ctx, &a).await,
        Command::Query(a) => query(&ctx, &a).await,
        Command::Queue(c) => queue_cmd(&ctx, c).await,
        Command::Catalog(c) => catalog_cmd(&ctx, c).await,
        Command::Repair(a) => {
            let b = ctx.backends(Some(&a.table)).await?;
            let opts = sluice_core::delta::repair::RepairOptions {
                grace: Duration::from_secs(a.grace),
                protect: ctx.home.live_uploads(),
                dead: Default::default(),
            };
            let r = sluice_core::delta::repair::repair(&b.lake, &a.table, &opts).await?;
            println!(
                "repaired {}: removed {} uncommitted file(s), kept {} younger than the grace period; Delta version {}",
                a.table,
                r.removed.len(),
                r.kept_recent,
                r.ledger_version
            );
            for f in &r.removed {
                println!("  removed {f}");
            }
            Ok(())
        }
        Command::Upgrade(a) => {
            let b = ctx.backends(Some(&a.table)).await?;
            let def = b.catalog.get_table(&b.database, &a.table).await?;
            let r = sluice_core::delta::upgrade::upgrade(&b.lake, &def, &writer_id()).await?;
            println!(
                "upgraded {}: Delta version {} holds {} file(s) ({} rows) and {} chunk part(s) from the earlier log's version {}; {} quarantine file(s) in {}",
                a.table,
                r.delta_version,
                r.files,
                r.rows,
                r.chunk_parts,
                r.legacy_version,
                r.quarantine_files,
                b.lake
                    .url_of(&sluice_core::lake::Lake::quarantine_dir(&a.table)),
            );
            Ok(())
        }
        Command::Compact(a) => {
            let b = ctx.backends(Some(&a.table)).await?;
            b.catalog.get_table(&b.database, &a.table).await?;
            let filter = match &a.filter {
                Some(f) => sluice_delta::parse_partition_filter(f)?,
                None => vec![],
            };
            let id = writer_id();
            let spool = ctx.home.claim_spool(&id)?;
            let mut opts =
                sluice_core::delta::compact::CompactOptions::new(spool.path().to_path_buf(), id);
            opts.target_bytes = a.target_size.max(1);
            opts.filter = filter;
            let r = sluice_core::delta::compact::compact(&b.lake, &a.table, &opts).await?;
            match r.version {
                Some(v) => println!(
                    "compacted {}: {} file(s) ({:.1} MB) rewritten as {} file(s) ({:.1} MB) in {} partition(s); Delta version {v}",
                    a.table,
                    r.files_removed,
                    r.bytes_removed as f64 / 1e6,
                    r.files_added,
                    r.bytes_added as f64 / 1e6,
                    r.partitions
                ),
                None => println!("compacted {}: nothing to compact", a.table),
            }
            if r.conflicts > 0 {
                println!(
                    "  {} partition(s) left as they were: another compaction took some of their files first",
                    r.conflicts
                );
            }
            Ok(())
        }
        Command::Vacuum(a) => {
            let b = ctx.backends(Some(&a.table)).await?;
            b.catalog.get_table(&b.database, &a.table).await?;
            let retain = sluice_delta::parse_duration(&a.retain)?;
            let dir = sluice_core::lake::Lake::table_dir(&a.table);
            let r = sluice_delta::vacuum(&b.lake, &dir, retain, a.dry_run).await?;
            if r.dry_run {
                let total: u64 = r.files.iter().map(|(_, s)| s).sum();
                println!(
                    "vacuum {} (dry run): would delete {} file(s), {:.1} MB",
                    a.table,
                    r.files.len(),
                    total as f64 / 1e6
                );
                for (f, size) in &r.files {
                    println!("  {size}\t{f}");
                }
            } else {
                println!("vacuum {}: deleted {} file(s)", a.table, r.files.len());
            }
            Ok(())
        }
        Command::Bench(a) => bench::run(a).await,
        Command::Top(a) => top::run(&ctx, &a).await,
        Command::Serve(a) => serve::run(&ctx, &a).await,
    }
}

async fn init(ctx: &Ctx, a: &InitArgs) -> Result<()> {
    let target = QueueTarget::parse(ctx.open.queue.as_deref(), Some("sluice"))?;
    let settings = a.settings(&target)?;
    if !ctx.open.uses_aws() {
        ctx.open.ensure_home()?;
        println!("home     {}", ctx.home.root.display());
    }
    let (admin, name) = ctx.open.queue_admin(&target).await?;
    let q = admin.create(&name, &settings).await?;
    println!(
        "queue    {} (dead-letter queue {} after {} receives) in {}",
        q.address,
        q.dead_letter,
        settings.max_receive_count,
        admin.location()
    );
    let catalog = ctx.open.catalog().await?;
    catalog.ensure_database(ctx.database()).await?;
    match &ctx.open.catalog {
        CatalogTarget::Embedded => println!(
            "catalog  database {} in {}",
            ctx.database(),
            ctx.home.catalog_db().display()
        ),
        CatalogTarget::Glue(db) => println!("catalog  Glue database {db}"),
    }
    let lake = ctx.open.lake().await?;
    if lake.url.scheme() == "s3" {
        sluice_aws::s3::probe_lake(&lake).await?;
        println!("lake     {} (bucket reachable and writable)", lake.url);
    } else {
        println!("lake     {}", lake.url);
    }
    Ok(())
}

pub(crate) fn table_settings(ctx: &Ctx, lake: &Lake, t: &TableArgs) -> Result<TableSettings> {
    let tc = ctx.table_config(&t.table);
    let spec_s = t.partition_by.clone().or(tc.partition_by.clone());
    let spec = match spec_s {
        Some(s) => PartitionSpec::parse(&s)?,
        None => PartitionSpec::parse("year(date)")?,
    };
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
    opts.schema_policy = match (t.schema_policy, tc.schema_policy.as_deref()) {
        (Some(p), _) => p,
        (None, Some(s)) => {
            SchemaPolicy::parse(s).with_context(|| format!("tables.{}.schema_policy", t.table))?
        }
        (None, None) => SchemaPolicy::default(),
    };
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

fn progress_bar(label: &str) -> (Option<Progress>, Option<indicatif::ProgressBar>) {
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

async fn produce(
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
    if PartitionSpec::parse(&current).ok().as_ref() != Some(spec) {
        bail!("table {} is partitioned by {current}, not {spec}", def.name);
    }
    Ok(())
}

async fn check_partitioning(
    catalog: &dyn Catalog,
    database: &str,
    table: &str,
    spec: &str,
) -> Result<()> {
    let def = catalog.get_table(database, table).await?;
    check_spec(&def, &PartitionSpec::parse(spec)?)
}

fn consumer_options(
    ctx: &Ctx,
    table: &str,
    a: &ConsumerArgs,
    once: bool,
    spool: PathBuf,
    id: String,
) -> ConsumerOptions {
    let c = &ctx.config.consumer;
    let mut o = ConsumerOptions::new(table, spool).with_memory_limit(a.memory_limit as usize);
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

async fn consume(
    ctx: &Ctx,
    b: &Backends,
    table: &str,
    a: &ConsumerArgs,
    once: bool,
    producer_done: Option<Arc<AtomicBool>>,
) -> Result<(ConsumerStats, sluice_core::metrics::MeterSnapshot)> {
    let id = writer_id();
    let vt = a
        .visibility_timeout
        .or(ctx.config.consumer.visibility_timeout_secs)
        .map(Duration::from_secs)
        .unwrap_or_else(|| b.queue.visibility_timeout());
    let started =
        sluice_core::pipeline::startup::start(&ctx.home.spools(), &b.lake, table, &id, Some(vt))
            .await?;
    let spool = started.spool;
    for (t, removed) in started.recovered {
        eprintln!(
            "recovery: removed {} uncommitted file(s) of {t}",
            removed.len()
        );
    }
    let mut opts = consumer_options(ctx, table, a, once, spool.path().to_path_buf(), id);
    if ctx.open.uses_aws() {
        // An SQS queue may carry S3 event notifications: the objects they name are landed.
        opts.object_stores = Some(Arc::new(sluice_aws::s3::S3Buckets(
            ctx.open.aws().await.clone(),
        )));
    }
    if let Some(addr) = a.metrics_addr {
        let bound = ctx.telemetry.serve(addr).await?;
        eprintln!("metrics at http://{bound}/metrics");
        opts.report_queue_depth = true;
        let target = ctx.open.queue_target(Some(table))?;
        if let Some(dlq) = ctx.open.dead_letter_queue(&target).await? {
            let queue = b.queue.name().to_string();
            tokio::spawn(async move {
                loop {
                    if let Ok(s) = dlq.stats().await {
                        metrics::gauge!(
                            sluice_core::metrics::QUEUE_DEPTH,
                            "queue" => queue.clone(),
                            "state" => "dead_letter"
                        )
                        .set((s.visible + s.in_flight) as f64);
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            });
        }
    }
    // Pointers of claim-checked messages are resolved whatever mode the producer used.
    let m = b.metered("consumer", None);
    let consumer = Consumer::new(opts, m.queue.clone(), b.catalog.clone(), m.lake.clone())
        .await
        .with_context(|| format!("cannot start the consumer of table {table}"))?
        .hold_until(producer_done);
    let stats = consumer
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    drop(spool);
    Ok((stats, m.meter.snapshot()))
}

/// Bytes of messages `run` lets wait in an embedded queue: the producer pauses above it.
const RUN_BACKLOG_BYTES: usize = 128 << 20;

async fn run_pipeline(ctx: &Ctx, a: RunArgs) -> Result<()> {
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
    // On the embedded queue the producer, much faster than the consumer, would otherwise put
    // most of the input on disk as queued bodies before the consumer caught up.
    let backlog = matches!(
        ctx.open.queue_target(Some(&table))?,
        QueueTarget::Embedded(_)
    )
    .then(|| (RUN_BACKLOG_BYTES / b.queue.max_message_bytes().max(1)).clamp(4, 1024) as u64);
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
            let c = c??;
            (prod.await, c)
        }
    };
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

async fn query(ctx: &Ctx, a: &QueryArgs) -> Result<()> {
    if a.engine == Engine::Athena {
        return athena::query(ctx, a).await;
    }
    let catalog = ctx.open.catalog().await?;
    let lake = ctx.open.lake().await?;
    let as_of = match &a.as_of {
        Some(s) => sluice_query::AsOf::parse(s)?,
        None => sluice_query::AsOf::Latest,
    };
    let engine =
        sluice_query::QueryEngine::new_as_of(&*catalog, &lake, ctx.database(), as_of).await?;
    let (schema, batches) = engine.sql(&a.sql).await?;
    output::write(a.format, schema, &batches, a.output.as_deref())
}

async fn queue_cmd(ctx: &Ctx, c: QueueCommand) -> Result<()> {
    // Without --queue, the one embedded queue there is (dead-letter queues aside).
    let target = match &ctx.open.queue {
        Some(q) => QueueTarget::parse(Some(q), None)?,
        None => {
            let (admin, _) = ctx
                .open
                .queue_admin(&QueueTarget::Embedded(String::new()))
                .await?;
            QueueTarget::Embedded(only_queue(&*admin).await?)
        }
    };
    let (admin, name) = ctx.open.queue_admin(&target).await?;
    match c {
        QueueCommand::Create(a) => {
            let q = admin.create(&name, &a.settings(&target)?).await?;
            println!(
                "queue {} ready (dead-letter queue {})",
                q.address, q.dead_letter
            );
        }
        QueueCommand::Stats => {
            let q = admin.open(&name).await?;
            let s = q.stats().await?;
            println!(
                "queue {}: {} visible, {} in flight",
                q.name(),
                s.visible,
                s.in_flight
            );
            println!(
                "  visibility timeout {}s, largest message {} bytes",
                q.visibility_timeout().as_secs(),
                q.max_message_bytes()
            );
            if matches!(target, QueueTarget::Embedded(_)) {
                // Shared by every queue of the database: what the queued bodies take on disk.
                let dir = ctx.home.queues()?.bodies_dir().to_path_buf();
                let (files, bytes) = std::fs::read_dir(&dir)
                    .map(|d| {
                        d.flatten()
                            .filter_map(|e| e.metadata().ok())
                            .fold((0u64, 0u64), |(n, b), m| (n + 1, b + m.len()))
                    })
                    .unwrap_or((0, 0));
                println!(
                    "  body files of the home's queues: {files} ({:.1} MB) in {}",
                    bytes as f64 / 1e6,
                    dir.display()
                );
            }
            if let Some(d) = admin.dead_letter_queue(&name).await? {
                let ds = d.stats().await?;
                println!(
                    "dead-letter queue {}: {} message(s)",
                    d.name(),
                    ds.visible + ds.in_flight
                );
                // The reason a consumer of this home recorded, else the backend's.
                let failures = sluice_core::queue::failures::read_failures(&ctx.home.failure_log());
                for dl in admin.dead_letters(&name, 100).await? {
                    let reason = failures
                        .get(&dl.message_id)
                        .map(|f| f.reason.clone())
                        .or(dl.reason)
                        .unwrap_or_else(|| "no reason recorded".into());
                    println!("  {}: {reason}", dl.message_id);
                }
            }
        }
        QueueCommand::Purge => {
            admin.purge(&name).await?;
            println!("purged {name}");
        }
        QueueCommand::Redrive => {
            let d = admin
                .dead_letter_queue(&name)
                .await?
                .with_context(|| format!("queue {name} has no dead-letter queue"))?;
            let n = admin.redrive(&name).await?;
            println!("moved {n} message(s) from {} back to {name}", d.name());
        }
    }
    Ok(())
}

async fn only_queue(admin: &dyn sluice_core::queue::admin::QueueAdmin) -> Result<String> {
    let names = admin.list().await?;
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("there is no queue yet: run `sluice init` or `sluice produce` first"),
        many => bail!(
            "there are several queues ({}): name one with --queue",
            many.join(", ")
        ),
    }
}

async fn catalog_cmd(ctx: &Ctx, c: CatalogCommand) -> Result<()> {
    let catalog = ctx.open.catalog().await?;
    let db = ctx.database();
    match c {
        CatalogCommand::Ddl { table } => {
            let t = catalog.get_table(db, &table).await?;
            print!("{}", sluice_aws::ddl::create_table(&t)?);
        }
        CatalogCommand::Tables => {
            for t in catalog.list_tables(db).await.unwrap_or_default() {
                let spec = t
                    .parameters
                    .get(sluice_core::catalog::PARAM_PARTITION_BY)
                    .cloned()
                    .unwrap_or_default();
                println!("{}\t{}\tpartitioned by {spec}", t.name, t.location);
            }
        }
        CatalogCommand::Schema { table } => {
            let t = catalog.get_table(db, &table).await?;
            println!("table {}.{} at {}", t.database, t.name, t.location);
            for c in &t.columns {
                println!("  {:<32} {}", c.name, c.ty.name());
            }
            for c in &t.partition_keys {
                println!("  {:<32} {} (partition key)", c.name, c.ty.name());
            }
            println!("schema policy: {}", SchemaPolicy::of_def(&t)?);
            let changes = sluice_core::table::policy::history(&t);
            if changes.is_empty() {
                println!("schema history: as created");
            } else {
                println!("schema history:");
                for c in changes {
                    let added: Vec<String> = c
                        .added
                        .iter()
                        .map(|c| format!("{} {}", c.name, c.ty.name()))
                        .collect();
                    println!(
                        "  {}  Delta version {}  added {}  from {}",
                        c.at,
                        c.version
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into()),
                        added.join(", "),
                        c.source
                    );
                }
            }
        }
        CatalogCommand::Alter {
            table,
            schema_policy,
        } => {
            sluice_core::table::policy::set_policy(&*catalog, db, &table, schema_policy).await?;
            println!("table {table}: schema policy {schema_policy}");
        }
        CatalogCommand::History { table, limit } => {
            catalog.get_table(db, &table).await?;
            let lake = ctx.open.lake().await?;
            let dir = sluice_core::lake::Lake::table_dir(&table);
            println!("version\tcommitted (UTC)\toperation\trows\tfiles\tchunk parts\twriter");
            for h in sluice_core::delta::log::history(&lake, &dir, limit).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    h.version,
                    chrono::DateTime::from_timestamp_millis(h.timestamp_ms)
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
                        .unwrap_or_else(|| "-".into()),
                    h.operation,
                    h.rows.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                    h.files_added,
                    h.chunk_parts,
                    h.writer.as_deref().unwrap_or("-")
                );
            }
        }
        CatalogCommand::Partitions { table } => {
            let def = catalog.get_table(db, &table).await?;
            let lake = ctx.open.lake().await?;
            let ledger = sluice_core::delta::log::Ledger::open(&lake, &table, "catalog").await?;
            println!("partition\tfiles\trows\tbytes\tlocation");
            for p in ledger.state().partitions() {
                let values: Vec<&str> = p
                    .values
                    .iter()
                    .map(|(_, v)| {
                        v.as_deref()
                            .unwrap_or(sluice_core::schema::partition::DEFAULT_PARTITION)
                    })
                    .collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}{}/",
                    values.join("/"),
                    p.files,
                    p.rows,
                    p.bytes,
                    def.location,
                    p.dir
                );
            }
        }
    }
    Ok(())
}

fn produce_summary(s: &ProduceStats, m: &sluice_core::metrics::MeterSnapshot) -> String {
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

fn consume_summary(s: &ConsumerStats, m: &sluice_core::metrics::MeterSnapshot) -> String {
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
