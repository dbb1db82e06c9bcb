//! Delta Lake: the log's actions as types ([`actions`]), the protocol gate every write passes
//! ([`protocol`]), the log itself, read and committed by [`log::Ledger`], and the adoption of
//! tables sluice did not create ([`adopt`]).

pub mod actions;
pub mod adopt;
pub mod compact;
pub mod constraints;
pub mod evolve;
pub(crate) mod identity;
pub mod legacy;
pub mod log;
pub mod mapping;
pub mod open;
pub mod protocol;
pub mod records;
pub mod repair;
pub mod upgrade;

pub use actions::{Action, Add, CommitInfo, DomainMetadata, Metadata, Protocol, Remove, Txn};
pub use protocol::{Capabilities, Operation, WriteRules};
