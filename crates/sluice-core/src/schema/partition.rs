//! Partitioning: the `--partition-by` spec, partition values per row, and Hive-style paths.
//!
//! A spec is one or more fields, separated by commas; each adds keys to the path:
//!
//! ```text
//! year(col)                -> year=2024/
//! month(col)               -> year=2024/month=3/
//! day(col)                 -> year=2024/month=3/day=9/
//! hour(col)                -> year=2024/month=3/day=9/hour=17/
//! col                      -> col=<value, Hive-escaped>/
//! year(ts) AS dep_year     -> dep_year=2024/        (AS names the key of a one-key transform…)
//! day(ts) AS dep           -> dep_year=2024/dep_month=3/dep_day=9/   (…and prefixes the others)
//! year(ts),region          -> year=2024/region=eu/
//! missing or unparseable value -> <key>=__HIVE_DEFAULT_PARTITION__/
//! ```
//!
//! A plain column is stored in the path only (not in the files); the source column of a date
//! transform stays in the files, and its keys are new integer columns.

use std::fmt::Write;

use chrono::{Datelike, NaiveDateTime, Timelike};

use crate::error::{Error, Result};
use crate::schema::{Column, ColumnType};

/// Directory value for rows whose partition value is missing or unparseable.
pub const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Longest escaped partition directory name accepted (file systems allow 255 bytes).
const MAX_SEGMENT: usize = 200;

/// How a partition value is derived from the source column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// `year=YYYY/` directories.
    Year,
    /// `year=/month=` directories.
    Month,
    /// `year=/month=/day=` directories.
    Day,
    /// `year=/month=/day=/hour=` directories (UTC for zoned times).
    Hour,
    /// The value itself.
    Identity,
}

impl Transform {
    /// The keys a date transform adds, coarsest first.
    fn units(self) -> &'static [&'static str] {
        match self {
            Transform::Year => &["year"],
            Transform::Month => &["year", "month"],
            Transform::Day => &["year", "month", "day"],
            Transform::Hour => &["year", "month", "day", "hour"],
            Transform::Identity => &[],
        }
    }
}

/// One field of a spec: a transform of a source column, with an optional key name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionField {
    /// The column the key is computed from.
    pub source: String,
    /// How.
    pub transform: Transform,
    /// `AS name`: the key of a one-key transform, or the prefix of a transform's keys.
    pub alias: Option<String>,
}

/// A parsed `--partition-by` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// The fields, in path order (none: an unpartitioned table).
    pub fields: Vec<PartitionField>,
}

impl PartitionSpec {
    /// The spec with its columns named by `rule`, as a table under that rule names them.
    pub fn named(&self, rule: crate::schema::ColumnNames) -> PartitionSpec {
        let mut spec = self.clone();
        for f in &mut spec.fields {
            f.source = rule.apply(&f.source).into_owned();
        }
        spec
    }
}

impl PartitionField {
    fn parse(s: &str, whole: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "--partition-by {whole:?}: {why}; expected fields such as year(COL), month(COL), day(COL), hour(COL) or COL, each optionally with AS NAME, separated by commas"
            ))
        };
        let s = s.trim();
        let (expr, alias) = match split_alias(s) {
            Some((e, a)) => {
                let ident = a
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ident {
                    return Err(bad(&format!(
                        "{a:?} is not a key name (letters, digits and underscores, not starting with a digit)"
                    )));
                }
                (e, Some(a.to_string()))
            }
            None => (s, None),
        };
        if let Some(open) = expr.find('(') {
            let inner = expr[open + 1..]
                .strip_suffix(')')
                .ok_or_else(|| bad("unbalanced parentheses"))?
                .trim();
            let transform = match expr[..open].trim().to_ascii_lowercase().as_str() {
                "year" => Transform::Year,
                "month" => Transform::Month,
                "day" => Transform::Day,
                "hour" => Transform::Hour,
                other => return Err(bad(&format!("unknown transform {other:?}"))),
            };
            if inner.is_empty() || inner.contains(['(', ')']) {
                return Err(bad("a transform takes one column"));
            }
            Ok(PartitionField {
                source: inner.to_string(),
                transform,
                alias,
            })
        } else if expr.is_empty() || expr.contains([')', ' ']) {
            Err(bad(&format!("{expr:?} is not a column")))
        } else if alias.is_some() {
            Err(bad(
                "a plain column is its own key: AS names the keys of year(), month(), day() and hour()",
            ))
        } else {
            Ok(PartitionField {
                source: expr.to_string(),
                transform: Transform::Identity,
                alias: None,
            })
        }
    }

    /// The names of the keys this field adds, in path order.
    pub fn key_names(&self) -> Vec<String> {
        match (self.transform, &self.alias) {
            (Transform::Identity, _) => vec![self.source.clone()],
            (Transform::Year, Some(a)) => vec![a.clone()],
            (t, Some(a)) => t.units().iter().map(|u| format!("{a}_{u}")).collect(),
            (t, None) => t.units().iter().map(|u| u.to_string()).collect(),
        }
    }

    /// Appends the path segments of a date-time value (`None`: the default partition).
    pub fn push_date_path(&self, t: Option<NaiveDateTime>, out: &mut String) {
        let vals = t.map(|t| [t.year() as u32, t.month(), t.day(), t.hour()]);
        for (i, key) in self.key_names().iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            match vals {
                Some(v) => {
                    let _ = write!(out, "{key}={}", v[i]);
                }
                None => {
                    let _ = write!(out, "{key}={DEFAULT_PARTITION}");
                }
            }
        }
    }

    /// Appends the path segment of a plain value (identity transform).
    pub fn push_value_path(&self, value: Option<&str>, out: &mut String) -> Result<()> {
        out.push_str(&escape_path_name(&self.source));
        out.push('=');
        match value {
            None | Some("") => out.push_str(DEFAULT_PARTITION),
            Some(v) => {
                let e = escape_path_name(v);
                if e.len() > MAX_SEGMENT {
                    return Err(Error::invalid(format!(
                        "partition value of {} bytes is too long for a directory name",
                        v.len()
                    )));
                }
                out.push_str(&e);
            }
        }
        Ok(())
    }
}

/// Splits `expr AS name` (any case of AS).
fn split_alias(s: &str) -> Option<(&str, &str)> {
    let lower = s.to_ascii_lowercase();
    let at = lower.rfind(" as ")?;
    Some((s[..at].trim(), s[at + 4..].trim()))
}

impl PartitionSpec {
    /// Parses one field or several separated by commas: `year(ts)`, `hour(ts)`, `region`,
    /// `year(ts) AS dep_year`, `year(ts),region`.
    pub fn parse(s: &str) -> Result<Self> {
        if s.trim().is_empty() {
            return Ok(PartitionSpec::unpartitioned());
        }
        let fields = s
            .split(',')
            .map(|f| PartitionField::parse(f, s))
            .collect::<Result<Vec<_>>>()?;
        let spec = PartitionSpec { fields };
        let keys = spec.key_names();
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].contains(k) {
                return Err(Error::Config(format!(
                    "--partition-by {s:?}: two fields give the key {k:?}; name one with AS"
                )));
            }
        }
        Ok(spec)
    }

    /// Every key, in path order.
    pub fn key_names(&self) -> Vec<String> {
        self.fields.iter().flat_map(|f| f.key_names()).collect()
    }

    /// No partitions: every file in the table's directory (written as the empty spec, `""`).
    pub fn unpartitioned() -> Self {
        PartitionSpec { fields: Vec::new() }
    }

    /// Whether the table has no partitions.
    pub fn is_unpartitioned(&self) -> bool {
        self.fields.is_empty()
    }

    /// The spec for people: `year(ts),region`, or `nothing (unpartitioned)`.
    pub fn describe(&self) -> String {
        if self.is_unpartitioned() {
            "nothing (unpartitioned)".into()
        } else {
            self.to_string()
        }
    }

    /// Whether `column` is kept in the path only (a plain-column field's source).
    pub fn in_path_only(&self, column: &str) -> bool {
        self.fields
            .iter()
            .any(|f| f.transform == Transform::Identity && f.source == column)
    }

    /// Checks the spec against a table's source columns; returns the partition key columns.
    pub fn partition_columns(&self, columns: &[Column]) -> Result<Vec<Column>> {
        let mut keys = Vec::new();
        for f in &self.fields {
            let col = columns.iter().find(|c| c.name == f.source).ok_or_else(|| {
                Error::Config(format!(
                    "partition column {:?} is not a column of the table (columns: {})",
                    f.source,
                    columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            if col.ty.is_nested() {
                return Err(Error::Config(format!(
                    "cannot partition by column {:?}: it is {}, and a partition value is one date, number, boolean or text",
                    col.name, col.ty
                )));
            }
            if f.transform == Transform::Identity {
                if matches!(
                    col.ty,
                    ColumnType::Float32
                        | ColumnType::Float64
                        | ColumnType::Decimal { .. }
                        | ColumnType::Binary
                ) {
                    return Err(Error::Config(format!(
                        "cannot partition by column {:?}: it is {}, and a folder per value of a {} column is not a partitioning (partition by a date, an integer, a boolean or text)",
                        col.name,
                        col.ty,
                        if col.ty == ColumnType::Binary {
                            "binary"
                        } else {
                            "number"
                        }
                    )));
                }
                keys.push(col.clone());
                continue;
            }
            if !matches!(
                col.ty,
                ColumnType::Date
                    | ColumnType::Timestamp
                    | ColumnType::TimestampTz
                    | ColumnType::String
            ) {
                return Err(Error::Config(format!(
                    "{}: column {:?} is {}, not a date",
                    display_field(f),
                    col.name,
                    col.ty.name()
                )));
            }
            for k in f.key_names() {
                if columns.iter().any(|c| c.name == k) {
                    let named = PartitionField {
                        alias: Some(if f.transform == Transform::Year {
                            format!("{}_year", f.source)
                        } else {
                            f.source.clone()
                        }),
                        ..f.clone()
                    };
                    return Err(Error::Config(format!(
                        "partitioning by {} adds a column {k:?}, but the table already has one; name the keys with AS, as in `{}` (keys {})",
                        display_field(f),
                        display_field(&named),
                        named.key_names().join(", "),
                    )));
                }
                keys.push(Column::new(k, ColumnType::Int64));
            }
        }
        Ok(keys)
    }
}

fn transform_name(t: Transform) -> &'static str {
    match t {
        Transform::Year => "year",
        Transform::Month => "month",
        Transform::Day => "day",
        Transform::Hour => "hour",
        Transform::Identity => "",
    }
}

fn display_field(f: &PartitionField) -> String {
    let mut s = match f.transform {
        Transform::Identity => f.source.clone(),
        t => format!("{}({})", transform_name(t), f.source),
    };
    if let Some(a) = &f.alias {
        let _ = write!(s, " AS {a}");
    }
    s
}

impl std::fmt::Display for PartitionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<String> = self.fields.iter().map(display_field).collect();
        write!(f, "{}", fields.join(","))
    }
}

/// Hive's path escaping: `%XX` for characters that are unsafe in a path segment, so that no value
/// can leave its directory (`/`, `\`), be mistaken for a key (`=`), or be a control character.
pub(crate) fn escape_path_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let esc = c.is_control()
            || matches!(
                c,
                '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^'
            );
        if esc {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    // A value of "." or ".." must not be a path segment of its own; it never is (the segment is
    // `key=value`), but escape leading dots anyway so listings never show dot-directories.
    if out.starts_with('.') {
        out.replace_range(0..1, "%2E");
    }
    out
}

/// Reverses [`escape_path_name`].
pub(crate) fn unescape_path_name(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(b[i + 1]) * 16 + hex(b[i + 2]));
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a partition directory (`year=2024/month=3`) into `(key, value)` pairs, unescaped.
/// The default partition gives `None`.
pub(crate) fn parse_partition_path(path: &str) -> Vec<(String, Option<String>)> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .filter_map(|seg| {
            let (k, v) = seg.split_once('=')?;
            let v = if v == DEFAULT_PARTITION {
                None
            } else {
                Some(unescape_path_name(v))
            };
            Some((unescape_path_name(k), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn path_of(spec: &str, t: Option<NaiveDateTime>) -> String {
        let mut s = String::new();
        let spec = PartitionSpec::parse(spec).unwrap();
        for (i, f) in spec.fields.iter().enumerate() {
            if i > 0 {
                s.push('/');
            }
            if f.transform == Transform::Identity {
                f.push_value_path(Some("eu"), &mut s).unwrap();
            } else {
                f.push_date_path(t, &mut s);
            }
        }
        s
    }

    #[test]
    fn parse_specs() {
        assert_eq!(
            PartitionSpec::parse("year(month)").unwrap().fields,
            vec![PartitionField {
                source: "month".into(),
                transform: Transform::Year,
                alias: None,
            }]
        );
        assert_eq!(
            PartitionSpec::parse(" Day( ts ) ").unwrap().fields[0].transform,
            Transform::Day
        );
        assert_eq!(
            PartitionSpec::parse("country").unwrap().fields[0].transform,
            Transform::Identity
        );
        let multi = PartitionSpec::parse("year(time_hour) as dep_year, region").unwrap();
        assert_eq!(multi.key_names(), ["dep_year", "region"]);
        assert_eq!(multi.to_string(), "year(time_hour) AS dep_year,region");
        assert_eq!(PartitionSpec::parse(&multi.to_string()).unwrap(), multi);
        assert_eq!(
            PartitionSpec::parse("hour(ts) AS t").unwrap().key_names(),
            ["t_year", "t_month", "t_day", "t_hour"]
        );
        // The empty spec is an unpartitioned table (as its catalog entry stores it).
        assert!(PartitionSpec::parse("").unwrap().is_unpartitioned());
        assert_eq!(PartitionSpec::parse(" ").unwrap().to_string(), "");
        for bad in [
            "year(",
            "year()",
            "week(x)",
            "x)",
            "region AS r",
            "year(a),year(b)",
            "year(a),",
            "year(a) AS 9x",
        ] {
            assert!(PartitionSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn date_paths() {
        let t = NaiveDate::from_ymd_opt(2024, 3, 9)
            .unwrap()
            .and_hms_opt(17, 5, 0)
            .unwrap();
        assert_eq!(path_of("year(x)", Some(t)), "year=2024");
        assert_eq!(path_of("day(x)", Some(t)), "year=2024/month=3/day=9");
        assert_eq!(
            path_of("hour(x)", Some(t)),
            "year=2024/month=3/day=9/hour=17"
        );
        assert_eq!(path_of("year(x) AS y,r", Some(t)), "y=2024/r=eu");
        assert_eq!(
            path_of("month(x)", None),
            "year=__HIVE_DEFAULT_PARTITION__/month=__HIVE_DEFAULT_PARTITION__"
        );
    }

    #[test]
    fn hostile_values_stay_in_their_directory() {
        let spec = PartitionSpec::parse("c").unwrap();
        let f = &spec.fields[0];
        let path = |v: Option<&str>| {
            let mut s = String::new();
            f.push_value_path(v, &mut s).map(|_| s)
        };
        for v in ["../x", "/", "%2F", "..", ".", "a\0b", "a/../../b", "\\..\\"] {
            let p = path(Some(v)).unwrap();
            assert!(!p.contains('/'), "{v:?} -> {p}");
            assert!(!p.contains('\0'));
            assert!(p.starts_with("c="));
            assert_ne!(&p[2..], "..");
            assert_ne!(&p[2..], ".");
            assert_eq!(
                parse_partition_path(&p),
                vec![("c".to_string(), Some(v.to_string()))]
            );
        }
        assert!(path(Some(&"x".repeat(300))).is_err());
        assert_eq!(path(Some("")).unwrap(), "c=__HIVE_DEFAULT_PARTITION__");
    }

    #[test]
    fn partition_columns_check_the_table() {
        let cols = vec![
            Column::new("d", ColumnType::Date),
            Column::new("year", ColumnType::Int64),
            Column::new("n", ColumnType::Int64),
            Column::new("r", ColumnType::String),
        ];
        let keys = |s: &str| PartitionSpec::parse(s).unwrap().partition_columns(&cols);
        let e = keys("year(d)").unwrap_err().to_string();
        assert!(e.contains("AS"), "{e}");
        assert!(keys("year(n)").is_err());
        assert!(keys("year(zz)").is_err());
        assert!(keys("n").is_ok());
        let k = keys("day(d) AS d,r").unwrap();
        let names: Vec<&str> = k.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["d_year", "d_month", "d_day", "r"]);
        assert_eq!(k[3].ty, ColumnType::String);
    }
}
