//! The index of a table's exactly-once records: every chunk part recorded (a `txn` action)
//! up to a version, sorted, in one object beside the table, so that a writer starts without
//! reading the records out of the checkpoint.
//!
//! ```text
//!  <table>/_sluice/records/<checkpoint version>.idx
//!  magic SLUICEIX · format u32 · reserved u32 · log version u64 · count u64
//!  · table id (u32 length, UTF-8) · count × (key 16 bytes, lastUpdated i64), sorted by key
//!  · xxh3-64 of everything before it
//! ```
//!
//! A checkpoint holds the records as `txn` rows: at a million records the app-id strings are
//! 59 MB of the checkpoint's 60, and reading them took a writer 0.65 s and 142 MB before it
//! could commit. The index holds the same records as 24 bytes each (the 128-bit key
//! [`crate::delta::log::part_key`] and the record's `lastUpdated`), read in one request and
//! searched in place.
//!
//! The log stays the truth: the index is derived from it and checked against it.
//! - It is named after the checkpoint it serves and says which version of the log it holds
//!   the records of (that version or a later one) and the table's id (`metaData.id`): a writer
//!   uses it only for that checkpoint, when the log reaches its version and the table's id is
//!   the same (a table dropped and made again under the same name is not the one indexed), and
//!   reads the versions after the checkpoint as before (records of versions the index holds
//!   too are the same records).
//! - Anything else (no index, one for an older checkpoint (another writer made the newest),
//!   one that does not read, or whose checksum fails) and the writer reads the records from
//!   the checkpoint, as before, and writes the index after its first commit.
//! - The writer that makes a checkpoint writes its index next; an index is never needed for
//!   correctness, so a failure to write one is only logged.

use bytes::Bytes;

use std::collections::HashSet;

use crate::error::{Error, Result};

pub(crate) fn app_id(chunk: &str, partition: &str) -> String {
    format!("sluice/{chunk}/{partition}")
}

/// The key a chunk part's record is kept under: the 128-bit XXH3 of its app id (a collision
/// among a million records has odds of about 1 in 10^26), as two 64-bit halves: aligned to 8
/// bytes, a record takes 24 bytes in the table where a `u128` key would take 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartKey([u64; 2]);

impl PartKey {
    /// The key's two halves (low, high).
    pub fn halves(&self) -> [u64; 2] {
        self.0
    }

    /// The key of two halves.
    pub fn of_halves(h: [u64; 2]) -> Self {
        PartKey(h)
    }
}

impl std::hash::Hash for PartKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0[0]);
    }
}

/// The key of the record of chunk `chunk`'s rows in `partition`.
pub fn part_key(chunk: &str, partition: &str) -> PartKey {
    app_key(&app_id(chunk, partition))
}

pub(crate) fn app_key(app_id: &str) -> PartKey {
    let h = xxhash_rust::xxh3::xxh3_128(app_id.as_bytes());
    PartKey([h as u64, (h >> 64) as u64])
}

/// Keys that are hashes already: the low 64 bits are the table's hash.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartKeyHasher;

impl std::hash::BuildHasher for PartKeyHasher {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// See [`PartKeyHasher`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A set of chunk-part keys ([`part_key`]).
pub(crate) type PartKeys = HashSet<PartKey, PartKeyHasher>;

const MAGIC: &[u8; 8] = b"SLUICEIX";
const FORMAT: u32 = 1;
/// Magic, format, reserved, version, count, table id length.
const HEADER: usize = 8 + 4 + 4 + 8 + 8 + 4;
const RECORD: usize = 24;

/// The path of the index serving checkpoint `checkpoint` of the table in `table_dir`.
pub(crate) fn index_path(table_dir: &str, checkpoint: u64) -> String {
    format!("{}{checkpoint:020}.idx", records_dir(table_dir))
}

/// The directory of a table's record indexes (relative to the lake root).
pub(crate) fn records_dir(table_dir: &str) -> String {
    format!("{table_dir}_sluice/records/")
}

/// The checkpoint version an index file's name serves.
pub(crate) fn checkpoint_of_index(name: &str) -> Option<u64> {
    let v = name.strip_suffix(".idx")?;
    (v.len() == 20).then(|| v.parse().ok())?
}

/// A table's exactly-once records as of a version, sorted by key, searched in place.
#[derive(Clone)]
pub struct RecordIndex {
    /// The log version whose records it holds.
    pub version: u64,
    /// `metaData.id` of the table it was made for.
    pub table_id: String,
    bytes: Bytes,
    start: usize,
    count: usize,
}

impl std::fmt::Debug for RecordIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordIndex")
            .field("version", &self.version)
            .field("table_id", &self.table_id)
            .field("count", &self.count)
            .finish()
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl RecordIndex {
    /// The index file of `records` (any order; a key twice keeps its newest time) as of
    /// `version` of the table whose id is `table_id`.
    pub fn encode(
        version: u64,
        table_id: &str,
        mut records: Vec<(PartKey, i64)>,
    ) -> Result<Vec<u8>> {
        records.sort_unstable_by(|a, b| a.0.halves().cmp(&b.0.halves()).then(b.1.cmp(&a.1)));
        records.dedup_by(|later, earlier| later.0 == earlier.0);
        let id = table_id.as_bytes();
        let id_len = u32::try_from(id.len())
            .map_err(|_| Error::Internal("a table id longer than 4 GiB".into()))?;
        let mut out = Vec::with_capacity(HEADER + id.len() + records.len() * RECORD + 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&(records.len() as u64).to_le_bytes());
        out.extend_from_slice(&id_len.to_le_bytes());
        out.extend_from_slice(id);
        for (k, t) in &records {
            let [a, b] = k.halves();
            out.extend_from_slice(&a.to_le_bytes());
            out.extend_from_slice(&b.to_le_bytes());
            out.extend_from_slice(&t.to_le_bytes());
        }
        let sum = xxhash_rust::xxh3::xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        Ok(out)
    }

    /// Reads an index file; `Err` with what is wrong when it is not one whole.
    pub fn decode(bytes: Bytes) -> std::result::Result<Self, String> {
        if bytes.len() < HEADER + 8 || &bytes[..8] != MAGIC {
            return Err("not a sluice record index".into());
        }
        let body = bytes.len() - 8;
        if xxhash_rust::xxh3::xxh3_64(&bytes[..body]) != u64_at(&bytes, body) {
            return Err("its checksum does not match (cut short or damaged)".into());
        }
        let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if format != FORMAT {
            return Err(format!("format {format}, this sluice reads {FORMAT}"));
        }
        let version = u64_at(&bytes, 16);
        let count = usize::try_from(u64_at(&bytes, 24)).map_err(|_| "too many records")?;
        let id_len = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes")) as usize;
        let start = HEADER + id_len;
        if count.checked_mul(RECORD).and_then(|n| n.checked_add(start)) != Some(body) {
            return Err("its length does not match its count".into());
        }
        let table_id = std::str::from_utf8(&bytes[HEADER..start])
            .map_err(|_| "its table id is not UTF-8")?
            .to_string();
        Ok(RecordIndex {
            version,
            table_id,
            bytes,
            start,
            count,
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn key_at(&self, i: usize) -> [u64; 2] {
        let at = self.start + i * RECORD;
        [u64_at(&self.bytes, at), u64_at(&self.bytes, at + 8)]
    }

    fn time_at(&self, i: usize) -> i64 {
        u64_at(&self.bytes, self.start + i * RECORD + 16) as i64
    }

    /// The `lastUpdated` of the record of `key`, if it has one.
    pub fn get(&self, key: &PartKey) -> Option<i64> {
        let want = key.halves();
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key_at(mid).cmp(&want) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.time_at(mid)),
            }
        }
        None
    }

    /// Every record, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (PartKey, i64)> + '_ {
        (0..self.count).map(|i| (PartKey::of_halves(self.key_at(i)), self.time_at(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_finds_exactly_its_records() {
        let records: Vec<(PartKey, i64)> = (0..5_000)
            .map(|i| (part_key(&format!("c{i}"), "year=2024"), i as i64))
            .collect();
        let mut twice = records.clone();
        // A key recorded twice keeps its newest time.
        twice.push((part_key("c7", "year=2024"), 99_999));
        let bytes = RecordIndex::encode(42, "table-id", twice).unwrap();
        assert_eq!(bytes.len(), HEADER + 8 + 5_000 * RECORD + 8);
        let ix = RecordIndex::decode(Bytes::from(bytes.clone())).unwrap();
        assert_eq!(
            (ix.version, ix.table_id.as_str(), ix.len()),
            (42, "table-id", 5_000)
        );
        for (k, t) in &records {
            let want = if *k == part_key("c7", "year=2024") {
                99_999
            } else {
                *t
            };
            assert_eq!(ix.get(k), Some(want));
        }
        for i in 5_000..6_000 {
            assert_eq!(ix.get(&part_key(&format!("c{i}"), "year=2024")), None);
        }
        assert_eq!(ix.get(&part_key("c1", "year=2025")), None);
        let keys: Vec<[u64; 2]> = ix.iter().map(|(k, _)| k.halves()).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        // Cut short, damaged, or not an index: refused, never read as fewer records.
        let cut = Bytes::from(bytes[..bytes.len() - 30].to_vec());
        assert!(RecordIndex::decode(cut).unwrap_err().contains("checksum"));
        let mut flipped = bytes.clone();
        flipped[HEADER + 8 + 100] ^= 1;
        assert!(RecordIndex::decode(Bytes::from(flipped)).is_err());
        assert!(RecordIndex::decode(Bytes::from_static(b"PAR1....")).is_err());
        let empty = RecordIndex::encode(0, "", vec![]).unwrap();
        let empty = RecordIndex::decode(Bytes::from(empty)).unwrap();
        assert!(empty.is_empty() && empty.get(&part_key("c1", "p")).is_none());
    }

    #[test]
    fn index_names_carry_their_checkpoint() {
        assert_eq!(
            index_path("t/", 1001),
            "t/_sluice/records/00000000000000001001.idx"
        );
        assert_eq!(checkpoint_of_index("00000000000000001001.idx"), Some(1001));
        assert_eq!(checkpoint_of_index("1001.idx"), None);
        assert_eq!(checkpoint_of_index("00000000000000001001.json"), None);
    }
}
