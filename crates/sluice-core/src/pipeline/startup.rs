//! Start-up of a writer (a consumer, or `convert`): it claims a private spool and removes the
//! uploads that writers before it left uncommitted, before it writes anything.

use std::time::Duration;

use crate::delta::repair::{RepairOptions, repair};
use crate::error::Result;
use crate::lake::Lake;
use crate::lake::spool::{SpoolClaim, Spools};

/// Uncommitted files of writers elsewhere (other homes, other machines) are removed only once
/// they are at least this old, whatever the visibility timeout.
pub(crate) const MIN_RECOVERY_GRACE: Duration = Duration::from_secs(600);

/// A writer that has started: its spool, and what recovery removed.
#[derive(Debug)]
pub struct Startup {
    /// The writer's spool, held until this is dropped.
    pub spool: SpoolClaim,
    /// Files removed, per table.
    pub recovered: Vec<(String, Vec<String>)>,
    /// Records of the uploads a `convert` of this table that died had staged, kept for this
    /// `convert` to take over (see `ConvertOptions::resume`); empty for a consumer.
    pub staged: Vec<String>,
}

/// Starts a writer `writer_id` of `table`: claims its spool among `spools` and runs `recover`.
/// `visibility` is the queue's visibility timeout (`None` for `convert`, which has no queue:
/// then the uploads a dead `convert` of `table` staged are kept for it to take over).
pub async fn start(
    spools: &Spools,
    lake: &Lake,
    table: &str,
    writer_id: &str,
    visibility: Option<Duration>,
) -> Result<Startup> {
    let mut spool = spools.claim(writer_id)?;
    let staged: Vec<String> = if visibility.is_none() {
        spool
            .staged
            .iter()
            .filter(|(t, _)| t == table)
            .map(|(_, r)| r.clone())
            .collect()
    } else {
        Vec::new()
    };
    // Not orphans: taken over (or removed) by this convert once it knows its sources.
    let keep = crate::pipeline::table_writer::staged_paths(&staged);
    spool
        .orphans
        .retain(|(t, p)| t != table || !keep.contains(p));
    let recovered = recover(
        spools,
        lake,
        table,
        &spool,
        visibility.unwrap_or_default(),
        &keep,
    )
    .await?;
    Ok(Startup {
        spool,
        recovered,
        staged,
    })
}

/// Start-up recovery of a writer of `table` that holds `claim`: the uploads that dead writers
/// of these spools recorded and never committed are removed at once (for every table they wrote),
/// uploads of running consumers are never touched, and other uncommitted files of `table`
/// (from consumers elsewhere) are removed once older than twice the visibility timeout, and at
/// least 10 minutes. Returns the files removed, per table.
pub(crate) async fn recover(
    spools: &Spools,
    lake: &Lake,
    table: &str,
    claim: &SpoolClaim,
    visibility: Duration,
    keep: &std::collections::HashSet<String>,
) -> Result<Vec<(String, Vec<String>)>> {
    let mut tables: Vec<&str> = claim.orphans.iter().map(|(t, _)| t.as_str()).collect();
    tables.push(table);
    tables.sort_unstable();
    tables.dedup();
    let mut protect = spools.live_uploads();
    protect.extend(keep.iter().cloned());
    let mut out = Vec::new();
    for t in tables {
        let opts = RepairOptions {
            grace: (visibility * 2).max(MIN_RECOVERY_GRACE),
            protect: protect.clone(),
            dead: claim
                .orphans
                .iter()
                .filter(|(ot, _)| ot == t)
                .map(|(_, p)| p.clone())
                .collect(),
        };
        let r = repair(lake, t, &opts).await?;
        if !r.removed.is_empty() {
            out.push((t.to_string(), r.removed));
        }
    }
    Ok(out)
}
