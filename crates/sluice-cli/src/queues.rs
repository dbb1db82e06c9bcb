//! `init` and `queue create|stats|purge|redrive`.

use anyhow::{Context, Result, bail};
use sluice_core::catalog::CatalogExt;

use crate::Ctx;
use crate::args::*;
use crate::backends::{CatalogTarget, QueueTarget};

pub(crate) async fn init(ctx: &Ctx, a: &InitArgs) -> Result<()> {
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

pub(crate) async fn queue_cmd(ctx: &Ctx, c: QueueCommand) -> Result<()> {
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

pub(crate) async fn only_queue(
    admin: &dyn sluice_core::queue::admin::QueueAdmin,
) -> Result<String> {
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
