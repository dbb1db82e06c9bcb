//! The message format: a chunk of CSV records (or JSON lines) in an envelope.
//!
//! ```text
//! sluice.chunk.v1 {"table":…,"chunk":…,"first_line":…,"columns":[…],…}\n
//! <base64 of zstd of the records' bytes, exactly as they stood in the source>
//! ```
//!
//! The header is one line of JSON, readable in any queue console; the payload keeps the source
//! bytes, so a rejected row is quarantined with its raw text and line number. Chunk ids are
//! deterministic (source fingerprint, chunk index, content hash): producing the same file again
//! gives the same ids, and the table's Delta log drops chunk parts it already holds.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::csv::CsvFormat;
use crate::error::{Error, Result};

/// First bytes of every sluice chunk message.
pub const MAGIC: &str = "sluice.chunk.v1 ";

/// A row the producer could not put in a chunk (e.g. larger than a message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    pub line: u64,
    /// The start of the raw record.
    pub raw: String,
    pub reason: String,
}

/// Payload compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    None,
    Zstd,
}

/// What the payload's records are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// CSV records in `format`, fields in `columns` order.
    #[default]
    Csv,
    /// One JSON object per line (JSON-lines sources, and Parquet rows as JSON).
    JsonLines,
}

impl Payload {
    fn is_csv(&self) -> bool {
        *self == Payload::Csv
    }
}

/// The envelope of a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHeader {
    pub table: String,
    /// Fingerprint of the table schema the producer checked the header against.
    pub schema: String,
    /// Deterministic chunk id.
    pub chunk: String,
    /// Source file name, for the quarantine.
    pub source: String,
    /// Line of the first record.
    pub first_line: u64,
    /// Records in the payload.
    pub rows: u64,
    pub codec: Codec,
    pub format: CsvFormat,
    /// Column names of the source header, in source order (CSV payloads).
    pub columns: Vec<String>,
    /// Absent in chunks of earlier versions: CSV.
    #[serde(default, skip_serializing_if = "Payload::is_csv")]
    pub payload: Payload,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejects: Vec<Reject>,
    /// When the producer made the chunk (ms since the epoch), for freshness; absent in chunks
    /// of earlier versions. Not part of the chunk id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produced_at_ms: Option<i64>,
}

/// Compresses a payload.
pub fn compress(raw: &[u8], level: i32) -> Vec<u8> {
    zstd::bulk::compress(raw, level).expect("zstd compression of a buffer cannot fail")
}

/// Builds a message body. The returned string's length is the message size.
pub fn encode(header: &ChunkHeader, compressed: &[u8]) -> String {
    let json = serde_json::to_string(header).expect("header serializes");
    let mut s =
        String::with_capacity(MAGIC.len() + json.len() + 1 + compressed.len().div_ceil(3) * 4);
    s.push_str(MAGIC);
    s.push_str(&json);
    s.push('\n');
    B64.encode_string(compressed, &mut s);
    s
}

/// Size of a message built by [`encode`] for a header JSON of `header_len` bytes.
pub fn encoded_len(header_len: usize, compressed_len: usize) -> usize {
    MAGIC.len() + header_len + 1 + compressed_len.div_ceil(3) * 4
}

/// Whether a body is a sluice chunk.
pub fn is_chunk(body: &str) -> bool {
    body.starts_with(MAGIC)
}

/// Largest decompressed payload accepted (guards against decompression bombs).
const MAX_PAYLOAD: usize = 256 << 20;

/// Decodes a chunk message into its header and the raw records.
pub fn decode(body: &str) -> Result<(ChunkHeader, Vec<u8>)> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| Error::Undecodable("not a sluice chunk".into()))?;
    let (json, b64) = rest
        .split_once('\n')
        .ok_or_else(|| Error::Undecodable("chunk has no payload line".into()))?;
    let header: ChunkHeader = serde_json::from_str(json)
        .map_err(|e| Error::Undecodable(format!("chunk header is not valid: {e}")))?;
    let data = B64.decode(b64.trim_end()).map_err(|e| {
        Error::Undecodable(format!("chunk {} payload is not base64: {e}", header.chunk))
    })?;
    let raw = match header.codec {
        Codec::None => data,
        Codec::Zstd => zstd::bulk::decompress(&data, MAX_PAYLOAD).map_err(|e| {
            Error::Undecodable(format!(
                "chunk {} payload does not decompress: {e}",
                header.chunk
            ))
        })?,
    };
    Ok((header, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = ChunkHeader {
            table: "t".into(),
            schema: "abc".into(),
            chunk: "f-0-1".into(),
            source: "x.csv".into(),
            first_line: 2,
            rows: 2,
            codec: Codec::Zstd,
            format: CsvFormat::default(),
            columns: vec!["a".into(), "b".into()],
            payload: Payload::Csv,
            rejects: vec![],
            produced_at_ms: Some(1_795_000_000_000),
        };
        let raw = b"1,2\n3,\"4\n5\"\n";
        let c = compress(raw, 3);
        let body = encode(&h, &c);
        assert_eq!(
            body.len(),
            encoded_len(serde_json::to_string(&h).unwrap().len(), c.len())
        );
        assert!(is_chunk(&body));
        let (h2, raw2) = decode(&body).unwrap();
        assert_eq!(h2, h);
        assert_eq!(raw2, raw);
        assert!(matches!(decode("{\"a\":1}"), Err(Error::Undecodable(_))));
        assert!(matches!(
            decode(&body.replace("\n", "\n!!")),
            Err(Error::Undecodable(_))
        ));
    }
}
