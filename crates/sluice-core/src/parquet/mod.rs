//! Parquet: sluice's own column encoders ([`dictionary`]) and the file writer ([`writer`]).

pub mod dictionary;
pub mod writer;
