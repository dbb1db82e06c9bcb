//! The catalog: databases and tables (names, schemas, locations) in Glue's model, behind a
//! small trait.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::schema::Column;

pub mod sqlite;

pub use sqlite::SqliteCatalog;

/// Table parameter holding the `--partition-by` spec.
pub const PARAM_PARTITION_BY: &str = "sluice.partition_by";
/// Table parameter holding the schema fingerprint of the source columns.
pub(crate) const PARAM_FINGERPRINT: &str = "sluice.schema_fingerprint";
/// Table parameter holding the strftime pattern for dates, if any.
pub(crate) const PARAM_DATE_FORMAT: &str = "sluice.date_format";
/// Table parameter: `true` when numbers written with a point are inferred as decimals.
pub(crate) const PARAM_EXACT_DECIMALS: &str = "sluice.exact_decimals";
/// Table parameter: how the table names its sources' columns (`snake_case`; absent: as-is).
pub(crate) const PARAM_COLUMN_NAMES: &str = "sluice.column_names";
/// A table, as Glue models it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    /// The database (Glue database) the table is in.
    pub database: String,
    /// The table's name.
    pub name: String,
    /// URL of the table's directory (`file:///…/lake/t/`, `s3://bucket/prefix/t/`).
    pub location: String,
    /// Columns stored in the data files.
    pub columns: Vec<Column>,
    /// Columns whose values live in the partition directories.
    pub partition_keys: Vec<Column>,
    /// Storage format; always `parquet` today.
    pub format: String,
    /// sluice's settings of the table (`sluice.partition_by`, `sluice.schema_policy`, …) and the
    /// backend's own parameters.
    pub parameters: BTreeMap<String, String>,
    /// Incremented by every update; updates name the version they start from.
    pub version: u64,
}

impl TableDef {
    /// How the table names its sources' columns (tables that do not say: as they come).
    pub fn column_names(&self) -> crate::error::Result<crate::schema::ColumnNames> {
        match self.parameters.get(PARAM_COLUMN_NAMES) {
            Some(v) => crate::schema::ColumnNames::parse(v),
            None => Ok(crate::schema::ColumnNames::AsTheyCome),
        }
    }
}

/// A catalog of tables.
///
/// # Contract
/// - `create_database` and `create_table` fail with `AlreadyExists` if the name is taken;
///   `create_table` fails with `NotFound` if the database does not exist.
/// - `get_table` fails with `NotFound`.
/// - `update_table` replaces a table's columns and parameters if `table.version` is the stored
///   version, and returns the stored table with its new version; otherwise it fails with
///   `Conflict` (someone else updated it first) and changes nothing.
/// - Partitions are not the catalog's: each table's Delta log records its files with their
///   partition values, and every engine (Athena too) reads them from there.
/// - Lists are ordered by name.
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// Creates a database; `AlreadyExists` if it exists.
    async fn create_database(&self, name: &str) -> Result<()>;
    /// The names of every database.
    async fn list_databases(&self) -> Result<Vec<String>>;
    /// Creates a table; `AlreadyExists` if one of that name exists.
    async fn create_table(&self, table: &TableDef) -> Result<()>;
    /// A table by name; `NotFound` if there is none.
    async fn get_table(&self, database: &str, name: &str) -> Result<TableDef>;
    /// Every table of `database`, by name.
    async fn list_tables(&self, database: &str) -> Result<Vec<TableDef>>;
    /// Replaces a table's definition if nobody changed it since it was read (`Conflict` if
    /// somebody did); returns it as stored.
    async fn update_table(&self, table: &TableDef) -> Result<TableDef>;
}

/// Conveniences over [`Catalog`].
#[async_trait]
pub trait CatalogExt: Catalog {
    /// Creates the database unless it exists.
    async fn ensure_database(&self, name: &str) -> Result<()> {
        match self.create_database(name).await {
            Ok(()) | Err(crate::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl<C: Catalog + ?Sized> CatalogExt for C {}
