//! Bounds on everything a submitter controls. Hitting one gives a clear error, never a hang.

use serde::{Deserialize, Serialize};

/// Size limits applied to plans and payloads before anything is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest encoded message Baton accepts or produces, in bytes. NATS' default
    /// `max_payload` is 1 MiB; a larger value here only helps if the server allows it.
    pub max_payload_bytes: usize,
    /// Most steps one plan may have.
    pub max_steps: usize,
    /// Most `needs` one step may list (the width of a fan-in).
    pub max_needs: usize,
    /// Most steps that may depend on one step (the width of a fan-out).
    pub max_dependents: usize,
    /// Most attempts a retry policy may ask for.
    pub max_attempts: u32,
    /// Longest step timeout, in milliseconds.
    pub max_timeout_ms: u64,
    /// Deepest JSON nesting accepted in inputs and outputs.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
            max_steps: 500,
            max_needs: 100,
            max_dependents: 200,
            max_attempts: 100,
            max_timeout_ms: 24 * 60 * 60 * 1000,
            max_depth: 64,
        }
    }
}
