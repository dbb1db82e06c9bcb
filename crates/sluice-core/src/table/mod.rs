//! A table's layout as the pipeline needs it, derived from its catalog entry.

pub mod keyed;
pub mod policy;

pub use policy::SchemaPolicy;

use arrow::datatypes::SchemaRef;

use crate::catalog::{PARAM_DATE_FORMAT, PARAM_PARTITION_BY, TableDef};
use crate::error::{Error, Result};
use crate::schema::partition::PartitionSpec;
use crate::schema::{Column, ColumnNames, arrow_schema};

/// How a table's rows are typed, partitioned and stored.
#[derive(Debug, Clone)]
pub(crate) struct TableLayout {
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
    /// Numbers written with a point in a new column are inferred as decimals.
    pub exact_decimals: bool,
    /// How the names of sources' columns become the table's.
    pub names: ColumnNames,
    /// Fingerprint of `source_columns`.
    pub fingerprint: String,
    /// What a source's columns the table lacks do.
    pub policy: SchemaPolicy,
    /// Per source column: its default value's text (Delta `allowColumnDefaults`), which a row
    /// whose source lacks the column takes (a source that has the column and no value in it
    /// gives NULL).
    pub defaults: Vec<Option<String>>,
    /// How changes apply, when the table is keyed.
    pub keyed: Option<Keyed>,
}

/// A keyed table's columns ([`keyed::KeySpec`]), by position.
#[derive(Debug, Clone)]
pub(crate) struct Keyed {
    /// The key's columns in `source_columns` (for the checks as rows are typed).
    pub key_sources: Vec<usize>,
    /// The operation's column in `source_columns`.
    pub op_source: Option<usize>,
    /// The sequence's column in `source_columns`.
    pub sequence_source: Option<usize>,
    /// The key's columns in `file_columns` (and the change files).
    pub key_files: Vec<usize>,
    /// The operation's column in `file_columns`.
    pub op_file: Option<usize>,
    /// The sequence's column in `file_columns`.
    pub sequence_file: Option<usize>,
    /// The schema of the table's own files: `file_schema` without the operation's column,
    /// unless it is kept.
    pub stored_schema: SchemaRef,
}

impl Keyed {
    fn of(def: &TableDef, spec: keyed::KeySpec, source: &[Column]) -> Result<Self> {
        let corrupt = |what: &str, c: &str| Error::CorruptCatalog {
            table: def.name.clone(),
            message: format!("{what} {c} is not a column of the table's files"),
        };
        let src = |c: &str| source.iter().position(|s| s.name == c);
        let file = |c: &str, what: &str| {
            def.columns
                .iter()
                .position(|f| f.name == c)
                .ok_or_else(|| corrupt(what, c))
        };
        let key_files = spec
            .key
            .iter()
            .map(|k| file(k, "merge key"))
            .collect::<Result<Vec<_>>>()?;
        let op_file = spec
            .op
            .as_deref()
            .map(|c| file(c, "operation column"))
            .transpose()?;
        let sequence_file = spec
            .sequence
            .as_deref()
            .map(|c| file(c, "sequence column"))
            .transpose()?;
        let stored: Vec<Column> = def
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| spec.keep_op || Some(*i) != op_file)
            .map(|(_, c)| c.clone())
            .collect();
        Ok(Keyed {
            key_sources: spec.key.iter().filter_map(|k| src(k)).collect(),
            op_source: spec.op.as_deref().and_then(src),
            sequence_source: spec.sequence.as_deref().and_then(src),
            key_files,
            op_file,
            sequence_file,
            stored_schema: arrow_schema(&stored),
        })
    }
}

impl TableLayout {
    /// Of `columns` (a source's, with their inferred types), those that change the table: the
    /// ones it lacks, and its struct columns that they give fields it lacks (with the table's
    /// type, those fields added: [`crate::schema::ColumnType::widened`]).
    pub(crate) fn changes(&self, columns: Vec<Column>) -> Vec<Column> {
        columns
            .into_iter()
            .filter_map(|mut c| {
                match self.source_columns.iter().find(|t| t.name == c.name) {
                    None => {}
                    Some(t) => {
                        let widened = t.ty.widened(c.ty);
                        if widened == t.ty {
                            return None;
                        }
                        c.ty = widened;
                    }
                }
                Some(c)
            })
            .collect()
    }

    /// Derives the layout from a catalog entry.
    pub fn from_def(def: &TableDef) -> Result<Self> {
        let spec_s =
            def.parameters
                .get(PARAM_PARTITION_BY)
                .ok_or_else(|| Error::CorruptCatalog {
                    table: def.name.clone(),
                    message: format!(
                        "no {PARAM_PARTITION_BY} parameter: it was not created by sluice"
                    ),
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
                    .ok_or_else(|| Error::CorruptCatalog {
                        table: def.name.clone(),
                        message: format!("no partition key {:?}", f.source),
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
                    .ok_or_else(|| Error::CorruptCatalog {
                        table: def.name.clone(),
                        message: format!("partition column {:?} is not a column", f.source),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let file_index = source_columns
            .iter()
            .map(|c| def.columns.iter().position(|f| f.name == c.name))
            .collect();
        let defaults = vec![None; source_columns.len()];
        let keyed = match keyed::KeySpec::of_params(&def.parameters)? {
            Some(spec) => Some(Keyed::of(def, spec, &source_columns)?),
            None => None,
        };
        Ok(TableLayout {
            keyed,
            name: def.name.clone(),
            fingerprint: crate::schema::fingerprint(&source_columns),
            file_schema: arrow_schema(&def.columns),
            file_columns: def.columns.clone(),
            source_columns,
            spec,
            partition_sources,
            file_index,
            date_format: def.parameters.get(PARAM_DATE_FORMAT).cloned(),
            exact_decimals: def
                .parameters
                .get(crate::catalog::PARAM_EXACT_DECIMALS)
                .is_some_and(|v| v == "true"),
            names: def.column_names()?,
            policy: SchemaPolicy::of_def(def)?,
            defaults,
        })
    }

    /// The layout with the table's column defaults: (column, value as text), as
    /// [`crate::delta::log::Ledger::column_defaults`] gives them.
    pub(crate) fn with_defaults(mut self, defaults: &[(String, String)]) -> Self {
        self.defaults = self
            .source_columns
            .iter()
            .map(|c| {
                defaults
                    .iter()
                    .find(|(n, _)| *n == c.name)
                    .map(|(_, v)| v.clone())
            })
            .collect();
        self
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

    /// Maps a source's header (column names in file order) to the table's columns, by name:
    /// in any order; a table column the file lacks is NULL ([`usize::MAX`] in
    /// [`HeaderMap::pos_of_col`]); a header column the table lacks is listed in
    /// [`HeaderMap::unknown`] for the schema policy to decide. Refused, naming the file: a name
    /// twice, and a file without a column the partitions come from.
    pub fn map_header(&self, header: &[String], file: &str) -> Result<HeaderMap> {
        let mut pos_of_col = vec![usize::MAX; self.source_columns.len()];
        let mut unknown = Vec::new();
        let mut unknown_as_written = Vec::new();
        let names: Vec<String> = header
            .iter()
            .map(|h| self.names.apply(h).into_owned())
            .collect();
        for (hpos, h) in names.iter().enumerate() {
            if let Some(first) = names[..hpos].iter().position(|n| n == h) {
                let why = if header[first] == header[hpos] {
                    format!("column {h:?} appears twice in the header")
                } else {
                    format!(
                        "columns {:?} and {:?} of the header are both {h:?} in table {} (its column names are {})",
                        header[first],
                        header[hpos],
                        self.name,
                        self.names.name()
                    )
                };
                return Err(Error::invalid_at(file, Some(1), why));
            }
            match self.source_columns.iter().position(|c| &c.name == h) {
                Some(i) => pos_of_col[i] = hpos,
                None => {
                    unknown.push((hpos, h.clone()));
                    unknown_as_written.push(header[hpos].clone());
                }
            }
        }
        self.check_partition_columns(&names, file, Some(1), "the header")?;
        Ok(HeaderMap {
            pos_of_col,
            fields: header.len(),
            unknown,
            unknown_as_written,
        })
    }

    /// Fails, naming `file`, unless `columns` (a source's) include every column the partitions
    /// come from.
    pub fn check_partition_columns(
        &self,
        columns: &[String],
        file: &str,
        line: Option<u64>,
        what: &str,
    ) -> Result<()> {
        let mut missing: Vec<&str> = Vec::new();
        for i in &self.partition_sources {
            let name = self.source_columns[*i].name.as_str();
            if !columns.iter().any(|c| c == name) && !missing.contains(&name) {
                missing.push(name);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::invalid_at(
            file,
            line,
            format!(
                "{what} lacks {}, which table {} is partitioned by",
                missing.join(", "),
                self.name
            ),
        ))
    }

    /// Why rows with `columns` are refused by a table whose schema is frozen.
    pub fn frozen_reason(&self, columns: &[&str]) -> String {
        format!(
            "columns not in table {} (its schema policy is freeze): {}",
            self.name,
            columns.join(", ")
        )
    }
}

/// How a source's header maps to a table: see `TableLayout::map_header`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMap {
    /// For each source column of the table, its field position (`usize::MAX`: not in the file).
    pub pos_of_col: Vec<usize>,
    /// Fields in each record (the header's length).
    pub fields: usize,
    /// Header columns the table lacks: (field position, name).
    pub unknown: Vec<(usize, String)>,
    /// The names of `unknown` as the header writes them (before the table's naming rule).
    pub unknown_as_written: Vec<String>,
}

impl HeaderMap {
    /// The names of the columns the table lacks.
    pub fn unknown_names(&self) -> Vec<&str> {
        self.unknown.iter().map(|(_, n)| n.as_str()).collect()
    }
}
