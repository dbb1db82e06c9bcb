//! Delta Lake: the log's actions as types ([`actions`]) and the protocol gate every write
//! passes ([`protocol`]). The log itself is read and committed by [`crate::ledger::Ledger`].

pub mod actions;
pub mod adopt;
pub mod protocol;

pub use actions::{Action, Add, CommitInfo, DomainMetadata, Metadata, Protocol, Remove, Txn};
pub use protocol::{Operation, WriteRules};
