//! The pipelines: the [`producer`] (sources to chunk messages), the [`consumer`] (messages to
//! table commits), [`convert`] (sources straight to the table) and the [`table_writer`] they
//! share.

pub mod consumer;
pub mod convert;
pub mod health;
pub mod merge;
pub mod producer;
pub mod setup;
pub mod startup;
pub mod table_writer;
