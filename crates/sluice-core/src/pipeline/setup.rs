//! The table a pipeline writes: its settings, and its creation (from the declared columns or
//! those of its first source) when it does not exist yet.

use tracing::info;

use crate::catalog::{Catalog, CatalogExt, TableDef};
use crate::error::{Error, Result};
use crate::schema::partition::PartitionSpec;
use crate::schema::{Column, ColumnNames};
use crate::source::Source;
use crate::source::csv::CsvFormat;
use crate::source::infer::{Sample, infer_columns};
use crate::table::TableLayout;
use crate::table::policy::{PARAM_SCHEMA_POLICY, SchemaPolicy};

/// The table a producer or `convert` writes, and how its sources read.
#[derive(Debug, Clone)]
pub struct TableSettings {
    /// The table's name.
    pub name: String,
    /// The table's catalog database.
    pub database: String,
    /// The CSV dialect of the table's sources.
    pub format: CsvFormat,
    /// Used when the table is created.
    pub partition_by: PartitionSpec,
    /// strftime pattern for dates that are not ISO 8601.
    pub date_format: Option<String>,
    /// A new table's numbers written with a point are inferred as `decimal(p,s)`, not
    /// `float64` (kept with the table, for the columns schema evolution adds).
    pub exact_decimals: bool,
    /// How a new table names its sources' columns (an existing table keeps its own rule).
    pub column_names: ColumnNames,
    /// Declared columns (from the configuration) instead of inference.
    pub columns: Option<Vec<Column>>,
    /// Rows sampled for inference.
    pub sample_rows: usize,
    /// URL of the table's directory, for a new table.
    pub location: String,
    /// Schema policy of a new table (an existing table keeps its own).
    pub schema_policy: SchemaPolicy,
    /// A new table's key, when its rows are changes ([`crate::table::keyed`]); an existing
    /// table must have the same, or be written without.
    pub keys: Option<crate::table::keyed::KeySpec>,
}

impl TableSettings {
    /// Settings for the table `name`, partitioned by `partition_by`, at `location`, with the
    /// defaults.
    pub fn new(name: &str, partition_by: PartitionSpec, location: String) -> Self {
        TableSettings {
            name: name.to_string(),
            database: crate::DEFAULT_DATABASE.to_string(),
            format: CsvFormat::default(),
            partition_by,
            date_format: None,
            exact_decimals: false,
            column_names: ColumnNames::SnakeCase,
            columns: None,
            sample_rows: 10_000,
            location,
            schema_policy: Default::default(),
            keys: None,
        }
    }

    /// How sources are sampled for a new table's columns.
    pub fn sample(&self) -> Sample {
        Sample {
            rows: self.sample_rows,
            format: self.format.clone(),
            date_format: self.date_format.clone(),
            exact_decimals: self.exact_decimals,
        }
    }
}

/// A new table's columns, and its partition spec's, named by `rule` (the name as it came kept
/// as the column's source name). Two columns that the rule names alike are refused.
fn named(
    columns: Vec<Column>,
    spec: &PartitionSpec,
    rule: ColumnNames,
    table: &str,
) -> Result<(Vec<Column>, PartitionSpec)> {
    let mut out: Vec<Column> = Vec::with_capacity(columns.len());
    for mut c in columns {
        let name = rule.apply(&c.name).into_owned();
        if let Some(other) = out.iter().find(|o| o.name == name) {
            return Err(Error::invalid(format!(
                "columns {:?} and {:?} would both be {name:?} in table {table} (its column names are {}): rename one, or keep names as they come with --column-names as-is",
                other.source_name.as_deref().unwrap_or(&other.name),
                c.name,
                rule.name()
            )));
        }
        if name != c.name {
            c.source_name = Some(std::mem::replace(&mut c.name, name));
        }
        c.ty = c.ty.named(rule)?;
        out.push(c);
    }
    Ok((out, spec.named(rule)))
}

/// Creates the table from the first source if it does not exist; returns its definition.
pub async fn ensure_table_for(
    catalog: &dyn Catalog,
    opts: &TableSettings,
    first: &Source,
    spool: &std::path::Path,
) -> Result<TableDef> {
    match catalog.get_table(&opts.database, &opts.name).await {
        Err(Error::NotFound { .. }) => {}
        other => return other,
    }
    let columns = match &opts.columns {
        Some(c) => Ok(c.clone()),
        None => {
            let rt = tokio::runtime::Handle::current();
            let (first, sample, spool) = (first.clone(), opts.sample(), spool.to_path_buf());
            tokio::task::spawn_blocking(move || infer_columns(&rt, &first, &sample, &spool)).await?
        }
    };
    ensure_table(catalog, opts, || columns).await
}

/// Returns the table named in `opts`, creating it if missing with the declared columns, or
/// else the columns `infer` gives.
pub(crate) async fn ensure_table(
    catalog: &dyn Catalog,
    opts: &TableSettings,
    infer: impl FnOnce() -> Result<Vec<Column>>,
) -> Result<TableDef> {
    match catalog.get_table(&opts.database, &opts.name).await {
        Ok(t) => {
            check_keys(&t, opts)?;
            return Ok(t);
        }
        Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let columns = match &opts.columns {
        Some(cols) => cols.clone(),
        None => infer()?,
    };
    let (columns, spec) = named(columns, &opts.partition_by, opts.column_names, &opts.name)?;
    let mut def = TableLayout::new_def(
        &opts.database,
        &opts.name,
        &opts.location,
        columns,
        &spec,
        opts.date_format.as_deref(),
    )?;
    def.parameters.insert(
        crate::catalog::PARAM_COLUMN_NAMES.into(),
        opts.column_names.name().into(),
    );
    def.parameters
        .insert(PARAM_SCHEMA_POLICY.into(), opts.schema_policy.name().into());
    if opts.exact_decimals {
        def.parameters
            .insert(crate::catalog::PARAM_EXACT_DECIMALS.into(), "true".into());
    }
    if let Some(keys) = &opts.keys {
        let keys = keys.named(opts.column_names);
        keys.check(&opts.name, &def.columns)?;
        keys.to_params(&mut def.parameters);
    }
    catalog.ensure_database(&opts.database).await?;
    match catalog.create_table(&def).await {
        Ok(()) => info!(table = %def.name, columns = def.columns.len(), "created table"),
        Err(Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(e),
    }
    let t = catalog.get_table(&opts.database, &opts.name).await?;
    check_keys(&t, opts)?;
    Ok(t)
}

/// Refuses keyed-table options that are not the table's own.
pub(crate) fn check_keys(def: &TableDef, opts: &TableSettings) -> Result<()> {
    let have = crate::table::keyed::KeySpec::of_params(&def.parameters)?;
    let asked = opts
        .keys
        .as_ref()
        .map(|k| k.named(def.column_names().unwrap_or(opts.column_names)));
    crate::table::keyed::KeySpec::check_same(&def.name, have.as_ref(), asked.as_ref())
}
