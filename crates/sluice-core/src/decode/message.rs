//! Decoding one queue message: a sluice chunk, or a message another program sent (one JSON
//! object, JSON lines, or CSV lines in the table's column order).

use crate::chunk;
use crate::chunk::ChunkHeader;
use crate::decode::json::{add_json_docs, add_json_lines};
use crate::decode::rows::{
    CsvRecords, DecodedChunk, OnFrozen, QuarantineRow, RowTyper, add_csv_records,
};
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
    decode_chunk(layout, &header, raw).map_err(|e| match e {
        Error::InvalidInput { .. } => Error::Undecodable(format!("chunk {}: {e}", header.chunk)),
        other => other,
    })
}

/// Decodes one message body for `layout`'s table.
pub(crate) fn decode_message(
    layout: &TableLayout,
    body: &str,
    message_id: &str,
) -> Result<DecodedChunk> {
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
            unknown_as_written: Vec::new(),
        };
        let recs = CsvRecords {
            raw: body.as_bytes(),
            format: &CsvFormat::default(),
            map: &map,
            frozen: OnFrozen::Refuse,
            source: &source,
            chunk: &chunk_id,
        };
        add_csv_records(&mut typer, &recs, 1)?;
    }
    typer.finish(&chunk_id)
}

/// Decodes the records of a sluice chunk.
pub(crate) fn decode_chunk(
    layout: &TableLayout,
    header: &ChunkHeader,
    raw: &[u8],
) -> Result<DecodedChunk> {
    let mut typer = RowTyper::new(layout, header.rows as usize);
    for r in &header.rejects {
        typer.reject(QuarantineRow {
            source: header.source.clone(),
            line: r.line,
            raw: r.raw.clone(),
            reason: r.reason.clone(),
            chunk: header.chunk.clone(),
        });
    }
    match header.payload {
        crate::chunk::Payload::JsonLines => {
            let text = std::str::from_utf8(raw).map_err(|e| {
                crate::error::Error::invalid(format!("JSON-lines payload is not UTF-8: {e}"))
            })?;
            let docs = text
                .split('\n')
                .enumerate()
                .map(|(i, l)| (header.first_line + i as u64, l))
                .filter(|(_, l)| !l.trim().is_empty());
            add_json_docs(&mut typer, layout, docs, &header.source, &header.chunk);
        }
        crate::chunk::Payload::Csv => {
            let map = layout.map_header(&header.columns, &header.source)?;
            let recs = CsvRecords {
                raw,
                format: &header.format,
                map: &map,
                frozen: OnFrozen::Refuse,
                source: &header.source,
                chunk: &header.chunk,
            };
            add_csv_records(&mut typer, &recs, header.first_line)?;
        }
    }
    let mut d = typer.finish(&header.chunk)?;
    d.produced_at_ms = header.produced_at_ms;
    Ok(d)
}
