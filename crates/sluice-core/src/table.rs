//! A table's layout as the pipeline needs it, derived from its catalog entry.

use arrow::datatypes::SchemaRef;

use crate::catalog::{PARAM_DATE_FORMAT, PARAM_PARTITION_BY, TableDef};
use crate::error::{Error, Result};
use crate::partition::PartitionSpec;
use crate::schema::{Column, arrow_schema};

/// How a table's rows are typed, partitioned and stored.
#[derive(Debug, Clone)]
pub struct TableLayout {
    pub name: String,
    /// Every column a source row carries, in table order (file columns, then an identity
    /// partition's column).
    pub source_columns: Vec<Column>,
    /// Columns stored in the files.
    pub file_columns: Vec<Column>,
    pub file_schema: SchemaRef,
    pub spec: PartitionSpec,
    /// For each field of `spec`, the index of its source column in `source_columns`.
    pub partition_sources: Vec<usize>,
    /// For each source column, its index in `file_columns` (None for an identity partition's).
    pub file_index: Vec<Option<usize>>,
    pub date_format: Option<String>,
    /// Fingerprint of `source_columns`.
    pub fingerprint: String,
}

impl TableLayout {
    /// Derives the layout from a catalog entry.
    pub fn from_def(def: &TableDef) -> Result<Self> {
        let spec_s = def.parameters.get(PARAM_PARTITION_BY).ok_or_else(|| {
            Error::Config(format!(
                "table {} has no {PARAM_PARTITION_BY} parameter: it was not created by sluice",
                def.name
            ))
        })?;
        let spec = PartitionSpec::parse(spec_s)?;
        // Columns kept in the path only come back as source columns, from the partition keys.
        let mut source_columns = def.columns.clone();
        for f in &spec.fields {
            if spec.in_path_only(&f.source) && !source_columns.iter().any(|c| c.name == f.source) {
                let key = def
                    .partition_keys
                    .iter()
                    .find(|k| k.name == f.source)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "table {} has no partition key {:?}",
                            def.name, f.source
                        ))
                    })?;
                source_columns.push(key.clone());
            }
        }
        let partition_sources = spec
            .fields
            .iter()
            .map(|f| {
                source_columns
                    .iter()
                    .position(|c| c.name == f.source)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "table {}: partition column {:?} is not a column",
                            def.name, f.source
                        ))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let file_index = source_columns
            .iter()
            .map(|c| def.columns.iter().position(|f| f.name == c.name))
            .collect();
        Ok(TableLayout {
            name: def.name.clone(),
            fingerprint: crate::schema::fingerprint(&source_columns),
            file_schema: arrow_schema(&def.columns),
            file_columns: def.columns.clone(),
            source_columns,
            spec,
            partition_sources,
            file_index,
            date_format: def.parameters.get(PARAM_DATE_FORMAT).cloned(),
        })
    }

    /// Builds the catalog entry of a new table from its source columns.
    pub fn new_def(
        database: &str,
        name: &str,
        location: &str,
        source_columns: Vec<Column>,
        spec: &PartitionSpec,
        date_format: Option<&str>,
    ) -> Result<TableDef> {
        crate::schema::validate_name("table", name)?;
        for c in &source_columns {
            crate::schema::validate_column_name(&c.name)?;
        }
        let partition_keys = spec.partition_columns(&source_columns)?;
        let columns: Vec<Column> = source_columns
            .iter()
            .filter(|c| !spec.in_path_only(&c.name))
            .cloned()
            .collect();
        let mut parameters = std::collections::BTreeMap::new();
        parameters.insert(PARAM_PARTITION_BY.to_string(), spec.to_string());
        parameters.insert(
            crate::catalog::PARAM_FINGERPRINT.to_string(),
            crate::schema::fingerprint(&source_columns),
        );
        parameters.insert("classification".to_string(), "parquet".to_string());
        if let Some(f) = date_format {
            parameters.insert(PARAM_DATE_FORMAT.to_string(), f.to_string());
        }
        Ok(TableDef {
            database: database.to_string(),
            name: name.to_string(),
            location: location.to_string(),
            columns,
            partition_keys,
            format: "parquet".to_string(),
            parameters,
            version: 0,
        })
    }

    /// Maps source header names to source column indexes. Every header name must be a column
    /// and every column must be in the header.
    pub fn map_header(&self, header: &[String], file: &str) -> Result<Vec<usize>> {
        let mut map = Vec::with_capacity(header.len());
        let mut unknown = Vec::new();
        for h in header {
            match self.source_columns.iter().position(|c| &c.name == h) {
                Some(i) => map.push(i),
                None => unknown.push(h.as_str()),
            }
        }
        let missing: Vec<&str> = self
            .source_columns
            .iter()
            .map(|c| c.name.as_str())
            .filter(|n| !header.iter().any(|h| h == n))
            .collect();
        if !unknown.is_empty() || !missing.is_empty() {
            let mut parts = Vec::new();
            if !unknown.is_empty() {
                parts.push(format!("columns not in the table: {}", unknown.join(", ")));
            }
            if !missing.is_empty() {
                parts.push(format!(
                    "table columns missing from the file: {}",
                    missing.join(", ")
                ));
            }
            return Err(Error::invalid_at(
                file,
                Some(1),
                format!(
                    "header does not match table {}: {}",
                    self.name,
                    parts.join("; ")
                ),
            ));
        }
        Ok(map)
    }
}
