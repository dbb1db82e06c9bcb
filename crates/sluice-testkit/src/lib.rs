//! Conformance suites that every backend of a sluice trait runs, and test fixtures.
//!
//! Suites take `&dyn Trait` and assert behaviour and error *variants*, so the embedded backends
//! and the AWS ones (against a wire-compatible server) are held to the same contract.

pub mod catalog;
pub mod faults;
pub mod fixtures;
pub mod queue;
pub mod wire;
