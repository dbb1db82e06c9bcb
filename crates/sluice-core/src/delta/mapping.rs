//! Column mapping (`delta.columnMapping.mode` `name` or `id`): a column's name in the files
//! (its physical name, and its Parquet field id) is not its name in the table.
//!
//! Engines turn it on to rename and drop columns without rewriting files. A writer of such a
//! table writes every file with the physical names and field ids, keys `partitionValues` and
//! statistics by physical names (the statistics come from the files, so they are), and reads
//! other writers' files by physical name.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};

use super::actions::Metadata;
use crate::error::{Error, Result};

/// The Arrow field metadata key parquet-rs writes as a column's field id.
const FIELD_ID: &str = "PARQUET:field_id";

/// The physical names and ids of a column-mapped table's top-level columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    /// `name` or `id`.
    pub mode: String,
    /// Logical name → (physical name, id).
    columns: HashMap<String, (String, i64)>,
}

impl ColumnMapping {
    /// The mapping of a table whose metadata turns it on; `None` in mode `none` or unset.
    pub fn of_metadata(m: &Metadata) -> Result<Option<Self>> {
        let mode = match m.config("delta.columnMapping.mode") {
            Some(mode) if !mode.eq_ignore_ascii_case("none") => mode.to_ascii_lowercase(),
            _ => return Ok(None),
        };
        let schema = m.schema().map_err(|e| Error::CorruptLog {
            path: m.id.clone(),
            message: format!("the schema in metaData does not read: {e}"),
        })?;
        let mut columns = HashMap::new();
        for f in schema.fields {
            let physical = f
                .metadata
                .get("delta.columnMapping.physicalName")
                .and_then(|v| v.as_str());
            let id = f
                .metadata
                .get("delta.columnMapping.id")
                .and_then(|v| v.as_i64());
            let (Some(physical), Some(id)) = (physical, id) else {
                return Err(Error::CorruptLog {
                    path: m.id.clone(),
                    message: format!(
                        "column mapping is on ({mode}) but column {} has no physical name and id",
                        f.name
                    ),
                });
            };
            columns.insert(f.name, (physical.to_string(), id));
        }
        Ok(Some(ColumnMapping { mode, columns }))
    }

    /// A column's physical name.
    pub fn physical(&self, logical: &str) -> Option<&str> {
        self.columns.get(logical).map(|(p, _)| p.as_str())
    }

    /// The file schema of a table's logical file schema: physical names, field ids.
    pub fn physical_schema(&self, logical: &Schema) -> Result<SchemaRef> {
        let fields =
            logical
                .fields()
                .iter()
                .map(|f| {
                    let (physical, id) = self.columns.get(f.name()).ok_or_else(|| {
                        Error::Internal(format!(
                            "column {} has no physical name in the table's column mapping",
                            f.name()
                        ))
                    })?;
                    let mut meta = f.metadata().clone();
                    meta.insert(FIELD_ID.to_string(), id.to_string());
                    Ok(Field::new(physical, f.data_type().clone(), f.is_nullable())
                        .with_metadata(meta))
                })
                .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }

    /// A batch read from a file (physical names) with the table's logical names; columns the
    /// mapping does not know keep theirs.
    pub fn to_logical(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let by_physical: HashMap<&str, &str> = self
            .columns
            .iter()
            .map(|(l, (p, _))| (p.as_str(), l.as_str()))
            .collect();
        let fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let name = by_physical
                    .get(f.name().as_str())
                    .copied()
                    .unwrap_or(f.name());
                Field::new(name, f.data_type().clone(), f.is_nullable())
            })
            .collect();
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            batch.columns().to_vec(),
        )?)
    }
}

/// The names in `physical` of columns named in `logical` (which it renames field by field);
/// names `logical` lacks stay as they are.
pub(crate) fn physical_names(
    logical: &Schema,
    physical: &Schema,
    names: Vec<String>,
) -> Vec<String> {
    names
        .into_iter()
        .map(|n| match logical.index_of(&n) {
            Ok(i) => physical.field(i).name().clone(),
            Err(_) => n,
        })
        .collect()
}

/// A batch in the table's logical file schema as the file writes it: the same columns under
/// `physical`'s names (a no-op when the two schemas are one).
pub(crate) fn to_physical(batch: RecordBatch, physical: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema_ref() == physical {
        return Ok(batch);
    }
    Ok(RecordBatch::try_new_with_options(
        physical.clone(),
        batch.columns().to_vec(),
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}
