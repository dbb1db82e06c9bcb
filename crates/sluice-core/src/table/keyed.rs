//! Keyed tables: a table whose rows are changes to the rows of a key (AWS DMS change files,
//! Debezium-style JSON, daily snapshots), applied so that the table holds the current row of
//! each key.
//!
//! - `--merge-key COL[,COL…]`: a change replaces the row with the same key, or is inserted.
//! - `--op-column COL`: the change's operation, `I`/`U`/`D` (DMS) or `c`/`u`/`r`/`d`
//!   (Debezium), in any case; a delete removes the key. A row without one (no such column in
//!   the source, or an empty field) is an upsert. The column is not stored unless
//!   `--keep-op-column`.
//! - `--sequence-by COL`: the change's order. A change older than the row the table holds for
//!   its key is ignored as stale; without it, the change read last wins.
//!
//! Rows with a NULL key, a NULL sequence or an unknown operation go to the quarantine.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::schema::{Column, ColumnNames, ColumnType};

/// Table parameter: the merge key's columns, comma-separated.
pub const PARAM_MERGE_KEY: &str = "sluice.merge_key";
/// Table parameter: the column holding each change's operation.
pub const PARAM_OP_COLUMN: &str = "sluice.op_column";
/// Table parameter: the column ordering the changes of a key.
pub const PARAM_SEQUENCE_BY: &str = "sluice.sequence_by";
/// Table parameter: `true` when the operation column is stored in the table.
pub const PARAM_KEEP_OP_COLUMN: &str = "sluice.keep_op_column";

/// How a keyed table applies its changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeySpec {
    /// The key's columns.
    pub key: Vec<String>,
    /// The column of each change's operation.
    pub op: Option<String>,
    /// The column ordering a key's changes.
    pub sequence: Option<String>,
    /// Whether the operation column is stored.
    pub keep_op: bool,
}

/// What a change does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Insert, or replace the key's row.
    Upsert,
    /// Remove the key's row.
    Delete,
}

/// The operation a change's text names: `I`, `U`, `D` (AWS DMS), `c`, `u`, `r`, `d`
/// (Debezium's create, update, read, delete), in any case and around spaces.
pub fn parse_op(text: &str) -> Option<Op> {
    match text.trim().as_bytes() {
        [b'I' | b'i' | b'U' | b'u' | b'C' | b'c' | b'R' | b'r'] => Some(Op::Upsert),
        [b'D' | b'd'] => Some(Op::Delete),
        _ => None,
    }
}

/// Whether a column of type `ty` can be (part of) a key: not a float (NaN and -0.0 make
/// equality unreliable) and not nested.
fn keyable(ty: ColumnType) -> bool {
    !ty.is_nested() && !matches!(ty, ColumnType::Float32 | ColumnType::Float64)
}

impl KeySpec {
    /// A key spec of `--merge-key` (comma-separated columns) and the other options.
    pub fn new(
        merge_key: &str,
        op: Option<String>,
        sequence: Option<String>,
        keep_op: bool,
    ) -> Result<Self> {
        let key: Vec<String> = merge_key.split(',').map(|c| c.trim().to_string()).collect();
        if key.iter().any(String::is_empty) {
            return Err(Error::invalid(format!(
                "--merge-key {merge_key:?}: expected column names separated by commas"
            )));
        }
        let mut seen = key.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != key.len() {
            return Err(Error::invalid(format!(
                "--merge-key {merge_key:?} names a column twice"
            )));
        }
        let spec = KeySpec {
            key,
            op: op.map(|o| o.trim().to_string()),
            sequence: sequence.map(|s| s.trim().to_string()),
            keep_op,
        };
        if let Some(op) = &spec.op
            && (spec.key.contains(op) || spec.sequence.as_ref() == Some(op))
        {
            return Err(Error::invalid(format!(
                "--op-column {op} is also a key or sequence column"
            )));
        }
        Ok(spec)
    }

    /// The spec a table's parameters hold, if it is keyed.
    pub fn of_params(params: &BTreeMap<String, String>) -> Result<Option<Self>> {
        let Some(key) = params.get(PARAM_MERGE_KEY) else {
            return Ok(None);
        };
        Self::new(
            key,
            params.get(PARAM_OP_COLUMN).cloned(),
            params.get(PARAM_SEQUENCE_BY).cloned(),
            params
                .get(PARAM_KEEP_OP_COLUMN)
                .is_some_and(|v| v == "true"),
        )
        .map(Some)
    }

    /// Writes the spec into a table's parameters.
    pub fn to_params(&self, params: &mut BTreeMap<String, String>) {
        params.insert(PARAM_MERGE_KEY.into(), self.key.join(","));
        if let Some(op) = &self.op {
            params.insert(PARAM_OP_COLUMN.into(), op.clone());
        }
        if let Some(s) = &self.sequence {
            params.insert(PARAM_SEQUENCE_BY.into(), s.clone());
        }
        if self.keep_op {
            params.insert(PARAM_KEEP_OP_COLUMN.into(), "true".into());
        }
    }

    /// The spec with its column names as the table's naming rule names them.
    pub fn named(&self, rule: ColumnNames) -> Self {
        let n = |c: &String| rule.apply(c).into_owned();
        KeySpec {
            key: self.key.iter().map(n).collect(),
            op: self.op.as_ref().map(n),
            sequence: self.sequence.as_ref().map(n),
            keep_op: self.keep_op,
        }
    }

    /// The spec as the options that give it.
    pub fn describe(&self) -> String {
        let mut s = format!("--merge-key {}", self.key.join(","));
        if let Some(op) = &self.op {
            s.push_str(&format!(" --op-column {op}"));
            if self.keep_op {
                s.push_str(" --keep-op-column");
            }
        }
        if let Some(seq) = &self.sequence {
            s.push_str(&format!(" --sequence-by {seq}"));
        }
        s
    }

    /// The spec in words, for `catalog schema`.
    pub fn explain(&self) -> String {
        let mut s = format!(
            "a change replaces the row of the same {}",
            self.key.join(", ")
        );
        match &self.op {
            Some(op) => s.push_str(&format!(
                "; {op} says what it does (D deletes the key, I, U, c, u, r or none upsert it)"
            )),
            None => s.push_str("; every change is an upsert"),
        }
        match &self.sequence {
            Some(seq) => s.push_str(&format!(
                "; a change whose {seq} is older than the key's row or delete is ignored (deleted keys are remembered as long as the table's exactly-once records)"
            )),
            None => s.push_str("; of two changes of a key, the one applied later wins"),
        }
        s
    }

    /// Checks the spec against a table's columns (those of its files): every column named is
    /// one, keys are of a type that compares exactly, the operation is text.
    pub fn check(&self, table: &str, columns: &[Column]) -> Result<()> {
        let find = |name: &str, what: &str| -> Result<&Column> {
            columns.iter().find(|c| c.name == name).ok_or_else(|| {
                Error::invalid(format!(
                    "{what} {name} is not a column of table {table} (its columns: {}); columns kept in the partition path only cannot be named",
                    columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        };
        for k in &self.key {
            let c = find(k, "--merge-key column")?;
            if !keyable(c.ty) {
                return Err(Error::invalid(format!(
                    "--merge-key column {k} of table {table} is a {}: a key is a column of integers, decimals, text, bytes, booleans, dates or timestamps",
                    c.ty.name()
                )));
            }
        }
        if let Some(op) = &self.op {
            let c = find(op, "--op-column")?;
            if c.ty != ColumnType::String {
                return Err(Error::invalid(format!(
                    "--op-column {op} of table {table} is a {}, not text (I, U, D)",
                    c.ty.name()
                )));
            }
        }
        if let Some(seq) = &self.sequence {
            let c = find(seq, "--sequence-by column")?;
            if c.ty.is_nested() || matches!(c.ty, ColumnType::Boolean | ColumnType::Binary) {
                return Err(Error::invalid(format!(
                    "--sequence-by column {seq} of table {table} is a {}: a sequence is a number, a date, a timestamp or text",
                    c.ty.name()
                )));
            }
        }
        Ok(())
    }

    /// Refuses a spec `asked` for a table whose own spec is `have` (a table's key is set when it
    /// is made).
    pub fn check_same(table: &str, have: Option<&KeySpec>, asked: Option<&KeySpec>) -> Result<()> {
        let Some(asked) = asked else { return Ok(()) };
        match have {
            Some(h) if h == asked => Ok(()),
            Some(h) => Err(Error::TableMismatch {
                table: table.to_string(),
                message: format!(
                    "table {table} is keyed with {}, not {}: a table's key is set when it is made; leave the options out to write with the table's own",
                    h.describe(),
                    asked.describe()
                ),
            }),
            None => Err(Error::TableMismatch {
                table: table.to_string(),
                message: format!(
                    "table {table} is not keyed: {} applies only to a table it makes; write the changes into a new table",
                    asked.describe()
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_of_dms_and_debezium() {
        for t in ["I", "i", "U", "u", " c ", "r", "R"] {
            assert_eq!(parse_op(t), Some(Op::Upsert), "{t}");
        }
        for t in ["D", "d", "d "] {
            assert_eq!(parse_op(t), Some(Op::Delete), "{t}");
        }
        for t in ["", "X", "DEL", "insert", "0"] {
            assert_eq!(parse_op(t), None, "{t}");
        }
    }

    #[test]
    fn specs_round_trip_through_parameters_and_are_checked() {
        let s = KeySpec::new(" id , region", Some("Op".into()), Some("ts".into()), false).unwrap();
        assert_eq!(s.key, vec!["id", "region"]);
        let mut p = BTreeMap::new();
        s.to_params(&mut p);
        assert_eq!(KeySpec::of_params(&p).unwrap(), Some(s.clone()));
        assert_eq!(
            s.describe(),
            "--merge-key id,region --op-column Op --sequence-by ts"
        );
        assert_eq!(s.named(ColumnNames::SnakeCase).op.as_deref(), Some("op"));
        assert!(KeySpec::new("id,,x", None, None, false).is_err());
        assert!(KeySpec::new("id,id", None, None, false).is_err());
        assert!(KeySpec::new("id", Some("id".into()), None, false).is_err());
        let cols = vec![
            Column::new("id", ColumnType::Int64),
            Column::new("region", ColumnType::String),
            Column::new("Op", ColumnType::String),
            Column::new("ts", ColumnType::Timestamp),
            Column::new("x", ColumnType::Float64),
        ];
        s.check("t", &cols).unwrap();
        let e = KeySpec::new("x", None, None, false)
            .unwrap()
            .check("t", &cols)
            .unwrap_err()
            .to_string();
        assert!(e.contains("float64"), "{e}");
        let e = KeySpec::new("nope", None, None, false)
            .unwrap()
            .check("t", &cols)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope is not a column of table t"), "{e}");
        let e = KeySpec::new("id", Some("ts".into()), None, false)
            .unwrap()
            .check("t", &cols)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not text"), "{e}");
        assert!(KeySpec::check_same("t", Some(&s), Some(&s)).is_ok());
        assert!(KeySpec::check_same("t", Some(&s), None).is_ok());
        let other = KeySpec::new("id", None, None, false).unwrap();
        let e = KeySpec::check_same("t", Some(&s), Some(&other))
            .unwrap_err()
            .to_string();
        assert!(e.contains("keyed with --merge-key id,region"), "{e}");
        assert!(KeySpec::check_same("t", None, Some(&other)).is_err());
    }
}
