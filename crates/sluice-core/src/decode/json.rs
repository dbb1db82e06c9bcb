//! Typing JSON documents (one object per row) with a `RowTyper`.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::decode::rows::{Field, QuarantineRow, RowTyper};
use crate::schema::ColumnNames;
use crate::schema::json::Members;
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
    let columns = &layout.source_columns;
    let mut keys = KeyMemo::default();
    // Per column: the row's value as written (`None`: no key).
    let mut values: Vec<Option<&RawValue>> = vec![None; columns.len()];
    for (line, doc) in docs {
        // Members as written: a number keeps its digits (a decimal is typed exactly, never
        // through a float).
        let members = match serde_json::from_str::<Members<'_>>(doc) {
            Ok(Members(m)) => m,
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
        values.fill(None);
        // Keys the table lacks: (its name for them, value, the key as written).
        let mut unknown: Vec<(String, &RawValue, &str)> = Vec::new();
        let mut clash = None;
        for (ordinal, (key, v)) in members.iter().enumerate() {
            match keys.slot(layout, ordinal, key) {
                &Slot::Column(i) => {
                    // Two keys the naming rule names alike (or one key twice); as they come,
                    // the last one wins, as JSON readers take it.
                    if values[i].is_some() && layout.names != ColumnNames::AsTheyCome {
                        clash = Some(columns[i].name.clone());
                    }
                    values[i] = Some(v);
                }
                Slot::Unknown(name) => {
                    if unknown.iter().any(|(n, _, _)| n == name) {
                        clash = Some(name.clone());
                    }
                    unknown.push((name.clone(), v, key));
                }
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
        if !unknown.is_empty() {
            let names: Vec<&str> = unknown.iter().map(|(n, _, _)| n.as_str()).collect();
            match layout.policy {
                SchemaPolicy::DiscardColumns => {}
                SchemaPolicy::Freeze => {
                    let reason = layout.frozen_reason(&names);
                    typer.reject(reject(source, line, doc, reason, chunk));
                    continue;
                }
                SchemaPolicy::Evolve => {
                    for (name, v, written) in &unknown {
                        if name != written {
                            typer.name_new(name, written);
                        }
                        typer.observe_new_json(name, Some(v), source);
                    }
                    // Typed again once the table has the columns.
                    typer.reject(reject(source, line, doc, "new columns".into(), chunk));
                    continue;
                }
            }
        }
        let texts: Vec<Option<Cow<'_, str>>> = columns
            .iter()
            .zip(&values)
            .zip(&layout.defaults)
            .map(|((c, v), default)| {
                // A column the document has no key for takes its default, if it has one.
                let Some(v) = *v else {
                    return default.as_deref().map(Cow::Borrowed);
                };
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

/// Where a key goes: a source column of the table, or a column it lacks (by the table's name
/// for it).
#[derive(Debug, Clone)]
enum Slot {
    Column(usize),
    Unknown(String),
}

/// The keys seen so far and where they go: documents repeat their keys, usually in one order,
/// so a key is looked up where the same ordinal's key was last time, and the naming rule is
/// applied once per distinct key, not once per row. At most [`KeyMemo::MAX`] keys are kept
/// (documents whose keys are data, such as ids, would grow it without end); past that, keys are
/// named every time.
#[derive(Debug, Default)]
struct KeyMemo {
    keys: Vec<(String, Slot)>,
    /// By ordinal in the document: the index in `keys` of the key last seen there.
    at: Vec<usize>,
    /// The slot of a key past the limit.
    scratch: Option<Slot>,
}

impl KeyMemo {
    const MAX: usize = 4096;

    fn slot(&mut self, layout: &TableLayout, ordinal: usize, key: &str) -> &Slot {
        if let Some(&k) = self.at.get(ordinal)
            && self.keys.get(k).is_some_and(|(seen, _)| seen == key)
        {
            return &self.keys[k].1;
        }
        let k = match self.keys.iter().position(|(seen, _)| seen == key) {
            Some(k) => k,
            None => {
                let name = layout.names.apply(key);
                let slot = match layout.source_columns.iter().position(|c| c.name == name) {
                    Some(i) => Slot::Column(i),
                    None => Slot::Unknown(name.into_owned()),
                };
                if self.keys.len() >= Self::MAX {
                    return self.scratch.insert(slot);
                }
                self.keys.push((key.to_string(), slot));
                self.keys.len() - 1
            }
        };
        if self.at.len() <= ordinal {
            self.at.resize(ordinal + 1, usize::MAX);
        }
        self.at[ordinal] = k;
        &self.keys[k].1
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::partition::PartitionSpec;
    use crate::schema::{Column, ColumnType};

    fn layout() -> TableLayout {
        let columns = vec![
            Column::new("id", ColumnType::Int64),
            Column::new("name", ColumnType::String),
        ];
        let def = TableLayout::new_def(
            "db",
            "t",
            "file:///t",
            columns,
            &PartitionSpec::parse("").unwrap(),
            None,
        )
        .unwrap();
        TableLayout::from_def(&def).unwrap()
    }

    /// Keys in another order than the last document's, and documents whose keys are data (more
    /// distinct keys than the memo keeps) go where their names say.
    #[test]
    fn keys_are_found_in_any_order_and_past_the_memo_s_limit() {
        let layout = layout();
        let mut keys = KeyMemo::default();
        let column = |keys: &mut KeyMemo, ordinal: usize, key: &str| match keys
            .slot(&layout, ordinal, key)
        {
            Slot::Column(i) => Some(*i),
            Slot::Unknown(_) => None,
        };
        assert_eq!(column(&mut keys, 0, "id"), Some(0));
        assert_eq!(column(&mut keys, 1, "name"), Some(1));
        assert_eq!(column(&mut keys, 0, "name"), Some(1));
        assert_eq!(column(&mut keys, 1, "id"), Some(0));
        for i in 0..KeyMemo::MAX + 10 {
            assert_eq!(column(&mut keys, i + 2, &format!("k{i}")), None);
        }
        // Ordinals past the limit were never remembered: still found by name.
        for ordinal in [0, 1, KeyMemo::MAX + 5, KeyMemo::MAX + 3, KeyMemo::MAX + 11] {
            assert_eq!(column(&mut keys, ordinal, "name"), Some(1));
            assert_eq!(column(&mut keys, ordinal + 1, "id"), Some(0));
        }
    }
}
