//! The message format: a chunk of CSV records (or JSON lines) in an envelope.
//!
//! ```text
//! sluice.chunk.v1 {"table":…,"chunk":…,"first_line":…,"columns":[…],…}\n
//! <base64 of zstd of the records' bytes, exactly as they stood in the source>
//! ```
//!
//! or, with codec `text` (for a queue that keeps large bodies in files, where compressing
//! costs more than the bytes it saves), the records' bytes themselves after the header line.
//!
//! The header is one line of JSON, readable in any queue console; the payload keeps the source
//! bytes, so a rejected row is quarantined with its raw text and line number. Chunk ids are
//! deterministic (source fingerprint, chunk index, content hash): producing the same file again
//! gives the same ids, and the table's Delta log drops chunk parts it already holds.

pub mod bufpool;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::source::csv::CsvFormat;

/// First bytes of every sluice chunk message.
pub(crate) const MAGIC: &str = "sluice.chunk.v1 ";

/// A row the producer could not put in a chunk (e.g. larger than a message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// The line of the source the record started on.
    pub line: u64,
    /// The start of the raw record.
    pub raw: String,
    /// Why the record was refused.
    pub reason: String,
}

/// Payload compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// Base64 of the records.
    None,
    /// Base64 of a zstd frame of the records.
    Zstd,
    /// The records as they are (UTF-8 text), neither compressed nor base64.
    Text,
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
    /// The table the rows are for.
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
    /// How the payload is encoded.
    pub codec: Codec,
    /// The CSV dialect of the records (for CSV payloads).
    pub format: CsvFormat,
    /// Column names of the source header, in source order (CSV payloads).
    pub columns: Vec<String>,
    /// Absent in chunks of earlier versions: CSV.
    #[serde(default, skip_serializing_if = "Payload::is_csv")]
    pub payload: Payload,
    /// Records the producer refused (too large for any message), for the quarantine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejects: Vec<Reject>,
    /// When the producer made the chunk (ms since the epoch), for freshness; absent in chunks
    /// of earlier versions. Not part of the chunk id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produced_at_ms: Option<i64>,
}

/// Compresses a payload (`level`: zstd's).
pub fn compress(raw: &[u8], codec: Codec, level: i32) -> Vec<u8> {
    let mut out = Vec::new();
    Compressor::new(codec, level).compress_into(raw, &mut out);
    out
}

/// Compresses payload after payload with one zstd context (a producer's chunks are
/// megabytes; a fresh context for each costs page faults, as does a fresh output buffer).
pub(crate) struct Compressor {
    codec: Codec,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressor {
    pub fn new(codec: Codec, level: i32) -> Self {
        let zstd = (codec == Codec::Zstd).then(|| {
            zstd::bulk::Compressor::new(level).expect("a zstd level from 1 to 19 is valid")
        });
        Compressor { codec, zstd }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Replaces `out` with the payload of `raw`.
    pub fn compress_into(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        out.clear();
        match self.codec {
            Codec::None | Codec::Text => out.extend_from_slice(raw),
            Codec::Zstd => {
                out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
                self.zstd
                    .as_mut()
                    .expect("a zstd compressor")
                    .compress_to_buffer(raw, out)
                    .expect("zstd compression into a buffer of its bound cannot fail");
            }
        }
    }
}

/// Builds a message body. The returned string's length is the message size.
pub fn encode(header: &ChunkHeader, compressed: &[u8]) -> String {
    let json = serde_json::to_string(header).expect("header serializes");
    let mut s = crate::chunk::bufpool::take_string(
        MAGIC.len() + json.len() + 1 + compressed.len().div_ceil(3) * 4,
    );
    s.push_str(MAGIC);
    s.push_str(&json);
    s.push('\n');
    B64.encode_string(compressed, &mut s);
    s
}

/// Builds the body of a chunk whose records are the text `records` ([`Codec::Text`]).
pub fn encode_text(header: &ChunkHeader, records: &str) -> String {
    debug_assert_eq!(header.codec, Codec::Text);
    let json = serde_json::to_string(header).expect("header serializes");
    let mut s = crate::chunk::bufpool::take_string(MAGIC.len() + json.len() + 1 + records.len());
    s.push_str(MAGIC);
    s.push_str(&json);
    s.push('\n');
    s.push_str(records);
    s
}

/// Size of a message built by [`encode`] for a header JSON of `header_len` bytes.
pub(crate) fn encoded_len(header_len: usize, compressed_len: usize) -> usize {
    MAGIC.len() + header_len + 1 + compressed_len.div_ceil(3) * 4
}

/// Size of a message built by [`encode_text`] for a header JSON of `header_len` bytes.
pub(crate) fn encoded_text_len(header_len: usize, records_len: usize) -> usize {
    MAGIC.len() + header_len + 1 + records_len
}

/// Whether a body is a sluice chunk.
pub(crate) fn is_chunk(body: &str) -> bool {
    body.starts_with(MAGIC)
}

/// Largest decompressed payload accepted (guards against decompression bombs).
const MAX_PAYLOAD: usize = 256 << 20;

/// Decodes a chunk message into its header and the raw records.
pub fn decode(body: &str) -> Result<(ChunkHeader, Vec<u8>)> {
    let (mut scratch, mut raw) = (Vec::new(), Vec::new());
    let (header, records) = decode_into(body, &mut scratch, &mut raw)?;
    let records = records.to_vec();
    Ok((header, records))
}

/// Decodes a chunk message into its header and its raw records: a slice of `body` for
/// [`Codec::Text`], else decoded into `raw`, using `scratch` for the compressed payload
/// (callers that decode message after message keep both buffers).
pub(crate) fn decode_into<'a>(
    body: &'a str,
    scratch: &mut Vec<u8>,
    raw: &'a mut Vec<u8>,
) -> Result<(ChunkHeader, &'a [u8])> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| Error::Undecodable("not a sluice chunk".into()))?;
    let (json, payload) = rest
        .split_once('\n')
        .ok_or_else(|| Error::Undecodable("chunk has no payload line".into()))?;
    let header: ChunkHeader = serde_json::from_str(json)
        .map_err(|e| Error::Undecodable(format!("chunk header is not valid: {e}")))?;
    if header.codec == Codec::Text {
        return Ok((header, payload.as_bytes()));
    }
    let undecodable = |why: String| {
        Error::Undecodable(format!(
            "chunk {} payload does not decompress: {why}",
            header.chunk
        ))
    };
    let data = if header.codec == Codec::None {
        &mut *raw
    } else {
        &mut *scratch
    };
    data.clear();
    B64.decode_vec(payload.trim_end(), data).map_err(|e| {
        Error::Undecodable(format!("chunk {} payload is not base64: {e}", header.chunk))
    })?;
    let data = &scratch[..];
    match header.codec {
        Codec::None | Codec::Text => {}
        Codec::Zstd => {
            raw.clear();
            let len = zstd::zstd_safe::get_frame_content_size(data)
                .ok()
                .flatten()
                .map(|n| n as usize);
            match len {
                Some(n) if n <= MAX_PAYLOAD => {
                    raw.reserve(n);
                    zstd::bulk::Decompressor::new()
                        .and_then(|mut d| d.decompress_to_buffer(data, raw))
                        .map_err(|e| undecodable(e.to_string()))?;
                }
                Some(n) => return Err(undecodable(format!("{n} bytes, more than {MAX_PAYLOAD}"))),
                // Frames from other writers may not state their size.
                None => {
                    *raw = zstd::bulk::decompress(data, MAX_PAYLOAD)
                        .map_err(|e| undecodable(e.to_string()))?
                }
            }
        }
    }
    Ok((header, &raw[..]))
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
        let c = compress(raw, Codec::Zstd, 3);
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

    #[test]
    fn every_codec_round_trips_and_a_bad_payload_is_undecodable() {
        let raw: Vec<u8> = (0..5_000)
            .flat_map(|i| format!("{i},\"row {i}\",2024-01-{:02}\n", i % 28 + 1).into_bytes())
            .collect();
        let header = |codec| ChunkHeader {
            table: "t".into(),
            schema: "abc".into(),
            chunk: "f-0-1".into(),
            source: "x.csv".into(),
            first_line: 2,
            rows: 5_000,
            codec,
            format: CsvFormat::default(),
            columns: vec!["a".into(), "b".into(), "c".into()],
            payload: Payload::Csv,
            rejects: vec![],
            produced_at_ms: None,
        };
        for codec in [Codec::None, Codec::Zstd] {
            let c = compress(&raw, codec, 1);
            if codec != Codec::None {
                assert!(c.len() * 2 < raw.len(), "{codec:?}: {} bytes", c.len());
            }
            let (h, back) = decode(&encode(&header(codec), &c)).unwrap();
            assert_eq!(h.codec, codec);
            assert!(back == raw, "{codec:?} does not round-trip");
        }
        // Text: the records themselves follow the header line, trailing newlines included.
        let text = std::str::from_utf8(&raw).unwrap();
        let body = encode_text(&header(Codec::Text), text);
        assert_eq!(
            body.len(),
            encoded_text_len(
                serde_json::to_string(&header(Codec::Text)).unwrap().len(),
                text.len()
            )
        );
        assert!(body.ends_with(text));
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        let (h, got) = decode_into(&body, &mut scratch, &mut out).unwrap();
        assert_eq!(h.codec, Codec::Text);
        assert!(got == raw, "text does not round-trip");
        assert!(out.is_empty() && scratch.is_empty(), "text is not copied");
        // Decoding message after message into the same buffers.
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        for part in [&raw[..100], &raw[..], &raw[..7]] {
            let body = encode(&header(Codec::Zstd), &compress(part, Codec::Zstd, 3));
            let (_, got) = decode_into(&body, &mut scratch, &mut out).unwrap();
            assert!(got == part, "{} bytes decoded as {}", part.len(), got.len());
        }
        let undecodable = |payload: &[u8]| match decode(&encode(&header(Codec::Zstd), payload)) {
            Err(Error::Undecodable(m)) => assert!(m.contains("chunk f-0-1"), "{m}"),
            other => panic!("decoded: {:?}", other.map(|(_, r)| r.len())),
        };
        let c = compress(&raw, Codec::Zstd, 1);
        undecodable(&c[..c.len() / 2]);
        undecodable(&c[..3]);
        // A frame that states a size past the limit is refused before anything is allocated:
        // magic, a single-segment header with an 8-byte content size, one empty last block.
        let mut bomb = vec![0x28, 0xB5, 0x2F, 0xFD, 0xE0];
        bomb.extend_from_slice(&(MAX_PAYLOAD as u64 + 1).to_le_bytes());
        bomb.extend_from_slice(&[0x01, 0x00, 0x00]);
        undecodable(&bomb);
    }
}
