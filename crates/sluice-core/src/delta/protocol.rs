//! The protocol gate: before sluice writes, compacts, changes the schema of or vacuums a Delta
//! table, it checks the table's `protocol` and `metaData` against what it implements.
//!
//! Other engines write the same tables and enable features of their own (Databricks turns on
//! deletion vectors, Spark adds CHECK constraints, the `deltalake` package column mapping). A
//! writer that ignores a feature it does not implement corrupts the table for every reader, so
//! each feature is either honoured (sluice does what the protocol asks of a writer) or the
//! operation is refused with an error naming the feature and the table, before anything is
//! written. docs/delta.md has the list with the reasons.
//!
//! A feature counts where the table *uses* it: a legacy writer version implies features
//! (writer 2: `appendOnly`, `invariants`; 3: `checkConstraints`; 4: `changeDataFeed`,
//! `generatedColumns`; 5: `columnMapping`; 6: `identityColumns`) that constrain writers only when
//! the metadata turns them on; a feature listed by a reader 3 / writer 7 table is checked the
//! same way, and a listed feature sluice does not know at all is refused.

pub(crate) use super::actions::writer_features;
use super::actions::{Metadata, Protocol, StructField};
use crate::error::{Error, Result};

/// What sluice is about to do to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Read the log (history, the files of a repair or compaction, dedup records).
    Read,
    /// Commit new files (consumer, `convert`).
    Append,
    /// Rewrite files with the same rows (`dataChange` false).
    Compact,
    /// Add columns to the schema.
    ChangeSchema,
    /// Delete files no version needs any more.
    Vacuum,
}

impl Operation {
    fn verb(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Append => "append to",
            Operation::Compact => "compact",
            Operation::ChangeSchema => "change the schema of",
            Operation::Vacuum => "vacuum",
        }
    }
}

/// What a writer must do on a table that passed the gate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteRules {
    /// `delta.enableInCommitTimestamps`: every commit starts with a `commitInfo` carrying an
    /// `inCommitTimestamp` greater than the previous commit's.
    pub in_commit_timestamps: bool,
    /// `delta.appendOnly`: no `remove` with `dataChange` true.
    pub append_only: bool,
    /// Files may carry deletion vectors: compaction leaves such files alone.
    pub deletion_vectors: bool,
    /// `rowTracking` is supported: every added file gets a `baseRowId` and
    /// `defaultRowCommitVersion`, and the `delta.rowTracking` domain its new high-water mark.
    pub row_tracking: bool,
    /// Whether sluice may write checkpoints and clean up the log (not on tables whose
    /// checkpoints must be V2, or whose log is protected: the engine that enabled those does).
    pub checkpoints: bool,
    /// `delta.checkpointInterval` (default 100).
    pub checkpoint_interval: u64,
}

/// Reader features sluice's own log reader understands (it reads V2 checkpoints, and none of
/// the others changes what the log says).
const READER_FEATURES: &[&str] = &[
    "timestampNtz",
    "deletionVectors",
    "columnMapping",
    "v2Checkpoint",
    "typeWidening",
    "typeWidening-preview",
    "vacuumProtocolCheck",
    "variantType",
    "variantType-preview",
    "timestampNanos",
];

/// What the writer brings beyond the core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// It evaluates CHECK constraints and column invariants on the rows it writes
    /// ([`super::constraints`]).
    pub constraints: bool,
}

/// `check_with` for a writer that brings nothing beyond the core.
pub fn check(table: &str, p: &Protocol, m: &Metadata, op: Operation) -> Result<WriteRules> {
    check_with(table, p, m, op, Capabilities::default())
}

/// Checks that sluice may do `op` to the table: `Ok` with the rules the writer must follow,
/// or [`Error::UnsupportedFeature`] naming the first feature in the way.
pub(crate) fn check_with(
    table: &str,
    p: &Protocol,
    m: &Metadata,
    op: Operation,
    caps: Capabilities,
) -> Result<WriteRules> {
    let refuse = |feature: &str, reason: &str| Error::UnsupportedFeature {
        table: table.to_string(),
        feature: feature.to_string(),
        operation: op.verb(),
        reason: reason.to_string(),
    };
    if p.min_reader_version > 3 {
        return Err(refuse(
            &format!("reader version {}", p.min_reader_version),
            "Delta defines reader versions up to 3",
        ));
    }
    if p.min_reader_version >= 3 {
        for f in p.reader_features.iter().flatten() {
            if !READER_FEATURES.contains(&f.as_str()) {
                return Err(refuse(f, "sluice does not know this reader feature"));
            }
        }
    }
    if p.min_writer_version > 7 {
        return Err(refuse(
            &format!("writer version {}", p.min_writer_version),
            "Delta defines writer versions up to 7",
        ));
    }
    let mut rules = WriteRules {
        checkpoints: true,
        checkpoint_interval: m
            .config("delta.checkpointInterval")
            .and_then(|v| v.trim().parse().ok())
            .filter(|v| *v > 0)
            .unwrap_or(100),
        ..WriteRules::default()
    };
    if op == Operation::Read {
        return Ok(rules);
    }
    let fields = match m.schema() {
        Ok(s) => s.fields,
        Err(e) => {
            return Err(Error::CorruptLog {
                path: table.to_string(),
                message: format!("the schema in metaData does not read: {e}"),
            });
        }
    };
    let any_field = |key: &str| fields.iter().any(|f| field_has(f, key));
    let writes_rows = op == Operation::Append;
    // Not a feature: every writer keeps NOT NULL columns free of nulls.
    if writes_rows
        && !caps.constraints
        && let Some(f) = fields.iter().find(|f| !f.nullable)
    {
        return Err(refuse(
            &format!("NOT NULL column {}", f.name),
            "this writer does not check that rows have a value there",
        ));
    }
    for f in writer_features(p) {
        match f.as_str() {
            // Appends and rearranging commits (`dataChange` false) are what an append-only
            // table allows; a schema change adds nullable columns only.
            "appendOnly" => rules.append_only = m.flag("delta.appendOnly"),
            "invariants"
                if writes_rows && fields.iter().any(|f| nested_has(&f.ty, "delta.invariants")) =>
            {
                return Err(refuse(
                    &f,
                    "a field inside a struct, list or map has an invariant (delta.invariants), which sluice does not evaluate",
                ));
            }
            "invariants" if writes_rows && any_field("delta.invariants") && !caps.constraints => {
                return Err(refuse(
                    &f,
                    "a column has an invariant (delta.invariants), and this writer does not evaluate them",
                ));
            }
            "checkConstraints"
                if writes_rows
                    && !caps.constraints
                    && m.configuration
                        .keys()
                        .any(|k| k.starts_with("delta.constraints.")) =>
            {
                let names: Vec<&str> = m
                    .configuration
                    .keys()
                    .filter_map(|k| k.strip_prefix("delta.constraints."))
                    .collect();
                return Err(refuse(
                    &f,
                    &format!(
                        "the table has CHECK constraints ({}), and this writer does not evaluate them",
                        names.join(", ")
                    ),
                ));
            }
            "generatedColumns"
                if writes_rows && !caps.constraints && any_field("delta.generationExpression") =>
            {
                return Err(refuse(
                    &f,
                    "a column is generated (delta.generationExpression), and this writer does not compute generated columns",
                ));
            }
            "identityColumns"
                if writes_rows
                    && fields.iter().any(|f| {
                        nested_has(&f.ty, "delta.identity.start")
                            || (f.metadata.contains_key("delta.identity.start")
                                && m.partition_columns.contains(&f.name))
                    }) =>
            {
                return Err(refuse(
                    &f,
                    "an identity column is inside a struct or partitions the table, and sluice assigns identity values only to top-level data columns",
                ));
            }
            "allowColumnDefaults"
                if writes_rows && fields.iter().any(|f| nested_has(&f.ty, "CURRENT_DEFAULT")) =>
            {
                return Err(refuse(
                    &f,
                    "a field inside a struct, list or map has a default value, which sluice does not fill in",
                ));
            }
            "allowColumnDefaults"
                if writes_rows
                    && fields.iter().any(|f| {
                        f.metadata.contains_key("CURRENT_DEFAULT")
                            && m.partition_columns.contains(&f.name)
                    }) =>
            {
                return Err(refuse(
                    &f,
                    "a partition column has a default value, and sluice partitions rows before it could fill it in",
                ));
            }
            "allowColumnDefaults"
                if writes_rows && !caps.constraints && any_field("CURRENT_DEFAULT") =>
            {
                return Err(refuse(
                    &f,
                    "a column has a default value, and this writer evaluates no expressions to fill it in",
                ));
            }
            "rowTracking" => {
                if op == Operation::Compact && m.flag("delta.enableRowTracking") {
                    return Err(refuse(
                        &f,
                        "compaction would have to keep every row's id, which sluice does not materialise",
                    ));
                }
                rules.row_tracking = true;
            }
            "deletionVectors" => rules.deletion_vectors = true,
            "inCommitTimestamp" => {
                rules.in_commit_timestamps = m.flag("delta.enableInCommitTimestamps");
            }
            "v2Checkpoint" | "checkpointProtection" => rules.checkpoints = false,
            "clustering" if op == Operation::Compact => {
                return Err(refuse(
                    &f,
                    "the table is clustered, and sluice's compaction does not cluster; use the engine that clusters it",
                ));
            }
            // Honoured as they are: nothing more is asked of an appending or rearranging
            // writer (changeDataFeed: inserts need no change files; typeWidening: files are
            // written with the current types; domainMetadata: sluice keeps the domains it does
            // not own; vacuumProtocolCheck: vacuum goes through this gate).
            "invariants"
            | "checkConstraints"
            | "generatedColumns"
            | "identityColumns"
            | "columnMapping"
            | "allowColumnDefaults"
            | "clustering"
            | "changeDataFeed"
            | "timestampNtz"
            | "domainMetadata"
            | "typeWidening"
            | "typeWidening-preview"
            | "vacuumProtocolCheck" => {}
            other => {
                return Err(refuse(
                    other,
                    "sluice does not implement this writer feature, and a writer must not write a table whose features it does not implement",
                ));
            }
        }
    }
    Ok(rules)
}

/// Whether a field, or a field nested in it, has `key` in its metadata.
fn field_has(f: &StructField, key: &str) -> bool {
    f.metadata.contains_key(key) || nested_has(&f.ty, key)
}

fn nested_has(ty: &serde_json::Value, key: &str) -> bool {
    use serde_json::Value;
    match ty {
        Value::Object(o) => {
            o.get("fields").and_then(Value::as_array).is_some_and(|fs| {
                fs.iter().any(|f| {
                    f.get("metadata")
                        .and_then(Value::as_object)
                        .is_some_and(|m| m.contains_key(key))
                        || f.get("type").is_some_and(|t| nested_has(t, key))
                })
            }) || ["elementType", "keyType", "valueType"]
                .iter()
                .any(|k| o.get(*k).is_some_and(|t| nested_has(t, key)))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(schema: serde_json::Value, config: &[(&str, &str)]) -> Metadata {
        serde_json::from_value(json!({
            "id": "t",
            "format": {"provider": "parquet", "options": {}},
            "schemaString": schema.to_string(),
            "partitionColumns": [],
            "configuration": config.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        }))
        .unwrap()
    }

    fn plain() -> serde_json::Value {
        json!({"type": "struct", "fields": [{"name": "a", "type": "long", "nullable": true, "metadata": {}}]})
    }

    fn features(reader: &[&str], writer: &[&str]) -> Protocol {
        Protocol {
            min_reader_version: 3,
            min_writer_version: 7,
            reader_features: Some(reader.iter().map(|s| s.to_string()).collect()),
            writer_features: Some(writer.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn refused(r: Result<WriteRules>) -> String {
        match r {
            Err(Error::UnsupportedFeature { feature, .. }) => feature,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn legacy_versions_constrain_only_where_the_metadata_turns_them_on() {
        let p = Protocol {
            min_reader_version: 1,
            min_writer_version: 4,
            reader_features: None,
            writer_features: None,
        };
        let r = check("t", &p, &meta(plain(), &[]), Operation::Append).unwrap();
        assert!(!r.append_only && r.checkpoints);
        let m = meta(plain(), &[("delta.constraints.wind_positive", "wind >= 0")]);
        assert_eq!(
            refused(check("t", &p, &m, Operation::Append)),
            "checkConstraints"
        );
        // The rows of a compaction are rows the table already accepted.
        check("t", &p, &m, Operation::Compact).unwrap();
        // A writer that evaluates them honours them.
        let caps = Capabilities { constraints: true };
        check_with("t", &p, &m, Operation::Append, caps).unwrap();
        let r = check(
            "t",
            &p,
            &meta(plain(), &[("delta.appendOnly", "true")]),
            Operation::Compact,
        )
        .unwrap();
        assert!(r.append_only);
    }

    #[test]
    fn features_sluice_does_not_implement_are_named() {
        let m = meta(plain(), &[]);
        assert_eq!(
            refused(check("t", &features(&["madeUp"], &[]), &m, Operation::Read)),
            "madeUp"
        );
        assert_eq!(
            refused(check(
                "t",
                &features(&[], &["icebergCompatV2"]),
                &m,
                Operation::Append
            )),
            "icebergCompatV2"
        );
        // Column mapping: appends, compaction and added columns honour it (physical names).
        let cm = meta(plain(), &[("delta.columnMapping.mode", "name")]);
        let mapped = features(&["columnMapping"], &["columnMapping"]);
        for op in [
            Operation::Append,
            Operation::Compact,
            Operation::ChangeSchema,
        ] {
            check("t", &mapped, &cm, op).unwrap();
        }
        // Listed but off: nothing asked of a writer.
        let off = meta(plain(), &[("delta.columnMapping.mode", "none")]);
        check(
            "t",
            &features(&["columnMapping"], &["columnMapping"]),
            &off,
            Operation::Append,
        )
        .unwrap();
    }

    #[test]
    fn honoured_features_give_their_rules() {
        let p = features(
            &["deletionVectors", "v2Checkpoint"],
            &[
                "deletionVectors",
                "v2Checkpoint",
                "inCommitTimestamp",
                "rowTracking",
                "domainMetadata",
            ],
        );
        let m = meta(
            plain(),
            &[
                ("delta.enableInCommitTimestamps", "true"),
                ("delta.checkpointInterval", "10"),
            ],
        );
        let r = check("t", &p, &m, Operation::Append).unwrap();
        assert!(r.deletion_vectors && r.in_commit_timestamps && r.row_tracking);
        assert!(!r.checkpoints);
        assert_eq!(r.checkpoint_interval, 10);
        let tracked = meta(plain(), &[("delta.enableRowTracking", "true")]);
        assert_eq!(
            refused(check("t", &p, &tracked, Operation::Compact)),
            "rowTracking"
        );
    }

    #[test]
    fn nested_field_metadata_is_seen() {
        let schema = json!({"type": "struct", "fields": [{"name": "s", "nullable": true, "metadata": {},
            "type": {"type": "struct", "fields": [{"name": "x", "type": "long", "nullable": true,
                "metadata": {"delta.invariants": "{\"expression\":{\"expression\":\"x > 0\"}}"}}]}}]});
        let p = Protocol {
            min_reader_version: 1,
            min_writer_version: 2,
            reader_features: None,
            writer_features: None,
        };
        assert_eq!(
            refused(check("t", &p, &meta(schema, &[]), Operation::Append)),
            "invariants"
        );
    }
}
