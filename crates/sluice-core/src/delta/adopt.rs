//! Taking over a Delta table as it is: a table in the lake that the catalog does not know yet
//! (created by another engine, or by sluice from another home) gets its catalog entry from its
//! own log, and a catalog entry is checked against the log before sluice writes.
//!
//! The log decides: its partition columns and schema are the table's. A partitioning the user
//! asks for that disagrees is refused with the table's own in the message. sluice's own tables
//! carry their `--partition-by` spec in the table properties (`CONFIG_PARTITION_BY`), since
//! partition columns alone cannot say that `year` is the year of `month`; other tables are
//! partitioned by their partition columns as they are (identity).

use crate::catalog::{Catalog, CatalogExt, PARAM_PARTITION_BY, TableDef};
use crate::delta::log::{
    CONFIG_COLUMN_NAMES, CONFIG_DATE_FORMAT, CONFIG_EXACT_DECIMALS, CONFIG_PARTITION_BY,
    DeltaSchema, Ledger, column_type_of_delta, is_delta_type,
};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::schema::Column;
use crate::schema::partition::PartitionSpec;
use crate::table::TableLayout;

/// What the user asked of a table that may already exist.
#[derive(Debug, Clone)]
pub struct Adoption<'a> {
    /// The catalog database to register the table in.
    pub database: &'a str,
    /// The table's name.
    pub table: &'a str,
    /// The table's URL, for the catalog entry.
    pub location: &'a str,
    /// `--partition-by`, when given: refused if the table's log says otherwise.
    pub partition_by: Option<&'a PartitionSpec>,
    /// The schema policy a new catalog entry gets (`evolve`, …).
    pub schema_policy: &'a str,
    /// What the writer that will write the table brings (constraint checks).
    pub capabilities: crate::delta::Capabilities,
}

/// Registers the table in the catalog from its Delta log when the lake has the table and the
/// catalog does not; returns the new entry (`None`: nothing to adopt, the catalog has it or the
/// lake has no log).
pub async fn adopt(
    catalog: &dyn Catalog,
    lake: &Lake,
    a: &Adoption<'_>,
) -> Result<Option<TableDef>> {
    match catalog.get_table(a.database, a.table).await {
        Ok(_) => return Ok(None),
        Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let ledger = Ledger::open(lake, a.table, "adopt").await?;
    if !ledger.state().exists {
        return Ok(None);
    }
    // Adopted to be written: a table sluice may not append to is refused before the catalog
    // hears of it.
    ledger.check_as(crate::delta::Operation::Append, a.capabilities)?;
    let mut def = def_of_log(&ledger, a)?;
    def.parameters.insert(
        crate::table::policy::PARAM_SCHEMA_POLICY.into(),
        a.schema_policy.to_string(),
    );
    catalog.ensure_database(a.database).await?;
    match catalog.create_table(&def).await {
        Ok(()) => {
            tracing::info!(table = %def.name, url = %ledger.url(), "adopted an existing Delta table")
        }
        Err(Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(e),
    }
    catalog.get_table(a.database, a.table).await.map(Some)
}

/// The partitioning a table's log gives it.
pub(crate) fn spec_of_log(ledger: &Ledger) -> Result<PartitionSpec> {
    let state = ledger.state();
    let meta = state.metadata.as_ref().ok_or_else(|| Error::CorruptLog {
        path: ledger.url(),
        message: "the log has no metaData action".into(),
    })?;
    if let Some(s) = meta.config(CONFIG_PARTITION_BY) {
        return PartitionSpec::parse(s);
    }
    PartitionSpec::parse(&state.partition_columns.join(","))
}

/// The catalog entry of a table from its log.
fn def_of_log(ledger: &Ledger, a: &Adoption<'_>) -> Result<TableDef> {
    let mut spec = spec_of_log(ledger)?;
    let names = ledger
        .state()
        .metadata
        .as_ref()
        .and_then(|m| m.config(CONFIG_COLUMN_NAMES))
        .map(crate::schema::ColumnNames::parse)
        .transpose()?
        .unwrap_or_default();
    let asked_named = a.partition_by.map(|s| s.named(names));
    let a = &Adoption {
        partition_by: asked_named.as_ref(),
        ..*a
    };
    let recorded = ledger
        .state()
        .metadata
        .as_ref()
        .is_some_and(|m| m.config(CONFIG_PARTITION_BY).is_some());
    // A table that does not record how its keys are derived (one an earlier sluice made):
    // a spec that derives exactly its partition columns says how, and the columns' types are
    // checked below.
    if let Some(asked) = a.partition_by
        && !recorded
        && asked.key_names() == ledger.state().partition_columns
    {
        spec = asked.clone();
    }
    if let Some(asked) = a.partition_by
        && *asked != spec
    {
        return Err(Error::TableMismatch {
            table: a.table.to_string(),
            message: format!(
                "table {} is a Delta table partitioned by {} (its log at {}): --partition-by {} disagrees; leave it out to write with the table's partitioning",
                a.table,
                spec.describe(),
                ledger.url(),
                asked.describe()
            ),
        });
    }
    let state = ledger.state();
    let keys = spec.key_names();
    let mut columns = Vec::new();
    for (name, ty) in state.schema_fields() {
        // Keys a date transform derives are the table's, not the sources'.
        if keys.contains(&name) && !spec.in_path_only(&name) {
            continue;
        }
        columns.push(Column::new(&name, exact_type(ledger, &name, &ty)?));
    }
    let date_format = state
        .metadata
        .as_ref()
        .and_then(|m| m.config(CONFIG_DATE_FORMAT));
    let mut def =
        TableLayout::new_def(a.database, a.table, a.location, columns, &spec, date_format)?;
    for (key, param) in [
        (CONFIG_EXACT_DECIMALS, crate::catalog::PARAM_EXACT_DECIMALS),
        (CONFIG_COLUMN_NAMES, crate::catalog::PARAM_COLUMN_NAMES),
    ]
    .into_iter()
    .chain(crate::delta::log::CONFIG_KEYED)
    {
        if let Some(v) = state.metadata.as_ref().and_then(|m| m.config(key)) {
            def.parameters.insert(param.into(), v.to_string());
        }
    }
    // A keyed table's operation column is in its changes, not its log (unless kept).
    if let Some(keys) = crate::table::keyed::KeySpec::of_params(&def.parameters)?
        && let Some(op) = keys.op.filter(|_| !keys.keep_op)
        && !def.columns.iter().any(|c| c.name == op)
    {
        def.columns
            .push(Column::new(&op, crate::schema::ColumnType::String));
    }
    check_def(&def, ledger)?;
    Ok(def)
}

/// The column type sluice writes for a Delta type, only when it is exactly that type (a file
/// of `long` values in an `integer` column is one that readers refuse).
fn exact_type(ledger: &Ledger, name: &str, ty: &str) -> Result<crate::schema::ColumnType> {
    match column_type_of_delta(ty) {
        Some(t) if is_delta_type(t, ty) => Ok(t),
        _ => Err(Error::UnsupportedType {
            table: ledger.url(),
            column: name.to_string(),
            ty: ty.to_string(),
            operation: "write yet (it writes boolean, byte, short, integer, long, float, double, decimal, date, timestamp, timestamp_ntz, string and binary)",
        }),
    }
}

/// Checks a catalog entry against the table's log before writing: the same partition columns,
/// and every column the entry writes in the log with the same type. Columns the log has beyond
/// the entry's (added by another writer) are fine: sluice's files lack them, readers see NULL.
pub(crate) fn check_def(def: &TableDef, ledger: &Ledger) -> Result<()> {
    let state = ledger.state();
    if !state.exists {
        return Ok(());
    }
    let want = DeltaSchema::of_table(def);
    let spec = PartitionSpec::parse(
        def.parameters
            .get(PARAM_PARTITION_BY)
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map(|s| s.describe())
    .unwrap_or_default();
    if want.partition_columns != state.partition_columns {
        let theirs = spec_of_log(ledger)
            .map(|s| s.describe())
            .unwrap_or_else(|_| format!("[{}]", state.partition_columns.join(", ")));
        return Err(Error::TableMismatch {
            table: def.name.clone(),
            message: format!(
                "table {} is partitioned by {theirs} in its Delta log ({}), not by {spec} as the catalog says; recreate the catalog entry, or write with the table's partitioning",
                def.name,
                ledger.url()
            ),
        });
    }
    let have = state.schema_fields();
    for f in &want.fields {
        match have.iter().find(|(n, _)| *n == f.name) {
            Some((_, t)) if *t == f.ty => {}
            // A struct the log has with more fields (another writer's schema evolution): the
            // files sluice writes for the catalog's read them as NULL, and its typer adds them
            // to the catalog when rows bring them.
            Some((_, t))
                if column_type_of_delta(t)
                    .zip(column_type_of_delta(&f.ty))
                    .is_some_and(|(log, ours)| log.widens(ours)) => {}
            Some((_, t)) => {
                return Err(Error::TableMismatch {
                    table: def.name.clone(),
                    message: format!(
                        "table {}: column {:?} is {t} in its Delta log ({}), but sluice would write {}",
                        def.name,
                        f.name,
                        ledger.url(),
                        f.ty
                    ),
                });
            }
            None => {
                return Err(Error::TableMismatch {
                    table: def.name.clone(),
                    message: format!(
                        "table {}: column {:?} of the catalog is not in its Delta log ({})",
                        def.name,
                        f.name,
                        ledger.url()
                    ),
                });
            }
        }
    }
    Ok(())
}
