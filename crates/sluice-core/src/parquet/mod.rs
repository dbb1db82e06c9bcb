//! Parquet: spool files written by sluice's encoder (the `sluice-parquet` crate) and uploaded
//! to the lake, the quarantine's schema, and the Delta statistics of a finished file.

pub mod writer;
