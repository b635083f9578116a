//! `baton trace`: a job explained — a waterfall of its attempts (start, duration, outcome,
//! tokens, cost) and the decisions the orchestrator took, in order; `--json` for machines,
//! `--html` for a self-contained page with the waterfall drawn as a chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use baton_protocol::messages::{Event, EventKind, TraceReply, TraceRequest, UsageTotals};
use baton_protocol::subject;
use clap::Args;
use serde::Serialize;
use uuid::Uuid;

use crate::client::Client;
use crate::follow::describe;

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Job id.
    pub job: Uuid,
    /// Print the trace as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML page with the waterfall chart to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

pub(crate) async fn run(nats: &baton_nats::NatsArgs, args: TraceArgs) -> anyhow::Result<i32> {
    let client = Client::connect(nats).await?;
    let reply: TraceReply = client
        .request(subject::TRACE, &TraceRequest { job_id: args.job })
        .await?;
    let trace = Trace::from_reply(reply);
    if args.json {
        crate::out(&format!("{}\n", serde_json::to_string_pretty(&trace)?));
    } else {
        crate::out(&trace.text());
    }
    if let Some(path) = &args.html {
        std::fs::write(path, trace.html())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        if !args.json {
            crate::out(&format!("wrote {}\n", path.display()));
        }
    }
    Ok(0)
}

/// A job's trace: its attempts on one time axis, and its decisions.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Trace {
    pub(crate) job_id: Uuid,
    pub(crate) plan: Option<String>,
    pub(crate) status: String,
    /// Unix ms of the job's creation: offsets count from here.
    pub(crate) started_ms: u64,
    /// Until the job ended, or until its last event while it runs.
    pub(crate) duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<UsageTotals>,
    pub(crate) steps: Vec<StepTrace>,
    /// Time steps spent escalated, waiting for a human.
    pub(crate) escalations: Vec<EscalationTrace>,
    pub(crate) decisions: Vec<Decision>,
    /// Oldest decisions the log no longer keeps.
    pub(crate) dropped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct StepTrace {
    pub(crate) id: String,
    pub(crate) agent: String,
    pub(crate) status: String,
    pub(crate) attempts: Vec<AttemptTrace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<UsageTotals>,
    /// The output was reused from another job (`baton rerun`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reused_from: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct AttemptTrace {
    pub(crate) attempt: u32,
    /// Offset of the dispatch from the job's start.
    pub(crate) start_ms: u64,
    /// Until the outcome was recorded; `None` while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) duration_ms: Option<u64>,
    /// `succeeded`, `failed`, `timeout`, `invalid`, `poison`, or `running`.
    pub(crate) outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// How long the agent itself worked (the worker's figure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) agent_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<UsageTotals>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) worker: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EscalationTrace {
    pub(crate) step: String,
    pub(crate) start_ms: u64,
    /// Until a human resolved it; `None` while it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) duration_ms: Option<u64>,
    /// `output`, `retry` or `fail`, once resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Decision {
    pub(crate) offset_ms: u64,
    pub(crate) text: String,
    pub(crate) event: Event,
}

impl Trace {
    pub(crate) fn from_reply(reply: TraceReply) -> Self {
        let mut events = reply.decisions;
        baton_protocol::messages::sort_decisions(&mut events);
        let started_ms = events
            .first()
            .map(|e| e.ts_ms.min(reply.job.created_ms))
            .unwrap_or(reply.job.created_ms);
        let ended = events.iter().rev().find_map(|e| match e.kind {
            EventKind::JobSucceeded { .. } | EventKind::JobFailed { .. } => Some(e.ts_ms),
            _ => None,
        });
        let last = events.last().map_or(started_ms, |e| e.ts_ms);
        let duration_ms = ended.unwrap_or(last).saturating_sub(started_ms);
        let offset = |ts: u64| ts.saturating_sub(started_ms);
        let mut steps: BTreeMap<String, StepTrace> = reply
            .job
            .steps
            .iter()
            .map(|(id, view)| {
                (
                    id.clone(),
                    StepTrace {
                        id: id.clone(),
                        agent: view.agent.clone(),
                        status: view.status.as_str().to_owned(),
                        attempts: Vec::new(),
                        usage: view.usage.clone(),
                        reused_from: None,
                    },
                )
            })
            .collect();
        let mut escalations: Vec<EscalationTrace> = Vec::new();
        for event in &events {
            match &event.kind {
                EventKind::StepEscalated { step_id, .. } => escalations.push(EscalationTrace {
                    step: step_id.clone(),
                    start_ms: offset(event.ts_ms),
                    duration_ms: None,
                    action: None,
                    by: None,
                }),
                EventKind::EscalationResolved {
                    step_id,
                    action,
                    by,
                    ..
                } => {
                    if let Some(wait) = escalations
                        .iter_mut()
                        .rev()
                        .find(|w| &w.step == step_id && w.action.is_none())
                    {
                        wait.duration_ms = Some(offset(event.ts_ms).saturating_sub(wait.start_ms));
                        wait.action = serde_json::to_value(action)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned));
                        wait.by = by.clone();
                    }
                }
                EventKind::StepDispatched {
                    step_id, attempt, ..
                } => {
                    if let Some(step) = steps.get_mut(step_id)
                        && !step.attempts.iter().any(|a| a.attempt == *attempt)
                    {
                        step.attempts.push(AttemptTrace {
                            attempt: *attempt,
                            start_ms: offset(event.ts_ms),
                            duration_ms: None,
                            outcome: "running".into(),
                            error: None,
                            agent_ms: None,
                            usage: None,
                            worker: None,
                        });
                    }
                }
                EventKind::StepSucceeded {
                    step_id,
                    attempt,
                    report,
                    ..
                }
                | EventKind::StepFailed {
                    step_id,
                    attempt,
                    report,
                    ..
                } => {
                    let Some(step) = steps.get_mut(step_id) else {
                        continue;
                    };
                    let Some(run) = step
                        .attempts
                        .iter_mut()
                        .find(|a| a.attempt == *attempt && a.outcome == "running")
                    else {
                        continue;
                    };
                    // The attempt started when its transition ran, a moment before its
                    // dispatch event (published once the broker stored the task).
                    if let Some(latency) = report.latency_ms {
                        run.start_ms = run
                            .start_ms
                            .min(offset(event.ts_ms).saturating_sub(latency));
                    }
                    run.duration_ms = Some(offset(event.ts_ms).saturating_sub(run.start_ms));
                    run.agent_ms = report.duration_ms;
                    run.usage = report.usage.clone();
                    run.worker = report.worker.clone();
                    match &event.kind {
                        EventKind::StepFailed { error, .. } => {
                            run.outcome =
                                if error.class == baton_protocol::messages::FailureClass::Error {
                                    "failed".into()
                                } else {
                                    error.class.as_str().into()
                                };
                            run.error = Some(error.message.clone());
                        }
                        _ => run.outcome = "succeeded".into(),
                    }
                }
                EventKind::StepReused {
                    step_id,
                    source_job,
                } => {
                    if let Some(step) = steps.get_mut(step_id) {
                        step.reused_from = Some(*source_job);
                    }
                }
                _ => {}
            }
        }
        let decisions = events
            .into_iter()
            .map(|event| Decision {
                offset_ms: offset(event.ts_ms),
                text: describe(&event.kind),
                event,
            })
            .collect();
        // Steps in the order they started; those that never did, last.
        let mut steps: Vec<StepTrace> = steps.into_values().collect();
        steps.sort_by_key(|s| {
            (
                s.attempts.first().map_or(u64::MAX, |a| a.start_ms),
                s.id.clone(),
            )
        });
        Trace {
            job_id: reply.job.job_id,
            plan: reply.job.plan.clone(),
            status: reply.job.status.as_str().to_owned(),
            started_ms,
            duration_ms,
            usage: reply.job.usage.clone(),
            steps,
            escalations,
            decisions,
            dropped: reply.dropped,
        }
    }

    fn attempt_count(&self) -> usize {
        self.steps.iter().map(|s| s.attempts.len()).sum()
    }

    fn headline(&self) -> String {
        let mut line = format!("job {}", self.job_id);
        if let Some(plan) = &self.plan {
            let _ = write!(line, " · plan {plan}");
        }
        let _ = write!(
            line,
            " · {} · {} · {} steps · {} attempts",
            self.status,
            ms(self.duration_ms),
            self.steps.len(),
            self.attempt_count()
        );
        if let Some(usage) = &self.usage {
            let _ = write!(line, " · {}", usage_text(usage));
        }
        line
    }

    /// The terminal rendering: headline, waterfall, decision path.
    pub(crate) fn text(&self) -> String {
        const WIDTH: usize = 40;
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.headline());
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<16} {:<10} {:>3} {:>10} {:>10}  {:<10} {:>20} {:>10}  |{:<WIDTH$}|",
            "STEP",
            "AGENT",
            "ATT",
            "START",
            "DURATION",
            "OUTCOME",
            "TOKENS IN/OUT",
            "COST",
            format!("0 … {}", ms(self.duration_ms))
        );
        let scale = |at: u64| -> usize {
            if self.duration_ms == 0 {
                0
            } else {
                ((at as f64 / self.duration_ms as f64) * WIDTH as f64).round() as usize
            }
        };
        for step in &self.steps {
            if step.attempts.is_empty() {
                let note = match step.reused_from {
                    Some(job) => format!("reused from {job}"),
                    None => step.status.clone(),
                };
                let _ = writeln!(
                    out,
                    "{:<16} {:<10} {:>3} {:>10} {:>10}  {note}",
                    step.id, step.agent, "-", "-", "-"
                );
                continue;
            }
            for run in &step.attempts {
                let end = run.start_ms
                    + run
                        .duration_ms
                        .unwrap_or(self.duration_ms.saturating_sub(run.start_ms));
                let from = scale(run.start_ms).min(WIDTH);
                let to = scale(end).clamp(from, WIDTH);
                let glyph = if run.outcome == "succeeded" {
                    '█'
                } else if run.outcome == "running" {
                    '▒'
                } else {
                    '░'
                };
                let mut bar = " ".repeat(from);
                bar.extend(std::iter::repeat_n(glyph, (to - from).max(1)));
                let bar: String = bar.chars().take(WIDTH).collect();
                let (tokens, cost) = match &run.usage {
                    Some(u) => (
                        format!("{}/{}", u.input_tokens, u.output_tokens),
                        format!("${:.6}", u.cost_usd),
                    ),
                    None => ("-".into(), "-".into()),
                };
                let _ = writeln!(
                    out,
                    "{:<16} {:<10} {:>3} {:>10} {:>10}  {:<10} {:>20} {:>10}  |{:<WIDTH$}|",
                    step.id,
                    step.agent,
                    run.attempt,
                    format!("+{}", ms(run.start_ms)),
                    run.duration_ms.map_or("…".into(), ms),
                    run.outcome,
                    tokens,
                    cost,
                    bar
                );
            }
        }
        for wait in &self.escalations {
            let end = wait.start_ms
                + wait
                    .duration_ms
                    .unwrap_or(self.duration_ms.saturating_sub(wait.start_ms));
            let from = scale(wait.start_ms).min(WIDTH);
            let to = scale(end).clamp(from, WIDTH);
            let mut bar = " ".repeat(from);
            bar.extend(std::iter::repeat_n('·', (to - from).max(1)));
            let bar: String = bar.chars().take(WIDTH).collect();
            let outcome = match (&wait.action, &wait.by) {
                (Some(action), Some(by)) => format!("human: {action} by {by}"),
                (Some(action), None) => format!("human: {action}"),
                _ => "waiting for a human".into(),
            };
            let _ = writeln!(
                out,
                "{:<16} {:<10} {:>3} {:>10} {:>10}  {:<42}  |{:<WIDTH$}|",
                wait.step,
                "(human)",
                "-",
                format!("+{}", ms(wait.start_ms)),
                wait.duration_ms.map_or("…".into(), ms),
                outcome,
                bar
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "decisions:");
        if self.dropped > 0 {
            let _ = writeln!(
                out,
                "  ({} older decisions are no longer kept)",
                self.dropped
            );
        }
        for decision in &self.decisions {
            let _ = writeln!(
                out,
                "  {:>10}  {}",
                format!("+{}", ms(decision.offset_ms)),
                decision.text
            );
        }
        out
    }

    /// A self-contained page: the waterfall as an SVG chart and the decision path.
    pub(crate) fn html(&self) -> String {
        const ROW: u64 = 26;
        const LABEL: u64 = 220;
        const CHART: u64 = 760;
        let rows: Vec<(&StepTrace, &AttemptTrace)> = self
            .steps
            .iter()
            .flat_map(|s| s.attempts.iter().map(move |a| (s, a)))
            .collect();
        let height = ROW * (rows.len() as u64 + self.escalations.len() as u64 + 1) + 20;
        let total = self.duration_ms.max(1) as f64;
        let x = |at: u64| LABEL as f64 + at as f64 / total * CHART as f64;
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg id="waterfall" xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" role="img" aria-label="waterfall of job {}">"#,
            LABEL + CHART + 20,
            self.job_id
        );
        for tick in 0..=4u64 {
            let at = self.duration_ms * tick / 4;
            let tx = x(at);
            let _ = write!(
                svg,
                r##"<line x1="{tx:.1}" y1="14" x2="{tx:.1}" y2="{height}" stroke="#ddd"/><text x="{tx:.1}" y="11" font-size="10" text-anchor="{}" fill="#666">{}</text>"##,
                if tick == 4 { "end" } else { "middle" },
                escape(&ms(at))
            );
        }
        for (i, (step, run)) in rows.iter().enumerate() {
            let y = ROW * (i as u64 + 1);
            let end = run.start_ms
                + run
                    .duration_ms
                    .unwrap_or(self.duration_ms.saturating_sub(run.start_ms));
            let x0 = x(run.start_ms);
            let width = (x(end) - x0).max(2.0);
            let color = match run.outcome.as_str() {
                "succeeded" => "#2e7d32",
                "running" => "#1565c0",
                "timeout" => "#ef6c00",
                _ => "#c62828",
            };
            let mut title = format!(
                "{} attempt {}: {} at +{}, {}",
                step.id,
                run.attempt,
                run.outcome,
                ms(run.start_ms),
                run.duration_ms.map_or("running".into(), ms)
            );
            if let Some(usage) = &run.usage {
                let _ = write!(title, ", {}", usage_text(usage));
            }
            if let Some(error) = &run.error {
                let _ = write!(title, ": {error}");
            }
            let _ = write!(
                svg,
                r#"<text x="4" y="{}" font-size="12">{} · {} #{}</text><rect class="bar" data-step="{}" data-attempt="{}" data-outcome="{}" x="{x0:.1}" y="{}" width="{width:.1}" height="{}" rx="3" fill="{color}"><title>{}</title></rect>"#,
                y + 15,
                escape(&step.id),
                escape(&step.agent),
                run.attempt,
                escape(&step.id),
                run.attempt,
                escape(&run.outcome),
                y + 3,
                ROW - 8,
                escape(&title)
            );
        }
        for (i, wait) in self.escalations.iter().enumerate() {
            let y = ROW * (rows.len() as u64 + i as u64 + 1);
            let end = wait.start_ms
                + wait
                    .duration_ms
                    .unwrap_or(self.duration_ms.saturating_sub(wait.start_ms));
            let x0 = x(wait.start_ms);
            let width = (x(end) - x0).max(2.0);
            let title = match (&wait.action, &wait.by) {
                (Some(action), Some(by)) => {
                    format!("{} waited for a human: {action} by {by}", wait.step)
                }
                (Some(action), None) => format!("{} waited for a human: {action}", wait.step),
                _ => format!("{} is waiting for a human", wait.step),
            };
            let _ = write!(
                svg,
                r##"<text x="4" y="{}" font-size="12">{} · human</text><rect class="escalation" data-step="{}" x="{x0:.1}" y="{}" width="{width:.1}" height="{}" rx="3" fill="#6a1b9a" fill-opacity="0.35" stroke="#6a1b9a" stroke-dasharray="4 2"><title>{}</title></rect>"##,
                y + 15,
                escape(&wait.step),
                escape(&wait.step),
                y + 3,
                ROW - 8,
                escape(&title)
            );
        }
        svg.push_str("</svg>");
        let mut decisions = String::new();
        for decision in &self.decisions {
            let _ = write!(
                decisions,
                "<tr><td class=\"t\">+{}</td><td>{}</td></tr>",
                escape(&ms(decision.offset_ms)),
                escape(&decision.text)
            );
        }
        format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Baton trace {job}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 18px; }} .t {{ text-align: right; padding-right: 12px; color: #666; font-variant-numeric: tabular-nums; }}
table {{ border-collapse: collapse; }} td {{ padding: 2px 4px; vertical-align: top; }}
.legend span {{ display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }}
</style></head><body>
<h1>{headline}</h1>
<p class="legend"><span style="background:#2e7d32"></span>succeeded<span style="background:#c62828"></span>failed<span style="background:#ef6c00"></span>timed out<span style="background:#1565c0"></span>running<span style="background:#6a1b9a;opacity:.5"></span>waiting for a human</p>
{svg}
<h2>Decisions</h2>
<table id="decisions">{decisions}</table>
</body></html>
"#,
            job = self.job_id,
            headline = escape(&self.headline()),
        )
    }
}

fn usage_text(usage: &UsageTotals) -> String {
    format!(
        "{} in / {} out tokens, ${:.6}",
        usage.input_tokens, usage.output_tokens, usage.cost_usd
    )
}

fn ms(value: u64) -> String {
    if value >= 10_000 {
        format!("{:.1} s", value as f64 / 1000.0)
    } else {
        format!("{value} ms")
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_what_agents_and_plans_say() {
        assert_eq!(
            escape(r#"<script>"a"&'b'"#),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;"
        );
    }
}
