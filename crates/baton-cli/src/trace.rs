//! `baton trace`: a job explained — a waterfall of its attempts (start, duration, outcome,
//! tokens, cost) and the decisions the orchestrator took, in order; `--json` for machines,
//! `--html` for a self-contained page with the waterfall drawn as a chart. The model is
//! `baton_client::trace::Trace`; this file renders it.

use std::fmt::Write as _;
use std::path::PathBuf;

use baton_client::trace::{AttemptOutcome, AttemptTrace, StepTrace, Trace};
use baton_client::usage_text;
use baton_protocol::messages::ResolveAction;
use clap::Args;
use uuid::Uuid;

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
    let client = crate::client::connect(nats).await?;
    let trace = Trace::from_reply(client.trace(args.job).await?);
    if args.json {
        crate::out(&format!("{}\n", serde_json::to_string_pretty(&trace)?));
    } else {
        crate::out(&text(&trace));
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html(&trace))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        if !args.json {
            crate::out(&format!("wrote {}\n", path.display()));
        }
    }
    Ok(0)
}

fn headline(trace: &Trace) -> String {
    let mut line = format!("job {}", trace.job_id);
    if let Some(plan) = &trace.plan {
        let _ = write!(line, " · plan {plan}");
    }
    let _ = write!(
        line,
        " · {} · {} · {} steps · {} attempts",
        trace.status.as_str(),
        ms(trace.duration_ms),
        trace.steps.len(),
        trace.attempt_count()
    );
    if let Some(usage) = &trace.usage {
        let _ = write!(line, " · {}", usage_text(usage));
    }
    line
}

/// The terminal rendering: headline, waterfall, decision path.
pub(crate) fn text(trace: &Trace) -> String {
    const WIDTH: usize = 40;
    let mut out = String::new();
    let _ = writeln!(out, "{}", headline(trace));
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
        format!("0 … {}", ms(trace.duration_ms))
    );
    let scale = |at: u64| -> usize {
        if trace.duration_ms == 0 {
            0
        } else {
            ((at as f64 / trace.duration_ms as f64) * WIDTH as f64).round() as usize
        }
    };
    let bar = |start_ms: u64, duration_ms: Option<u64>, glyph: char| -> String {
        let from = scale(start_ms).min(WIDTH);
        let to = scale(trace.end_ms(start_ms, duration_ms)).clamp(from, WIDTH);
        let mut bar = " ".repeat(from);
        bar.extend(std::iter::repeat_n(glyph, (to - from).max(1)));
        bar.chars().take(WIDTH).collect()
    };
    for step in &trace.steps {
        if step.attempts.is_empty() {
            let note = match (&step.reused_from, &step.skipped) {
                (Some(job), _) => format!("reused from {job}"),
                (None, Some(why)) => format!("skipped ({why})"),
                (None, None) => step.status.as_str().to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<16} {:<10} {:>3} {:>10} {:>10}  {note}",
                step.id, step.agent, "-", "-", "-"
            );
            continue;
        }
        for run in &step.attempts {
            let glyph = match run.outcome {
                AttemptOutcome::Succeeded => '█',
                AttemptOutcome::Running => '▒',
                _ => '░',
            };
            let bar = bar(run.start_ms, run.duration_ms, glyph);
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
    for wait in &trace.escalations {
        let bar = bar(wait.start_ms, wait.duration_ms, '·');
        let outcome = match (wait.action.map(ResolveAction::as_str), &wait.by) {
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
    if trace.dropped > 0 {
        let _ = writeln!(
            out,
            "  ({} older decisions are no longer kept)",
            trace.dropped
        );
    }
    for decision in &trace.decisions {
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
pub(crate) fn html(trace: &Trace) -> String {
    const ROW: u64 = 26;
    const LABEL: u64 = 220;
    const CHART: u64 = 760;
    let rows: Vec<(&StepTrace, &AttemptTrace)> = trace
        .steps
        .iter()
        .flat_map(|s| s.attempts.iter().map(move |a| (s, a)))
        .collect();
    let height = ROW * (rows.len() as u64 + trace.escalations.len() as u64 + 1) + 20;
    let total = trace.duration_ms.max(1) as f64;
    let x = |at: u64| LABEL as f64 + at as f64 / total * CHART as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="waterfall" xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" role="img" aria-label="waterfall of job {}">"#,
        LABEL + CHART + 20,
        trace.job_id
    );
    for tick in 0..=4u64 {
        let at = trace.duration_ms * tick / 4;
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
        let end = trace.end_ms(run.start_ms, run.duration_ms);
        let x0 = x(run.start_ms);
        let width = (x(end) - x0).max(2.0);
        let color = match run.outcome {
            AttemptOutcome::Succeeded => "#2e7d32",
            AttemptOutcome::Running => "#1565c0",
            AttemptOutcome::Timeout => "#ef6c00",
            AttemptOutcome::Failed
            | AttemptOutcome::Invalid
            | AttemptOutcome::Poison
            | AttemptOutcome::InvalidOutput
            | AttemptOutcome::LoopLimit
            | AttemptOutcome::LoopStalled => "#c62828",
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
            escape(run.outcome.as_str()),
            y + 3,
            ROW - 8,
            escape(&title)
        );
    }
    for (i, wait) in trace.escalations.iter().enumerate() {
        let y = ROW * (rows.len() as u64 + i as u64 + 1);
        let end = trace.end_ms(wait.start_ms, wait.duration_ms);
        let x0 = x(wait.start_ms);
        let width = (x(end) - x0).max(2.0);
        let title = match (wait.action.map(ResolveAction::as_str), &wait.by) {
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
    for decision in &trace.decisions {
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
        job = trace.job_id,
        headline = escape(&headline(trace)),
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
