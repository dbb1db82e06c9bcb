//! A table's schema policy: what happens to columns a source has and the table lacks (the
//! schema evolution itself is [`crate::delta::evolve`]), and the record of its changes.

use serde::{Deserialize, Serialize};

use crate::catalog::{Catalog, TableDef};
use crate::error::{Error, Result};
use crate::schema::Column;

/// Table parameter holding the schema policy.
pub(crate) const PARAM_SCHEMA_POLICY: &str = "sluice.schema_policy";
/// Table parameter holding the schema's changes (a JSON array of [`SchemaChange`]).
pub(crate) const PARAM_SCHEMA_HISTORY: &str = "sluice.schema_history";

/// What happens to columns a source has and the table lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemaPolicy {
    /// Add them to the table, nullable (rows before read NULL).
    #[default]
    Evolve,
    /// Keep the schema: rows with them are quarantined, messages with them dead-lettered.
    Freeze,
    /// Drop them; keep the rows.
    DiscardColumns,
}

impl SchemaPolicy {
    /// Parses `evolve`, `freeze` or `discard-columns`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "evolve" => Ok(SchemaPolicy::Evolve),
            "freeze" => Ok(SchemaPolicy::Freeze),
            "discard-columns" | "discard" => Ok(SchemaPolicy::DiscardColumns),
            other => Err(Error::Config(format!(
                "schema policy {other:?}: expected evolve, freeze or discard-columns"
            ))),
        }
    }

    /// The policy's name, as `parse` takes it.
    pub fn name(self) -> &'static str {
        match self {
            SchemaPolicy::Evolve => "evolve",
            SchemaPolicy::Freeze => "freeze",
            SchemaPolicy::DiscardColumns => "discard-columns",
        }
    }

    /// The policy of a table (`evolve` when it has none: tables made before policies existed).
    pub fn of_def(def: &TableDef) -> Result<Self> {
        def.parameters
            .get(PARAM_SCHEMA_POLICY)
            .map(|s| Self::parse(s))
            .transpose()
            .map(Option::unwrap_or_default)
    }
}

impl std::fmt::Display for SchemaPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One change of a table's schema, as `sluice catalog schema` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaChange {
    /// The Delta version that added the columns (`None`: another writer's change, which this
    /// catalog learnt from the log later).
    pub version: Option<u64>,
    /// When the catalog recorded it (RFC 3339, UTC).
    pub at: String,
    /// The columns added.
    pub added: Vec<Column>,
    /// Struct columns that gained fields, with their new types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub widened: Vec<Column>,
    /// The file, object or message whose columns they were.
    pub source: String,
}

/// The recorded changes of a table's schema, oldest first.
pub fn history(def: &TableDef) -> Vec<SchemaChange> {
    def.parameters
        .get(PARAM_SCHEMA_HISTORY)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// Sets a table's schema policy in the catalog.
pub async fn set_policy(
    catalog: &dyn Catalog,
    database: &str,
    table: &str,
    policy: SchemaPolicy,
) -> Result<TableDef> {
    loop {
        let mut def = catalog.get_table(database, table).await?;
        if SchemaPolicy::of_def(&def).ok() == Some(policy)
            && def.parameters.contains_key(PARAM_SCHEMA_POLICY)
        {
            return Ok(def);
        }
        def.parameters
            .insert(PARAM_SCHEMA_POLICY.into(), policy.name().into());
        match catalog.update_table(&def).await {
            Err(Error::Conflict(_)) => continue,
            other => return other,
        }
    }
}
