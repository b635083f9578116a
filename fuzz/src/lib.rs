//! The bodies of the fuzz targets. Each runs the protocol functions the coordinator runs on
//! a message of that subject, in the same order and with the same limits, so a panic or a
//! broken invariant found here is one a hostile client could trigger there.

use baton_protocol::messages::{
    GetEscalationRequest, ListEscalationsRequest, ResolveEscalationRequest, StatusRequest,
    SubmitRequest, TaskResult,
};
use baton_protocol::{AgentName, Encoding, Limits, Plan, StepId, codec, keys, subject};
use serde_json::Value;

/// The limits a coordinator runs with by default.
pub fn limits() -> Limits {
    Limits::default()
}

/// Splits off the first byte to pick an encoding, as a `Content-Type` header would.
pub fn encoding_and_body(data: &[u8]) -> Option<(Encoding, &[u8])> {
    let (&selector, body) = data.split_first()?;
    let encoding = if selector & 1 == 0 {
        Encoding::Json
    } else {
        Encoding::MsgPack
    };
    Some((encoding, body))
}

/// Every error is rendered as the coordinator renders it in a reply: code and message.
fn render<E: std::fmt::Display>(error: &E, code: baton_protocol::ErrorCode) {
    assert!(!code.as_str().is_empty());
    let _ = error.to_string();
}

/// `baton.jobs.submit` / `baton.jobs.enqueue`: decode, bound the input's depth, validate the
/// plan (what `Engine::submit` does before touching Redis).
pub fn submit(encoding: Encoding, data: &[u8]) {
    let limits = limits();
    let request = match encoding.decode::<SubmitRequest>(data, limits.max_payload_bytes) {
        Ok(request) => request,
        Err(error) => return render(&error, error.code()),
    };
    if let Err(error) = codec::check_depth(&request.input, limits.max_depth) {
        return render(&error, error.code());
    }
    match Plan::from_value(request.plan, &limits) {
        Ok(plan) => valid_plan(&plan, &request.input),
        Err(error) => render(&error, error.code()),
    }
    // The reply goes back in the request's encoding.
    let _ = encoding.encode(&request.input);
}

/// A plan given as a JSON document (the `plan` field of a submission).
pub fn plan_json(data: &[u8]) {
    let limits = limits();
    let Ok(value) = Encoding::Json.decode::<Value>(data, limits.max_payload_bytes) else {
        return;
    };
    match Plan::from_value(value, &limits) {
        Ok(plan) => valid_plan(&plan, &Value::Null),
        Err(error) => render(&error, error.code()),
    }
}

/// A plan given as text (a `plan` string in a submission, or a file for `baton submit`).
pub fn plan_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let limits = limits();
    match Plan::from_text(text, &limits) {
        Ok(plan) => valid_plan(&plan, &Value::Null),
        Err(error) => render(&error, error.code()),
    }
}

/// What the coordinator relies on once a plan is accepted: the graph is consistent, the
/// subjects built from its names are single-token, step inputs render, and the stored form
/// (what `Store::create` writes) reads back as the same plan with `Plan::from_stored`, as
/// any replica re-reads it from Redis.
fn valid_plan(plan: &Plan, input: &Value) {
    let steps = plan.steps();
    assert!(!steps.is_empty());
    assert!(plan.roots().next().is_some(), "an acyclic plan has a root");
    assert!(plan.sinks().next().is_some(), "an acyclic plan has a sink");
    for step in steps {
        assert!(plan.step(step.id.as_str()).is_some());
        for need in &step.needs {
            assert!(plan.dependents(need.as_str()).any(|d| d.id == step.id));
        }
        let tasks = subject::tasks(step.agent());
        assert_eq!(tasks.split('.').count(), 3, "{tasks}");
        let _ = keys::field::step_status(step.id.as_str());
        if let Some(template) = &step.input {
            let _ = template.render(input, &Default::default());
        }
    }
    let stored = serde_json::to_string(plan.spec()).expect("a validated plan serializes");
    let mut reread_limits = limits();
    reread_limits.max_steps = reread_limits.max_steps.max(100_000);
    let reread = Plan::from_stored(&stored, &reread_limits)
        .unwrap_or_else(|error| panic!("stored plan is unreadable: {error}\n{stored}"));
    // The graph and the policies must be identical. Floats inside templates and schemas
    // may differ in the last bit: serde_json parses without `float_roundtrip`.
    assert_eq!(reread.steps().len(), steps.len());
    for (again, step) in reread.steps().iter().zip(steps) {
        assert_eq!(again.id, step.id, "{stored}");
        assert_eq!(again.kind, step.kind, "{stored}");
        assert_eq!(again.needs, step.needs, "{stored}");
        assert_eq!(again.timeout_ms, step.timeout_ms, "{stored}");
        assert_eq!(
            again.retry.max_attempts, step.retry.max_attempts,
            "{stored}"
        );
        assert_eq!(
            again.retry.max_backoff_ms, step.retry.max_backoff_ms,
            "{stored}"
        );
        assert_eq!(again.input.is_some(), step.input.is_some(), "{stored}");
        assert_eq!(
            again.output_schema.is_some(),
            step.output_schema.is_some(),
            "{stored}"
        );
    }
}

/// `baton.jobs.status` and the escalation commands; the second byte picks the subject.
pub fn requests(data: &[u8]) {
    let Some((encoding, rest)) = encoding_and_body(data) else {
        return;
    };
    let Some((&which, body)) = rest.split_first() else {
        return;
    };
    let limits = limits();
    let max = limits.max_payload_bytes;
    match which % 6 {
        0 => match encoding.decode::<StatusRequest>(body, max) {
            Ok(request) => {
                if let Some(key) = request.idempotency_key {
                    let _ = keys::idempotency(&key);
                }
            }
            Err(error) => render(&error, error.code()),
        },
        1 => match encoding.decode::<ListEscalationsRequest>(body, max) {
            Ok(request) => {
                let limit = request.limit.unwrap_or(100).clamp(1, 1000);
                let _ = limit * 2 + 16;
            }
            Err(error) => render(&error, error.code()),
        },
        2 => match encoding.decode::<GetEscalationRequest>(body, max) {
            Ok(request) => escalation_id(&request.id),
            Err(error) => render(&error, error.code()),
        },
        4 => {
            if let Err(error) = encoding.decode::<baton_protocol::messages::TraceRequest>(body, max)
            {
                render(&error, error.code());
            }
        }
        5 => match encoding.decode::<baton_protocol::messages::RerunRequest>(body, max) {
            // What the coordinator checks before reading Redis: the step must name one.
            Ok(request) => {
                let _ = StepId::new(&request.from);
            }
            Err(error) => render(&error, error.code()),
        },
        _ => match encoding.decode::<ResolveEscalationRequest>(body, max) {
            Ok(request) => {
                escalation_id(&request.id);
                for value in [&request.output, &request.input].into_iter().flatten() {
                    if codec::check_depth(value, limits.max_depth).is_ok() {
                        let _ = serde_json::to_string(value);
                    }
                }
            }
            Err(error) => render(&error, error.code()),
        },
    }
}

fn escalation_id(id: &str) {
    if let Some((job, step)) = keys::parse_escalation_id(id) {
        // Any UUID spelling parses; the canonical form must round-trip.
        let canonical = keys::escalation_id(job, step);
        assert_eq!(keys::parse_escalation_id(&canonical), Some((job, step)));
    }
}

/// `baton.results.<agent>`: decode, then what `on_result` does before reading Redis.
pub fn result(data: &[u8]) {
    let Some((encoding, body)) = encoding_and_body(data) else {
        return;
    };
    let limits = limits();
    let result = match encoding.decode::<TaskResult>(body, limits.max_payload_bytes) {
        Ok(result) => result,
        Err(error) => return render(&error, error.code()),
    };
    let _ = keys::field::step_status(&result.step_id);
    if let Some(output) = &result.output
        && codec::check_depth(output, limits.max_depth).is_ok()
    {
        let _ = serde_json::to_string(output);
    }
}

const MAX_NAME_ERROR: usize = 300 + 10 * 64;

/// Agent names and step ids (they become NATS subject tokens and Redis hash fields), the
/// result subject parser, and the `Content-Type` parser.
pub fn names(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match AgentName::new(text) {
        Ok(agent) => {
            assert!(agent.as_str().len() <= AgentName::MAX_LEN);
            assert!(
                !text.contains(['.', '*', '>', ' ', '\t', '\r', '\n']),
                "{text:?} is not a single subject token"
            );
            let results = subject::results(&agent);
            assert_eq!(subject::agent_of(&results), Some(text));
        }
        // Errors echo at most 64 characters of the name (each at most `\u{10ffff}` once
        // escaped), so a 10 KB name never makes a 10 KB reply.
        Err(error) => assert!(error.to_string().len() < MAX_NAME_ERROR),
    }
    match StepId::new(text) {
        Ok(step) => {
            assert!(step.as_str().len() <= StepId::MAX_LEN);
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            );
        }
        Err(error) => assert!(error.to_string().len() < MAX_NAME_ERROR),
    }
    let _ = subject::agent_of(text);
    escalation_id(text);
    if let Err(error) = Encoding::from_content_type(Some(text)) {
        render(&error, error.code());
    }
}
