//! Baton's example agents for the demo pipeline: `nlu` → (`sql` ∥ `rag`) → `answer`.
//!
//! Everything here is pure, deterministic and offline: the SQL agent queries a bundled SQLite
//! database, the RAG agent ranks bundled documents with BM25, and no model or network is used.
//! The NATS worker glue lives elsewhere; every output type is serde-serialisable so the workers
//! can ship it as JSON.

// Tests unwrap freely: a panic there is a test failure with a precise location. Non-test
// code is still held to the workspace's `unwrap_used` lint by the plain lib build.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod answer;
pub mod nlu;
pub mod rag;
pub mod sql;

pub mod cli;
pub mod sim;
pub mod workers;
