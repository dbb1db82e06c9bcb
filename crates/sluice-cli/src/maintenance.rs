//! `repair`, `upgrade`, `compact` and `vacuum`: keeping a table's files in order.

use std::time::Duration;

use anyhow::Result;
use sluice_core::writer_id;

use crate::Ctx;
use crate::args::{CompactArgs, IamPolicyArgs, RepairArgs, UpgradeArgs, VacuumArgs};

/// Removes sluice's own files that no Delta version names.
pub(crate) async fn repair(ctx: &Ctx, a: &RepairArgs) -> Result<()> {
    let b = ctx.stores().await?;
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

/// Converts a table an earlier sluice wrote into a Delta table in place.
pub(crate) async fn upgrade(ctx: &Ctx, a: &UpgradeArgs) -> Result<()> {
    let b = ctx.stores().await?;
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

/// Rewrites a table's small files into files of the target size.
pub(crate) async fn compact(ctx: &Ctx, a: &CompactArgs) -> Result<()> {
    let b = ctx.stores().await?;
    b.catalog.get_table(&b.database, &a.table).await?;
    let filter = match &a.filter {
        Some(f) => sluice_delta::parse_partition_filter(f)?,
        None => vec![],
    };
    let id = writer_id();
    let spool = ctx.home.claim_spool(&id)?;
    let mut opts = sluice_core::delta::compact::CompactOptions::new(spool.path().to_path_buf(), id);
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

/// Deletes files no version within the retention needs.
pub(crate) async fn vacuum(ctx: &Ctx, a: &VacuumArgs) -> Result<()> {
    let b = ctx.stores().await?;
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

/// Prints the IAM policy of a role for the configured backends.
pub(crate) async fn iam_policy(ctx: &Ctx, a: &IamPolicyArgs) -> Result<()> {
    let role = sluice_aws::iam::Role::parse(&a.role)
        .ok_or_else(|| anyhow::anyhow!("unknown role {}", a.role))?;
    let scope = ctx.open.iam_scope(a.account.as_deref(), &a.sources).await?;
    for missing in [
        scope
            .queue
            .is_none()
            .then_some("SQS queue (--queue sqs://NAME)"),
        scope
            .lake
            .is_none()
            .then_some("S3 lake (--lake s3://BUCKET/PREFIX)"),
        scope
            .database
            .is_none()
            .then_some("Glue catalog (--catalog glue://DATABASE)"),
    ]
    .into_iter()
    .flatten()
    {
        eprintln!("note: no {missing} is configured: the policy has no statement for it");
    }
    if scope.account == "*" {
        eprintln!("note: no --account given: the ARNs name the resources in any account");
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&sluice_aws::iam::policy(role, &scope))?
    );
    Ok(())
}
