//! Writer properties: zstd, dictionaries (and which columns do without one), page statistics
//! and page indexes, and the `created_by` other engines trust.

use arrow::array::RecordBatch;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::Result;

/// The Parquet footer's `created_by`, in the form parquet-java parses (`<app> version
/// <semver> (build <hash>)`): Spark, Hive and Trino trust the statistics of files whose writer
/// they can name, and ignore text statistics otherwise.
pub fn created_by() -> String {
    format!(
        "sluice version {} (build {})",
        env!("CARGO_PKG_VERSION"),
        env!("SLUICE_BUILD")
    )
}

/// Parquet settings.
#[derive(Debug, Clone)]
pub struct ParquetOptions {
    /// zstd level of the columns that have a dictionary or hold text.
    pub zstd_level: i32,
    /// Rows per row group at most.
    pub row_group_rows: usize,
    /// A row group is closed early when its buffered size passes this many bytes.
    pub row_group_bytes: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            zstd_level: 3,
            row_group_rows: 1 << 20,
            row_group_bytes: 48 << 20,
        }
    }
}

/// Bytes of a column chunk's dictionary page; a column whose dictionary grows past it falls
/// back to plain encoding for the rest of the row group.
const DICTIONARY_PAGE_BYTES: usize = 256 * 1024;

/// zstd level of every column but text written without a dictionary, once the writer has
/// decided which columns keep theirs ([`writer_properties_for`]):
/// - a dictionary column's pages are bit-packed indices, which a higher level hardly shrinks:
///   TPC-H SF1 lineitem came out 33 KB smaller at level 1 than at 3, and each open column
///   chunk's zstd context is half the size (the peak of `convert` 11 MB lower);
/// - numbers without a dictionary (delta-packed keys, prices): level 3 made SF1's 0.5 MB
///   smaller (136.0 MB against 136.6 MB) for about a tenth of the zstd time of `convert`.
///
/// Free text without a dictionary keeps the configured level: level 1 made TPC-H's comments
/// 49.9 MB instead of 46.5 MB, 2.5% of the whole output, for about a fifth of the zstd time.
pub const FAST_ZSTD_LEVEL: i32 = 1;

/// Writer properties: zstd, dictionaries, page statistics and page indexes.
pub fn writer_properties(o: &ParquetOptions) -> Result<WriterProperties> {
    Ok(builder(o, o.zstd_level)?.build())
}

/// Writer properties once it is decided which columns keep their dictionary: the dictionary
/// off for `plain_columns` (see [`dictionary_misfits`]), which take the encoding of
/// [`plain_encoding`]. Text among them keeps `o.zstd_level`; every other column takes
/// [`FAST_ZSTD_LEVEL`] (or `o.zstd_level`, if lower). `schema` is the file's.
pub fn writer_properties_for(
    o: &ParquetOptions,
    schema: &arrow::datatypes::Schema,
    plain_columns: &[String],
) -> Result<WriterProperties> {
    let mut b = builder(o, o.zstd_level.min(FAST_ZSTD_LEVEL))?;
    for c in plain_columns {
        let path = parquet::schema::types::ColumnPath::from(c.as_str());
        b = b.set_column_dictionary_enabled(path.clone(), false);
        let ty = schema.field_with_name(c).ok().map(|f| f.data_type());
        if ty == Some(&arrow::datatypes::DataType::Utf8) {
            b = b.set_column_compression(
                path.clone(),
                Compression::ZSTD(ZstdLevel::try_new(o.zstd_level)?),
            );
        }
        if let Some(e) = ty.and_then(plain_encoding) {
            b = b.set_column_encoding(path, e);
        }
    }
    Ok(b.build())
}

/// The encoding of a column written without a dictionary, where it beats PLAIN:
/// - integers, dates and timestamps: DELTA_BINARY_PACKED, the differences bit-packed. TPC-H's
///   part keys (random, 200,000 values) took 14.4 MB instead of 17.9 MB at SF1, and sorted
///   keys or timestamps shrink to a few bits a value before zstd sees them;
/// - text: DELTA_LENGTH_BYTE_ARRAY, the lengths apart from the bytes, so zstd sees the text
///   unbroken: TPC-H's comments took 46.5 MB instead of 51.7 MB;
/// - floats stay PLAIN: BYTE_STREAM_SPLIT made TPC-H's prices larger (34.1 MB against 25.1 MB).
///
/// Both are Parquet's own encodings, read by DuckDB, Polars, pyarrow, Spark 3.3 and later,
/// Trino and Athena (engine 3).
pub fn plain_encoding(ty: &arrow::datatypes::DataType) -> Option<parquet::basic::Encoding> {
    use arrow::datatypes::DataType;
    use parquet::basic::Encoding;
    match ty {
        DataType::Int64 | DataType::Int32 | DataType::Date32 | DataType::Timestamp(_, _) => {
            Some(Encoding::DELTA_BINARY_PACKED)
        }
        DataType::Utf8 => Some(Encoding::DELTA_LENGTH_BYTE_ARRAY),
        _ => None,
    }
}

fn builder(
    o: &ParquetOptions,
    zstd_level: i32,
) -> Result<parquet::file::properties::WriterPropertiesBuilder> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_dictionary_enabled(true)
        // A column whose dictionary passes 256 KiB falls back to plain encoding: high-cardinality
        // columns stop paying for interning, and seven open partitions hold less memory.
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(o.row_group_rows))
        .set_created_by(created_by()))
}

/// Rows a dictionary decision needs to see at least.
pub const DICTIONARY_SAMPLE_MIN: usize = 4096;
/// Rows of one partition a dictionary decision looks at, at most.
const DICTIONARY_SAMPLE_MAX: usize = 65_536;

/// The columns whose dictionary would overflow its page in a row group of `row_group_rows`,
/// judged from `parts`: rows of one table, each batch the rows of one partition (one file) in
/// order. Writing them with a dictionary only to fall back to plain encoding part-way costs
/// time, and bytes: 27% more for sorted order keys in TPC-H's lineitem. `None`: fewer than
/// [`DICTIONARY_SAMPLE_MIN`] rows to judge by.
///
/// The distinct values of the first half of each partition's rows and of all of them tell how
/// many values the column has (see the estimate below): a column with few (dates, codes, ten
/// thousand suppliers) keeps its dictionary; one with more than a dictionary page holds in a
/// row group (ids, prices, free text) is written plain.
pub fn dictionary_misfits(parts: &[&RecordBatch], row_group_rows: usize) -> Option<Vec<String>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{
        DataType, Date32Type, Float64Type, Int64Type, TimestampMicrosecondType,
    };
    let schema = parts.first()?.schema();
    let rows: usize = parts
        .iter()
        .map(|b| b.num_rows().min(DICTIONARY_SAMPLE_MAX))
        .sum();
    if rows < DICTIONARY_SAMPLE_MIN {
        return None;
    }
    let mut plain = Vec::new();
    let mut values: Vec<u64> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, field) in schema.fields().iter().enumerate() {
        let (mut d_half, mut d_full, mut n, mut bytes) = (0usize, 0usize, 0usize, 0usize);
        for b in parts {
            // The partition's values as numbers (strings by hash), nulls left out.
            let col = b
                .column(i)
                .slice(0, b.num_rows().min(DICTIONARY_SAMPLE_MAX));
            values.clear();
            match field.data_type() {
                DataType::Int64 => values.extend(
                    col.as_primitive::<Int64Type>()
                        .iter()
                        .flatten()
                        .map(|v| v as u64),
                ),
                DataType::Float64 => values.extend(
                    col.as_primitive::<Float64Type>()
                        .iter()
                        .flatten()
                        .map(f64::to_bits),
                ),
                DataType::Date32 => values.extend(
                    col.as_primitive::<Date32Type>()
                        .iter()
                        .flatten()
                        .map(|v| v as u64),
                ),
                DataType::Timestamp(_, _) => values.extend(
                    col.as_primitive::<TimestampMicrosecondType>()
                        .iter()
                        .flatten()
                        .map(|v| v as u64),
                ),
                DataType::Utf8 => {
                    for v in col.as_string::<i32>().iter().flatten() {
                        values.push(xxhash_rust::xxh3::xxh3_64(v.as_bytes()));
                        // The dictionary page holds the text and its 4-byte length.
                        bytes += v.len() + 4;
                    }
                }
                // Booleans and anything else: the writer's default.
                _ => break,
            }
            if let Some(w) = field.data_type().primitive_width() {
                bytes += w * values.len();
            }
            let half = values.len() / 2;
            seen.clear();
            seen.extend(values[..half].iter().copied());
            d_half += seen.len();
            seen.extend(values[half..].iter().copied());
            d_full += seen.len();
            n += values.len();
        }
        if n < DICTIONARY_SAMPLE_MIN || d_half == 0 {
            continue;
        }
        // Distinct values per partition, estimated from how many new ones the second half of
        // the rows brought: drawing n rows from N values, the first half finds N(1 - e^(-n/2N))
        // and the whole N(1 - e^(-n/N)), a ratio of 1 + e^(-n/2N). Keys that keep coming
        // (sorted order ids, free text) give a ratio of 2: as many values as rows.
        let k = parts.len() as f64;
        let (per_part, d_avg) = (n as f64 / k, d_full as f64 / k);
        let growth = d_full as f64 / d_half as f64;
        let distinct = if growth >= 2.0 {
            f64::INFINITY
        } else if growth <= 1.0 {
            d_avg
        } else {
            (-per_part / (2.0 * (growth - 1.0).ln())).max(d_avg)
        };
        let projected = distinct.min(row_group_rows as f64) * (bytes as f64 / n as f64);
        if projected > DICTIONARY_PAGE_BYTES as f64 {
            plain.push(field.name().clone());
        }
    }
    Some(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileWriter;
    use crate::dictionary::Kind;
    use arrow::array::{Date32Array, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::basic::Compression;
    use std::fs::File;
    use std::sync::Arc;

    /// Rows shaped like TPC-H's lineitem in three partitions of 9,000 rows.
    fn parts() -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("order_key", DataType::Int64, false),
            Field::new("supplier", DataType::Int64, false),
            Field::new("price", DataType::Float64, false),
            Field::new("day", DataType::Date32, false),
            Field::new("mode", DataType::Utf8, false),
            Field::new("comment", DataType::Utf8, true),
        ]));
        let mut seed = 42u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed >> 33
        };
        (0..3)
            .map(|p| {
                let n = 9000;
                let mut key = 0i64;
                let order_key: Vec<i64> = (0..n)
                    .map(|_| {
                        key += (next() % 3) as i64; // a few lines per order, ascending
                        key
                    })
                    .collect();
                let supplier: Vec<i64> = (0..n).map(|_| (next() % 10_000) as i64).collect();
                let price: Vec<f64> = (0..n)
                    .map(|_| (next() % 10_000_000) as f64 / 100.0)
                    .collect();
                let day: Vec<i32> = (0..n)
                    .map(|_| 9000 + p * 365 + (next() % 365) as i32)
                    .collect();
                let modes = ["AIR", "MAIL", "RAIL", "SHIP", "TRUCK"];
                let mode: Vec<&str> = (0..n).map(|_| modes[(next() % 5) as usize]).collect();
                let comment: Vec<Option<String>> = (0..n)
                    .map(|i| (i % 10 != 0).then(|| format!("note {} {}", next(), next())))
                    .collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(order_key)),
                        Arc::new(Int64Array::from(supplier)),
                        Arc::new(Float64Array::from(price)),
                        Arc::new(Date32Array::from(day)),
                        Arc::new(StringArray::from(mode)),
                        Arc::new(StringArray::from(comment)),
                    ],
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn growing_keys_prices_and_text_are_written_plain_and_the_rest_keeps_its_dictionary() {
        let parts = parts();
        let refs: Vec<&RecordBatch> = parts.iter().collect();
        let plain = dictionary_misfits(&refs, 1 << 20).unwrap();
        assert_eq!(plain, ["order_key", "price", "comment"]);
        // Too few rows to judge.
        let small: Vec<RecordBatch> = parts.iter().map(|b| b.slice(0, 1000)).collect();
        let refs: Vec<&RecordBatch> = small.iter().collect();
        assert_eq!(dictionary_misfits(&refs, 1 << 20), None);
        // Row groups so small that every dictionary fits its page.
        let refs: Vec<&RecordBatch> = parts.iter().collect();
        assert_eq!(
            dictionary_misfits(&refs, 4096).unwrap(),
            Vec::<String>::new()
        );
    }

    /// A consumer's first message: seven partitions of 2,900 rows. Ten thousand suppliers fit a
    /// dictionary; two hundred thousand parts do not.
    #[test]
    fn small_partitions_tell_ten_thousand_values_from_two_hundred_thousand() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("supplier", DataType::Int64, false),
            Field::new("part", DataType::Int64, false),
        ]));
        let mut seed = 7u64;
        let mut next = move |m: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) % m) as i64
        };
        let parts: Vec<RecordBatch> = (0..7)
            .map(|_| {
                let supplier: Vec<i64> = (0..2900).map(|_| next(10_000)).collect();
                let part: Vec<i64> = (0..2900).map(|_| next(200_000)).collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(supplier)),
                        Arc::new(Int64Array::from(part)),
                    ],
                )
                .unwrap()
            })
            .collect();
        let refs: Vec<&RecordBatch> = parts.iter().collect();
        assert_eq!(dictionary_misfits(&refs, 1 << 20).unwrap(), ["part"]);
    }

    /// A nested field takes as many column writers as it has leaves, and the flat fields
    /// around it keep theirs (the one encoded by sluice included): every value reads back.
    #[test]
    fn nested_fields_beside_dictionary_columns_read_back() {
        use arrow::array::{ArrayRef, Int32Builder, ListBuilder, StructArray};
        use arrow::datatypes::{Field, Fields, Schema};
        let point = Fields::from(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("label", DataType::Utf8, true),
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("p", DataType::Struct(point.clone()), true),
            Field::new_list("l", Field::new_list_field(DataType::Int32, true), true),
            Field::new("t", DataType::Utf8, true),
        ]));
        let n = 5000;
        let mut list = ListBuilder::new(Int32Builder::new());
        for i in 0..n {
            for k in 0..i % 4 {
                list.values().append_value(k);
            }
            list.append(i % 9 != 0);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter(
                (0..n).map(|i| (i % 7 != 0).then_some(i64::from(i % 13))),
            )),
            Arc::new(StructArray::new(
                point,
                vec![
                    Arc::new(Int64Array::from_iter_values((0..n).map(i64::from))),
                    Arc::new(StringArray::from_iter(
                        (0..n).map(|i| (i % 5 != 0).then(|| format!("p{}", i % 3))),
                    )),
                ],
                None,
            )),
            Arc::new(list.finish()),
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| Some(format!("t{}", i % 4))),
            )),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested.parquet");
        let mut w = FileWriter::try_new(
            File::create(&path).unwrap(),
            schema,
            writer_properties(&ParquetOptions::default()).unwrap(),
        )
        .unwrap();
        w.write(&batch.slice(0, 1234)).unwrap();
        w.write(&batch.slice(1234, n as usize - 1234)).unwrap();
        w.close().unwrap();
        let read: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                File::open(&path).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        let read = arrow::compute::concat_batches(&batch.schema(), &read).unwrap();
        assert_eq!(read, batch);
        // `a` and `t` were encoded by sluice, the struct's and the list's leaves by arrow-rs.
        let kinds = FileWriter::try_new(
            File::create(dir.path().join("again.parquet")).unwrap(),
            batch.schema(),
            writer_properties(&ParquetOptions::default()).unwrap(),
        )
        .unwrap()
        .kinds;
        assert_eq!(
            kinds,
            [Some(Kind::I64), None, None, None, Some(Kind::Bytes)]
        );
    }

    #[test]
    fn columns_written_plain_carry_no_dictionary_page() {
        let parts = parts();
        let refs: Vec<&RecordBatch> = parts.iter().collect();
        let plain = dictionary_misfits(&refs, 1 << 20).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let props =
            writer_properties_for(&ParquetOptions::default(), &parts[0].schema(), &plain).unwrap();
        // Plain text keeps the configured level; every other column takes level 1.
        let level = |name: &str| match props.compression(&name.into()) {
            Compression::ZSTD(l) => l.compression_level(),
            other => panic!("{name}: {other:?}"),
        };
        for f in parts[0].schema().fields() {
            let text = f.data_type() == &arrow::datatypes::DataType::Utf8;
            let want = if plain.contains(f.name()) && text {
                ParquetOptions::default().zstd_level
            } else {
                FAST_ZSTD_LEVEL
            };
            assert_eq!(level(f.name()), want, "{}", f.name());
        }
        assert!(
            !plain.is_empty() && plain.len() < parts[0].num_columns(),
            "{plain:?}"
        );
        let path = dir.path().join("a.parquet");
        let mut f =
            FileWriter::try_new(File::create(&path).unwrap(), parts[0].schema(), props).unwrap();
        f.write(&parts[0]).unwrap();
        f.close().unwrap();
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(File::open(&path).unwrap())
                .unwrap();
        use parquet::file::reader::FileReader;
        let rg = reader.metadata().row_group(0);
        use parquet::basic::Encoding;
        for c in rg.columns() {
            let name = c.column_path().string();
            let is_plain = plain.contains(&name);
            assert_eq!(c.dictionary_page_offset().is_some(), !is_plain, "{name}");
            // Plain integers and text take their delta encoding; floats stay PLAIN.
            let want = match name.as_str() {
                "order_key" => Some(Encoding::DELTA_BINARY_PACKED),
                "comment" => Some(Encoding::DELTA_LENGTH_BYTE_ARRAY),
                _ if is_plain => Some(Encoding::PLAIN),
                _ => Some(Encoding::RLE_DICTIONARY),
            };
            let encodings: Vec<Encoding> = c.encodings().collect();
            assert!(
                want.is_some_and(|w| encodings.contains(&w)),
                "{name}: {encodings:?}"
            );
            if name == "order_key" || name == "comment" {
                assert!(
                    !encodings.contains(&Encoding::PLAIN),
                    "{name}: {encodings:?}"
                );
            }
        }
        // And the values read back as written.
        let back: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
                File::open(&path).unwrap(),
                4096,
            )
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        let back = arrow::compute::concat_batches(&parts[0].schema(), &back).unwrap();
        assert_eq!(back, parts[0]);
    }
}
