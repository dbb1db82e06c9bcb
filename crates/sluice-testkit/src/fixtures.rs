//! Test fixtures.

use std::path::{Path, PathBuf};

/// The sample CSV shipped in the repository (`data/us-employment.csv`).
pub fn sample_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/us-employment.csv")
}

/// Writes a CSV file of `rows` rows with a unique `id`, a date spanning several years, an
/// amount, and a text column with quotes, commas and newlines; returns its path and the sum
/// of `amount` in cents.
pub fn write_events_csv(dir: &Path, name: &str, rows: u64, first_id: u64) -> (PathBuf, i64) {
    use std::fmt::Write;
    let mut s = String::from("id,day,amount_cents,note\n");
    let mut sum = 0i64;
    for i in first_id..first_id + rows {
        let year = 2019 + (i % 6);
        let month = 1 + (i % 12);
        let day = 1 + (i % 28);
        let cents = (i as i64 * 7919) % 100_000 - 20_000;
        sum += cents;
        let note = match i % 4 {
            0 => "plain".to_string(),
            1 => format!("\"with, comma {i}\""),
            2 => format!("\"line\nbreak \"\"{i}\"\"\""),
            _ => String::new(),
        };
        let _ = writeln!(s, "{i},{year}-{month:02}-{day:02},{cents},{note}");
    }
    let path = dir.join(name);
    std::fs::write(&path, s).expect("write csv");
    (path, sum)
}

/// A Delta schema of a `long` column `id`, partitioned by a `long` column `year`: the table the
/// commit-protocol tests write.
pub fn id_year_schema() -> sluice_core::delta::log::DeltaSchema {
    use sluice_core::delta::log::{DeltaField, DeltaSchema};
    let long = |name: &str| DeltaField {
        name: name.into(),
        ty: "long".into(),
        nullable: true,
        source_name: None,
    };
    DeltaSchema {
        fields: vec![long("id"), long("year")],
        partition_columns: vec!["year".into()],
        configuration: Default::default(),
    }
}
