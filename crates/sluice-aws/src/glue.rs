//! The [`Catalog`] on AWS Glue, with tables Athena, Spark and Trino read as they are.
//!
//! Tables are Delta Lake tables as Athena (engine v3) reads them natively: `EXTERNAL_TABLE`s
//! with `table_type=DELTA` and `spark.sql.sources.provider=delta`, the location (also as the
//! SerDe's `path`), the columns for people browsing the catalog, and no partition keys: Athena,
//! Spark and Trino take the schema, partitions and files from the table's `_delta_log`, so no
//! partition is registered, raced on or repaired, and no crawler or `MSCK REPAIR` is needed.
//! sluice's own column types and partition keys (Glue's `timestamp` does not say whether it is
//! UTC) and the table version used for optimistic updates are kept in table parameters.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_glue::types::{
    Column as GlueColumn, DatabaseInput, SerDeInfo, StorageDescriptor, TableInput,
};
use sluice_core::catalog::{Catalog, TableDef};
use sluice_core::schema::{Column, ColumnType};
use sluice_core::{Error, Result};

use crate::config::Aws;
use crate::error::{code_of, sdk};

pub const PARQUET_SERDE: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";
pub const PARQUET_INPUT_FORMAT: &str =
    "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat";
pub const PARQUET_OUTPUT_FORMAT: &str =
    "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat";

/// Table parameter: the table's version for optimistic updates.
const PARAM_VERSION: &str = "sluice.version";
/// Table parameter: sluice's column types (JSON), finer than Hive's.
const PARAM_COLUMNS: &str = "sluice.columns";

/// A Glue Data Catalog (the account's, in the configured region).
#[derive(Debug, Clone)]
pub struct GlueCatalog {
    client: aws_sdk_glue::Client,
}

fn not_found(e: Error, what: &'static str, name: String) -> Error {
    if code_of(&e) == Some("EntityNotFoundException") {
        Error::NotFound { what, name }
    } else {
        e
    }
}

fn glue_columns(cols: &[Column]) -> Result<Vec<GlueColumn>> {
    cols.iter()
        .map(|c| {
            GlueColumn::builder()
                .name(&c.name)
                .r#type(c.ty.hive_type())
                .build()
                .map_err(|e| Error::invalid(e.to_string()))
        })
        .collect()
}

fn storage(location: &str, columns: Vec<GlueColumn>) -> StorageDescriptor {
    StorageDescriptor::builder()
        .set_columns(Some(columns))
        .location(location)
        .input_format(PARQUET_INPUT_FORMAT)
        .output_format(PARQUET_OUTPUT_FORMAT)
        .compressed(true)
        .serde_info(
            SerDeInfo::builder()
                .serialization_library(PARQUET_SERDE)
                .parameters("serialization.format", "1")
                .parameters("path", location)
                .build(),
        )
        .build()
}

fn table_input(t: &TableDef, version: u64) -> Result<TableInput> {
    let mut params: HashMap<String, String> = t
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.insert("table_type".into(), "DELTA".into());
    params.insert("spark.sql.sources.provider".into(), "delta".into());
    params.insert("classification".into(), "delta".into());
    params.insert("EXTERNAL".into(), "TRUE".into());
    params.insert(PARAM_VERSION.into(), version.to_string());
    params.insert(
        PARAM_COLUMNS.into(),
        serde_json::to_string(&(&t.columns, &t.partition_keys))
            .map_err(|e| Error::Internal(format!("table columns as JSON: {e}")))?,
    );
    TableInput::builder()
        .name(&t.name)
        .table_type("EXTERNAL_TABLE")
        .set_parameters(Some(params))
        .set_partition_keys(Some(vec![]))
        .storage_descriptor(storage(
            &t.location,
            glue_columns(&[t.columns.as_slice(), t.partition_keys.as_slice()].concat())?,
        ))
        .build()
        .map_err(|e| Error::invalid(e.to_string()))
}

/// Hive type to sluice type, for tables sluice did not create: `int` is 32-bit, `float` 32-bit,
/// `decimal(p,s)` exact, `struct<…>`, `array<…>` and `map<…>` as such; a type sluice lacks
/// (`char(n)`, `interval`) is read as text.
fn from_hive(name: &str, ty: Option<&str>) -> Column {
    let ty = ty
        .and_then(|t| ColumnType::parse(t).ok())
        .unwrap_or(ColumnType::String);
    Column::new(name, ty)
}

fn to_def(database: &str, t: &aws_sdk_glue::types::Table) -> TableDef {
    let params: BTreeMap<String, String> = t
        .parameters()
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let sd = t.storage_descriptor();
    let typed: Option<(Vec<Column>, Vec<Column>)> = params
        .get(PARAM_COLUMNS)
        .and_then(|s| serde_json::from_str(s).ok());
    let (columns, partition_keys) = typed.unwrap_or_else(|| {
        (
            sd.map(|s| s.columns())
                .unwrap_or_default()
                .iter()
                .map(|c| from_hive(c.name(), c.r#type()))
                .collect(),
            t.partition_keys()
                .iter()
                .map(|c| from_hive(c.name(), c.r#type()))
                .collect(),
        )
    });
    let version = params
        .get(PARAM_VERSION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let parameters = params
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                PARAM_VERSION
                    | PARAM_COLUMNS
                    | "classification"
                    | "EXTERNAL"
                    | "table_type"
                    | "spark.sql.sources.provider"
            )
        })
        .collect();
    TableDef {
        database: database.to_string(),
        name: t.name().to_string(),
        location: sd
            .and_then(|s| s.location())
            .unwrap_or_default()
            .to_string(),
        columns,
        partition_keys,
        format: "parquet".to_string(),
        parameters,
        version,
    }
}

impl GlueCatalog {
    pub fn new(aws: &Aws) -> Self {
        GlueCatalog { client: aws.glue() }
    }

    /// Deletes a database and its tables (tests and teardown).
    pub async fn delete_database(&self, name: &str) -> Result<()> {
        self.client
            .delete_database()
            .name(name)
            .send()
            .await
            .map_err(|e| sdk("Glue", "DeleteDatabase", e))?;
        Ok(())
    }

    /// The table as Glue returns it (with its `VersionId`).
    async fn glue_table(&self, database: &str, name: &str) -> Result<aws_sdk_glue::types::Table> {
        let qualified = || format!("{database}.{name}");
        let out = self
            .client
            .get_table()
            .database_name(database)
            .name(name)
            .send()
            .await
            .map_err(|e| not_found(sdk("Glue", "GetTable", e), "table", qualified()))?;
        out.table().cloned().ok_or_else(|| Error::NotFound {
            what: "table",
            name: qualified(),
        })
    }
}

#[async_trait]
impl Catalog for GlueCatalog {
    async fn create_database(&self, name: &str) -> Result<()> {
        let input = DatabaseInput::builder()
            .name(name)
            .description("Tables written by sluice")
            .build()
            .map_err(|e| Error::invalid(e.to_string()))?;
        match self
            .client
            .create_database()
            .database_input(input)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = sdk("Glue", "CreateDatabase", e);
                if code_of(&e) == Some("AlreadyExistsException") {
                    Err(Error::AlreadyExists {
                        what: "database",
                        name: name.to_string(),
                    })
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn list_databases(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut pages = self.client.get_databases().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk("Glue", "GetDatabases", e))?;
            names.extend(page.database_list().iter().map(|d| d.name().to_string()));
        }
        names.sort();
        Ok(names)
    }

    async fn create_table(&self, table: &TableDef) -> Result<()> {
        let input = table_input(table, 1)?;
        match self
            .client
            .create_table()
            .database_name(&table.database)
            .table_input(input)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = sdk("Glue", "CreateTable", e);
                match code_of(&e) {
                    Some("AlreadyExistsException") => Err(Error::AlreadyExists {
                        what: "table",
                        name: format!("{}.{}", table.database, table.name),
                    }),
                    Some("EntityNotFoundException") => Err(Error::NotFound {
                        what: "database",
                        name: table.database.clone(),
                    }),
                    _ => Err(e),
                }
            }
        }
    }

    async fn get_table(&self, database: &str, name: &str) -> Result<TableDef> {
        Ok(to_def(database, &self.glue_table(database, name).await?))
    }

    async fn list_tables(&self, database: &str) -> Result<Vec<TableDef>> {
        let mut tables = Vec::new();
        let mut pages = self
            .client
            .get_tables()
            .database_name(database)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                not_found(
                    sdk("Glue", "GetTables", e),
                    "database",
                    database.to_string(),
                )
            })?;
            tables.extend(page.table_list().iter().map(|t| to_def(database, t)));
        }
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tables)
    }

    async fn update_table(&self, table: &TableDef) -> Result<TableDef> {
        // Glue enforces VersionId on UpdateTable (ConcurrentModificationException); the
        // version parameter check catches stale writers on servers that do not.
        let current = self.glue_table(&table.database, &table.name).await?;
        let stored = to_def(&table.database, &current);
        if stored.version != table.version {
            return Err(Error::Conflict(format!(
                "table {}.{} is at version {}, the update starts from {}",
                table.database, table.name, stored.version, table.version
            )));
        }
        let mut req = self
            .client
            .update_table()
            .database_name(&table.database)
            .table_input(table_input(table, table.version + 1)?)
            .skip_archive(true);
        if let Some(v) = current.version_id() {
            req = req.version_id(v);
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) => {
                let e = sdk("Glue", "UpdateTable", e);
                return Err(if code_of(&e) == Some("ConcurrentModificationException") {
                    Error::Conflict(format!(
                        "table {}.{} was updated concurrently",
                        table.database, table.name
                    ))
                } else {
                    e
                });
            }
        }
        self.get_table(&table.database, &table.name).await
    }
}
