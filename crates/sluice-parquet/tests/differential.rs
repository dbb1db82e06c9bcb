//! sluice's encoder against arrow-rs's `ArrowWriter`: the same rows, written by both with the
//! same properties, read back the same and make the same file, byte for byte: the same
//! chunk statistics, the same pages (the same row ranges, and the same bytes, dictionary and
//! data pages alike, including a dictionary's fall back to PLAIN part-way), the same column
//! and offset indexes, the same footer. The checks go from the most telling to the whole file,
//! so a failure names what differs.
//!
//! arrow-rs checks its page and dictionary limits once per write batch, sluice's encoder after
//! every value: arrow-rs is given one value per write batch and rows in slices that start where
//! its pages start, so both cut at the same rows. Pages cut by the byte limit (1 MiB) rather
//! than the row limit are not compared: the cases here stay below it.
//!
//! `SLUICE_PARQUET_CASES` sets the number of cases (256 by default; 2,000 pass in 35 s).

use std::fs::File;
use std::path::Path;

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use proptest::prelude::*;
use sluice_parquet::{FileWriter, ParquetOptions, writer_properties};

#[path = "../src/testdata.rs"]
mod testdata;
use testdata::batch;

fn read(path: &Path) -> (Vec<RecordBatch>, ParquetMetaData) {
    let b = ParquetRecordBatchReaderBuilder::try_new_with_options(
        File::open(path).unwrap(),
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
    )
    .unwrap();
    let meta = b.metadata().as_ref().clone();
    (b.build().unwrap().map(|b| b.unwrap()).collect(), meta)
}

/// The bytes of the file at `offset`, `length` long.
fn bytes_at(path: &Path, offset: Option<i64>, length: Option<i32>) -> Option<Vec<u8>> {
    let (offset, length) = (offset?, length?);
    let all = std::fs::read(path).unwrap();
    Some(all[offset as usize..offset as usize + length as usize].to_vec())
}

fn cases() -> u32 {
    std::env::var("SLUICE_PARQUET_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn sluice_and_arrow_rs_write_the_same_indexes(
        seed in 0u64..1_000_000,
        rows in 1usize..6_000,
        distinct in 1u64..400,
        nulls in 0u64..40,
        sorted in proptest::bool::ANY,
        small_dictionary in proptest::bool::ANY,
        page_rows in 200usize..3_000,
        group_rows in 500usize..5_000,
        batches in 1usize..4,
    ) {
        let data = batch(seed, rows, distinct, nulls, sorted);
        let mut props = writer_properties(&ParquetOptions {
            row_group_rows: group_rows,
            ..Default::default()
        })
        .unwrap()
        .into_builder()
        .set_data_page_row_count_limit(page_rows)
        // arrow-rs checks the page limits once per write batch: one value at a time, it cuts
        // pages where sluice's encoder does, at the limit itself.
        .set_write_batch_size(1);
        if small_dictionary {
            // Forces the fall back to PLAIN part-way.
            props = props.set_dictionary_page_size_limit(600);
        }
        let props = props.build();
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
        let mut w = FileWriter::try_new(File::create(&ours).unwrap(), data.schema(), props.clone())
            .unwrap();
        let mut a = ArrowWriter::try_new(File::create(&theirs).unwrap(), data.schema(), Some(props))
            .unwrap();
        // Ours in any slices: it cuts pages at the limits wherever its input is cut.
        let step = rows.div_ceil(batches);
        for at in (0..rows).step_by(step) {
            w.write(&data.slice(at, step.min(rows - at))).unwrap();
        }
        // arrow-rs checks a column without nulls in chunks of the page limit counted from the
        // start of each write (elsewhere a value at a time): it is given each page's rows on
        // their own, or, where a dictionary may overflow part-way, one row at a time.
        let slice = if small_dictionary { 1 } else { page_rows };
        for g in (0..rows).step_by(group_rows) {
            let end = (g + group_rows).min(rows);
            for p in (g..end).step_by(slice) {
                a.write(&data.slice(p, slice.min(end - p))).unwrap();
            }
        }
        w.close().unwrap();
        a.close().unwrap();

        let (got, meta) = read(&ours);
        let (_, want) = read(&theirs);
        let got = arrow::compute::concat_batches(&data.schema(), &got).unwrap();
        prop_assert_eq!(&got, &data);
        prop_assert_eq!(meta.num_row_groups(), want.num_row_groups());
        for g in 0..meta.num_row_groups() {
            let (rg, theirs_rg) = (meta.row_group(g), want.row_group(g));
            prop_assert_eq!(rg.num_rows(), theirs_rg.num_rows());
            for c in 0..rg.num_columns() {
                let (col, theirs_col) = (rg.column(c), theirs_rg.column(c));
                let name = col.column_path().string();
                prop_assert_eq!(col.statistics(), theirs_col.statistics(), "{} statistics", name);
                prop_assert_eq!(col.num_values(), theirs_col.num_values(), "{}", name);
                // The pages: the same row ranges.
                let (oi, theirs_oi) = (
                    &meta.offset_index().unwrap()[g][c],
                    &want.offset_index().unwrap()[g][c],
                );
                let rows_of = |o: &parquet::file::page_index::offset_index::OffsetIndexMetaData| {
                    o.page_locations.iter().map(|p| p.first_row_index).collect::<Vec<_>>()
                };
                prop_assert_eq!(rows_of(oi), rows_of(theirs_oi), "{} page rows", name);
                // The chunk itself: its pages, byte for byte.
                let chunk = |path: &Path, c: &parquet::file::metadata::ColumnChunkMetaData| {
                    let (start, len) = c.byte_range();
                    bytes_at(path, Some(start as i64), Some(len as i32))
                };
                prop_assert!(chunk(&ours, col) == chunk(&theirs, theirs_col), "{} chunk bytes", name);
                prop_assert_eq!(oi, theirs_oi, "{} offset index", name);
                prop_assert_eq!(
                    bytes_at(&ours, col.offset_index_offset(), col.offset_index_length()),
                    bytes_at(&theirs, theirs_col.offset_index_offset(), theirs_col.offset_index_length()),
                    "{} offset index bytes", name
                );
                // The column index, decoded and byte for byte.
                prop_assert_eq!(
                    &meta.column_index().unwrap()[g][c],
                    &want.column_index().unwrap()[g][c],
                    "{} column index", name
                );
                prop_assert_eq!(
                    bytes_at(&ours, col.column_index_offset(), col.column_index_length()),
                    bytes_at(&theirs, theirs_col.column_index_offset(), theirs_col.column_index_length()),
                    "{} column index bytes", name
                );
            }
        }
        // And so the whole file, byte for byte (the footer too).
        prop_assert!(
            std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
            "the files differ outside their column chunks and indexes"
        );
    }
}
