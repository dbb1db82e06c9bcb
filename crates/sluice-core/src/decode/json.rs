//! Typing JSON documents (one object per row) with a `RowTyper`.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::value::RawValue;

use crate::decode::rows::{Field, QuarantineRow, RowTyper};
use crate::schema::ColumnNames;
use crate::schema::json::member_text as json_member_text;
use crate::table::TableLayout;
use crate::table::policy::SchemaPolicy;

pub(crate) fn add_json_lines(
    typer: &mut RowTyper<'_>,
    layout: &TableLayout,
    body: &str,
    source: &str,
    chunk: &str,
) {
    // One JSON object (possibly spanning lines), or one object per line.
    let docs: Vec<(u64, &str)> = if serde_json::from_str::<serde_json::Value>(body).is_ok() {
        vec![(1, body)]
    } else {
        body.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (i as u64 + 1, l))
            .collect()
    };
    add_json_docs(typer, layout, docs, source, chunk);
}

/// Types JSON documents, one object per row: (line number, text). Keys are matched to the
/// table's columns by name (a column without a key is NULL); a value that does not parse or a
/// document that is not an object quarantines the row with the reason. A key the table lacks
/// is dropped (`discard-columns`), quarantines the row (`freeze`), or is sampled for its type
/// (`evolve`: see [`DecodedChunk::new_columns`]).
pub(crate) fn add_json_docs<'a>(
    typer: &mut RowTyper<'_>,
    layout: &TableLayout,
    docs: impl IntoIterator<Item = (u64, &'a str)>,
    source: &str,
    chunk: &str,
) {
    // Keys a naming rule changed, as written (for the metadata of the columns they add).
    let mut written: HashMap<String, String> = HashMap::new();
    for (line, doc) in docs {
        // Members as written: a number keeps its digits (a decimal is typed exactly, never
        // through a float).
        let obj = match serde_json::from_str::<HashMap<String, &RawValue>>(doc) {
            Ok(o) if layout.names == ColumnNames::AsTheyCome => o,
            // Keys named as the table names its columns.
            Ok(o) => {
                let mut named: HashMap<String, &RawValue> = HashMap::with_capacity(o.len());
                let mut clash = None;
                for (k, v) in o {
                    let n = layout.names.apply(&k).into_owned();
                    if n != k && !written.contains_key(&n) {
                        written.insert(n.clone(), k);
                    }
                    if named.insert(n.clone(), v).is_some() {
                        clash = Some(n);
                    }
                }
                if let Some(n) = clash {
                    let reason = format!(
                        "two keys are both {n:?} in table {} (its column names are {})",
                        layout.name,
                        layout.names.name()
                    );
                    typer.reject(reject(source, line, doc, reason, chunk));
                    continue;
                }
                named
            }
            Err(_) if serde_json::from_str::<&RawValue>(doc).is_ok() => {
                typer.reject(reject(source, line, doc, "not a JSON object".into(), chunk));
                continue;
            }
            Err(e) => {
                typer.reject(reject(
                    source,
                    line,
                    doc,
                    format!("invalid JSON: {e}"),
                    chunk,
                ));
                continue;
            }
        };
        let unknown: Vec<&String> = obj
            .keys()
            .filter(|k| !layout.source_columns.iter().any(|c| &c.name == *k))
            .collect();
        if !unknown.is_empty() {
            let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
            match layout.policy {
                SchemaPolicy::DiscardColumns => {}
                SchemaPolicy::Freeze => {
                    let reason = layout.frozen_reason(&names);
                    typer.reject(reject(source, line, doc, reason, chunk));
                    continue;
                }
                SchemaPolicy::Evolve => {
                    for k in names {
                        if let Some(w) = written.get(k) {
                            typer.name_new(k, w);
                        }
                        typer.observe_new_json(k, Some(obj[k]), source);
                    }
                    // Typed again once the table has the columns.
                    typer.reject(reject(source, line, doc, "new columns".into(), chunk));
                    continue;
                }
            }
        }
        let texts: Vec<Option<Cow<'_, str>>> = layout
            .source_columns
            .iter()
            .map(|c| {
                let v = obj.get(&c.name)?;
                if c.ty.is_nested() {
                    // As written: a map keeps its entries' order.
                    Some(v.get())
                        .filter(|raw| *raw != "null")
                        .map(Cow::Borrowed)
                } else {
                    json_member_text(v)
                }
            })
            .collect();
        typer.add_row(
            |i| texts[i].as_deref().map(Field::Text),
            line,
            doc.as_bytes(),
            source,
            chunk,
        );
    }
}

fn reject(source: &str, line: u64, raw: &str, reason: String, chunk: &str) -> QuarantineRow {
    QuarantineRow {
        source: source.to_string(),
        line,
        raw: raw
            .chars()
            .take(crate::decode::rows::MAX_QUARANTINE_RAW)
            .collect(),
        reason,
        chunk: chunk.to_string(),
    }
}
