//! Column types, table schemas, value parsing (numbers, dates, timestamps) and schema inference.

pub(crate) mod json;
pub mod partition;

use json::Members;

use std::borrow::Cow;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The types a column can have. Timestamps are stored in microseconds, which every engine reads.
///
/// Written in configuration files and shown by `catalog schema` as [`ColumnType::name`] gives it
/// (`int64`, `decimal(12,2)`, …); [`ColumnType::parse`] also takes the SQL spellings (`bigint`,
/// `int`, `smallint`, `tinyint`, `float`, `double`, `numeric(p,s)`, `bytea`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// `true` or `false` (`boolean`).
    Boolean,
    /// An 8-bit signed integer (Delta `byte`, SQL `tinyint`).
    Int8,
    /// A 16-bit signed integer (Delta `short`, SQL `smallint`).
    Int16,
    /// A 32-bit signed integer (Delta `integer`, SQL `int`).
    Int32,
    /// A 64-bit signed integer (Delta `long`, SQL `bigint`).
    Int64,
    /// A 32-bit float (Delta and SQL `float`).
    Float32,
    /// A 64-bit float (`double`).
    Float64,
    /// An exact decimal number of `precision` digits, `scale` of them after the point
    /// (1 ≤ precision ≤ 38, scale ≤ precision): Delta and SQL `decimal(p,s)`.
    Decimal {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// A calendar date.
    Date,
    /// A date and time without zone (Parquet `isAdjustedToUTC = false`).
    Timestamp,
    /// An instant, stored as UTC (Parquet `isAdjustedToUTC = true`).
    TimestampTz,
    /// UTF-8 text (`string`).
    String,
    /// Bytes (`binary`). From text sources the value is written in hexadecimal, optionally
    /// after `\x` or `0x`, as PostgreSQL prints `bytea` and Arrow writes binary as JSON.
    Binary,
    /// A record of named fields (Delta `struct`, SQL `struct<id:bigint,name:string>`). From
    /// text sources the value is a JSON object.
    Struct(&'static [StructField]),
    /// A list of values of one type (Delta `array`, SQL `array<string>`). From text sources
    /// the value is a JSON array.
    List(&'static ColumnType),
    /// Keys to values (Delta `map`, SQL `map<string,int64>`); a key is never NULL. From text
    /// sources the value is a JSON object.
    Map(&'static (ColumnType, ColumnType)),
}

/// A field of a struct type: every field may hold NULL, as every column may.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StructField {
    /// The field's name.
    pub name: String,
    /// The field's type.
    pub ty: ColumnType,
}

impl StructField {
    /// A field `name` of type `ty`.
    pub fn new(name: impl Into<String>, ty: ColumnType) -> Self {
        StructField {
            name: name.into(),
            ty,
        }
    }
}

/// Nested types are interned: each distinct one is allocated once for the life of the process
/// (a process sees as many as its tables' schemas hold), which keeps [`ColumnType`] `Copy`.
fn intern<T: ?Sized + Eq + std::hash::Hash + Send + Sync + 'static>(
    set: &std::sync::Mutex<std::collections::HashSet<&'static T>>,
    value: Box<T>,
) -> &'static T {
    let mut set = set
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(v) = set.get(&*value) {
        return v;
    }
    let v: &'static T = Box::leak(value);
    set.insert(v);
    v
}

type Interned<T> = std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<&'static T>>>;
static STRUCTS: Interned<[StructField]> = std::sync::LazyLock::new(Default::default);
static LISTS: Interned<ColumnType> = std::sync::LazyLock::new(Default::default);
static MAPS: Interned<(ColumnType, ColumnType)> = std::sync::LazyLock::new(Default::default);

/// A struct field's name as written inside a type name: in backquotes unless it is a plain
/// identifier.
fn field_name(name: &str) -> Cow<'_, str> {
    let plain = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("`{name}`"))
    }
}

/// A nested type's name, its parts named by `leaf`.
fn nested_name(ty: ColumnType, leaf: &dyn Fn(ColumnType) -> Cow<'static, str>) -> String {
    match ty {
        ColumnType::Struct(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|f| format!("{}:{}", field_name(&f.name), nested_name(f.ty, leaf)))
                .collect();
            format!("struct<{}>", fields.join(","))
        }
        ColumnType::List(elem) => format!("array<{}>", nested_name(*elem, leaf)),
        ColumnType::Map((k, v)) => {
            format!("map<{},{}>", nested_name(*k, leaf), nested_name(*v, leaf))
        }
        other => leaf(other).into_owned(),
    }
}

/// Reads a type name with nested types: `struct<a:int64,`b c`:array<string>>`.
struct TypeParser<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> TypeParser<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.ws();
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("expected {c:?}")))
        }
    }

    fn error(&self, what: &str) -> Error {
        Error::Config(format!(
            "column type {:?}: {what} at character {}",
            self.s,
            self.s[..self.pos].chars().count() + 1
        ))
    }

    fn ty(&mut self) -> Result<ColumnType> {
        self.ws();
        let start = self.pos;
        let word_len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest().len());
        let word = self.rest()[..word_len].to_ascii_lowercase();
        self.pos += word_len;
        self.ws();
        if self.rest().starts_with('<') {
            self.pos += 1;
            let t = match word.as_str() {
                "struct" => {
                    let mut fields: Vec<StructField> = Vec::new();
                    if !self.eat('>') {
                        loop {
                            let name = self.field_name()?;
                            if fields.iter().any(|f| f.name == name) {
                                return Err(self.error(&format!("field {name:?} twice")));
                            }
                            self.expect(':')?;
                            fields.push(StructField::new(name, self.ty()?));
                            if self.eat('>') {
                                break;
                            }
                            self.expect(',')?;
                        }
                    }
                    ColumnType::structure(fields)?
                }
                "array" | "list" => {
                    let elem = self.ty()?;
                    self.expect('>')?;
                    ColumnType::list(elem)
                }
                "map" => {
                    let k = self.ty()?;
                    self.expect(',')?;
                    let v = self.ty()?;
                    self.expect('>')?;
                    ColumnType::map(k, v)?
                }
                _ => return Err(self.error(&format!("{word:?} takes no <…>"))),
            };
            return Ok(t);
        }
        // A primitive: up to the next ',' or '>' outside parentheses.
        let mut depth = 0i32;
        let end = self.s[start..]
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' | '>' if depth == 0 => return true,
                    _ => {}
                }
                false
            })
            .map(|(i, _)| start + i)
            .unwrap_or(self.s.len());
        self.pos = end;
        ColumnType::parse_primitive(&self.s[start..end])
    }

    fn field_name(&mut self) -> Result<String> {
        self.ws();
        if let Some(r) = self.rest().strip_prefix('`') {
            let end = r.find('`').ok_or_else(|| self.error("unterminated `"))?;
            let name = r[..end].to_string();
            self.pos += end + 2;
            return Ok(name);
        }
        let len = self
            .rest()
            .find(|c: char| c == ':' || c.is_whitespace())
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(self.error("expected a field name"));
        }
        let name = self.rest()[..len].to_string();
        self.pos += len;
        Ok(name)
    }
}

/// The name of a list's element field in Arrow and Parquet (the Parquet format's name, which
/// Spark and Delta write).
pub const LIST_ELEMENT: &str = "element";
/// The names of a map's entries, key and value fields (the Parquet format's names).
pub const MAP_ENTRIES: &str = "key_value";
/// See [`MAP_ENTRIES`].
pub const MAP_KEY: &str = "key";
/// See [`MAP_ENTRIES`].
pub const MAP_VALUE: &str = "value";

/// The largest decimal precision: 38 digits fit 128 bits, the most Delta, Spark and Athena take.
pub const MAX_DECIMAL_PRECISION: u8 = 38;

impl ColumnType {
    /// A decimal type, checked: `1 ≤ precision ≤ 38`, `scale ≤ precision`.
    pub fn decimal(precision: u8, scale: u8) -> Result<Self> {
        if precision == 0 || precision > MAX_DECIMAL_PRECISION || scale > precision {
            return Err(Error::Config(format!(
                "decimal({precision},{scale}) is not a decimal type: the precision is 1 to {MAX_DECIMAL_PRECISION} digits and the scale at most the precision"
            )));
        }
        Ok(ColumnType::Decimal { precision, scale })
    }

    /// A struct type of `fields` (at least one, names distinct).
    pub fn structure(fields: Vec<StructField>) -> Result<Self> {
        if fields.is_empty() {
            return Err(Error::Config(
                "a struct needs at least one field (Parquet has no empty groups)".into(),
            ));
        }
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].iter().any(|g| g.name == f.name) {
                return Err(Error::Config(format!(
                    "struct field {:?} is named twice",
                    f.name
                )));
            }
        }
        Ok(ColumnType::Struct(intern(
            &STRUCTS,
            fields.into_boxed_slice(),
        )))
    }

    /// A list type of `elem` values.
    pub fn list(elem: ColumnType) -> Self {
        ColumnType::List(intern(&LISTS, Box::new(elem)))
    }

    /// A map type from `key` to `value`; keys must be primitive.
    pub fn map(key: ColumnType, value: ColumnType) -> Result<Self> {
        if key.is_nested() {
            return Err(Error::Config(format!(
                "map<{key},{value}>: a map's keys must be of a primitive type"
            )));
        }
        Ok(ColumnType::Map(intern(&MAPS, Box::new((key, value)))))
    }

    /// This type with the struct fields `other` has and it lacks, at every depth (inside
    /// structs, list elements and map values), added after its own; every other part keeps this
    /// type's. Schema evolution by name inside structs: files written for this type are valid
    /// for the result (the fields they lack read as NULL).
    pub fn widened(self, other: ColumnType) -> ColumnType {
        match (self, other) {
            (ColumnType::Struct(a), ColumnType::Struct(b)) => {
                let mut fields: Vec<StructField> = a
                    .iter()
                    .map(|f| match b.iter().find(|g| g.name == f.name) {
                        Some(g) => StructField::new(f.name.clone(), f.ty.widened(g.ty)),
                        None => f.clone(),
                    })
                    .collect();
                fields.extend(
                    b.iter()
                        .filter(|g| !a.iter().any(|f| f.name == g.name))
                        .cloned(),
                );
                ColumnType::structure(fields).unwrap_or(self)
            }
            (ColumnType::List(a), ColumnType::List(b)) => ColumnType::list(a.widened(*b)),
            (ColumnType::Map((ka, va)), ColumnType::Map((kb, vb))) if ka == kb => {
                ColumnType::map(*ka, va.widened(*vb)).unwrap_or(self)
            }
            _ => self,
        }
    }

    /// Whether this type is `narrower` or `narrower` with struct fields added (see
    /// [`ColumnType::widened`]): files written for `narrower` are valid for this type.
    pub fn widens(self, narrower: ColumnType) -> bool {
        match (self, narrower) {
            (a, b) if a == b => true,
            (ColumnType::Struct(a), ColumnType::Struct(b)) => b.iter().all(|f| {
                a.iter()
                    .find(|g| g.name == f.name)
                    .is_some_and(|g| g.ty.widens(f.ty))
            }),
            (ColumnType::List(a), ColumnType::List(b)) => a.widens(*b),
            (ColumnType::Map((ka, va)), ColumnType::Map((kb, vb))) => ka == kb && va.widens(*vb),
            _ => false,
        }
    }

    /// Whether the type is a struct, list or map.
    pub fn is_nested(self) -> bool {
        matches!(
            self,
            ColumnType::Struct(_) | ColumnType::List(_) | ColumnType::Map(_)
        )
    }

    /// The type with the names of its struct fields, at every depth, named by `rule`; two
    /// fields of one struct that the rule names alike are refused.
    pub fn named(self, rule: ColumnNames) -> Result<Self> {
        Ok(match self {
            ColumnType::Struct(fields) => {
                let mut out: Vec<StructField> = Vec::with_capacity(fields.len());
                for f in fields {
                    let name = rule.apply(&f.name).into_owned();
                    if let Some(other) = fields
                        .iter()
                        .take_while(|g| g.name != f.name)
                        .find(|g| rule.apply(&g.name) == name)
                    {
                        return Err(Error::invalid(format!(
                            "struct fields {:?} and {:?} would both be {name:?} (column names are {}): rename one, or keep names as they come with --column-names as-is",
                            other.name,
                            f.name,
                            rule.name()
                        )));
                    }
                    out.push(StructField::new(name, f.ty.named(rule)?));
                }
                ColumnType::structure(out)?
            }
            ColumnType::List(elem) => ColumnType::list(elem.named(rule)?),
            ColumnType::Map((k, v)) => ColumnType::map(*k, v.named(rule)?)?,
            other => other,
        })
    }

    /// The Arrow type written to Parquet.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Int8 => DataType::Int8,
            ColumnType::Int16 => DataType::Int16,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float32 => DataType::Float32,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Decimal { precision, scale } => {
                DataType::Decimal128(precision, scale as i8)
            }
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            ColumnType::String => DataType::Utf8,
            ColumnType::Binary => DataType::Binary,
            ColumnType::Struct(fields) => DataType::Struct(
                fields
                    .iter()
                    .map(|f| Field::new(&f.name, f.ty.arrow_type(), true))
                    .collect(),
            ),
            ColumnType::List(elem) => {
                DataType::List(Arc::new(Field::new(LIST_ELEMENT, elem.arrow_type(), true)))
            }
            ColumnType::Map((k, v)) => DataType::Map(
                Arc::new(Field::new(
                    MAP_ENTRIES,
                    DataType::Struct(
                        vec![
                            Field::new(MAP_KEY, k.arrow_type(), false),
                            Field::new(MAP_VALUE, v.arrow_type(), true),
                        ]
                        .into(),
                    ),
                    false,
                )),
                false,
            ),
        }
    }

    /// The column type whose [`ColumnType::arrow_type`] is `t` (any zone for a timestamp in
    /// microseconds); `None` for any other Arrow type.
    pub fn of_arrow(t: &DataType) -> Option<Self> {
        Some(match t {
            DataType::Boolean => ColumnType::Boolean,
            DataType::Int8 => ColumnType::Int8,
            DataType::Int16 => ColumnType::Int16,
            DataType::Int32 => ColumnType::Int32,
            DataType::Int64 => ColumnType::Int64,
            DataType::Float32 => ColumnType::Float32,
            DataType::Float64 => ColumnType::Float64,
            DataType::Decimal128(p, s) => ColumnType::decimal(*p, u8::try_from(*s).ok()?).ok()?,
            DataType::Date32 => ColumnType::Date,
            DataType::Timestamp(TimeUnit::Microsecond, None) => ColumnType::Timestamp,
            DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => ColumnType::TimestampTz,
            DataType::Utf8 => ColumnType::String,
            DataType::Binary => ColumnType::Binary,
            DataType::Struct(fields) => ColumnType::structure(
                fields
                    .iter()
                    .map(|f| {
                        Some(StructField::new(
                            f.name(),
                            ColumnType::of_arrow(f.data_type())?,
                        ))
                    })
                    .collect::<Option<_>>()?,
            )
            .ok()?,
            DataType::List(elem) => ColumnType::list(ColumnType::of_arrow(elem.data_type())?),
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => ColumnType::map(
                    ColumnType::of_arrow(kv[0].data_type())?,
                    ColumnType::of_arrow(kv[1].data_type())?,
                )
                .ok()?,
                _ => return None,
            },
            _ => return None,
        })
    }

    /// The Hive / Glue / Athena type name.
    pub fn hive_type(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            ColumnType::Boolean => "boolean",
            ColumnType::Int8 => "tinyint",
            ColumnType::Int16 => "smallint",
            ColumnType::Int32 => "int",
            ColumnType::Int64 => "bigint",
            ColumnType::Float32 => "float",
            ColumnType::Float64 => "double",
            ColumnType::Decimal { precision, scale } => {
                return Cow::Owned(format!("decimal({precision},{scale})"));
            }
            ColumnType::Date => "date",
            ColumnType::Timestamp | ColumnType::TimestampTz => "timestamp",
            ColumnType::String => "string",
            ColumnType::Binary => "binary",
            nested => return Cow::Owned(nested_name(nested, &ColumnType::hive_type)),
        })
    }

    /// The name used in configuration files and `catalog schema` output.
    pub fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            ColumnType::Boolean => "boolean",
            ColumnType::Int8 => "int8",
            ColumnType::Int16 => "int16",
            ColumnType::Int32 => "int32",
            ColumnType::Int64 => "int64",
            ColumnType::Float32 => "float32",
            ColumnType::Float64 => "float64",
            ColumnType::Decimal { precision, scale } => {
                return Cow::Owned(format!("decimal({precision},{scale})"));
            }
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
            ColumnType::TimestampTz => "timestamp_tz",
            ColumnType::String => "string",
            ColumnType::Binary => "binary",
            nested => return Cow::Owned(nested_name(nested, &ColumnType::name)),
        })
    }

    /// Whether the type is an integer of any width.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            ColumnType::Int8 | ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64
        )
    }

    /// The range of an integer type.
    pub(crate) fn integer_range(self) -> Option<(i64, i64)> {
        Some(match self {
            ColumnType::Int8 => (i8::MIN.into(), i8::MAX.into()),
            ColumnType::Int16 => (i16::MIN.into(), i16::MAX.into()),
            ColumnType::Int32 => (i32::MIN.into(), i32::MAX.into()),
            ColumnType::Int64 => (i64::MIN, i64::MAX),
            _ => return None,
        })
    }

    /// Parses a type name as written in `sluice.toml`, with the SQL spellings: `int`, `integer`
    /// and `int4` are 32-bit as in SQL, Spark and Delta; `float` and `real` are 32-bit, `double`
    /// 64-bit; `decimal(p,s)` (or `numeric(p,s)`) needs its precision and scale. Nested types
    /// are written `struct<name:type,…>` (a field name in backquotes when it is not a plain
    /// identifier), `array<type>` (or `list<type>`) and `map<key,value>`.
    pub fn parse(s: &str) -> Result<Self> {
        if !s.contains('<') {
            return ColumnType::parse_primitive(s);
        }
        let mut p = TypeParser { s, pos: 0 };
        let t = p.ty()?;
        p.ws();
        if p.pos != s.len() {
            return Err(p.error("unexpected text"));
        }
        Ok(t)
    }

    /// Parses a primitive type's name.
    fn parse_primitive(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let compact: std::string::String = lower.chars().filter(|c| !c.is_whitespace()).collect();
        if let Some(args) = compact
            .strip_prefix("decimal")
            .or_else(|| compact.strip_prefix("numeric"))
        {
            let bad = || {
                Error::Config(format!(
                    "column type {s:?}: a decimal is written decimal(precision,scale), as in decimal(12,2)"
                ))
            };
            let inner = args
                .strip_prefix('(')
                .and_then(|a| a.strip_suffix(')'))
                .ok_or_else(bad)?;
            let (p, sc) = inner.split_once(',').ok_or_else(bad)?;
            let p: u8 = p.parse().map_err(|_| bad())?;
            let sc: u8 = sc.parse().map_err(|_| bad())?;
            return ColumnType::decimal(p, sc);
        }
        Ok(match compact.as_str() {
            "boolean" | "bool" => ColumnType::Boolean,
            "int8" | "tinyint" | "byte" => ColumnType::Int8,
            "int16" | "smallint" | "short" | "int2" => ColumnType::Int16,
            "int32" | "int" | "integer" | "int4" => ColumnType::Int32,
            "int64" | "bigint" | "long" => ColumnType::Int64,
            "float32" | "float" | "real" | "float4" => ColumnType::Float32,
            "float64" | "double" | "float8" | "doubleprecision" => ColumnType::Float64,
            "date" => ColumnType::Date,
            "timestamp" | "datetime" | "timestamp_ntz" => ColumnType::Timestamp,
            "timestamp_tz" | "timestamptz" => ColumnType::TimestampTz,
            "string" | "text" | "utf8" | "varchar" => ColumnType::String,
            "binary" | "bytes" | "bytea" | "blob" | "varbinary" => ColumnType::Binary,
            _ => {
                return Err(Error::Config(format!(
                    "unknown column type {s:?} (types: boolean, int8, int16, int32, int64, float32, float64, decimal(p,s), date, timestamp, timestamp_tz, string, binary, struct<name:type,…>, array<type>, map<key,value>)"
                )));
            }
        })
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for ColumnType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = std::string::String::deserialize(d)?;
        ColumnType::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// The column's type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// The name its sources gave it, when the table's naming rule changed it
    /// ([`ColumnNames::SnakeCase`]): `Unit Price ($)` for `unit_price`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_name: Option<String>,
}

impl Column {
    /// A column `name` of type `ty`.
    pub fn new(name: impl Into<String>, ty: ColumnType) -> Self {
        Column {
            name: name.into(),
            ty,
            source_name: None,
        }
    }
}

/// How a table names the columns its sources bring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColumnNames {
    /// As they come (`Unit Price ($)`): what tables made before this rule, and tables of
    /// other engines, do.
    #[default]
    AsTheyCome,
    /// Lowercase snake_case, as Glue and Athena want them (`unit_price`), by
    /// [`snake_case`]; the name as it came is kept in the column's metadata.
    SnakeCase,
}

impl ColumnNames {
    /// Parses `snake_case` or `as-is`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "snake_case" | "snake-case" => Ok(ColumnNames::SnakeCase),
            "as-is" | "as_is" => Ok(ColumnNames::AsTheyCome),
            other => Err(Error::Config(format!(
                "column names {other:?}: use snake_case or as-is"
            ))),
        }
    }

    /// The name in table properties and `catalog schema`.
    pub fn name(self) -> &'static str {
        match self {
            ColumnNames::AsTheyCome => "as-is",
            ColumnNames::SnakeCase => "snake_case",
        }
    }

    /// The table's name for a source's column `name`.
    pub fn apply(self, name: &str) -> Cow<'_, str> {
        match self {
            ColumnNames::AsTheyCome => Cow::Borrowed(name),
            ColumnNames::SnakeCase => {
                let s = snake_case(name);
                if s == name {
                    Cow::Borrowed(name)
                } else {
                    Cow::Owned(s)
                }
            }
        }
    }
}

/// A column name in lowercase snake_case: a word boundary inside camelCase (`orderDate`,
/// `OrderID`, `HTTPServer`) becomes `_`, every run of characters other than ASCII letters and
/// digits (spaces, punctuation, accented letters) becomes one `_`, `_` at either end is dropped,
/// and the rest is lowercased. A name that starts with a digit gets a leading `_`; one with
/// nothing left is `column`. `Unit Price ($)` → `unit_price`, `orderDate` → `order_date`,
/// `2024 Sales` → `_2024_sales`.
pub fn snake_case(name: &str) -> std::string::String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = std::string::String::with_capacity(name.len());
    let mut gap = false;
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            gap = true;
            continue;
        }
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            // orderDate, order2Date; HTTPServer (the S of Server).
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                gap = true;
            }
        }
        if gap && !out.is_empty() {
            out.push('_');
        }
        gap = false;
        out.push(c.to_ascii_lowercase());
    }
    if out.is_empty() {
        return "column".into();
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Checks a table or column name: it becomes a path segment and an SQL identifier.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{kind} name {name:?} is not valid: use 1 to 255 ASCII letters, digits and underscores, not starting with a digit"
        )))
    }
}

/// Checks a column name from a CSV header: anything printable except a few characters that break
/// Hive paths and engines.
pub(crate) fn validate_column_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '=' | '`' | '"'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "column name {name:?} is not valid (control characters, '/', '=', '`' and '\"' are not allowed)"
        )))
    }
}

/// Fingerprint of a list of columns: equal schemas have equal fingerprints.
pub(crate) fn fingerprint(columns: &[Column]) -> String {
    let json = serde_json::to_vec(columns).expect("columns serialize");
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&json))
}

/// The Arrow schema of a table's data files: every field nullable, so files written before a
/// column was added read as NULL.
pub fn arrow_schema(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.ty.arrow_type(), true))
            .collect::<Vec<_>>(),
    ))
}

/// A parsed date or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Temporal {
    Date(NaiveDate),
    Naive(NaiveDateTime),
    /// Microseconds since the epoch, UTC.
    Zoned(i64),
}

impl Temporal {
    /// The calendar date (UTC for zoned values).
    #[cfg(test)]
    fn date(self) -> NaiveDate {
        match self {
            Temporal::Date(d) => d,
            Temporal::Naive(t) => t.date(),
            Temporal::Zoned(us) => DateTime::from_timestamp_micros(us)
                .map(|t| t.date_naive())
                .unwrap_or_default(),
        }
    }

    /// The date and time (midnight for dates, UTC for zoned values).
    pub fn datetime(self) -> NaiveDateTime {
        match self {
            Temporal::Date(d) => d.and_time(chrono::NaiveTime::MIN),
            Temporal::Naive(t) => t,
            Temporal::Zoned(us) => DateTime::from_timestamp_micros(us)
                .map(|t| t.naive_utc())
                .unwrap_or_default(),
        }
    }
}

const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Days since 1970-01-01.
pub(crate) fn date_to_days(d: NaiveDate) -> i32 {
    use chrono::Datelike;
    d.num_days_from_ce() - EPOCH_DAYS_FROM_CE
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

/// Days since 1970-01-01 of a date written exactly `YYYY-MM-DD` (the usual form, parsed
/// without building a calendar date); `None` for anything else, which [`parse_temporal`] then
/// reads.
#[inline]
pub(crate) fn iso_date_days(b: &[u8]) -> Option<i32> {
    let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = *b else {
        return None;
    };
    let digit = |c: u8| c.wrapping_sub(b'0');
    let ds = [y0, y1, y2, y3, m0, m1, d0, d1].map(digit);
    if ds.iter().any(|d| *d > 9) {
        return None;
    }
    let y =
        i64::from(ds[0]) * 1000 + i64::from(ds[1]) * 100 + i64::from(ds[2]) * 10 + i64::from(ds[3]);
    let m = u32::from(ds[4]) * 10 + u32::from(ds[5]);
    let d = u32::from(ds[6]) * 10 + u32::from(ds[7]);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if d == 0 || d > month_days {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm), years counted from March.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) as i32)
}

/// Parses the ISO 8601 forms sluice recognises without a pattern: `YYYY-MM-DD`, `YYYY/MM/DD`,
/// each optionally followed by `T` or a space and `HH:MM[:SS[.fraction]]`, then optionally `Z` or
/// an offset `±HH[:MM]`.
pub(crate) fn parse_iso(s: &str) -> Option<Temporal> {
    let b = s.as_bytes();
    if b.len() < 10 {
        return None;
    }
    let sep = b[4];
    if !(sep == b'-' || sep == b'/') || b[7] != sep {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        digits(&b[0..4])? as i32,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    )?;
    if b.len() == 10 {
        return Some(Temporal::Date(date));
    }
    if !(b[10] == b'T' || b[10] == b' ') || b.len() < 16 || b[13] != b':' {
        return None;
    }
    let (h, m) = (digits(&b[11..13])?, digits(&b[14..16])?);
    let mut i = 16;
    let (mut sec, mut micros) = (0, 0);
    if i < b.len() && b[i] == b':' {
        sec = digits(b.get(i + 1..i + 3)?)?;
        i += 3;
        if i < b.len() && (b[i] == b'.' || b[i] == b',') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let frac = &b[start..i];
            if frac.is_empty() {
                return None;
            }
            let mut us = 0u32;
            for k in 0..6 {
                us = us * 10 + frac.get(k).map(|c| (c - b'0') as u32).unwrap_or(0);
            }
            micros = us;
        }
    }
    let time = NaiveTime::from_hms_micro_opt(h, m, sec, micros)?;
    let naive = NaiveDateTime::new(date, time);
    let rest = &b[i..];
    let offset_secs: i64 = match rest {
        [] => return Some(Temporal::Naive(naive)),
        [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (hh, mm) = match tail {
                [a, b] => (digits(&[*a, *b])?, 0),
                [a, b, c, d] => (digits(&[*a, *b])?, digits(&[*c, *d])?),
                [a, b, b':', c, d] => (digits(&[*a, *b])?, digits(&[*c, *d])?),
                _ => return None,
            };
            if hh > 23 || mm > 59 {
                return None;
            }
            let v = (hh * 3600 + mm * 60) as i64;
            if *sign == b'-' { -v } else { v }
        }
        _ => return None,
    };
    let utc = naive.and_utc().timestamp_micros() - offset_secs * 1_000_000;
    Some(Temporal::Zoned(utc))
}

/// Parses a date or time: ISO forms first, then the strftime `pattern` if one is given.
pub(crate) fn parse_temporal(s: &str, pattern: Option<&str>) -> Option<Temporal> {
    let s = s.trim();
    if let Some(t) = parse_iso(s) {
        return Some(t);
    }
    let p = pattern?;
    if let Ok(d) = NaiveDate::parse_from_str(s, p) {
        return Some(Temporal::Date(d));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, p) {
        return Some(Temporal::Naive(t));
    }
    if let Ok(t) = DateTime::parse_from_str(s, p) {
        return Some(Temporal::Zoned(t.timestamp_micros()));
    }
    None
}

/// Parses a boolean: `true`/`false` in any case.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Parses a decimal number written with digits, optional sign, point and exponent (not `inf`
/// or `NaN`, which are more often words than numbers in CSV files).
pub(crate) fn parse_f64(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if let Some(v) = parse_short_decimal(b) {
        return Some(v);
    }
    if !written_as_number(b) {
        return None;
    }
    // Beyond the type's range the standard parser gives infinity: not the number written.
    s.parse().ok().filter(|v: &f64| v.is_finite())
}

/// Whether text is written with digits, signs, a point and an exponent only (and a digit): not
/// `inf` or `NaN`, which are more often words than numbers in CSV files.
fn written_as_number(b: &[u8]) -> bool {
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.' | b'e' | b'E'))
        && b.iter().any(|c| c.is_ascii_digit())
}

/// Parses a 32-bit float as [`parse_f64`] takes text: the `f32` nearest the decimal (read
/// directly, not through an `f64`, which could round twice).
pub(crate) fn parse_f32(s: &str) -> Option<f32> {
    if !written_as_number(s.as_bytes()) {
        return None;
    }
    s.parse().ok().filter(|v: &f32| v.is_finite())
}

/// Parses a decimal number written with digits, an optional sign, point and exponent
/// (`-12.50`, `1.2e3`) exactly into its unscaled value at `scale` (`12.50` at scale 2 is
/// 1250): no floating point on the way. `Err` says why it does not fit `decimal(p,s)`: digits
/// after the point beyond the scale that are not zeros (it is never rounded), or more digits
/// before the point than `precision - scale`.
pub(crate) fn parse_decimal(s: &str, precision: u8, scale: u8) -> Result<i128, &'static str> {
    const NOT_A_NUMBER: &str = "not a decimal number";
    let b = s.as_bytes();
    let (negative, rest) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let (mantissa, exponent) = match rest.iter().position(|c| matches!(c, b'e' | b'E')) {
        Some(i) => {
            let e = std::str::from_utf8(&rest[i + 1..])
                .ok()
                .filter(|e| !e.is_empty() && e.len() <= 6)
                .and_then(|e| e.parse::<i64>().ok())
                .ok_or(NOT_A_NUMBER)?;
            (&rest[..i], e)
        }
        None => (rest, 0),
    };
    // The significant digits (leading zeros dropped) and how many were after the point.
    let mut digits: Vec<u8> = Vec::with_capacity(mantissa.len());
    let (mut after_point, mut point, mut any) = (0i64, false, false);
    for &c in mantissa {
        match c {
            b'0'..=b'9' => {
                any = true;
                if point {
                    after_point += 1;
                }
                if !(digits.is_empty() && c == b'0') {
                    digits.push(c - b'0');
                }
            }
            b'.' if !point => point = true,
            _ => return Err(NOT_A_NUMBER),
        }
    }
    if !any {
        return Err(NOT_A_NUMBER);
    }
    // value = digits × 10^(exponent - after_point); unscaled = value × 10^scale.
    let mut shift = exponent - after_point + i64::from(scale);
    while shift < 0 {
        match digits.last() {
            Some(0) => {
                digits.pop();
                shift += 1;
            }
            Some(_) => return Err("it has more digits after the point than the scale"),
            None => shift = 0,
        }
    }
    if digits.len() as i64 + if digits.is_empty() { 0 } else { shift } > i64::from(precision) {
        return Err("it has more digits before the point than the precision leaves");
    }
    let mut v: i128 = 0;
    for d in &digits {
        v = v * 10 + i128::from(*d);
    }
    if !digits.is_empty() {
        for _ in 0..shift {
            v *= 10;
        }
    }
    Ok(if negative { -v } else { v })
}

/// The text of an unscaled decimal at `scale`, as engines print it (`-12.50`).
pub fn format_decimal(unscaled: i128, scale: u8) -> std::string::String {
    let digits = unscaled.unsigned_abs().to_string();
    let scale = usize::from(scale);
    let sign = if unscaled < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Parses bytes written in hexadecimal, optionally after `\x` or `0x`: how PostgreSQL prints
/// `bytea` and Arrow writes binary values as JSON.
pub(crate) fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let h = s
        .strip_prefix("\\x")
        .or_else(|| s.strip_prefix("0x"))
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s)
        .as_bytes();
    if !h.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    h.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Powers of ten up to 10^15, each exact in an `f64`.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// `[+-]digits[.digits]` with at most 15 digits in all, as prices and quantities are written:
/// the digits as an integer (below 2^53, so exact in an `f64`) divided by a power of ten
/// (exact up to 10^22). One correctly rounded division of exact values gives the `f64`
/// nearest the decimal, which is what `str::parse` returns. `None`: another form.
#[inline]
pub(crate) fn parse_short_decimal(b: &[u8]) -> Option<f64> {
    let (negative, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.len() > 16 {
        return None;
    }
    let (mut m, mut n, mut point) = (0u64, 0usize, None);
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                m = m * 10 + u64::from(c - b'0');
                n += 1;
            }
            b'.' if point.is_none() => point = Some(i),
            _ => return None,
        }
    }
    if n == 0 || n > 15 {
        return None;
    }
    let scale = point.map_or(0, |p| digits.len() - p - 1);
    let v = m as f64 / POW10[scale];
    Some(if negative { -v } else { v })
}

/// Parses an integer.
#[inline]
pub(crate) fn parse_i64(s: &str) -> Option<i64> {
    s.parse().ok()
}

/// An integer of at most 18 digits with an optional sign, read from bytes: what
/// [`parse_i64`] gives for such text, `None` for any other (which `parse_i64` then reads).
#[inline]
pub(crate) fn parse_i64_ascii(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, b),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut v = 0i64;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + i64::from(d);
    }
    Some(if negative { -v } else { v })
}

/// What one sample value could be, for inference.
#[derive(Debug, Clone, Copy, Default)]
struct Candidates {
    seen: u64,
    boolean: bool,
    int: bool,
    float: bool,
    /// Every value is `[+-]digits[.digits]` (a decimal without exponent).
    decimal: bool,
    /// Most digits seen before the point (leading zeros aside) and after it.
    int_digits: usize,
    scale: usize,
    date: bool,
    naive: bool,
    zoned: bool,
}

impl Candidates {
    fn all() -> Self {
        Candidates {
            seen: 0,
            boolean: true,
            int: true,
            float: true,
            decimal: true,
            int_digits: 0,
            scale: 0,
            date: true,
            naive: true,
            zoned: true,
        }
    }

    fn observe(&mut self, v: &str, date_format: Option<&str>) {
        self.seen += 1;
        if self.boolean && parse_bool(v).is_none() {
            self.boolean = false;
        }
        // "007" stays text: identifiers, codes and zip codes lose meaning as numbers.
        let digits = v.strip_prefix('-').unwrap_or(v).as_bytes();
        let leading_zero = digits.len() > 1 && digits[0] == b'0' && digits[1].is_ascii_digit();
        if self.int && (leading_zero || v.starts_with('+') || parse_i64(v).is_none()) {
            self.int = false;
        }
        if self.float && (leading_zero || parse_f64(v).is_none()) {
            self.float = false;
        }
        if self.decimal {
            match decimal_digits(v) {
                Some((int_digits, scale)) if !leading_zero => {
                    self.int_digits = self.int_digits.max(int_digits);
                    self.scale = self.scale.max(scale);
                }
                _ => self.decimal = false,
            }
        }
        if self.date || self.naive || self.zoned {
            match parse_temporal(v, date_format) {
                Some(Temporal::Date(_)) => self.zoned = false,
                Some(Temporal::Naive(_)) => {
                    self.date = false;
                    self.zoned = false;
                }
                Some(Temporal::Zoned(_)) => {
                    self.date = false;
                    self.naive = false;
                }
                None => {
                    self.date = false;
                    self.naive = false;
                    self.zoned = false;
                }
            }
        }
    }

    fn decide(&self, exact_decimals: bool) -> ColumnType {
        if self.seen == 0 {
            ColumnType::String
        } else if self.boolean {
            ColumnType::Boolean
        } else if self.int {
            ColumnType::Int64
        } else if exact_decimals && let Some(t) = self.decimal_type() {
            t
        } else if self.float {
            ColumnType::Float64
        } else if self.date {
            ColumnType::Date
        } else if self.naive {
            ColumnType::Timestamp
        } else if self.zoned {
            ColumnType::TimestampTz
        } else {
            ColumnType::String
        }
    }
}

impl Candidates {
    /// The decimal type of a column whose sample values are all plain decimals: their largest
    /// scale, and a precision of 18 digits (stored in 64 bits) when that leaves at least three
    /// more digits before the point than the sample needed, else 38.
    fn decimal_type(&self) -> Option<ColumnType> {
        if !self.decimal {
            return None;
        }
        let needed = self.int_digits + self.scale;
        let precision = if needed + 3 <= 18 { 18 } else { 38 };
        if needed > usize::from(MAX_DECIMAL_PRECISION) {
            return None;
        }
        ColumnType::decimal(precision, self.scale as u8).ok()
    }
}

/// The digits of a plain decimal `[+-]digits[.digits]` before the point (leading zeros aside)
/// and after it; `None` for any other text.
fn decimal_digits(v: &str) -> Option<(usize, usize)> {
    let b = v.strip_prefix(['-', '+']).unwrap_or(v).as_bytes();
    let (int, frac) = match b.iter().position(|c| *c == b'.') {
        Some(p) => (&b[..p], &b[p + 1..]),
        None => (b, &b[b.len()..]),
    };
    if int.is_empty() && frac.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    let significant = int.iter().skip_while(|c| **c == b'0').count();
    Some((significant, frac.len()))
}

/// Infers column types from sample rows. Each row gives one value per column (`None` = NULL).
/// A column with no non-null value in the sample is a string column.
#[derive(Debug)]
pub(crate) struct SchemaInference {
    names: Vec<String>,
    cands: Vec<Candidates>,
    date_format: Option<String>,
    exact_decimals: bool,
    /// Names as the sources write them, where a naming rule changed them.
    source_names: std::collections::HashMap<std::string::String, std::string::String>,
    /// The shapes of JSON values seen, by column (empty until a JSON value is observed).
    shapes: Vec<Shape>,
    /// The rule that names struct fields (keys of JSON objects).
    field_names: ColumnNames,
}

/// The shapes of a column's JSON values: objects become a struct of their keys, arrays a list,
/// both inferred from what they hold; a column whose values have more than one shape (an object
/// here, a number there) is a string column of the values' JSON text.
#[derive(Debug, Default)]
struct Shape {
    objects: u64,
    arrays: u64,
    scalars: u64,
    /// The keys of the objects, as columns.
    fields: Option<Box<SchemaInference>>,
    /// The elements of the arrays, as one column.
    elements: Option<Box<SchemaInference>>,
}

impl SchemaInference {
    pub fn new(names: Vec<String>, date_format: Option<String>) -> Self {
        let cands = vec![Candidates::all(); names.len()];
        SchemaInference {
            names,
            cands,
            date_format,
            exact_decimals: false,
            source_names: Default::default(),
            shapes: Vec::new(),
            field_names: ColumnNames::AsTheyCome,
        }
    }

    /// An inference of the same settings for the parts of nested values.
    fn inner(&self) -> Box<SchemaInference> {
        Box::new(
            SchemaInference::new(Vec::new(), self.date_format.clone())
                .with_exact_decimals(self.exact_decimals)
                .with_field_names(self.field_names),
        )
    }

    /// Struct fields inferred from JSON objects are named by `rule`.
    pub fn with_field_names(mut self, rule: ColumnNames) -> Self {
        self.field_names = rule;
        self
    }

    /// The index of the column named `name`, added if new.
    fn column(&mut self, name: &str) -> usize {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_string());
                self.cands.push(Candidates::all());
                self.names.len() - 1
            }
        }
    }

    /// Observes a JSON value of column `i`: an object or an array by its shape and what it
    /// holds, a scalar by its text, `null` not at all.
    pub fn observe_json(&mut self, i: usize, value: &serde_json::value::RawValue) {
        let raw = value.get().trim_start();
        if self.shapes.len() <= i {
            self.shapes
                .resize_with(self.names.len().max(i + 1), Shape::default);
        }
        match raw.as_bytes().first() {
            Some(b'n') | None => {}
            Some(b'{') => {
                let Ok(Members(members)) = serde_json::from_str::<Members<'_>>(raw) else {
                    return;
                };
                let inner = self.inner();
                let shape = &mut self.shapes[i];
                shape.objects += 1;
                let fields = shape.fields.get_or_insert(inner);
                for (key, v) in members {
                    let name = fields.field_names.apply(&key).into_owned();
                    let j = fields.column(&name);
                    fields.observe_json(j, v);
                }
            }
            Some(b'[') => {
                let Ok(items) = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(raw)
                else {
                    return;
                };
                let inner = self.inner();
                let shape = &mut self.shapes[i];
                shape.arrays += 1;
                let elements = shape.elements.get_or_insert(inner);
                let j = elements.column(LIST_ELEMENT);
                for item in items {
                    elements.observe_json(j, item);
                }
            }
            Some(_) => {
                self.shapes[i].scalars += 1;
                if let Some(text) = json::member_text(value) {
                    self.observe(i, &text);
                }
            }
        }
    }

    /// Observes a JSON value (`None`: absent) of the column named `name`, adding the column if
    /// new.
    pub fn observe_json_named(&mut self, name: &str, value: Option<&serde_json::value::RawValue>) {
        let i = self.column(name);
        if let Some(v) = value {
            self.observe_json(i, v);
        }
    }

    /// The type of column `i`: its JSON values' shape, else its text's.
    fn decide(&mut self, i: usize) -> ColumnType {
        let text = self.cands[i].decide(self.exact_decimals);
        let Some(shape) = self.shapes.get_mut(i) else {
            return text;
        };
        match (shape.objects, shape.arrays, shape.scalars) {
            (0, 0, _) => text,
            (_, 0, 0) => {
                let fields = shape.fields.take().map(|f| f.finish()).unwrap_or_default();
                ColumnType::structure(
                    fields
                        .into_iter()
                        .map(|c| StructField::new(c.name, c.ty))
                        .collect(),
                )
                .unwrap_or(ColumnType::String)
            }
            (0, _, 0) => {
                let elem = shape
                    .elements
                    .take()
                    .and_then(|e| e.finish().into_iter().next())
                    .map_or(ColumnType::String, |c| c.ty);
                ColumnType::list(elem)
            }
            _ => ColumnType::String,
        }
    }

    /// Records that column `name` is written `written` in its source.
    pub fn name_source(&mut self, name: &str, written: &str) {
        self.source_names
            .insert(name.to_string(), written.to_string());
    }

    /// Numbers written with a point become `decimal(p,s)` columns (their digits kept exactly)
    /// instead of `float64`.
    pub fn with_exact_decimals(mut self, exact: bool) -> Self {
        self.exact_decimals = exact;
        self
    }

    /// Observes a value of column `i`.
    pub fn observe(&mut self, i: usize, value: &str) {
        let fmt = self.date_format.as_deref();
        self.cands[i].observe(value.trim(), fmt);
    }

    /// Observes a value (`None`: NULL) of the column named `name`, adding the column if new.
    pub fn observe_named(&mut self, name: &str, value: Option<&str>) {
        let i = self.column(name);
        if let Some(v) = value {
            self.observe(i, v);
        }
    }

    /// The inferred columns.
    pub fn finish(mut self) -> Vec<Column> {
        let types: Vec<ColumnType> = (0..self.names.len()).map(|i| self.decide(i)).collect();
        std::mem::take(&mut self.names)
            .into_iter()
            .zip(types)
            .map(|(name, ty)| Column {
                source_name: self.source_names.remove(&name),
                name,
                ty,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// The short-decimal path gives the very bits `str::parse` gives, and takes only what
        /// it accepts.
        #[test]
        fn short_decimals_parse_as_the_standard_library_does(
            s in "[+-]?[0-9]{0,18}(\\.[0-9]{0,18})?|[+-]?\\.?[0-9.]{0,4}|[0-9]{1,3}[eE][0-9]",
        ) {
            let std = s.parse::<f64>().ok();
            if let Some(v) = parse_short_decimal(s.as_bytes()) {
                prop_assert_eq!(Some(v.to_bits()), std.map(f64::to_bits), "{}", s);
            }
            prop_assert_eq!(parse_f64(&s).map(f64::to_bits), std.map(f64::to_bits), "{}", s);
        }
    }

    #[test]
    fn short_decimals_at_their_edges() {
        for s in [
            "0",
            "-0",
            "+0",
            "-0.0",
            "1.",
            ".5",
            "-.5",
            "0.1",
            "0.3",
            "2.675",
            "99999.99",
            "123456789012345",
            "0.00000000000001",
            "-90071992.5474099",
            "104949.5",
            "0.07",
        ] {
            let got = parse_short_decimal(s.as_bytes()).unwrap_or_else(|| panic!("{s}"));
            assert_eq!(got.to_bits(), s.parse::<f64>().unwrap().to_bits(), "{s}");
        }
        // Longer, or other forms: left to the standard parser.
        for s in [
            "1234567890123456",
            "0.000000000000001",
            "1e5",
            ".",
            "-",
            "",
            "1.2.3",
            "1,5",
            "- 1",
            "0x10",
        ] {
            assert_eq!(parse_short_decimal(s.as_bytes()), None, "{s}");
        }
    }

    #[test]
    fn iso_forms() {
        let d = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        assert_eq!(parse_iso("2024-02-29"), Some(Temporal::Date(d)));
        assert_eq!(parse_iso("2024/02/29"), Some(Temporal::Date(d)));
        assert_eq!(parse_iso("2023-02-29"), None);
        let t = parse_iso("2024-02-29T13:45:10.123456").unwrap();
        assert_eq!(
            t,
            Temporal::Naive(d.and_hms_micro_opt(13, 45, 10, 123_456).unwrap())
        );
        assert_eq!(
            parse_iso("2024-02-29 13:45"),
            Some(Temporal::Naive(d.and_hms_opt(13, 45, 0).unwrap()))
        );
        let z = parse_iso("2024-02-29T13:45:10Z").unwrap();
        let off = parse_iso("2024-02-29T15:45:10+02:00").unwrap();
        assert_eq!(z, off);
        assert_eq!(parse_iso("2024-02-29T11:45:10-0200"), Some(z));
        assert_eq!(z.date(), d);
        assert_eq!(parse_iso("2024-02-29T13"), None);
        assert_eq!(parse_iso("2024-02-29Tab:cd"), None);
        assert_eq!(parse_iso("2024-02-29T13:45+25:00"), None);
    }

    #[test]
    fn patterns() {
        let d = NaiveDate::from_ymd_opt(2006, 1, 2).unwrap();
        assert_eq!(
            parse_temporal("01/02/2006", Some("%m/%d/%Y")),
            Some(Temporal::Date(d))
        );
        assert_eq!(parse_temporal("01/02/2006", None), None);
        assert_eq!(
            date_to_days(NaiveDate::from_ymd_opt(1970, 1, 2).unwrap()),
            1
        );
    }

    #[test]
    fn inference() {
        let mut inf = SchemaInference::new(
            ["i", "f", "b", "d", "ts", "tz", "zip", "s", "empty", "nan"]
                .map(std::string::String::from)
                .to_vec(),
            None,
        );
        let rows = [
            [
                "1",
                "1.5",
                "true",
                "2020-01-01",
                "2020-01-01 10:00",
                "2020-01-01T10:00Z",
                "01234",
                "x",
                "",
                "NaN",
            ],
            [
                "-2",
                "3",
                "FALSE",
                "2021/12/31",
                "2020-01-01",
                "2020-01-01T10:00+01:00",
                "99999",
                "1",
                "",
                "1",
            ],
        ];
        for r in rows {
            for (i, v) in r.iter().enumerate() {
                if !v.is_empty() {
                    inf.observe(i, v);
                }
            }
        }
        let types: Vec<_> = inf.finish().into_iter().map(|c| c.ty).collect();
        use ColumnType::*;
        assert_eq!(
            types,
            vec![
                Int64,
                Float64,
                Boolean,
                Date,
                Timestamp,
                TimestampTz,
                String,
                String,
                String,
                String
            ]
        );
    }

    #[test]
    fn exact_decimals_are_inferred_from_the_digits_seen() {
        let infer = |values: &[&str], exact: bool| {
            let mut inf = SchemaInference::new(vec!["v".into()], None).with_exact_decimals(exact);
            for v in values {
                inf.observe(0, v);
            }
            inf.finish()[0].ty
        };
        let dec = |p, s| ColumnType::decimal(p, s).unwrap();
        assert_eq!(infer(&["12.50", "-3.1", "1000"], true), dec(18, 2));
        assert_eq!(
            infer(&["12.50", "-3.1", "1000"], false),
            ColumnType::Float64
        );
        assert_eq!(infer(&["1", "2"], true), ColumnType::Int64);
        assert_eq!(infer(&["99999999999999999999"], true), dec(38, 0));
        assert_eq!(infer(&["0.000000000000001"], true), dec(18, 15));
        assert_eq!(infer(&["1234567890123.0001"], true), dec(38, 4));
        assert_eq!(infer(&["1.5", "1e3"], true), ColumnType::Float64);
        assert_eq!(infer(&["1.5", "007.5"], true), ColumnType::String);
        assert_eq!(infer(&["1.5", "x"], true), ColumnType::String);
        assert_eq!(
            infer(&[&format!("0.{}", "1".repeat(39))], true),
            ColumnType::Float64
        );
    }

    #[test]
    fn iso_date_days_agrees_with_the_calendar() {
        let mut d = NaiveDate::from_ymd_opt(1, 1, 1).unwrap();
        let end = NaiveDate::from_ymd_opt(9999, 12, 31).unwrap();
        while d <= end {
            let text = d.format("%Y-%m-%d").to_string();
            assert_eq!(
                iso_date_days(text.as_bytes()),
                Some(date_to_days(d)),
                "{text}"
            );
            d = d.succ_opt().unwrap();
        }
        for bad in [
            "2023-02-29",
            "2024-02-30",
            "2023-13-01",
            "2023-00-10",
            "2023-04-31",
            "2023-1-010",
            "2023/01/01",
            " 2023-01-0",
            "2023-01-0x",
            "+023-01-01",
            "2023-01-01T",
        ] {
            assert_eq!(iso_date_days(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(iso_date_days(b"2024-02-29"), Some(19_782));
        assert_eq!(iso_date_days(b"1970-01-01"), Some(0));
        assert_eq!(iso_date_days(b"1969-12-31"), Some(-1));
    }

    #[test]
    fn type_names_round_trip_and_take_the_sql_spellings() {
        use ColumnType::*;
        let all = [
            Boolean,
            Int8,
            Int16,
            Int32,
            Int64,
            Float32,
            Float64,
            ColumnType::decimal(12, 2).unwrap(),
            ColumnType::decimal(38, 0).unwrap(),
            Date,
            Timestamp,
            TimestampTz,
            String,
            Binary,
        ];
        for t in all {
            assert_eq!(ColumnType::parse(&t.name()).unwrap(), t, "{t}");
            assert_eq!(ColumnType::parse(&t.hive_type()).unwrap().arrow_type(), {
                // Hive has one timestamp.
                if t == TimestampTz { Timestamp } else { t }.arrow_type()
            });
            assert_eq!(ColumnType::of_arrow(&t.arrow_type()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<ColumnType>(&json).unwrap(), t);
        }
        // What earlier versions stored reads the same.
        assert_eq!(serde_json::to_string(&Int64).unwrap(), "\"int64\"");
        assert_eq!(
            serde_json::to_string(&TimestampTz).unwrap(),
            "\"timestamp_tz\""
        );
        for (s, t) in [
            ("int", Int32),
            ("INTEGER", Int32),
            ("bigint", Int64),
            ("smallint", Int16),
            ("tinyint", Int8),
            ("float", Float32),
            ("real", Float32),
            ("double", Float64),
            ("Decimal(12, 2)", ColumnType::decimal(12, 2).unwrap()),
            ("numeric(5,0)", ColumnType::decimal(5, 0).unwrap()),
            ("bytea", Binary),
        ] {
            assert_eq!(ColumnType::parse(s).unwrap(), t, "{s}");
        }
        for bad in [
            "decimal",
            "decimal(39,2)",
            "decimal(4,5)",
            "decimal(0,0)",
            "decimal(a,b)",
            "money",
        ] {
            let e = ColumnType::parse(bad).unwrap_err().to_string();
            assert!(e.contains("decimal") || e.contains("unknown"), "{bad}: {e}");
        }
    }

    #[test]
    fn decimals_parse_exactly_or_say_why_not() {
        let ok =
            |s: &str, p: u8, sc: u8| parse_decimal(s, p, sc).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("12.5", 4, 2), 1250);
        assert_eq!(ok("-12.50", 4, 2), -1250);
        assert_eq!(ok("+0.05", 4, 2), 5);
        assert_eq!(ok("99.99", 4, 2), 9999);
        assert_eq!(ok("0", 4, 2), 0);
        assert_eq!(ok("-0.000", 4, 2), 0);
        assert_eq!(ok(".5", 4, 2), 50);
        assert_eq!(ok("5.", 4, 2), 500);
        assert_eq!(ok("007.10", 4, 2), 710);
        assert_eq!(ok("1.2e2", 5, 0), 120);
        assert_eq!(ok("125E-2", 4, 2), 125);
        assert_eq!(ok("1.50", 2, 1), 15);
        assert_eq!(
            ok("12345678901234567890123456.789012345678", 38, 12),
            12345678901234567890123456789012345678
        );
        assert_eq!(
            ok("-99999999999999999999999999999999999999", 38, 0),
            -99999999999999999999999999999999999999
        );
        for (s, why) in [
            ("123.45", "before the point"),
            ("1.005", "after the point"),
            ("1e-3", "after the point"),
            ("1e5", "before the point"),
            ("", "not a decimal"),
            ("-", "not a decimal"),
            (".", "not a decimal"),
            ("1.2.3", "not a decimal"),
            ("1,5", "not a decimal"),
            ("NaN", "not a decimal"),
            ("1e", "not a decimal"),
            ("1e9999999", "not a decimal"),
            ("0x10", "not a decimal"),
        ] {
            let e = parse_decimal(s, 4, 2).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
        for (v, sc, text) in [
            (1250i128, 2u8, "12.50"),
            (-5, 2, "-0.05"),
            (0, 2, "0.00"),
            (7, 0, "7"),
            (
                -12345678901234567890123456789012345678,
                38,
                "-0.12345678901234567890123456789012345678",
            ),
        ] {
            assert_eq!(format_decimal(v, sc), text);
            assert_eq!(parse_decimal(text, 38, sc), Ok(v), "{text}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Any decimal's text parses back to it, at its scale and at a larger one.
        #[test]
        fn decimal_text_round_trips(v in any::<i64>(), extra in any::<i64>(), scale in 0u8..=18) {
            let v = i128::from(v) * 1_000_000_000 + i128::from(extra % 1_000_000_000);
            let text = format_decimal(v, scale);
            prop_assert_eq!(parse_decimal(&text, 38, scale), Ok(v));
            prop_assert_eq!(parse_decimal(&text, 38, scale + 1), Ok(v * 10));
        }
    }

    #[test]
    fn hex_bytes() {
        assert_eq!(parse_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(parse_hex("\\xDEad"), Some(vec![0xde, 0xad]));
        assert_eq!(parse_hex("0x"), Some(vec![]));
        assert_eq!(parse_hex("abc"), None);
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(parse_f32("0.1"), Some(0.1f32));
        assert_eq!(parse_f32("16777217"), Some(16_777_216.0));
        assert_eq!(parse_f32("inf"), None);
    }

    #[test]
    fn snake_case_names() {
        for (from, to) in [
            ("Unit Price ($)", "unit_price"),
            ("Order Date", "order_date"),
            ("orderDate", "order_date"),
            ("OrderID", "order_id"),
            ("HTTPServer", "http_server"),
            ("already_snake", "already_snake"),
            ("  padded  ", "padded"),
            ("a--b__c", "a_b_c"),
            ("2024 Sales", "_2024_sales"),
            ("Größe", "gr_e"),
            ("($)", "column"),
            ("x1Y", "x1_y"),
            ("ID", "id"),
        ] {
            assert_eq!(snake_case(from), to, "{from}");
            // A name the rule gives is kept as it is.
            assert_eq!(snake_case(to), to, "{to}");
            assert!(validate_name("column", to).is_ok(), "{to}");
        }
        assert_eq!(ColumnNames::AsTheyCome.apply("Order Date"), "Order Date");
        assert_eq!(ColumnNames::SnakeCase.apply("Order Date"), "order_date");
    }

    #[test]
    fn names() {
        assert!(validate_name("table", "trips_2024").is_ok());
        for bad in ["", "../x", "a/b", "1abc", "a b", "a\0b", "é"] {
            assert!(validate_name("table", bad).is_err(), "{bad:?}");
        }
        assert!(validate_column_name("Total (USD)").is_ok());
        assert!(validate_column_name("a/b").is_err());
        assert!(validate_column_name("a=b").is_err());
    }

    #[test]
    fn nested_type_names_round_trip_with_either_spelling() {
        let t = ColumnType::parse(
            "STRUCT< id : BIGINT, `Unit Price`:decimal(12, 2), tags: array<string>, m: map<int, list<double>> >",
        )
        .unwrap();
        assert_eq!(
            t.name(),
            "struct<id:int64,`Unit Price`:decimal(12,2),tags:array<string>,m:map<int32,array<float64>>>"
        );
        assert_eq!(
            t.hive_type(),
            "struct<id:bigint,`Unit Price`:decimal(12,2),tags:array<string>,m:map<int,array<double>>>"
        );
        assert_eq!(ColumnType::parse(&t.name()).unwrap(), t);
        assert_eq!(ColumnType::parse(&t.hive_type()).unwrap(), t);
        // Interned: the same type is the same allocation.
        let (ColumnType::Struct(a), ColumnType::Struct(b)) =
            (t, ColumnType::parse(&t.name()).unwrap())
        else {
            panic!("{t}")
        };
        assert!(std::ptr::eq(a, b));
        // Serialized as its name, as every type is.
        let c = Column::new("x", t);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Column>(&json).unwrap(), c);
        assert_eq!(ColumnType::of_arrow(&t.arrow_type()), Some(t));
        for bad in [
            "struct<>",
            "struct<a:int,a:int>",
            "array<string",
            "map<array<int>,int>",
            "struct<a int>",
            "array<nope>",
            "int<string>",
            "array<string>x",
        ] {
            assert!(ColumnType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_objects_and_arrays_are_inferred_as_structs_and_lists() {
        let mut inf =
            SchemaInference::new(Vec::new(), None).with_field_names(ColumnNames::SnakeCase);
        for doc in [
            r#"{"user": {"id": 5, "Full Name": "a"}, "tags": ["x", "y"], "mixed": {"a": 1}, "n": null}"#,
            r#"{"user": {"id": 6, "since": "2024-01-02"}, "tags": [], "mixed": 3, "n": null}"#,
            r#"{"user": null, "tags": [[1]], "mixed": null}"#,
        ] {
            let Members(members) = serde_json::from_str(doc).unwrap();
            for (k, v) in members {
                inf.observe_json_named(&k, Some(v));
            }
        }
        let cols = inf.finish();
        let types: Vec<(String, String)> = cols
            .iter()
            .map(|c| (c.name.clone(), c.ty.name().into_owned()))
            .collect();
        assert_eq!(
            types,
            [
                (
                    "user".into(),
                    "struct<id:int64,full_name:string,since:date>".into()
                ),
                // An array of strings and an array of arrays: the elements have two shapes.
                ("tags".into(), "array<string>".into()),
                ("mixed".into(), "string".into()),
                ("n".into(), "string".into()),
            ]
        );
    }

    #[test]
    fn structs_widen_by_field_name_at_every_depth() {
        let t = |s: &str| ColumnType::parse(s).unwrap();
        let old = t(
            "struct<id:int64,a:struct<x:int32>,l:array<struct<p:string>>,m:map<string,struct<q:date>>>",
        );
        let new = t(
            "struct<b:string,id:string,a:struct<y:boolean>,l:array<struct<r:int64>>,m:map<string,struct<s:int8>>>",
        );
        let w = old.widened(new);
        assert_eq!(
            w,
            t(
                "struct<id:int64,a:struct<x:int32,y:boolean>,l:array<struct<p:string,r:int64>>,m:map<string,struct<q:date,s:int8>>,b:string>"
            )
        );
        assert!(w.widens(old));
        assert!(!old.widens(w));
        assert!(w.widens(w));
        // A leaf keeps its type: a conflict is not a widening.
        assert!(!t("struct<id:string>").widens(t("struct<id:int64>")));
        assert_eq!(t("int64").widened(t("string")), t("int64"));
    }
}
