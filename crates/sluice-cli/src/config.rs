//! `sluice.toml`: optional settings, overridden by `SLUICE_*` environment variables and flags.
//!
//! ```toml
//! home = "sluice-data"          # where the embedded queue, catalog and lake live
//! lake = "file:///data/lake"    # optional: the lake somewhere else
//!
//! [tables.trips]
//! partition_by = "year(pickup)"
//! date_format = "%m/%d/%Y %H:%M"
//! null_values = ["NA", "-"]
//! delimiter = ","
//! columns = { id = "int64", pickup = "timestamp", fare = "float64" }   # declared, not inferred
//!
//! # On AWS (credentials from the standard chain: environment, AWS_PROFILE, SSO, roles)
//! #   queue = "sqs://events"  lake = "s3://lake/raw"  catalog = "glue://analytics"
//! [aws]
//! region = "eu-west-1"
//! profile = "data"                          # unless AWS_PROFILE is set
//! endpoint_url = "http://127.0.0.1:5000"    # an S3/SQS-compatible server, unless AWS_ENDPOINT_URL
//! [aws.endpoints]                           # per service, unless AWS_ENDPOINT_URL_<SERVICE>
//! s3 = "http://127.0.0.1:9000"
//! [aws.athena]
//! workgroup = "primary"
//! output_location = "s3://lake/athena-results/"
//!
//! [consumer]
//! rotate_rows = 50000000
//! rotate_bytes = 134217728
//! rotate_age_secs = 300
//! visibility_timeout_secs = 300
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Home directory of the embedded backends.
    pub home: Option<String>,
    /// Lake URL or directory (`s3://bucket/prefix` on AWS).
    pub lake: Option<String>,
    /// Queue: an embedded queue's name, `sqs://NAME` or an SQS queue URL.
    pub queue: Option<String>,
    /// Catalog: `glue://DATABASE`, or nothing for the embedded catalog.
    pub catalog: Option<String>,
    /// AWS settings (region, profile, endpoints, Athena); credentials come from the standard
    /// chain only, never from this file.
    pub aws: Option<sluice_aws::AwsSettings>,
    /// Per-table settings.
    #[serde(default)]
    pub tables: BTreeMap<String, TableConfig>,
    /// Consumer settings.
    #[serde(default)]
    pub consumer: ConsumerConfig,
}

/// Settings of one table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// `year(col)`, `month(col)`, `day(col)` or a column.
    pub partition_by: Option<String>,
    /// strftime pattern for dates that are not ISO 8601.
    pub date_format: Option<String>,
    /// Numbers written with a point become `decimal(p,s)` columns, not `float64`.
    #[serde(default)]
    pub exact_decimals: bool,
    /// `snake_case` (default) or `as-is`: how a new table names its sources' columns.
    pub column_names: Option<String>,
    /// Values that mean NULL besides the empty field.
    #[serde(default)]
    pub null_values: Vec<String>,
    /// Field delimiter (one character).
    pub delimiter: Option<String>,
    /// Quote character (one character).
    pub quote: Option<String>,
    /// Declared column types, in column order; when given, the schema is not inferred.
    pub columns: Option<toml::Table>,
    /// evolve, freeze or discard-columns (for a new table).
    pub schema_policy: Option<String>,
    /// A new keyed table's key columns, comma-separated (`--merge-key`).
    pub merge_key: Option<String>,
    /// A keyed table's column of operations (`--op-column`).
    pub op_column: Option<String>,
    /// A keyed table's column ordering a key's changes (`--sequence-by`).
    pub sequence_by: Option<String>,
    /// Store the operation column too (`--keep-op-column`).
    #[serde(default)]
    pub keep_op_column: bool,
}

/// Consumer settings.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    pub rotate_rows: Option<u64>,
    pub rotate_bytes: Option<u64>,
    pub rotate_age_secs: Option<u64>,
    pub visibility_timeout_secs: Option<u64>,
}

impl Config {
    /// Loads `path`; a missing default file is an empty configuration, a missing named file
    /// is an error.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (Path::new("sluice.toml").to_path_buf(), false),
        };
        if !path.exists() {
            if explicit {
                bail!("configuration file {} does not exist", path.display());
            }
            return Ok(Config::default());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let c: Config = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid sluice configuration", path.display()))?;
        for (name, t) in &c.tables {
            for (what, v) in [("delimiter", &t.delimiter), ("quote", &t.quote)] {
                if let Some(v) = v
                    && (v.len() != 1 || !v.is_ascii())
                {
                    bail!(
                        "{}: tables.{name}.{what} must be one ASCII character, not {v:?}",
                        path.display()
                    );
                }
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sluice.toml");
        std::fs::write(&p, "home = \"h\"\n[tables.t]\npartition_by = \"year(d)\"\nnull_values = [\"NA\"]\ncolumns = { d = \"date\" }\n[consumer]\nrotate_rows = 10\n").unwrap();
        let c = Config::load(Some(&p)).unwrap();
        assert_eq!(c.home.as_deref(), Some("h"));
        assert_eq!(c.tables["t"].null_values, vec!["NA"]);
        assert_eq!(c.consumer.rotate_rows, Some(10));
        std::fs::write(&p, "hom = \"h\"\n").unwrap();
        assert!(Config::load(Some(&p)).is_err());
        std::fs::write(&p, "[tables.t]\ndelimiter = \"ab\"\n").unwrap();
        assert!(Config::load(Some(&p)).is_err());
        assert!(Config::load(Some(&dir.path().join("missing.toml"))).is_err());
    }
}
