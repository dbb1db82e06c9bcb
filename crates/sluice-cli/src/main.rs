//! `sluice`: CSV files to a query-ready, year-partitioned Parquet lake through a queue.

mod alloc;
mod args;
mod athena;
mod backends;
mod bench;
mod config;
mod convert;
mod ingest;
mod maintenance;
mod output;
mod queues;
mod serve;
mod stop;
mod tables;
mod telemetry;
mod top;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use sluice_core::home::Home;

use crate::args::{Cli, Command};
use crate::backends::{Backends, CatalogTarget, Opener, Stores};
use crate::config::{Config, TableConfig};

/// Everything resolved from flags, environment and configuration.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) home: Home,
    pub(crate) open: Opener,
    pub(crate) config: Config,
    pub(crate) metrics: Option<PathBuf>,
    pub(crate) telemetry: telemetry::Telemetry,
}

impl Ctx {
    pub(crate) async fn backends(&self, table: Option<&str>) -> Result<Backends> {
        self.open.open(table).await
    }

    /// The catalog and the lake, without the queue: what maintenance commands use (so that a
    /// role without queue permissions runs them).
    pub(crate) async fn stores(&self) -> Result<Stores> {
        Ok(Stores {
            catalog: self.open.catalog().await?,
            lake: self.open.lake().await?,
            database: self.open.catalog.database().to_string(),
        })
    }

    pub(crate) fn database(&self) -> &str {
        self.open.catalog.database()
    }

    /// Writes every metric to the --metrics file, if one was given.
    pub(crate) fn write_metrics(&self) -> Result<()> {
        if let Some(path) = &self.metrics {
            std::fs::write(path, self.telemetry.render())
                .with_context(|| format!("cannot write metrics to {}", path.display()))?;
        }
        Ok(())
    }

    pub(crate) fn table_config(&self, table: &str) -> TableConfig {
        self.config.tables.get(table).cloned().unwrap_or_default()
    }
}

fn main() -> std::process::ExitCode {
    alloc::fix_malloc_mmap_threshold();
    alloc::trim_malloc_arenas_often();
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
        Command::Init(a) => queues::init(&ctx, &a).await,
        Command::Produce(a) => ingest::produce_cmd(&ctx, &a).await,
        Command::Consume(a) => {
            stop::listen()?;
            ingest::consume_cmd(&ctx, &a).await
        }
        Command::Run(a) => {
            stop::listen()?;
            ingest::run_pipeline(&ctx, a).await
        }
        Command::Convert(a) => {
            stop::listen()?;
            convert::run(&ctx, &a).await
        }
        Command::Query(a) => tables::query(&ctx, &a).await,
        Command::Queue(c) => queues::queue_cmd(&ctx, c).await,
        Command::Catalog(c) => tables::catalog_cmd(&ctx, c).await,
        Command::IamPolicy(a) => maintenance::iam_policy(&ctx, &a).await,
        Command::Repair(a) => maintenance::repair(&ctx, &a).await,
        Command::Upgrade(a) => maintenance::upgrade(&ctx, &a).await,
        Command::Compact(a) => maintenance::compact(&ctx, &a).await,
        Command::Vacuum(a) => maintenance::vacuum(&ctx, &a).await,
        Command::Bench(a) => bench::run(a).await,
        Command::Top(a) => top::run(&ctx, &a).await,
        Command::Serve(a) => serve::run(&ctx, &a).await,
    }
}
