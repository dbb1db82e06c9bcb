//! Partitioning: the `--partition-by` spec, partition values per row, and Hive-style paths.
//!
//! ```text
//! year(col)   -> year=2024/
//! month(col)  -> year=2024/month=3/
//! day(col)    -> year=2024/month=3/day=9/
//! col         -> col=<value, Hive-escaped>/
//! missing or unparseable value -> <key>=__HIVE_DEFAULT_PARTITION__/
//! ```

use std::fmt::Write;

use chrono::Datelike;

use crate::error::{Error, Result};
use crate::schema::{Column, ColumnType, Temporal};

/// Directory value for rows whose partition value is missing or unparseable.
pub const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Longest escaped partition directory name accepted (file systems allow 255 bytes).
const MAX_SEGMENT: usize = 200;

/// How a partition value is derived from the source column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    Year,
    Month,
    Day,
    Identity,
}

/// A parsed `--partition-by` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    pub source: String,
    pub transform: Transform,
}

impl PartitionSpec {
    /// Parses `year(col)`, `month(col)`, `day(col)` or a plain column name.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = || {
            Error::Config(format!(
                "--partition-by {s:?}: expected year(COL), month(COL), day(COL) or COL"
            ))
        };
        if let Some(open) = s.find('(') {
            let inner = s[open + 1..].strip_suffix(')').ok_or_else(bad)?.trim();
            let transform = match s[..open].trim().to_ascii_lowercase().as_str() {
                "year" => Transform::Year,
                "month" => Transform::Month,
                "day" => Transform::Day,
                _ => return Err(bad()),
            };
            if inner.is_empty() {
                return Err(bad());
            }
            Ok(PartitionSpec {
                source: inner.to_string(),
                transform,
            })
        } else if s.is_empty() || s.contains(')') {
            Err(bad())
        } else {
            Ok(PartitionSpec {
                source: s.to_string(),
                transform: Transform::Identity,
            })
        }
    }

    /// The partition columns this spec adds, given the source column's type.
    pub fn partition_columns(&self, source_ty: ColumnType) -> Vec<Column> {
        let int = |n: &str| Column::new(n, ColumnType::Int64);
        match self.transform {
            Transform::Year => vec![int("year")],
            Transform::Month => vec![int("year"), int("month")],
            Transform::Day => vec![int("year"), int("month"), int("day")],
            Transform::Identity => vec![Column::new(&self.source, source_ty)],
        }
    }

    /// Whether the source column is stored in the data files (identity partitions are not:
    /// their value lives in the path only).
    pub fn source_in_files(&self) -> bool {
        self.transform != Transform::Identity
    }

    /// Checks the spec against a table's columns and returns the source column.
    pub fn resolve<'a>(&self, columns: &'a [Column]) -> Result<&'a Column> {
        let col = columns
            .iter()
            .find(|c| c.name == self.source)
            .ok_or_else(|| {
                Error::Config(format!(
                    "partition column {:?} is not a column of the table (columns: {})",
                    self.source,
                    columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        if self.transform != Transform::Identity {
            for p in self.partition_columns(col.ty) {
                if columns.iter().any(|c| c.name == p.name) {
                    return Err(Error::Config(format!(
                        "partitioning by {self} adds a column {:?}, but the table already has one; partition by a plain column instead",
                        p.name
                    )));
                }
            }
            if matches!(
                col.ty,
                ColumnType::Boolean | ColumnType::Int64 | ColumnType::Float64
            ) {
                return Err(Error::Config(format!(
                    "{self}: column {:?} is {}, not a date",
                    col.name,
                    col.ty.name()
                )));
            }
        } else if matches!(col.ty, ColumnType::Float64) {
            return Err(Error::Config(format!(
                "cannot partition by floating-point column {:?}",
                col.name
            )));
        }
        Ok(col)
    }

    /// Partition directory for a date (date transforms); `None` gives the default partition.
    pub fn path_for_date(&self, t: Option<Temporal>, out: &mut String) {
        out.clear();
        let names: &[&str] = match self.transform {
            Transform::Year => &["year"],
            Transform::Month => &["year", "month"],
            Transform::Day => &["year", "month", "day"],
            Transform::Identity => unreachable!("identity partitions use path_for_value"),
        };
        match t {
            None => {
                for (i, n) in names.iter().enumerate() {
                    if i > 0 {
                        out.push('/');
                    }
                    let _ = write!(out, "{n}={DEFAULT_PARTITION}");
                }
            }
            Some(t) => {
                let d = t.date();
                let vals = [d.year() as u32, d.month(), d.day()];
                for (i, n) in names.iter().enumerate() {
                    if i > 0 {
                        out.push('/');
                    }
                    let _ = write!(out, "{n}={}", vals[i]);
                }
            }
        }
    }

    /// Partition directory for a plain value (identity transform).
    pub fn path_for_value(&self, value: Option<&str>) -> Result<String> {
        let mut out = String::with_capacity(self.source.len() + 16);
        out.push_str(&escape_path_name(&self.source));
        out.push('=');
        match value {
            None => out.push_str(DEFAULT_PARTITION),
            Some("") => out.push_str(DEFAULT_PARTITION),
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
        Ok(out)
    }
}

impl std::fmt::Display for PartitionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.transform {
            Transform::Year => write!(f, "year({})", self.source),
            Transform::Month => write!(f, "month({})", self.source),
            Transform::Day => write!(f, "day({})", self.source),
            Transform::Identity => write!(f, "{}", self.source),
        }
    }
}

/// Hive's path escaping: `%XX` for characters that are unsafe in a path segment, so that no value
/// can leave its directory (`/`, `\`), be mistaken for a key (`=`), or be a control character.
pub fn escape_path_name(s: &str) -> String {
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
pub fn unescape_path_name(s: &str) -> String {
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
pub fn parse_partition_path(path: &str) -> Vec<(String, Option<String>)> {
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

    #[test]
    fn parse_specs() {
        assert_eq!(
            PartitionSpec::parse("year(month)").unwrap(),
            PartitionSpec {
                source: "month".into(),
                transform: Transform::Year
            }
        );
        assert_eq!(
            PartitionSpec::parse(" Day( ts ) ").unwrap().transform,
            Transform::Day
        );
        assert_eq!(
            PartitionSpec::parse("country").unwrap().transform,
            Transform::Identity
        );
        for bad in ["", "year(", "year()", "week(x)", "x)"] {
            assert!(PartitionSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn date_paths() {
        let d = Temporal::Date(NaiveDate::from_ymd_opt(2024, 3, 9).unwrap());
        let mut s = String::new();
        PartitionSpec::parse("year(x)")
            .unwrap()
            .path_for_date(Some(d), &mut s);
        assert_eq!(s, "year=2024");
        PartitionSpec::parse("day(x)")
            .unwrap()
            .path_for_date(Some(d), &mut s);
        assert_eq!(s, "year=2024/month=3/day=9");
        PartitionSpec::parse("month(x)")
            .unwrap()
            .path_for_date(None, &mut s);
        assert_eq!(
            s,
            "year=__HIVE_DEFAULT_PARTITION__/month=__HIVE_DEFAULT_PARTITION__"
        );
    }

    #[test]
    fn hostile_values_stay_in_their_directory() {
        let spec = PartitionSpec::parse("c").unwrap();
        for v in ["../x", "/", "%2F", "..", ".", "a\0b", "a/../../b", "\\..\\"] {
            let p = spec.path_for_value(Some(v)).unwrap();
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
        assert!(spec.path_for_value(Some(&"x".repeat(300))).is_err());
        assert_eq!(
            spec.path_for_value(Some("")).unwrap(),
            "c=__HIVE_DEFAULT_PARTITION__"
        );
    }

    #[test]
    fn resolve_checks_columns() {
        let cols = vec![
            Column::new("d", ColumnType::Date),
            Column::new("year", ColumnType::Int64),
            Column::new("n", ColumnType::Int64),
        ];
        assert!(
            PartitionSpec::parse("year(d)")
                .unwrap()
                .resolve(&cols)
                .is_err()
        );
        assert!(
            PartitionSpec::parse("year(n)")
                .unwrap()
                .resolve(&cols)
                .is_err()
        );
        assert!(
            PartitionSpec::parse("year(zz)")
                .unwrap()
                .resolve(&cols)
                .is_err()
        );
        assert!(PartitionSpec::parse("n").unwrap().resolve(&cols).is_ok());
    }
}
