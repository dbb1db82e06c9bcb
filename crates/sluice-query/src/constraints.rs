//! CHECK constraints and invariants of Delta tables evaluated with DataFusion: the engine the
//! consumer and `convert` give the core ([`sluice_core::delta::constraints`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use sluice_core::delta::constraints::{
    ColumnGenerator, Constraint, ConstraintChecker, ConstraintEngine,
};
use sluice_core::{Error, Result};

/// Compiles constraints into DataFusion physical expressions.
#[derive(Debug, Default, Clone)]
pub struct DataFusionConstraints;

/// The compiled expressions, in the constraints' order.
#[derive(Debug)]
struct Compiled {
    exprs: Vec<(Constraint, Arc<dyn PhysicalExpr>)>,
}

impl ConstraintEngine for DataFusionConstraints {
    fn compile(
        &self,
        schema: &SchemaRef,
        constraints: &[Constraint],
    ) -> Result<Arc<dyn ConstraintChecker>> {
        let ctx = SessionContext::new();
        let df_schema = DFSchema::try_from(schema.as_ref().clone())
            .map_err(|e| Error::Internal(format!("table schema for constraints: {e}")))?;
        let exprs = constraints
            .iter()
            .map(|c| {
                let bad = |e: datafusion::error::DataFusionError| Error::Constraint {
                    what: "constraint",
                    name: c.name.clone(),
                    expression: c.expression.clone(),
                    message: format!("does not compile: {e}"),
                };
                let expr = ctx.parse_sql_expr(&c.expression, &df_schema).map_err(bad)?;
                let phys = ctx.create_physical_expr(expr, &df_schema).map_err(bad)?;
                Ok((c.clone(), phys))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Compiled { exprs }))
    }

    fn generator(
        &self,
        schema: &SchemaRef,
        generated: &[(String, String)],
    ) -> Result<Arc<dyn ColumnGenerator>> {
        let ctx = SessionContext::new();
        let df_schema = DFSchema::try_from(schema.as_ref().clone())
            .map_err(|e| Error::Internal(format!("table schema for generated columns: {e}")))?;
        let exprs = generated
            .iter()
            .map(|(column, expression)| {
                let bad = |e: datafusion::error::DataFusionError| Error::Constraint {
                    what: "generated column",
                    name: column.clone(),
                    expression: expression.clone(),
                    message: format!("does not compile: {e}"),
                };
                // The row's own value where it has one, else the expression's.
                // (`coalesce` is only planned once the optimizer has turned it into this.)
                let col = format!("\"{}\"", column.replace('"', "\"\""));
                let sql = format!("CASE WHEN {col} IS NULL THEN ({expression}) ELSE {col} END");
                let expr = ctx.parse_sql_expr(&sql, &df_schema).map_err(bad)?;
                let phys = ctx.create_physical_expr(expr, &df_schema).map_err(bad)?;
                Ok((column.clone(), expression.clone(), phys))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Generator { exprs }))
    }
}

/// Compiled generated columns.
#[derive(Debug)]
struct Generator {
    /// (column, its expression, the compiled expression)
    exprs: Vec<(String, String, Arc<dyn PhysicalExpr>)>,
}

impl ColumnGenerator for Generator {
    fn fill(&self, batch: &RecordBatch) -> Result<Vec<datafusion::arrow::array::ArrayRef>> {
        self.exprs
            .iter()
            .map(|(column, expression, e)| {
                e.evaluate(batch)
                    .and_then(|v| v.into_array(batch.num_rows()))
                    .map_err(|e| Error::Constraint {
                        what: "generated column",
                        name: column.clone(),
                        expression: expression.clone(),
                        message: format!("failed: {e}"),
                    })
            })
            .collect()
    }
}

impl ConstraintChecker for Compiled {
    fn first_violation(&self, batch: &RecordBatch) -> Result<Option<(Constraint, usize)>> {
        for (c, expr) in &self.exprs {
            let value = expr
                .evaluate(batch)
                .and_then(|v| v.into_array(batch.num_rows()))
                .map_err(|e| Error::Constraint {
                    what: "constraint",
                    name: c.name.clone(),
                    expression: c.expression.clone(),
                    message: format!("failed to evaluate: {e}"),
                })?;
            let Some(passed) = value.as_boolean_opt() else {
                return Err(Error::Constraint {
                    what: "constraint",
                    name: c.name.clone(),
                    expression: c.expression.clone(),
                    message: format!("is not a condition: it gives {}", value.data_type()),
                });
            };
            // False breaks a CHECK constraint; NULL does not.
            let broken = (0..passed.len())
                .filter(|i| passed.is_valid(*i) && !passed.value(*i))
                .count();
            if broken > 0 {
                return Ok(Some((c.clone(), broken)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn false_breaks_a_constraint_and_null_does_not() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("wind", DataType::Int64, true),
            Field::new("region", DataType::Utf8, true),
        ]));
        let cs = [
            Constraint {
                name: "wind_positive".into(),
                expression: "wind >= 0".into(),
            },
            Constraint {
                name: "known_region".into(),
                expression: "region IN ('eu', 'us')".into(),
            },
        ];
        let checker = DataFusionConstraints.compile(&schema, &cs).unwrap();
        let batch = |wind: Vec<Option<i64>>, region: Vec<Option<&str>>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(wind)),
                    Arc::new(StringArray::from(region)),
                ],
            )
            .unwrap()
        };
        let ok = batch(vec![Some(1), None], vec![Some("eu"), None]);
        assert_eq!(checker.first_violation(&ok).unwrap(), None);
        let bad = batch(
            vec![Some(-4), Some(-1), Some(3)],
            vec![Some("eu"), Some("ap"), Some("us")],
        );
        let (c, n) = checker.first_violation(&bad).unwrap().unwrap();
        assert_eq!((c.name.as_str(), n), ("wind_positive", 2));
        let wrong = [Constraint {
            name: "nope".into(),
            expression: "no_such_column > 1".into(),
        }];
        assert!(DataFusionConstraints.compile(&schema, &wrong).is_err());
    }
}
