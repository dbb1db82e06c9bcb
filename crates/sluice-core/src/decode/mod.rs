//! Decoding queue messages: sluice chunks, and messages other programs send (one JSON object,
//! JSON lines, or CSV lines in the table's column order), so an existing queue of events can be
//! landed too.

pub mod json;
pub mod message;
pub mod rows;
pub(crate) mod value;
