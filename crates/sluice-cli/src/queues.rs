//! `init` and `queue create|stats|purge|redrive`.

use anyhow::{Context, Result};
use sluice_core::catalog::CatalogExt;

use crate::Ctx;
use crate::args::*;

pub(crate) async fn init(ctx: &Ctx, a: &InitArgs) -> Result<()> {
    let target = ctx.open.queue_target(Some("sluice"))?;
    let settings = a.settings(&target)?;
    let (home, catalog_place, lake) = ctx.open.init_parts(ctx.database()).await?;
    if let Some(home) = home {
        println!("home     {}", home.display());
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
    println!("catalog  {catalog_place}");
    println!("lake     {lake}");
    Ok(())
}

pub(crate) async fn queue_cmd(ctx: &Ctx, c: QueueCommand) -> Result<()> {
    let target = ctx.open.the_queue().await?;
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
            if let Some((files, bytes, dir)) = ctx.open.queue_disk_usage(&target)? {
                // Shared by every queue of the database: what the queued bodies take on disk.
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
                for (id, reason) in ctx.open.dead_letters(&*admin, &name, 100).await? {
                    let reason = reason.unwrap_or_else(|| "no reason recorded".into());
                    println!("  {id}: {reason}");
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
