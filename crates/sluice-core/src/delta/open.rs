//! Opening a table's Delta logs for writing: the table's own and its quarantine's, created if
//! missing, after the checks that must pass before anything is written.

use std::sync::Arc;

use crate::catalog::TableDef;
use crate::delta::log::{Checkpointer, DeltaSchema, Ledger};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::parquet::writer::quarantine_schema;

/// Fails with the command that upgrades it if `table` has the commit log of an earlier sluice
/// and no Delta log: writing a Delta log beside it would hide the rows it committed.
pub async fn refuse_legacy_log(lake: &Lake, table: &str) -> Result<()> {
    if crate::delta::legacy::has_legacy_log(lake, table).await?
        && !Ledger::open(lake, table, "check").await?.state().exists
    {
        return Err(Error::NeedsUpgrade {
            table: table.to_string(),
            log: lake.url_of(&crate::delta::legacy::legacy_dir(table)),
        });
    }
    Ok(())
}

/// Opens (and creates, if missing) the Delta tables of a table's data and quarantine.
///
/// A table still on the commit log of earlier sluice versions is refused with the command that
/// upgrades it: writing a Delta log beside it would hide the rows it committed.
pub(crate) async fn open_logs(
    lake: &Lake,
    def: &TableDef,
    writer_id: &str,
    checkpointer: Option<Arc<dyn Checkpointer>>,
    constraints: Option<Arc<dyn crate::delta::constraints::ConstraintEngine>>,
) -> Result<(Ledger, Ledger)> {
    let mut ledger = Ledger::open(lake, &def.name, writer_id)
        .await?
        .with_checkpointer(checkpointer.clone())
        .with_constraint_engine(constraints)?;
    if !ledger.state().exists {
        refuse_legacy_log(lake, &def.name).await?;
    }
    ledger
        .create_if_missing(&DeltaSchema::of_table(def))
        .await?;
    // The table may be another engine's, or have changed since the catalog entry was made:
    // refuse before anything is written.
    crate::delta::adopt::check_def(def, &ledger)?;
    ledger.check(crate::delta::Operation::Append)?;
    let mut quarantine = Ledger::open_quarantine(lake, &def.name, writer_id)
        .await?
        .with_checkpointer(checkpointer);
    quarantine
        .create_if_missing(&DeltaSchema::of_arrow(&quarantine_schema())?)
        .await?;
    Ok((ledger, quarantine))
}
