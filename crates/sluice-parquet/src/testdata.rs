//! Test data shared by the unit tests of `dictionary` and the differential suite
//! (`tests/differential.rs` includes this file): columns of every kind sluice's encoder
//! handles.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

/// Deterministic pseudo-random numbers.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Columns of every kind sluice encodes (and a 32-bit one it does too): `distinct` values
/// each, `nulls` percent null, NaN and zeros of both signs among the floats, text past the
/// statistics' 64 bytes with accented letters; `sorted` makes the integers grow, as keys do.
pub fn batch(seed: u64, rows: usize, distinct: u64, nulls: u64, sorted: bool) -> RecordBatch {
    let mut r = Lcg(seed);
    let pick = |r: &mut Lcg| (r.below(100) >= nulls).then(|| r.below(distinct));
    let d: Date32Array = (0..rows)
        .map(|_| pick(&mut r).map(|v| v as i32 - 50))
        .collect();
    let i: Int64Array = (0..rows)
        .map(|k| {
            pick(&mut r).map(|v| {
                if sorted {
                    k as i64 / 3
                } else {
                    (v as i64 - 20) * 1_000_000_007
                }
            })
        })
        .collect();
    let n: Int32Array = (0..rows)
        .map(|_| pick(&mut r).map(|v| v as i32 * 7 - 300))
        .collect();
    let t: TimestampMicrosecondArray = (0..rows)
        .map(|_| pick(&mut r).map(|v| v as i64 * 3_600_000_000))
        .collect();
    let f: Float64Array = (0..rows)
        .map(|_| {
            pick(&mut r).map(|v| match v % 7 {
                0 => f64::NAN,
                1 => -0.0,
                2 => 0.0,
                _ => v as f64 / 4.0 - 10.0,
            })
        })
        .collect();
    let s: StringArray = (0..rows)
        .map(|_| {
            pick(&mut r).map(|v| {
                let len = (v * 37 % 101) as usize;
                let mut text: String = "é".repeat(len / 4);
                text.push_str(&format!("{v:x}"));
                text
            })
        })
        .collect();
    let schema = Schema::new(vec![
        Field::new("d", DataType::Date32, true),
        Field::new("i", DataType::Int64, true),
        Field::new("n", DataType::Int32, true),
        Field::new(
            "t",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("f", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(d),
        Arc::new(i),
        Arc::new(n),
        Arc::new(t.with_timezone("UTC")),
        Arc::new(f),
        Arc::new(s),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}
