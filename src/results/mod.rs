//! Results: the record schema, the append-only store, and exporters. This module reads and
//! writes records only; it never runs anything.

pub mod export;
pub mod merge;
pub mod schema;
pub mod store;

pub use schema::{Record, Status};
pub use store::{read_results, ResultsWriter, StoreError};
