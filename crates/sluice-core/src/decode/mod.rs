//! Decoding queue messages: sluice chunks, and messages other programs send (one JSON object,
//! JSON lines, or CSV lines in the table's column order), so an existing queue of events can be
//! landed too.

pub mod rows;

use crate::chunk;
use crate::decode::rows::{DecodedChunk, Field, OnFrozen, RowTyper, add_csv_records};
use crate::delta::evolve::SchemaPolicy;
use crate::error::{Error, Result};
use crate::source::csv::CsvFormat;
use crate::table::TableLayout;

thread_local! {
    /// The compressed payload and the raw records of the last chunk this thread decoded:
    /// reused, as a fresh buffer of megabytes costs a page fault every 4 KiB.
    static BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}

/// Larger decode buffers are freed after use.
const KEPT_BUFFER_BYTES: usize = 16 << 20;

fn decode_chunk_message(
    layout: &TableLayout,
    body: &str,
    scratch: &mut Vec<u8>,
    raw: &mut Vec<u8>,
) -> Result<DecodedChunk> {
    let (header, raw) = chunk::decode_into(body, scratch, raw)?;
    if header.table != layout.name {
        return Err(Error::Undecodable(format!(
            "chunk {} is for table {:?}, this consumer writes {:?}",
            header.chunk, header.table, layout.name
        )));
    }
    crate::decode::rows::decode_chunk(layout, &header, raw).map_err(|e| match e {
        Error::InvalidInput { .. } => Error::Undecodable(format!("chunk {}: {e}", header.chunk)),
        other => other,
    })
}

/// Decodes one message body for `layout`'s table.
pub fn decode_message(layout: &TableLayout, body: &str, message_id: &str) -> Result<DecodedChunk> {
    if chunk::is_chunk(body) {
        return BUFFERS.with_borrow_mut(|(scratch, raw)| {
            let decoded = decode_chunk_message(layout, body, scratch, raw);
            // Keep buffers of a usual message's size, not of a rare huge one.
            for b in [scratch, raw] {
                if b.capacity() > KEPT_BUFFER_BYTES {
                    *b = Vec::new();
                }
            }
            decoded
        });
    }
    let chunk_id = format!("msg-{message_id}");
    let source = format!("message {message_id}");
    let trimmed = body.trim_start();
    let mut typer = RowTyper::new(layout, 16);
    if trimmed.starts_with('{') {
        add_json_lines(&mut typer, layout, body, &source, &chunk_id);
    } else {
        // CSV lines without a header: the table's columns, in its order.
        let map = crate::table::HeaderMap {
            pos_of_col: (0..layout.source_columns.len()).collect(),
            fields: layout.source_columns.len(),
            unknown: Vec::new(),
        };
        add_csv_records(
            &mut typer,
            body.as_bytes(),
            &CsvFormat::default(),
            1,
            &map,
            OnFrozen::Refuse,
            &source,
            &chunk_id,
        )?;
    }
    typer.finish(&chunk_id)
}

fn add_json_lines(
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
    for (line, doc) in docs {
        let obj = match serde_json::from_str::<serde_json::Value>(doc) {
            Ok(serde_json::Value::Object(o)) => o,
            Ok(_) => {
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
                        let v = match &obj[k] {
                            serde_json::Value::Null => None,
                            serde_json::Value::String(s) => Some(s.clone()),
                            other => Some(other.to_string()),
                        };
                        typer.observe_new(k, v.as_deref(), source);
                    }
                    // Typed again once the table has the columns.
                    typer.reject(reject(source, line, doc, "new columns".into(), chunk));
                    continue;
                }
            }
        }
        let texts: Vec<Option<String>> = layout
            .source_columns
            .iter()
            .map(|c| match obj.get(&c.name) {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(v) => Some(v.to_string()),
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

fn reject(
    source: &str,
    line: u64,
    raw: &str,
    reason: String,
    chunk: &str,
) -> crate::decode::rows::QuarantineRow {
    crate::decode::rows::QuarantineRow {
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
