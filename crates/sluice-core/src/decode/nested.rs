//! Nested values (structs, lists, maps): typed from their JSON text as every leaf is typed at
//! the top level (a number from its digits as written, a date by the table's date format), then
//! built into Arrow arrays.
//!
//! A value is typed whole before any of it is taken, so a value that does not fit its type
//! quarantines its row and leaves nothing half-built.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int8Array, Int16Array, Int32Array, Int64Array, ListArray, MapArray, StringArray, StructArray,
    TimestampMicrosecondArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::DataType;
use serde_json::value::RawValue;

use crate::decode::rows::{Val, type_leaf};
use crate::schema::{ColumnNames, ColumnType, parse_hex};
use crate::source::json_member_text;

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

/// How leaves and keys are read: the table's date format and its naming rule (a struct's keys
/// are named as the table names its columns).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading<'a> {
    pub date_format: Option<&'a str>,
    pub names: ColumnNames,
}

/// Types the JSON text of a value of nested type `ty`. `Err` is what the text is not, for
/// "cannot parse … as {what}": the type and, in parentheses, the first part that does not fit
/// (`struct<id:int64> (field "id": cannot parse "x" as int64)`).
pub(crate) fn type_nested(text: &str, ty: ColumnType, how: Reading<'_>) -> Result<Nv, String> {
    let raw: &RawValue =
        serde_json::from_str(text).map_err(|e| format!("{ty} (it is not JSON: {e})"))?;
    typed(raw, ty, how).map_err(|why| format!("{ty} ({why})"))
}

fn typed(raw: &RawValue, ty: ColumnType, how: Reading<'_>) -> Result<Nv, String> {
    let Some(text) = json_member_text(raw) else {
        return Ok(Nv::Null);
    };
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
        _ => leaf(&text, ty, how),
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

/// A JSON object's members in the order they are written (`serde_json::Map` sorts them).
pub(crate) struct Members<'a>(pub Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(kv) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(kv);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
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
        assert!(err("[1]").contains("is not a JSON object"));
        assert!(err("{").contains("it is not JSON"));
    }

    #[test]
    fn keys_are_named_as_the_table_names_columns() {
        let ty = ColumnType::parse("struct<user_id:int64>").unwrap();
        let snake = Reading {
            date_format: None,
            names: ColumnNames::SnakeCase,
        };
        assert_eq!(
            type_nested(r#"{"userId": 7}"#, ty, snake).unwrap(),
            Nv::Struct(vec![Nv::I64(7)])
        );
    }
}
