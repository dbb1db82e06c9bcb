//! Schema evolution: sources are matched to a table by column name, and a source with columns
//! the table lacks changes the table as its schema policy says.
//!
//! ```text
//!  header / keys ─► known columns: by name, in any order; absent ones are NULL
//!               └─► new columns ─► evolve:          Delta metaData version (nullable columns)
//!                                                    ─► catalog (embedded or Glue) ─► retype
//!                                  freeze:          rows quarantined (convert), message
//!                                                    dead-lettered (queue), with the reason
//!                                  discard-columns: the new columns are dropped, rows kept
//! ```
//!
//! The Delta log is changed first: it is what every reader reads, and a writer that stops
//! between the two steps leaves the catalog behind, which the next change (or the next writer to
//! meet the column) brings up to date from the log. Columns are only ever added, nullable, so
//! files written before (or by writers that have not seen the change yet) stay valid: readers
//! read the missing columns as NULL, and appends never conflict with a schema change.
//!
//! A column's type is never changed, but for fields added inside a struct (at any depth, in list
//! elements and map values too), which Delta allows as it allows added columns: files written
//! before read them as NULL. A primitive's type is never widened: Delta widens `long` only to
//! `decimal`, not to `double`, and not every reader follows type widening. A value that does
//! not parse as its column's type sends its row to the quarantine with the reason, as always.

use std::sync::Arc;

use tracing::info;

use crate::catalog::{Catalog, PARAM_FINGERPRINT};
use crate::delta::log::{DeltaField, Ledger, column_type_of_delta};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::schema::{Column, validate_column_name};
use crate::table::TableLayout;
use crate::table::policy::{PARAM_SCHEMA_HISTORY, SchemaChange, SchemaPolicy, history};

/// Adds columns to one table, in its Delta log and then in the catalog.
#[derive(Debug, Clone)]
pub(crate) struct Evolver {
    pub catalog: Arc<dyn Catalog>,
    pub lake: Lake,
    pub database: String,
    pub table: String,
    pub writer_id: String,
    /// The table's column defaults (column, value), which every layout it returns carries.
    pub defaults: Vec<(String, String)>,
}

impl Evolver {
    /// Adds `columns` (nullable) unless the table has them, and returns the table's layout after.
    /// A column another writer added first keeps that writer's type: the caller types its rows
    /// again with the layout returned. Fails unless the table's policy is `evolve`.
    pub async fn add_columns(&self, columns: &[Column], source: &str) -> Result<Arc<TableLayout>> {
        let def = self.catalog.get_table(&self.database, &self.table).await?;
        let policy = SchemaPolicy::of_def(&def)?;
        if policy != SchemaPolicy::Evolve {
            return Err(Error::Config(format!(
                "table {} has schema policy {policy}: columns are not added",
                self.table
            )));
        }
        for c in columns {
            validate_column_name(&c.name)
                .map_err(|e| Error::invalid_at(source, Some(1), e.to_string()))?;
            if def.partition_keys.iter().any(|k| k.name == c.name) {
                return Err(Error::invalid_at(
                    source,
                    Some(1),
                    format!(
                        "column {:?} has the name of table {}'s partition key: rename it in the source",
                        c.name, self.table
                    ),
                ));
            }
        }
        let mut ledger = Ledger::open(&self.lake, &self.table, &self.writer_id).await?;
        let fields: Vec<DeltaField> = columns.iter().map(DeltaField::of_column).collect();
        let version = ledger.add_columns(&fields).await?;
        if let Some(v) = version {
            metrics::counter!(crate::metrics::SCHEMA_CHANGES).increment(1);
            let names: Vec<String> = columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.ty.name()))
                .collect();
            info!(table = %self.table, version = v, columns = %names.join(", "), source, "schema evolved: columns added");
        }
        let log = ledger.state();
        let in_log: Vec<(String, String)> = log
            .schema_fields()
            .into_iter()
            .filter(|(n, _)| !log.partition_columns.contains(n))
            .collect();
        let layout = self.catch_up(&in_log, version, source, columns).await?;
        Ok(Arc::new(layout))
    }

    /// Brings the catalog's columns up to the Delta log's (`in_log`: its file columns); those
    /// among `added` keep their names as the source wrote them.
    async fn catch_up(
        &self,
        in_log: &[(String, String)],
        version: Option<u64>,
        source: &str,
        added: &[Column],
    ) -> Result<TableLayout> {
        loop {
            let mut def = self.catalog.get_table(&self.database, &self.table).await?;
            let mut missing = Vec::new();
            let mut widened = Vec::new();
            for (name, ty) in in_log {
                if def.partition_keys.iter().any(|c| &c.name == name) {
                    continue;
                }
                let log_ty = column_type_of_delta(ty);
                if let Some(c) = def.columns.iter_mut().find(|c| &c.name == name) {
                    // A struct the log has with more fields (this writer's or another's).
                    if let Some(t) = log_ty.filter(|t| *t != c.ty && t.widens(c.ty)) {
                        c.ty = t;
                        widened.push(c.clone());
                    }
                    continue;
                }
                let ty = log_ty.ok_or_else(|| Error::UnsupportedType {
                    table: self.table.clone(),
                    column: name.to_string(),
                    ty: ty.to_string(),
                    operation: "write",
                })?;
                let mut c = Column::new(name, ty);
                c.source_name = added
                    .iter()
                    .find(|a| &a.name == name)
                    .and_then(|a| a.source_name.clone());
                missing.push(c);
            }
            if missing.is_empty() && widened.is_empty() {
                return Ok(TableLayout::from_def(&def)?.with_defaults(&self.defaults));
            }
            def.columns.extend(missing.iter().cloned());
            let mut changes = history(&def);
            changes.push(SchemaChange {
                version,
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                added: missing,
                widened,
                source: source.to_string(),
            });
            def.parameters.insert(
                PARAM_SCHEMA_HISTORY.into(),
                serde_json::to_string(&changes).expect("changes serialize"),
            );
            let layout = TableLayout::from_def(&def)?;
            def.parameters
                .insert(PARAM_FINGERPRINT.into(), layout.fingerprint.clone());
            match self.catalog.update_table(&def).await {
                Ok(d) => return Ok(TableLayout::from_def(&d)?.with_defaults(&self.defaults)),
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        assert_eq!(SchemaPolicy::parse("evolve").unwrap(), SchemaPolicy::Evolve);
        assert_eq!(SchemaPolicy::parse("FREEZE").unwrap(), SchemaPolicy::Freeze);
        assert_eq!(
            SchemaPolicy::parse("discard_columns").unwrap(),
            SchemaPolicy::DiscardColumns
        );
        let e = SchemaPolicy::parse("strict").unwrap_err().to_string();
        assert!(e.contains("evolve, freeze or discard-columns"), "{e}");
    }
}
