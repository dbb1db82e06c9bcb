//! # sluice-query
//!
//! SQL over a sluice lake with DataFusion. Each catalog table is a Delta Lake table, read through
//! `deltalake`'s table provider: exactly the files its log has committed at the version asked for
//! (never a half-written or orphaned file), partition columns typed, files skipped by partition
//! values and by the per-file statistics of the log, row groups and pages by the Parquet reader.
//!
//! Queries are read-only: DDL, DML and `SET`-style statements are refused.

pub mod constraints;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use sluice_core::catalog::{Catalog, TableDef};
use sluice_core::lake::Lake;
pub use sluice_delta::AsOf;

/// Errors of the query engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The statement would change something; `sluice query` is read-only.
    #[error("sluice query is read-only: {0}")]
    ReadOnly(String),
    /// Planning or execution failed (bad SQL, unknown table or column, …).
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    /// Reading the catalog, log or lake failed.
    #[error(transparent)]
    Core(#[from] sluice_core::Error),
}

/// Name under which the quarantine is queryable.
pub const QUARANTINE_TABLE: &str = "quarantine";

/// A DataFusion session over a lake's Delta tables.
pub struct QueryEngine {
    ctx: SessionContext,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine").finish_non_exhaustive()
    }
}

/// The table provider of one Delta table at `as_of`, or `None` if it has no log yet.
async fn delta_provider(
    ctx: &SessionContext,
    lake: &Lake,
    dir: &str,
    as_of: AsOf,
) -> Result<Option<Arc<dyn TableProvider>>, QueryError> {
    let table = match sluice_delta::open_table(lake, dir, as_of).await {
        Ok(t) => t,
        Err(sluice_core::Error::NotFound {
            what: "Delta table",
            ..
        }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let url = sluice_delta::table_url(lake, dir)?;
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| sluice_delta::delta_error(&url, e))?;
    let scan = table.table_provider().build().await?;
    Ok(Some(Arc::new(scan)))
}

/// A table with the catalog's schema and no rows (created, nothing committed yet).
fn empty_table(def: &TableDef) -> Result<Arc<dyn TableProvider>, QueryError> {
    let mut fields: Vec<_> = sluice_core::schema::arrow_schema(&def.columns)
        .fields()
        .iter()
        .cloned()
        .collect();
    for c in &def.partition_keys {
        fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
            &c.name,
            c.ty.arrow_type(),
            true,
        )));
    }
    let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(fields));
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?))
}

impl QueryEngine {
    /// Registers every table of `database` at its newest version, and `quarantine` (the
    /// quarantined rows of all of them).
    pub async fn new(
        catalog: &dyn Catalog,
        lake: &Lake,
        database: &str,
    ) -> Result<Self, QueryError> {
        Self::new_as_of(catalog, lake, database, AsOf::Latest).await
    }

    /// Like [`QueryEngine::new`], with every table read at `as_of` (a table that has no such
    /// version is an error naming it). The quarantine is always read at its newest version.
    pub async fn new_as_of(
        catalog: &dyn Catalog,
        lake: &Lake,
        database: &str,
        as_of: AsOf,
    ) -> Result<Self, QueryError> {
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let tables = catalog.list_tables(database).await?;
        let mut quarantine: Option<datafusion::dataframe::DataFrame> = None;
        let mut names = Vec::new();
        for def in tables {
            let provider =
                match delta_provider(&ctx, lake, &Lake::table_dir(&def.name), as_of).await? {
                    Some(p) => p,
                    None if as_of == AsOf::Latest => {
                        // No Delta log: a table created and not written yet reads as empty;
                        // one written by an earlier sluice is an error naming the upgrade,
                        // never an empty answer.
                        sluice_core::delta::open::refuse_legacy_log(lake, &def.name).await?;
                        empty_table(&def)?
                    }
                    None => {
                        return Err(sluice_core::Error::NotFound {
                            what: "Delta table",
                            name: def.name.clone(),
                        }
                        .into());
                    }
                };
            ctx.register_table(def.name.as_str(), provider)?;
            names.push(def.name.clone());
            let qdir = Lake::quarantine_dir(&def.name);
            if let Some(q) = delta_provider(&ctx, lake, &qdir, AsOf::Latest).await? {
                let df = ctx.read_table(q)?;
                quarantine = Some(match quarantine {
                    Some(all) => all.union(df)?,
                    None => df,
                });
            }
        }
        let qname = if names.iter().any(|n| n == QUARANTINE_TABLE) {
            "sluice_quarantine"
        } else {
            QUARANTINE_TABLE
        };
        let qtable: Arc<dyn TableProvider> = match quarantine {
            Some(df) => df.into_view(),
            None => Arc::new(MemTable::try_new(
                sluice_core::parquet::writer::quarantine_schema(),
                vec![vec![]],
            )?),
        };
        ctx.register_table(qname, qtable)?;
        Ok(QueryEngine { ctx })
    }

    /// The DataFusion session, for callers that need more than [`QueryEngine::sql`].
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs one read-only SQL statement and collects its result.
    pub async fn sql(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let opts = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self.ctx.sql_with_options(sql, opts).await.map_err(|e| {
            let msg = e.to_string();
            if msg.contains("not supported")
                && (msg.contains("DDL") || msg.contains("DML") || msg.contains("Statement"))
            {
                QueryError::ReadOnly(format!("{msg} (DDL, DML and statements are refused)"))
            } else {
                QueryError::DataFusion(e)
            }
        })?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok((schema, batches))
    }
}
