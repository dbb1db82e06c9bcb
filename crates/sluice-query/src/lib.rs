//! # sluice-query
//!
//! SQL over a sluice lake with DataFusion. Each catalog table is registered as a
//! [`LakeTable`]: it reads exactly the files its ledger has committed (never a half-written or
//! orphaned file), exposes the partition keys as typed columns, prunes files on filters over
//! those columns, and leaves row-group and page pruning to the Parquet reader.
//!
//! Queries are read-only: DDL, DML and `SET`-style statements are refused.

use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use sluice_core::catalog::{Catalog, TableDef};
use sluice_core::lake::Lake;
use sluice_core::ledger::{FileKind, Ledger, LedgerState};
use sluice_core::partition::parse_partition_path;

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
    /// Reading the catalog, ledger or lake failed.
    #[error(transparent)]
    Core(#[from] sluice_core::Error),
}

/// Name under which the quarantine is queryable.
pub const QUARANTINE_TABLE: &str = "quarantine";

/// A DataFusion session over a lake's committed files.
pub struct QueryEngine {
    ctx: SessionContext,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine").finish_non_exhaustive()
    }
}

fn store_url(lake: &Lake) -> Result<ObjectStoreUrl, QueryError> {
    let u = &lake.url;
    Ok(ObjectStoreUrl::parse(format!(
        "{}://{}",
        u.scheme(),
        u.authority()
    ))?)
}

impl QueryEngine {
    /// Registers every table of `database` (and the quarantine of all of them).
    pub async fn new(
        catalog: &dyn Catalog,
        lake: &Lake,
        database: &str,
    ) -> Result<Self, QueryError> {
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let url = store_url(lake)?;
        ctx.register_object_store(url.as_ref(), lake.store.clone());
        let tables = catalog.list_tables(database).await?;
        let mut quarantine = Vec::new();
        let mut names = Vec::new();
        for def in tables {
            let ledger = Ledger::open(lake, &def.name, "query").await?;
            let state = ledger.state();
            quarantine.extend(
                state
                    .files
                    .values()
                    .filter(|f| f.kind == FileKind::Quarantine)
                    .map(|f| (lake.path(&f.path), f.bytes)),
            );
            let table = LakeTable::new(&def, lake, state, url.clone())?;
            names.push(def.name.clone());
            ctx.register_table(def.name.as_str(), Arc::new(table))?;
        }
        let qname = if names.iter().any(|n| n == QUARANTINE_TABLE) {
            "sluice_quarantine"
        } else {
            QUARANTINE_TABLE
        };
        let qschema = sluice_core::writer::quarantine_schema();
        let files = quarantine
            .into_iter()
            .map(|(p, size)| (committed_file(p, size), Vec::new()))
            .collect();
        let qtable = LakeTable {
            schema: qschema.clone(),
            file_schema: qschema,
            partition_fields: vec![],
            files,
            url,
        };
        ctx.register_table(qname, Arc::new(qtable))?;
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

/// A table whose files are the ledger's committed files.
#[derive(Debug)]
pub struct LakeTable {
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    /// Each file with its partition values (in `partition_fields` order).
    files: Vec<(PartitionedFile, Vec<ScalarValue>)>,
    url: ObjectStoreUrl,
}

/// A committed file. The path is used as it is: building it from a string would percent-encode
/// the `%` of Hive-escaped partition directories a second time.
fn committed_file(location: object_store::path::Path, size: u64) -> PartitionedFile {
    PartitionedFile::new_from_meta(object_store::ObjectMeta {
        location,
        last_modified: chrono::DateTime::<chrono::Utc>::MIN_UTC,
        size,
        e_tag: None,
        version: None,
    })
}

fn partition_value(raw: Option<&str>, ty: &DataType) -> Result<ScalarValue, DataFusionError> {
    match raw {
        None => ScalarValue::try_from(ty),
        Some(v) => ScalarValue::try_from_string(v.to_string(), ty),
    }
}

impl LakeTable {
    /// The committed data files of a table.
    pub fn new(
        def: &TableDef,
        lake: &Lake,
        state: &LedgerState,
        url: ObjectStoreUrl,
    ) -> Result<Self, QueryError> {
        let file_schema = sluice_core::schema::arrow_schema(&def.columns);
        let partition_fields: Vec<FieldRef> = def
            .partition_keys
            .iter()
            .map(|c| Arc::new(Field::new(&c.name, c.ty.arrow_type(), true)))
            .collect();
        let mut fields: Vec<FieldRef> = file_schema.fields().iter().cloned().collect();
        fields.extend(partition_fields.iter().cloned());
        let mut files = Vec::new();
        for f in state.files.values().filter(|f| f.kind == FileKind::Data) {
            let kv = parse_partition_path(&f.partition);
            let mut values = Vec::with_capacity(partition_fields.len());
            for field in &partition_fields {
                let raw = kv
                    .iter()
                    .find(|(k, _)| k == field.name())
                    .and_then(|(_, v)| v.as_deref());
                values.push(partition_value(raw, field.data_type())?);
            }
            files.push((committed_file(lake.path(&f.path), f.bytes), values));
        }
        Ok(LakeTable {
            schema: Arc::new(Schema::new(fields)),
            file_schema,
            partition_fields,
            files,
            url,
        })
    }

    /// Number of committed files.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    fn is_partition_filter(&self, e: &Expr) -> bool {
        let cols = e.column_refs();
        !cols.is_empty()
            && cols
                .iter()
                .all(|c| self.partition_fields.iter().any(|f| f.name() == &c.name))
    }

    /// Files whose partition values pass every partition-only filter.
    fn prune(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> Result<Vec<PartitionedFile>, DataFusionError> {
        let pf: Vec<&Expr> = filters
            .iter()
            .filter(|e| self.is_partition_filter(e))
            .collect();
        if pf.is_empty() || self.files.is_empty() {
            return Ok(self
                .files
                .iter()
                .map(|(f, v)| f.clone().with_partition_values(v.clone()))
                .collect());
        }
        let pschema = Arc::new(Schema::new(self.partition_fields.clone()));
        let columns = (0..self.partition_fields.len())
            .map(|i| ScalarValue::iter_to_array(self.files.iter().map(|(_, v)| v[i].clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = if columns.is_empty() {
            RecordBatch::new_empty(pschema.clone())
        } else {
            RecordBatch::try_new(pschema.clone(), columns)?
        };
        let dfschema = DFSchema::try_from(pschema.as_ref().clone())?;
        let mut keep = vec![true; self.files.len()];
        for e in pf {
            let phys = state.create_physical_expr(e.clone(), &dfschema)?;
            let result = phys.evaluate(&batch)?.into_array(batch.num_rows())?;
            let mask = result
                .as_any()
                .downcast_ref::<datafusion::arrow::array::BooleanArray>()
                .ok_or_else(|| {
                    DataFusionError::Internal("partition filter is not boolean".into())
                })?;
            for (i, k) in keep.iter_mut().enumerate() {
                *k &= mask.is_valid(i) && mask.value(i);
            }
        }
        Ok(self
            .files
            .iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|((f, v), _)| f.clone().with_partition_values(v.clone()))
            .collect())
    }
}

#[async_trait::async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>, DataFusionError> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let files = self.prune(state, filters)?;
        if files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let n = state.config().target_partitions().clamp(1, files.len());
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); n];
        for (i, f) in files.into_iter().enumerate() {
            groups[i % n].push(f);
        }
        let format = ParquetFormat::default();
        let table_schema = TableSchema::builder(self.file_schema.clone())
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        let source = format.file_source(table_schema);
        let config = FileScanConfigBuilder::new(self.url.clone(), source)
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(if filters.is_empty() { limit } else { None })
            .build();
        format.create_physical_plan(state, config).await
    }
}
