//! Labelled text data and instruction/response pairs: reading TSV/CSV/JSONL files by the
//! columns a recipe names, and ordering examples into batches.

mod batches;
mod pairs;
mod read;
mod table;

pub use batches::{batch_order, BatchOrder};
pub use pairs::{read_pairs, Pair};
pub use read::{read_examples, Format};

/// One labelled text.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    /// Label id in `0..num_labels`.
    pub label: usize,
}
