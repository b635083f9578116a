//! What a worker reported about an attempt besides its outcome (usage, duration, who ran it),
//! and the usage totals read back from the job's counters.

use baton_protocol::messages::{Usage, UsageTotals};

/// What a worker said about an attempt besides its outcome.
#[derive(Debug, Clone, Default)]
pub(crate) struct AttemptInfo {
    pub(crate) usage: Option<Usage>,
    pub(crate) duration_ms: Option<u64>,
    pub(crate) worker: Option<String>,
}

/// Nano-dollars as dollars.
pub(crate) fn usd(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

/// Totals from stored counters; `None` when nothing was ever reported.
pub(crate) fn usage_totals(
    input: Option<String>,
    output: Option<String>,
    cost: Option<String>,
    model: Option<String>,
) -> Option<UsageTotals> {
    if input.is_none() && output.is_none() && cost.is_none() && model.is_none() {
        return None;
    }
    let number = |raw: Option<String>| raw.and_then(|r| r.parse::<u64>().ok()).unwrap_or(0);
    Some(UsageTotals {
        input_tokens: number(input),
        output_tokens: number(output),
        cost_usd: usd(number(cost)),
        model,
    })
}
