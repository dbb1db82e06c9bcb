//! Delta Lake log actions as types: what one line of a commit file (or one row of a
//! checkpoint) holds.
//!
//! Only what sluice writes or must understand has fields; everything else an action carries is
//! kept in `extra` and written back as it came (a `metaData` that sluice rewrites to add columns
//! keeps every field another engine put there). Unknown actions read as [`Action::Unknown`]:
//! the protocol asks readers to ignore what they do not know, and the protocol gate
//! ([`super::protocol`]) refuses tables whose features would make ignoring them wrong.

// The fields are the Delta protocol's, named as its PROTOCOL.md names them (in camelCase
// there), which says what each means.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A table's `protocol` action: the reader and writer versions and, from reader 3 / writer 7
/// on, the table features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protocol {
    pub min_reader_version: u32,
    pub min_writer_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_features: Option<Vec<String>>,
}

impl Protocol {
    /// Reader 1 / writer 2: what sluice writes when no column needs a feature.
    pub fn legacy() -> Self {
        Protocol {
            min_reader_version: 1,
            min_writer_version: 2,
            reader_features: None,
            writer_features: None,
        }
    }

    /// This protocol with a writer-only feature added (`rowTracking`, `inCommitTimestamp`, …):
    /// writer 7, the features the table had (a legacy version's implied ones listed); the reader
    /// side as it was.
    pub fn with_writer_feature(&self, feature: &str) -> Self {
        let mut p = self.clone();
        let mut list = writer_features(self);
        add_once(&mut list, feature);
        p.writer_features = Some(list);
        p.min_writer_version = 7;
        p
    }

    /// This protocol with a reader-and-writer feature added: reader 3 / writer 7, the features
    /// the table had (a legacy version's implied ones listed).
    pub fn with_feature(&self, feature: &str) -> Self {
        let mut p = self.with_writer_feature(feature);
        let mut list: Vec<String> = if self.min_reader_version >= 3 {
            self.reader_features.clone().unwrap_or_default()
        } else {
            legacy_reader_features(self.min_reader_version)
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        add_once(&mut list, feature);
        p.reader_features = Some(list);
        p.min_reader_version = 3;
        p
    }
}

/// Writer features implied by a legacy writer version.
pub(crate) fn legacy_writer_features(min_writer_version: u32) -> &'static [&'static str] {
    const ALL: &[&str] = &[
        "appendOnly",
        "invariants",
        "checkConstraints",
        "changeDataFeed",
        "generatedColumns",
        "columnMapping",
        "identityColumns",
    ];
    match min_writer_version {
        0 | 1 => &[],
        2 => &ALL[..2],
        3 => &ALL[..3],
        4 => &ALL[..5],
        5 => &ALL[..6],
        _ => ALL,
    }
}

/// Reader features implied by a legacy reader version.
pub(crate) fn legacy_reader_features(min_reader_version: u32) -> &'static [&'static str] {
    match min_reader_version {
        0 | 1 => &[],
        _ => &["columnMapping"],
    }
}

/// The table's writer features: listed (writer 7), or implied by its legacy version.
pub(crate) fn writer_features(p: &Protocol) -> Vec<String> {
    if p.min_writer_version >= 7 {
        p.writer_features.clone().unwrap_or_default()
    } else {
        legacy_writer_features(p.min_writer_version)
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
}

fn add_once(list: &mut Vec<String>, feature: &str) {
    if !list.iter().any(|f| f == feature) {
        list.push(feature.to_string());
    }
}

/// `metaData.format`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    pub provider: String,
    #[serde(default)]
    pub options: BTreeMap<String, Option<String>>,
}

impl Default for Format {
    fn default() -> Self {
        Format {
            provider: "parquet".into(),
            options: BTreeMap::new(),
        }
    }
}

/// A table's `metaData` action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub format: Format,
    pub schema_string: String,
    #[serde(default)]
    pub partition_columns: Vec<String>,
    #[serde(default)]
    pub configuration: BTreeMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Metadata {
    /// A configuration value (`delta.appendOnly`, …), when set.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.configuration.get(key).and_then(|v| v.as_deref())
    }

    /// Whether a boolean table property is `true` (case-insensitive, as Delta reads it).
    pub fn flag(&self, key: &str) -> bool {
        self.config(key)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// The schema, parsed.
    pub fn schema(&self) -> Result<StructType, serde_json::Error> {
        serde_json::from_str(&self.schema_string)
    }

    /// [`Metadata::schema`], a schema that does not read being a corrupt log.
    pub(crate) fn readable_schema(&self) -> crate::error::Result<StructType> {
        self.schema().map_err(|e| crate::error::Error::CorruptLog {
            path: self.id.clone(),
            message: format!("the schema in metaData does not read: {e}"),
        })
    }
}

/// A Delta schema (`schemaString`), or a struct type inside one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StructType {
    #[serde(rename = "type", default = "struct_name")]
    pub kind: String,
    pub fields: Vec<StructField>,
}

fn struct_name() -> String {
    "struct".into()
}

/// One field of a Delta schema. `type` is a primitive's name or a nested type's JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StructField {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: Value,
    #[serde(default = "yes")]
    pub nullable: bool,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

fn yes() -> bool {
    true
}

impl StructField {
    /// The primitive type's name (`long`, `string`, `decimal(10,2)`), `None` for nested types.
    pub fn primitive(&self) -> Option<&str> {
        self.ty.as_str()
    }
}

/// A file's deletion vector descriptor (kept whole: sluice never reads the rows it names).
pub(crate) type DeletionVector = Value;

/// An `add` action: a data file becomes part of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Add {
    /// Relative to the table (percent-encoded URI), or absolute.
    pub path: String,
    #[serde(default)]
    pub partition_values: BTreeMap<String, Option<String>>,
    pub size: i64,
    pub modification_time: i64,
    pub data_change: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_vector: Option<DeletionVector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_row_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_row_commit_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clustering_provider: Option<String>,
}

/// A `remove` action: a file stops being part of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Remove {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<i64>,
    pub data_change: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_file_metadata: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_values: Option<BTreeMap<String, Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_vector: Option<DeletionVector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_row_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_row_commit_version: Option<i64>,
}

/// A `txn` action: an application's transaction version (sluice: one per chunk part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Txn {
    pub app_id: String,
    pub version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<i64>,
}

/// A `domainMetadata` action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainMetadata {
    pub domain: String,
    pub configuration: String,
    #[serde(default)]
    pub removed: bool,
}

/// A `commitInfo` action. Free-form in the protocol; the fields sluice writes or reads are
/// typed, the rest kept.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitInfo {
    /// Required first in a commit when in-commit timestamps are enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_commit_timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_metrics: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_blind_append: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One action of a commit file or checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Protocol(Protocol),
    Metadata(Metadata),
    Add(Add),
    Remove(Remove),
    Txn(Txn),
    DomainMetadata(DomainMetadata),
    CommitInfo(CommitInfo),
    /// `sidecar` of a V2 checkpoint: a file under `_delta_log/_sidecars/` holding adds and
    /// removes.
    Sidecar {
        path: String,
    },
    /// `checkpointMetadata` of a V2 checkpoint, `cdc` and anything newer: kept as read.
    Unknown(String, Value),
}

impl Action {
    /// The action's key in the log (`add`, `metaData`, …).
    pub fn key(&self) -> &str {
        match self {
            Action::Protocol(_) => "protocol",
            Action::Metadata(_) => "metaData",
            Action::Add(_) => "add",
            Action::Remove(_) => "remove",
            Action::Txn(_) => "txn",
            Action::DomainMetadata(_) => "domainMetadata",
            Action::CommitInfo(_) => "commitInfo",
            Action::Sidecar { .. } => "sidecar",
            Action::Unknown(k, _) => k,
        }
    }

    /// Reads one line of a commit file. Blank lines are `None`.
    pub fn parse_line(line: &str) -> Result<Option<Self>, String> {
        if line.trim().is_empty() {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        Self::from_json(v).map(Some)
    }

    /// An action from its JSON object (`{"add": {…}}`).
    pub fn from_json(v: Value) -> Result<Self, String> {
        let Value::Object(mut obj) = v else {
            return Err("an action is not a JSON object".into());
        };
        let Some(key) = obj.keys().next().cloned() else {
            return Err("an empty action".into());
        };
        if obj.len() != 1 {
            return Err(format!("an action with {} keys", obj.len()));
        }
        let body = obj.remove(&key).expect("key present");
        let typed = |r: Result<Action, serde_json::Error>| r.map_err(|e| format!("{key}: {e}"));
        match key.as_str() {
            "protocol" => typed(serde_json::from_value(body).map(Action::Protocol)),
            "metaData" => typed(serde_json::from_value(body).map(Action::Metadata)),
            "add" => typed(serde_json::from_value(body).map(Action::Add)),
            "remove" => typed(serde_json::from_value(body).map(Action::Remove)),
            "txn" => typed(serde_json::from_value(body).map(Action::Txn)),
            "domainMetadata" => typed(serde_json::from_value(body).map(Action::DomainMetadata)),
            "commitInfo" => typed(serde_json::from_value(body).map(Action::CommitInfo)),
            "sidecar" => {
                let path = body
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or("sidecar without a path")?;
                Ok(Action::Sidecar {
                    path: path.to_string(),
                })
            }
            _ => Ok(Action::Unknown(key, body)),
        }
    }

    /// The action as its JSON object (`{"add": {…}}`).
    pub fn to_json(&self) -> Value {
        let body = match self {
            Action::Protocol(a) => serde_json::to_value(a),
            Action::Metadata(a) => serde_json::to_value(a),
            Action::Add(a) => serde_json::to_value(a),
            Action::Remove(a) => serde_json::to_value(a),
            Action::Txn(a) => serde_json::to_value(a),
            Action::DomainMetadata(a) => serde_json::to_value(a),
            Action::CommitInfo(a) => serde_json::to_value(a),
            Action::Sidecar { path } => Ok(serde_json::json!({ "path": path })),
            Action::Unknown(_, v) => Ok(v.clone()),
        }
        .expect("actions serialize");
        let mut obj = Map::with_capacity(1);
        obj.insert(self.key().to_string(), body);
        Value::Object(obj)
    }
}

/// A commit file's text: one action per line, in order.
pub fn render(actions: &[Action]) -> String {
    let mut out = String::new();
    for (i, a) in actions.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&a.to_json().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_fields_survive_a_round_trip() {
        let line = r#"{"metaData":{"id":"x","format":{"provider":"parquet","options":{}},"schemaString":"{\"type\":\"struct\",\"fields\":[]}","partitionColumns":[],"configuration":{"delta.appendOnly":"true"},"createdTime":1,"somethingNew":{"a":1}}}"#;
        let a = Action::parse_line(line).unwrap().unwrap();
        let Action::Metadata(m) = &a else {
            panic!("not metadata: {a:?}")
        };
        assert!(m.flag("delta.appendOnly"));
        assert_eq!(
            m.extra.get("somethingNew"),
            Some(&serde_json::json!({"a": 1}))
        );
        let back: Value = serde_json::from_str(line).unwrap();
        assert_eq!(a.to_json(), back);
    }

    #[test]
    fn unknown_actions_are_kept_and_bad_ones_named() {
        let a = Action::parse_line(r#"{"checkpointMetadata":{"version":3}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(a.key(), "checkpointMetadata");
        let e = Action::parse_line(r#"{"add":{"size":3}}"#).unwrap_err();
        assert!(e.starts_with("add: missing field `path`"), "{e}");
        assert_eq!(Action::parse_line("  ").unwrap(), None);
    }

    #[test]
    fn a_feature_lifts_a_legacy_protocol_and_keeps_what_it_implied() {
        let p = Protocol {
            min_reader_version: 1,
            min_writer_version: 4,
            reader_features: None,
            writer_features: None,
        }
        .with_feature("timestampNtz");
        assert_eq!((p.min_reader_version, p.min_writer_version), (3, 7));
        assert_eq!(
            p.reader_features.as_deref(),
            Some(&["timestampNtz".to_string()][..])
        );
        let w = p.writer_features.unwrap();
        for f in [
            "appendOnly",
            "invariants",
            "checkConstraints",
            "changeDataFeed",
            "generatedColumns",
            "timestampNtz",
        ] {
            assert!(w.iter().any(|x| x == f), "{f} missing from {w:?}");
        }
    }
}
