//! The command line: every command, its arguments and their help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use sluice_core::table::policy::SchemaPolicy;

use crate::{bench, convert, output, serve, telemetry, top};

pub(crate) const EXAMPLES: &str = "\
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
pub(crate) struct Cli {
    /// Home directory of the embedded queue, catalog and lake.
    #[arg(long, global = true, env = "SLUICE_HOME")]
    pub(crate) home: Option<PathBuf>,
    /// Configuration file (default: ./sluice.toml if it exists).
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Lake: a directory, file:// URL or s3://BUCKET/PREFIX (default: <home>/lake).
    #[arg(long, global = true, env = "SLUICE_LAKE")]
    pub(crate) lake: Option<String>,
    /// Queue: an embedded queue's name, sqs://NAME or an SQS queue URL (default: the embedded
    /// queue named after the table).
    #[arg(long, global = true, env = "SLUICE_QUEUE")]
    pub(crate) queue: Option<String>,
    /// Catalog: glue://DATABASE (default: the embedded catalog in <home>).
    #[arg(long, global = true, env = "SLUICE_CATALOG")]
    pub(crate) catalog: Option<String>,
    /// Write every metric (rows, files, commits, queue calls, billed SQS units, object store
    /// requests, …) in Prometheus' text format to this file when the command ends.
    #[arg(long, global = true, env = "SLUICE_METRICS")]
    pub(crate) metrics: Option<PathBuf>,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// Print the least-privilege IAM policy (JSON) of a role, for the configured queue, lake and
    /// Glue database: exact actions, resources scoped by ARN.
    #[command(
        after_help = "Example:\n  sluice --queue sqs://events --lake s3://my-lake/raw --catalog glue://analytics iam-policy --role consumer --account 123456789012"
    )]
    IamPolicy(IamPolicyArgs),
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
pub(crate) struct InitArgs {
    /// Visibility timeout of a new queue, in seconds.
    #[arg(long, default_value_t = 300)]
    pub(crate) visibility_timeout: u64,
    /// Deliveries before a message moves to the dead-letter queue.
    #[arg(long, default_value_t = 5)]
    pub(crate) max_receive_count: u32,
    /// Largest message the queue accepts, in bytes: 1 KiB to 1 MiB on SQS (default 1 MiB), to
    /// 64 MiB on the embedded queue (default 4 MiB; its large bodies are files).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub(crate) max_message_bytes: Option<u64>,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct TableArgs {
    /// Table name (letters, digits, underscores).
    #[arg(long, env = "SLUICE_TABLE")]
    pub(crate) table: String,
    /// Partitioning: year(COL), month(COL), day(COL), hour(COL) or COL, comma-separated (default:
    /// from sluice.toml; else an existing table's own, and a new table is unpartitioned).
    #[arg(long)]
    pub(crate) partition_by: Option<String>,
    /// strftime pattern for dates that are not ISO 8601, e.g. '%m/%d/%Y'.
    #[arg(long)]
    pub(crate) date_format: Option<String>,
    /// How a new table names its sources' columns: snake_case (default: `Unit Price ($)` is
    /// `unit_price`, the name as it came kept in the column's metadata) or as-is. An existing
    /// table keeps its own rule.
    #[arg(long, value_parser = sluice_core::schema::ColumnNames::parse)]
    pub(crate) column_names: Option<sluice_core::schema::ColumnNames>,
    /// A new table's numbers written with a point (12.50) become exact decimal(p,s) columns
    /// instead of float64; kept with the table for the columns it gains later.
    #[arg(long)]
    pub(crate) exact_decimals: bool,
    /// A field value that means NULL (repeatable); the empty field always does.
    #[arg(long = "null-value")]
    pub(crate) null_values: Vec<String>,
    /// Field delimiter.
    #[arg(long)]
    pub(crate) delimiter: Option<char>,
    /// Quote character.
    #[arg(long)]
    pub(crate) quote: Option<char>,
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
    /// A new keyed table: its rows are changes, each replacing the row with the same values in
    /// these columns (comma-separated), or inserted. Kept with the table.
    #[arg(long, value_name = "COL[,COL…]")]
    pub(crate) merge_key: Option<String>,
    /// A keyed table's column of operations: I, U, D (AWS DMS) or c, u, r, d (Debezium), any
    /// case; D deletes the key. A row without one is an upsert. Not stored in the table
    /// unless --keep-op-column.
    #[arg(long, value_name = "COL", requires = "merge_key")]
    pub(crate) op_column: Option<String>,
    /// A keyed table's column ordering the changes of a key (a number, date, timestamp or
    /// text): a change older than the key's row in the table is ignored.
    #[arg(long, value_name = "COL", requires = "merge_key")]
    pub(crate) sequence_by: Option<String>,
    /// Store the --op-column in the table too.
    #[arg(long, requires = "op_column")]
    pub(crate) keep_op_column: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ProduceArgs {
    /// Files, directories, glob patterns or s3://BUCKET/PREFIX: CSV (also .gz, .zst), JSON
    /// lines or Parquet.
    #[arg(required = true, value_name = "SOURCE")]
    pub(crate) files: Vec<String>,
    #[command(flatten)]
    pub(crate) table: TableArgs,
    #[command(flatten)]
    pub(crate) send: SendArgs,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct SendArgs {
    /// Claim-check: store each chunk as an object in the lake and send only a pointer, as the
    /// SQS Extended Client does (objects are deleted after commit). Cuts SQS requests ~50x.
    #[arg(long)]
    pub(crate) claim_check: bool,
    /// Chunk size in claim-check mode, in MiB.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub(crate) claim_check_mib: u64,
    /// zstd level of the chunks (default: 1 on the embedded queue, where speed matters; 7 on
    /// SQS, where each 64 KiB of message is billed: about 14% fewer billed units for about
    /// twice the producer's compression time).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub(crate) zstd_level: Option<i32>,
}

impl SendArgs {
    pub(crate) fn claim_bytes(&self) -> Option<usize> {
        self.claim_check
            .then_some(self.claim_check_mib as usize * 1024 * 1024)
    }
}

#[derive(Debug, Args, Clone)]
pub(crate) struct ConsumerArgs {
    /// Visibility timeout for received messages, in seconds (default: the queue's).
    #[arg(long)]
    pub(crate) visibility_timeout: Option<u64>,
    /// Close a partition's file at this many rows.
    #[arg(long)]
    pub(crate) rotate_rows: Option<u64>,
    /// Close a partition's file at this many bytes.
    #[arg(long)]
    pub(crate) rotate_bytes: Option<u64>,
    /// Close a partition's file this many seconds after it was opened.
    #[arg(long)]
    pub(crate) rotate_age: Option<u64>,
    /// Do not compact partitions in the background while following the queue.
    #[arg(long)]
    pub(crate) no_auto_compact: bool,
    /// Compact a partition in the background once it holds more than this many files smaller
    /// than half the target size (128 MiB).
    #[arg(long, default_value_t = 32)]
    pub(crate) auto_compact_files: usize,
    /// Seconds between looks for partitions to compact.
    #[arg(long, default_value_t = 60)]
    pub(crate) auto_compact_every: u64,
    /// Memory for rows in flight (decoded messages, buffered row groups); the process takes
    /// some tens of MB more.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub(crate) memory_limit: u64,
    /// Commit every open file once the messages received and not yet committed reach this
    /// size: the queue keeps their bodies until then (the embedded queue on disk, beside its
    /// database), and a crash makes them be processed again.
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    pub(crate) max_uncommitted: u64,
    /// Serve live metrics (Prometheus' text format) at http://ADDR/metrics while consuming,
    /// and the probes /healthz (alive) and /readyz (queue, lake and catalog answered in the
    /// last 2 minutes, and not stopping): PORT (on 127.0.0.1) or HOST:PORT. Also reads the
    /// queue's depth every 5 s.
    #[arg(long, value_name = "ADDR", value_parser = telemetry::parse_addr)]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// On SIGTERM or SIGINT, commit what is held within this many seconds; past them (or on a
    /// second signal) give the unfinished messages back to the queue and stop at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 25)]
    pub(crate) stop_timeout: u64,
}

#[derive(Debug, Args)]
pub(crate) struct ConsumeArgs {
    /// Table name.
    #[arg(long, env = "SLUICE_TABLE")]
    pub(crate) table: String,
    /// Must match the table's partitioning if given.
    #[arg(long)]
    pub(crate) partition_by: Option<String>,
    /// Drain the queue, commit, and exit.
    #[arg(long)]
    pub(crate) once: bool,
    #[command(flatten)]
    pub(crate) consumer: ConsumerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Files, directories, glob patterns or s3://BUCKET/PREFIX: CSV (also .gz, .zst), JSON
    /// lines or Parquet.
    #[arg(required = true, value_name = "SOURCE")]
    pub(crate) files: Vec<String>,
    #[command(flatten)]
    pub(crate) table: TableArgs,
    #[command(flatten)]
    pub(crate) send: SendArgs,
    #[command(flatten)]
    pub(crate) consumer: ConsumerArgs,
    /// SQL to run when done (default: rows per partition).
    #[arg(long)]
    pub(crate) query: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// One SQL statement.
    pub(crate) sql: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = output::Format::Table)]
    pub(crate) format: output::Format,
    /// File to write (required for --format parquet; default stdout otherwise).
    #[arg(long, short)]
    pub(crate) output: Option<PathBuf>,
    /// Where the SQL runs: embedded DataFusion over the lake, or Amazon Athena over the Glue
    /// catalog (needs --catalog glue://DATABASE; workgroup and result location from [aws.athena]
    /// or the flags).
    #[arg(long, value_enum, default_value_t = Engine::Embedded)]
    pub(crate) engine: Engine,
    /// Read the tables as they were: a Delta version number, or an RFC 3339 time
    /// (`2026-11-29T08:00:00Z`) or date (the newest version committed by then). Embedded only.
    #[arg(long, value_name = "VERSION|TIMESTAMP")]
    pub(crate) as_of: Option<String>,
    /// Athena workgroup (default: [aws.athena] workgroup, or `primary`).
    #[arg(long)]
    pub(crate) workgroup: Option<String>,
    /// Athena result location, s3://BUCKET/PREFIX/ (default: [aws.athena] output_location, or
    /// the workgroup's).
    #[arg(long)]
    pub(crate) results: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Engine {
    Embedded,
    Athena,
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
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
pub(crate) enum CatalogCommand {
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
pub(crate) struct VacuumArgs {
    #[arg(long, env = "SLUICE_TABLE")]
    pub(crate) table: String,
    /// Keep replaced files this long (s, m, h, d), so that readers of earlier versions and
    /// time travel within it still find them.
    #[arg(long, default_value = "168h")]
    pub(crate) retain: String,
    /// List the files (with sizes) instead of deleting them.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CompactArgs {
    #[arg(long, env = "SLUICE_TABLE")]
    pub(crate) table: String,
    /// Only these partitions: `KEY = VALUE` conditions joined by AND.
    #[arg(long = "where", value_name = "CONDITIONS")]
    pub(crate) filter: Option<String>,
    /// Size of the files to write (bytes, or with KiB, MiB, GiB, KB, MB, GB).
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    pub(crate) target_size: u64,
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
pub(crate) struct UpgradeArgs {
    #[arg(long, env = "SLUICE_TABLE")]
    pub(crate) table: String,
}

#[derive(Debug, Args)]
pub(crate) struct IamPolicyArgs {
    /// producer, consumer, converter, reader or admin.
    #[arg(long, value_parser = ["producer", "consumer", "converter", "reader", "admin"])]
    pub(crate) role: String,
    /// The account id in the ARNs (default: from a queue URL, else `*`).
    #[arg(long)]
    pub(crate) account: Option<String>,
    /// `s3://BUCKET/PREFIX` sources the role reads (`produce`, `convert`, S3 notifications);
    /// repeatable.
    #[arg(long = "source", value_name = "S3_URL")]
    pub(crate) sources: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RepairArgs {
    #[arg(long, env = "SLUICE_TABLE")]
    pub(crate) table: String,
    /// Only remove uncommitted files older than this many seconds (default an hour: a slow
    /// upload from another machine is committed well within it). Files that running consumers
    /// of this home are uploading are never removed, and only files sluice names its own
    /// (`part-<UUIDv7>.parquet`) are ever removed.
    #[arg(long, default_value_t = sluice_core::delta::repair::REPAIR_GRACE.as_secs())]
    pub(crate) grace: u64,
}
