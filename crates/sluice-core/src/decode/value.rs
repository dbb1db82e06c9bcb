//! One value from its text: a primitive (`type_leaf`), or a nested value (structs, lists, maps)
//! from its JSON text, every leaf typed as a primitive is (a number from its digits as written,
//! a date by the table's date format), then built into Arrow arrays.
//!
//! A value is typed whole before any of it is taken, so a value that does not fit its type
//! quarantines its row and leaves nothing half-built.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::NaiveTime;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int8Array, Int16Array, Int32Array, Int64Array, ListArray, MapArray, StringArray, StructArray,
    TimestampMicrosecondArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::DataType;
use serde_json::value::RawValue;

use crate::schema::json::{Members, member_text};
use crate::schema::{
    ColumnNames, ColumnType, Temporal, date_to_days, parse_bool, parse_decimal, parse_f32,
    parse_f64, parse_hex, parse_i64, parse_temporal,
};

/// A typed value; strings and bytes are referred to by source column and fetched again when
/// pushed, nested values kept aside by source column.
#[derive(Clone, Copy)]
pub(crate) enum Val {
    Null,
    Bool(bool),
    I64(i64),
    F64(f64),
    Dec(i128),
    Date(i32),
    Ts(i64),
    Str,
    Bin,
    Nested,
}

pub(crate) fn naive_micros(t: Temporal) -> i64 {
    match t {
        Temporal::Date(d) => d.and_time(NaiveTime::MIN).and_utc().timestamp_micros(),
        Temporal::Naive(n) => n.and_utc().timestamp_micros(),
        Temporal::Zoned(us) => us,
    }
}

/// Types a primitive value from its text (`s`, not NULL); `Err` is the type it is not (with why,
/// where that helps). `lenient`: a date or timestamp that does not parse is NULL (a partition
/// source's, whose row then goes to the default partition).
#[inline]
pub(crate) fn type_leaf(
    s: &str,
    ty: ColumnType,
    date_format: Option<&str>,
    lenient: bool,
) -> Result<Val, Cow<'static, str>> {
    Ok(match ty {
        ColumnType::String => Val::Str,
        ColumnType::Int64 => Val::I64(parse_i64(trim(s)).ok_or(Cow::Borrowed("int64"))?),
        ColumnType::Int8 | ColumnType::Int16 | ColumnType::Int32 => {
            Val::I64(parse_integer(trim(s), ty)?)
        }
        ColumnType::Float64 => Val::F64(parse_f64(trim(s)).ok_or(Cow::Borrowed("float64"))?),
        ColumnType::Float32 => Val::F64(parse_f32(trim(s)).ok_or(Cow::Borrowed("float32"))?.into()),
        ColumnType::Decimal { precision, scale } => Val::Dec(
            parse_decimal(trim(s), precision, scale).map_err(|why| format!("{ty}: {why}"))?,
        ),
        ColumnType::Binary => {
            parse_hex(trim(s)).ok_or(Cow::Borrowed(BINARY_TEXT))?;
            Val::Bin
        }
        ColumnType::Boolean => Val::Bool(parse_bool(trim(s)).ok_or(Cow::Borrowed("boolean"))?),
        ColumnType::Date | ColumnType::Timestamp | ColumnType::TimestampTz => {
            match parse_temporal(s, date_format) {
                Some(t) => match ty {
                    ColumnType::Date => match t {
                        Temporal::Date(d) => Val::Date(date_to_days(d)),
                        _ => return Err(Cow::Borrowed("date (it has a time)")),
                    },
                    ColumnType::TimestampTz => Val::Ts(naive_micros(t)),
                    _ => Val::Ts(match t {
                        Temporal::Zoned(us) => us,
                        other => naive_micros(other),
                    }),
                },
                None if lenient => Val::Null,
                None => return Err(ty.name()),
            }
        }
        ColumnType::Struct(_) | ColumnType::List(_) | ColumnType::Map(_) => {
            unreachable!("nested values are typed by decode::nested")
        }
    })
}

/// What a binary column's text must be.
pub(crate) const BINARY_TEXT: &str = "binary (hexadecimal digits, optionally after \\x or 0x)";

/// An integer that must fit a narrower type: `Err` names the type, and its range when the
/// value is an integer outside it.
pub(crate) fn parse_integer(
    s: &str,
    ty: ColumnType,
) -> std::result::Result<i64, Cow<'static, str>> {
    let v = parse_i64(s).ok_or_else(|| ty.name())?;
    let (lo, hi) = ty.integer_range().expect("an integer type");
    if v < lo || v > hi {
        return Err(format!("{ty} (it is out of the range {lo} to {hi})").into());
    }
    Ok(v)
}

/// `s.trim()`, without looking at every character when the ends are plain ASCII (the usual
/// number).
#[inline]
pub(crate) fn trim(s: &str) -> &str {
    match s.as_bytes() {
        [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => s,
        [only] if only.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// A typed nested value, or a leaf of one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Nv {
    Null,
    Bool(bool),
    I64(i64),
    F64(f64),
    Dec(i128),
    Date(i32),
    Ts(i64),
    Str(String),
    Bin(Vec<u8>),
    /// A struct's fields, in the type's order (an absent key is NULL).
    Struct(Vec<Nv>),
    List(Vec<Nv>),
    Map(Vec<(Nv, Nv)>),
}

static NULL: Nv = Nv::Null;

/// How leaves and keys are read: the table's date format, its naming rule (a struct's keys
/// are named as the table names its columns), and whether a key a struct lacks is dropped (the
/// table's policy is `discard-columns`) or refuses the value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading<'a> {
    pub date_format: Option<&'a str>,
    pub names: ColumnNames,
    pub drop_unknown: bool,
}

impl<'a> Reading<'a> {
    /// How the values of a table of `layout` are read.
    pub fn of(layout: &'a crate::table::TableLayout) -> Self {
        Reading {
            date_format: layout.date_format.as_deref(),
            names: layout.names,
            drop_unknown: layout.policy == crate::table::policy::SchemaPolicy::DiscardColumns,
        }
    }
}

/// Types the JSON text of a value of nested type `ty`. `Err` is what the text is not, for
/// "cannot parse … as {what}": the type and, in parentheses, the first part that does not fit
/// (`struct<id:int64> (field "id": cannot parse "x" as int64)`).
pub(crate) fn type_nested(text: &str, ty: ColumnType, how: Reading<'_>) -> Result<Nv, String> {
    let raw: &RawValue = serde_json::from_str(text).map_err(|e| {
        let shape = match ty {
            ColumnType::List(_) => "array",
            _ => "object",
        };
        if text.trim_start().starts_with(['{', '[']) {
            format!("{ty} (it is not JSON: {e})")
        } else {
            format!("{ty} (it is not a JSON {shape})")
        }
    })?;
    typed(raw, ty, how).map_err(|why| format!("{ty} ({why})"))
}

fn typed(raw: &RawValue, ty: ColumnType, how: Reading<'_>) -> Result<Nv, String> {
    if raw.get().trim() == "null" {
        return Ok(Nv::Null);
    }
    let shape = |what: &str| format!("{} is not a JSON {what}", clip(raw.get()));
    match ty {
        ColumnType::Struct(fields) => {
            let members = serde_json::from_str::<Members<'_>>(raw.get())
                .map_err(|_| shape("object"))?
                .0;
            let mut out = vec![Nv::Null; fields.len()];
            for (key, v) in members {
                let name = how.names.apply(&key);
                let Some(i) = fields.iter().position(|f| f.name == name) else {
                    if how.drop_unknown {
                        continue;
                    }
                    return Err(format!("field {key:?} is not one of the struct's"));
                };
                out[i] = typed(v, fields[i].ty, how)
                    .map_err(|why| format!("field {:?}: {why}", fields[i].name))?;
            }
            Ok(Nv::Struct(out))
        }
        ColumnType::List(elem) => {
            let items =
                serde_json::from_str::<Vec<&RawValue>>(raw.get()).map_err(|_| shape("array"))?;
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| typed(v, *elem, how).map_err(|why| format!("element {i}: {why}")))
                .collect::<Result<_, _>>()
                .map(Nv::List)
        }
        ColumnType::Map((k, v)) => {
            let members = serde_json::from_str::<Members<'_>>(raw.get())
                .map_err(|_| shape("object"))?
                .0;
            members
                .into_iter()
                .map(|(key, value)| {
                    let key_v = leaf(&key, *k, how).map_err(|why| format!("key {why}"))?;
                    let value_v =
                        typed(value, *v, how).map_err(|why| format!("key {key:?}: {why}"))?;
                    Ok((key_v, value_v))
                })
                .collect::<Result<_, String>>()
                .map(Nv::Map)
        }
        _ => match member_text(raw) {
            Some(text) => leaf(&text, ty, how),
            None => Ok(Nv::Null),
        },
    }
}

/// A primitive value from its text, as the top level types it.
fn leaf(text: &str, ty: ColumnType, how: Reading<'_>) -> Result<Nv, String> {
    let v = type_leaf(text, ty, how.date_format, false)
        .map_err(|what| format!("cannot parse {:?} as {what}", clip(text)))?;
    Ok(match v {
        Val::Null => Nv::Null,
        Val::Bool(b) => Nv::Bool(b),
        Val::I64(x) => Nv::I64(x),
        Val::F64(x) => Nv::F64(x),
        Val::Dec(x) => Nv::Dec(x),
        Val::Date(x) => Nv::Date(x),
        Val::Ts(x) => Nv::Ts(x),
        Val::Str => Nv::Str(text.to_string()),
        Val::Bin => Nv::Bin(parse_hex(text.trim()).unwrap_or_default()),
        Val::Nested => unreachable!("a leaf is primitive"),
    })
}

fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The Arrow array of `values`, of `ty`'s Arrow type.
pub(crate) fn build(values: &[&Nv], ty: ColumnType) -> ArrayRef {
    macro_rules! leaves {
        ($array:ty, $variant:ident, $conv:expr) => {
            Arc::new(
                values
                    .iter()
                    .map(|v| match v {
                        Nv::$variant(x) => Some($conv(x)),
                        _ => None,
                    })
                    .collect::<$array>(),
            )
        };
    }
    let nulls = || NullBuffer::from_iter(values.iter().map(|v| !matches!(v, Nv::Null)));
    match ty {
        ColumnType::Boolean => leaves!(BooleanArray, Bool, |x: &bool| *x),
        // Every value was checked to fit its width when typed.
        ColumnType::Int8 => leaves!(Int8Array, I64, |x: &i64| *x as i8),
        ColumnType::Int16 => leaves!(Int16Array, I64, |x: &i64| *x as i16),
        ColumnType::Int32 => leaves!(Int32Array, I64, |x: &i64| *x as i32),
        ColumnType::Int64 => leaves!(Int64Array, I64, |x: &i64| *x),
        // Parsed as an f32, so exact.
        ColumnType::Float32 => leaves!(Float32Array, F64, |x: &f64| *x as f32),
        ColumnType::Float64 => leaves!(Float64Array, F64, |x: &f64| *x),
        ColumnType::Decimal { precision, scale } => Arc::new(
            values
                .iter()
                .map(|v| match v {
                    Nv::Dec(x) => Some(*x),
                    _ => None,
                })
                .collect::<Decimal128Array>()
                .with_precision_and_scale(precision, scale as i8)
                .expect("a checked decimal type"),
        ),
        ColumnType::Date => leaves!(Date32Array, Date, |x: &i32| *x),
        ColumnType::Timestamp => leaves!(TimestampMicrosecondArray, Ts, |x: &i64| *x),
        ColumnType::TimestampTz => Arc::new(
            values
                .iter()
                .map(|v| match v {
                    Nv::Ts(x) => Some(*x),
                    _ => None,
                })
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        ColumnType::String => leaves!(StringArray, Str, String::as_str),
        ColumnType::Binary => leaves!(BinaryArray, Bin, Vec::as_slice),
        ColumnType::Struct(fields) => {
            let DataType::Struct(arrow_fields) = ty.arrow_type() else {
                unreachable!("a struct's Arrow type is a struct")
            };
            let children = fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let child: Vec<&Nv> = values
                        .iter()
                        .map(|v| match v {
                            Nv::Struct(members) => &members[i],
                            _ => &NULL,
                        })
                        .collect();
                    build(&child, f.ty)
                })
                .collect();
            Arc::new(StructArray::new(arrow_fields, children, Some(nulls())))
        }
        ColumnType::List(elem) => {
            let DataType::List(field) = ty.arrow_type() else {
                unreachable!("a list's Arrow type is a list")
            };
            let offsets = OffsetBuffer::from_lengths(values.iter().map(|v| items(v).len()));
            let child: Vec<&Nv> = values.iter().flat_map(items).collect();
            Arc::new(ListArray::new(
                field,
                offsets,
                build(&child, *elem),
                Some(nulls()),
            ))
        }
        ColumnType::Map((k, v)) => {
            let DataType::Map(entries_field, sorted) = ty.arrow_type() else {
                unreachable!("a map's Arrow type is a map")
            };
            let DataType::Struct(kv_fields) = entries_field.data_type().clone() else {
                unreachable!("a map's entries are a struct")
            };
            let offsets = OffsetBuffer::from_lengths(values.iter().map(|x| entries(x).len()));
            let keys: Vec<&Nv> = values.iter().flat_map(entries).map(|(k, _)| k).collect();
            let vals: Vec<&Nv> = values.iter().flat_map(entries).map(|(_, v)| v).collect();
            let entries =
                StructArray::new(kv_fields, vec![build(&keys, *k), build(&vals, *v)], None);
            Arc::new(MapArray::new(
                entries_field,
                offsets,
                entries,
                Some(nulls()),
                sorted,
            ))
        }
    }
}

/// Whether the JSON text of a value of nested type `ty` has a key that a struct of the type
/// lacks, at any depth (keys named by `names`): what schema evolution adds.
pub(crate) fn has_new_fields(text: &str, ty: ColumnType, names: ColumnNames) -> bool {
    fn walk(raw: &RawValue, ty: ColumnType, names: ColumnNames) -> bool {
        match ty {
            ColumnType::Struct(fields) => {
                serde_json::from_str::<Members<'_>>(raw.get()).is_ok_and(|Members(members)| {
                    members.iter().any(|(key, v)| {
                        let name = names.apply(key);
                        match fields.iter().find(|f| f.name == name) {
                            Some(f) => walk(v, f.ty, names),
                            None => true,
                        }
                    })
                })
            }
            ColumnType::List(elem) => serde_json::from_str::<Vec<&RawValue>>(raw.get())
                .is_ok_and(|items| items.iter().any(|v| walk(v, *elem, names))),
            ColumnType::Map((_, v)) => serde_json::from_str::<Members<'_>>(raw.get())
                .is_ok_and(|Members(members)| members.iter().any(|(_, x)| walk(x, *v, names))),
            _ => false,
        }
    }
    serde_json::from_str::<&RawValue>(text).is_ok_and(|raw| walk(raw, ty, names))
}

fn items<'a>(v: &&'a Nv) -> &'a [Nv] {
    match v {
        Nv::List(items) => items,
        _ => &[],
    }
}

fn entries<'a>(v: &&'a Nv) -> &'a [(Nv, Nv)] {
    match v {
        Nv::Map(e) => e,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    fn how() -> Reading<'static> {
        Reading {
            date_format: None,
            names: ColumnNames::AsTheyCome,
            drop_unknown: false,
        }
    }

    #[test]
    fn values_are_typed_exactly_and_shapes_are_checked() {
        let ty = ColumnType::parse(
            "struct<id:int64,price:decimal(12,2),tags:array<string>,attrs:map<string,int32>,at:date>",
        )
        .unwrap();
        let v = type_nested(
            r#"{"id": 5, "price": 12.10, "tags": ["x", null], "attrs": {"a": 1}, "at": "2024-02-29"}"#,
            ty,
            how(),
        )
        .unwrap();
        let Nv::Struct(f) = &v else { panic!("{v:?}") };
        assert_eq!(f[0], Nv::I64(5));
        assert_eq!(f[1], Nv::Dec(1210));
        assert_eq!(f[2], Nv::List(vec![Nv::Str("x".into()), Nv::Null]));
        assert_eq!(f[3], Nv::Map(vec![(Nv::Str("a".into()), Nv::I64(1))]));
        let a = build(&[&v, &Nv::Null], ty);
        assert_eq!(a.data_type(), &ty.arrow_type());
        assert_eq!((a.len(), a.null_count()), (2, 1));

        let err = |text: &str| type_nested(text, ty, how()).unwrap_err();
        assert_eq!(
            err(r#"{"id": "x"}"#),
            format!(r#"{ty} (field "id": cannot parse "x" as int64)"#)
        );
        assert!(err(r#"{"price": 1.234}"#).contains("more digits after the point"));
        assert!(err(r#"{"tags": "x"}"#).contains(r#"field "tags": "x" is not a JSON array"#));
        assert!(err(r#"{"attrs": {"a": 3000000000}}"#).contains(r#"key "a": cannot parse"#));
        assert!(err(r#"{"other": 1}"#).contains(r#"field "other" is not one of the struct's"#));
        assert!(has_new_fields(
            r#"{"id": 1, "other": 1}"#,
            ty,
            ColumnNames::AsTheyCome
        ));
        assert!(!has_new_fields(
            r#"{"attrs": {"a": 1}, "tags": []}"#,
            ty,
            ColumnNames::AsTheyCome
        ));
        let dropping = Reading {
            drop_unknown: true,
            ..how()
        };
        assert_eq!(
            type_nested(r#"{"id": 1, "other": 1}"#, ty, dropping).unwrap(),
            type_nested(r#"{"id": 1}"#, ty, how()).unwrap()
        );
        assert!(err("[1]").contains("is not a JSON object"));
        assert!(err("{").contains("it is not JSON"));
        assert!(err("x").ends_with("(it is not a JSON object)"));
    }

    #[test]
    fn keys_are_named_as_the_table_names_columns() {
        let ty = ColumnType::parse("struct<user_id:int64>").unwrap();
        let snake = Reading {
            date_format: None,
            names: ColumnNames::SnakeCase,
            drop_unknown: false,
        };
        assert_eq!(
            type_nested(r#"{"userId": 7}"#, ty, snake).unwrap(),
            Nv::Struct(vec![Nv::I64(7)])
        );
    }
}
