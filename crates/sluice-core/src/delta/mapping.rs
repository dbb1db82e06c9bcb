//! Column mapping (`delta.columnMapping.mode` `name` or `id`): a column's name in the files
//! (its physical name, and its Parquet field id) is not its name in the table.
//!
//! Engines turn it on to rename and drop columns without rewriting files. A writer of such a
//! table writes every file with the physical names and field ids, keys `partitionValues` and
//! statistics by physical names (the statistics come from the files, so they are), and reads
//! other writers' files by physical name.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde_json::Value;

use super::actions::Metadata;
use crate::error::{Error, Result};

/// The Arrow field metadata key parquet-rs writes as a column's field id.
const FIELD_ID: &str = "PARQUET:field_id";

/// The physical names and ids of a column-mapped table's columns, and of the fields of its
/// structs (at any depth: in list elements and map values too).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMapping {
    /// `name` or `id`.
    pub mode: String,
    /// Logical name → (physical name, id).
    columns: HashMap<String, (String, i64)>,
    /// Logical name → the column's Delta type, whose nested fields carry their own physical
    /// names and ids.
    types: HashMap<String, Value>,
}

/// The metadata keys of a mapped field.
const PHYSICAL_NAME: &str = "delta.columnMapping.physicalName";
const ID: &str = "delta.columnMapping.id";

impl ColumnMapping {
    /// The mapping of a table whose metadata turns it on; `None` in mode `none` or unset.
    pub fn of_metadata(m: &Metadata) -> Result<Option<Self>> {
        let mode = match m.config("delta.columnMapping.mode") {
            Some(mode) if !mode.eq_ignore_ascii_case("none") => mode.to_ascii_lowercase(),
            _ => return Ok(None),
        };
        let schema = m.readable_schema()?;
        let mut columns = HashMap::new();
        let mut types = HashMap::new();
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
            columns.insert(f.name.clone(), (physical.to_string(), id));
            types.insert(f.name, f.ty);
        }
        Ok(Some(ColumnMapping {
            mode,
            columns,
            types,
        }))
    }

    /// A column's physical name.
    pub fn physical(&self, logical: &str) -> Option<&str> {
        self.columns.get(logical).map(|(p, _)| p.as_str())
    }

    /// The file schema of a table's logical file schema: physical names, field ids.
    pub fn physical_schema(&self, logical: &Schema) -> Result<SchemaRef> {
        let fields = logical
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
                let ty = match self.types.get(f.name()) {
                    Some(delta) => with_names(f.data_type(), delta, Names::Physical),
                    None => f.data_type().clone(),
                };
                Ok(Field::new(physical, ty, f.is_nullable()).with_metadata(meta))
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
        let mut fields: Vec<Field> = Vec::with_capacity(batch.num_columns());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
        for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
            let name = by_physical
                .get(f.name().as_str())
                .copied()
                .unwrap_or(f.name());
            let c = match self.types.get(name) {
                Some(delta) => logical_array(c, delta)?,
                None => c.clone(),
            };
            fields.push(Field::new(name, c.data_type().clone(), f.is_nullable()));
            columns.push(c);
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
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
    let columns = batch
        .columns()
        .iter()
        .zip(physical.fields())
        .map(|(c, f)| renamed(c, f.data_type()))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        physical.clone(),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// The nested fields of a Delta type's struct (`None`: not a struct).
fn struct_fields(delta: &Value) -> Option<&Vec<Value>> {
    delta
        .get("type")
        .filter(|t| *t == "struct")
        .and_then(|_| delta.get("fields"))
        .and_then(Value::as_array)
}

/// A nested field's physical name and id, from its metadata.
fn mapped(field: &Value) -> (Option<&str>, Option<i64>) {
    let meta = field.get("metadata");
    (
        meta.and_then(|m| m.get(PHYSICAL_NAME))
            .and_then(Value::as_str),
        meta.and_then(|m| m.get(ID)).and_then(Value::as_i64),
    )
}

/// Which names a nested type's struct fields take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    /// The files' (physical names, with their field ids), from the table's.
    Physical,
    /// The table's, from the files'.
    Logical,
}

/// `t` (a column's Arrow type, under the names `to` is not) with every struct field at any
/// depth (in list elements and map values too) under the names `to` says, matched to the fields
/// of Delta type `delta`; a field `delta` does not know keeps its name.
fn with_names(t: &DataType, delta: &Value, to: Names) -> DataType {
    let inner = |f: &Field, key: &str| -> Field {
        f.clone().with_data_type(match delta.get(key) {
            Some(d) => with_names(f.data_type(), d, to),
            None => f.data_type().clone(),
        })
    };
    match t {
        DataType::Struct(fields) => {
            let nested = struct_fields(delta);
            DataType::Struct(
                fields
                    .iter()
                    .map(|f| {
                        let d = nested.and_then(|n| {
                            n.iter().find(|g| match to {
                                Names::Physical => {
                                    g.get("name").and_then(Value::as_str) == Some(f.name())
                                }
                                Names::Logical => mapped(g).0 == Some(f.name().as_str()),
                            })
                        });
                        let ty = match d.and_then(|d| d.get("type")) {
                            Some(d) => with_names(f.data_type(), d, to),
                            None => f.data_type().clone(),
                        };
                        let field = match (to, d) {
                            (Names::Physical, Some(d)) => {
                                let (physical, id) = mapped(d);
                                let mut meta = f.metadata().clone();
                                if let Some(id) = id {
                                    meta.insert(FIELD_ID.to_string(), id.to_string());
                                }
                                Field::new(physical.unwrap_or(f.name()), ty, f.is_nullable())
                                    .with_metadata(meta)
                            }
                            (Names::Logical, Some(d)) => Field::new(
                                d.get("name").and_then(Value::as_str).unwrap_or(f.name()),
                                ty,
                                f.is_nullable(),
                            ),
                            (_, None) => f.as_ref().clone().with_data_type(ty),
                        };
                        Arc::new(field)
                    })
                    .collect(),
            )
        }
        DataType::List(elem) => DataType::List(Arc::new(inner(elem, "elementType"))),
        DataType::Map(entries, sorted) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                let kv = vec![
                    Arc::new(inner(&kv[0], "keyType")),
                    Arc::new(inner(&kv[1], "valueType")),
                ];
                DataType::Map(
                    Arc::new(
                        entries
                            .as_ref()
                            .clone()
                            .with_data_type(DataType::Struct(kv.into())),
                    ),
                    *sorted,
                )
            }
            _ => t.clone(),
        },
        other => other.clone(),
    }
}

/// `array` as type `to`, which has the same shape under other names (and field metadata).
fn renamed(array: &ArrayRef, to: &DataType) -> Result<ArrayRef> {
    use crate::parquet::writer::{FieldsBy, reshape};
    Ok(reshape(array, to, FieldsBy::Position)?)
}

/// An array read from a file (struct fields under their physical names, at any depth) with the
/// logical names of Delta type `delta`; fields it does not know keep their names.
fn logical_array(array: &ArrayRef, delta: &Value) -> Result<ArrayRef> {
    renamed(array, &with_names(array.data_type(), delta, Names::Logical))
}
