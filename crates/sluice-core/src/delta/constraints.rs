//! CHECK constraints and column invariants of a Delta table, checked on every row sluice writes.
//!
//! Other engines add them (`ALTER TABLE … ADD CONSTRAINT wind_positive CHECK (wind >= 0)`, the
//! `deltalake` package's `alter.add_constraint`); a writer of the table must not commit a row
//! that breaks one. The expressions are SQL, so they are evaluated by an engine outside the
//! core ([`ConstraintEngine`]; `sluice-query` implements it with DataFusion): a writer without
//! one is refused by the protocol gate.
//!
//! Generated columns are filled where a row has no value (the generation expression's), and
//! checked where it has one (`col IS NOT DISTINCT FROM (expression)`), like a constraint.
//!
//! A chunk (a message, or a piece of a file being converted) with a row that breaks a
//! constraint is refused whole, before any of it is written: the consumer dead-letters the
//! message with the constraint named, `convert` fails naming the source. Rows are never
//! half-landed.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::actions::Metadata;
use crate::error::{Error, Result};

/// One constraint: its name and SQL expression (a row passes when it is true or NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// The constraint's name (`delta.constraints.<name>`, or the column of an invariant).
    pub name: String,
    /// The SQL condition every row must not make false.
    pub expression: String,
}

/// The table's CHECK constraints (`delta.constraints.<name>`), the invariants of its top-level
/// columns (`delta.invariants` in a field's metadata) and its NOT NULL columns, in name order.
pub(crate) fn of_metadata(m: &Metadata) -> Result<Vec<Constraint>> {
    let mut out: Vec<Constraint> = m
        .configuration
        .iter()
        .filter_map(|(k, v)| {
            Some(Constraint {
                name: k.strip_prefix("delta.constraints.")?.to_string(),
                expression: v.clone()?,
            })
        })
        .collect();
    let schema = m.readable_schema()?;
    for f in &schema.fields {
        // Delta asks every writer to keep NOT NULL columns free of nulls.
        if !f.nullable {
            out.push(Constraint {
                name: format!("{} NOT NULL", f.name),
                expression: format!("\"{}\" IS NOT NULL", f.name.replace('"', "\"\"")),
            });
        }
        let Some(inv) = f.metadata.get("delta.invariants") else {
            continue;
        };
        // `{"expression": {"expression": "x > 3"}}`, as a JSON string.
        let expression = inv
            .as_str()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .and_then(|v| {
                v.pointer("/expression/expression")
                    .and_then(|e| e.as_str())
                    .map(str::to_string)
            })
            .ok_or_else(|| Error::CorruptLog {
                path: m.id.clone(),
                message: format!("the invariant of column {} does not read: {inv}", f.name),
            })?;
        out.push(Constraint {
            name: format!("invariant of {}", f.name),
            expression,
        });
    }
    // A generated column's value, given or computed, is its expression's.
    for (column, expression) in generated_of_metadata(m)? {
        out.push(Constraint {
            name: format!("generated column {column}"),
            expression: format!(
                "\"{}\" IS NOT DISTINCT FROM ({expression})",
                column.replace('"', "\"\"")
            ),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The table's generated columns: (column, its `delta.generationExpression`).
pub(crate) fn generated_of_metadata(m: &Metadata) -> Result<Vec<(String, String)>> {
    expressions_of_metadata(m, "delta.generationExpression")
}

/// The table's column defaults (`allowColumnDefaults`): (column, its `CURRENT_DEFAULT`
/// expression), for top-level columns.
pub(crate) fn defaults_of_metadata(m: &Metadata) -> Result<Vec<(String, String)>> {
    expressions_of_metadata(m, DEFAULT_KEY)
}

/// (column, expression) of the top-level columns whose metadata holds an expression at `key`.
fn expressions_of_metadata(m: &Metadata, key: &str) -> Result<Vec<(String, String)>> {
    Ok(m.readable_schema()?
        .fields
        .iter()
        .filter_map(|f| {
            let e = f.metadata.get(key)?.as_str()?;
            Some((f.name.clone(), e.to_string()))
        })
        .collect())
}

/// The field metadata key of a column's default expression.
pub(crate) const DEFAULT_KEY: &str = "CURRENT_DEFAULT";

/// Compiles a table's constraints for a schema (every column of the table, partition columns
/// included).
pub trait ConstraintEngine: Send + Sync + std::fmt::Debug {
    /// Compiles the table's constraints for rows of `schema`.
    fn compile(
        &self,
        schema: &SchemaRef,
        constraints: &[Constraint],
    ) -> Result<Arc<dyn ConstraintChecker>>;

    /// Compiles generated columns: `(column, expression)` pairs.
    fn generator(
        &self,
        schema: &SchemaRef,
        generated: &[(String, String)],
    ) -> Result<Arc<dyn ColumnGenerator>>;
}

/// Computes generated columns.
///
/// # Contract
/// `fill` returns, for each generated column it was compiled for (in that order), the column's
/// values for `batch` (of the schema it was compiled for): the value the row has, or, where it
/// is NULL, the generation expression's.
pub trait ColumnGenerator: Send + Sync + std::fmt::Debug {
    /// The generated columns' values for the rows of `batch`, in the order they were given.
    fn fill(&self, batch: &RecordBatch) -> Result<Vec<arrow::array::ArrayRef>>;
}

/// Compiled constraints.
///
/// # Contract
/// `first_violation` evaluates every constraint on every row of `batch` (of the schema it was
/// compiled for) and returns the first constraint, in name order, that some row makes false,
/// with how many rows do; `None` when every row passes (true or NULL, as SQL CHECK reads it).
pub trait ConstraintChecker: Send + Sync + std::fmt::Debug {
    /// The first constraint a row of `batch` breaks, with how many rows break it.
    fn first_violation(&self, batch: &RecordBatch) -> Result<Option<(Constraint, usize)>>;
}

/// A table's compiled constraints with the schema to give them batches in.
#[derive(Debug, Clone)]
pub struct Checks {
    /// The table's CHECK constraints, invariants and NOT NULL columns.
    pub constraints: Vec<Constraint>,
    /// The schema the checks were compiled for.
    pub schema: SchemaRef,
    /// Evaluates the constraints.
    pub checker: Arc<dyn ConstraintChecker>,
    /// Generated columns (file columns only) and what computes them.
    pub generated: Vec<(String, String)>,
    /// Computes generated columns, if the table has any.
    pub generator: Option<Arc<dyn ColumnGenerator>>,
}

impl Checks {
    /// `batch` (file columns) with every generated column's NULLs computed from its expression.
    pub fn fill_generated(&self, batch: RecordBatch, partition: &str) -> Result<RecordBatch> {
        let Some(generator) = &self.generator else {
            return Ok(batch);
        };
        let values = generator.fill(&self.full(&batch, partition)?)?;
        let mut columns = batch.columns().to_vec();
        for ((column, _), v) in self.generated.iter().zip(values) {
            let i = batch.schema().index_of(column)?;
            columns[i] = if v.data_type() == batch.schema().field(i).data_type() {
                v
            } else {
                arrow::compute::cast(&v, batch.schema().field(i).data_type())?
            };
        }
        Ok(RecordBatch::try_new(batch.schema(), columns)?)
    }

    /// The first constraint a row of `batch` (file columns) breaks, with the partition values of
    /// `partition` (`year=2024/region=eu`) as columns.
    pub fn first_violation(
        &self,
        batch: &RecordBatch,
        partition: &str,
    ) -> Result<Option<(Constraint, usize)>> {
        self.checker.first_violation(&self.full(batch, partition)?)
    }

    /// The rows of `batch` (file columns, by name) with the partition values of `partition`
    /// as columns, in the compiled schema's order; a column neither has is NULL.
    fn full(&self, batch: &RecordBatch, partition: &str) -> Result<RecordBatch> {
        let values = crate::schema::partition::parse_partition_path(partition);
        let n = batch.num_rows();
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|f| {
                if let Some(c) = batch.column_by_name(f.name()) {
                    return if c.data_type() == f.data_type() {
                        Ok(c.clone())
                    } else {
                        Ok(arrow::compute::cast(c, f.data_type())?)
                    };
                }
                match values.iter().find(|(k, _)| k == f.name()) {
                    Some((_, Some(v))) => {
                        let text = arrow::array::StringArray::from(vec![v.as_str(); n]);
                        Ok(arrow::compute::cast(&text, f.data_type())?)
                    }
                    _ => Ok(arrow::array::new_null_array(f.data_type(), n)),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }
}
