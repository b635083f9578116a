//! Request/reply subjects: submit, status and the escalation commands. Every request gets a
//! reply: the result, or `{"error": {"code", "message"}}` in the request's encoding.

use std::collections::BTreeMap;
use std::sync::Arc;

use baton_protocol::ErrorCode;
use baton_protocol::keys::{self, field};
use baton_protocol::messages::{
    ErrorReply, EscalationView, EventKind, Failure, GetEscalationRequest, JobStatus,
    ListEscalationsReply, ListEscalationsRequest, ResolveAction, ResolveEscalationReply,
    ResolveEscalationRequest, StatusReply, StatusRequest, StepStatus, StepView, SubmitReply,
    SubmitRequest, TraceReply, TraceRequest,
};
use baton_protocol::{Encoding, codec, plan, subject};
use bytes::Bytes;
use serde_json::Value;
use uuid::Uuid;

use crate::clock::now_ms;
use crate::engine::{Engine, encode_reply};
use crate::error::ApiError;
use crate::report::usage_totals;
use crate::spans;
use baton_core::Outcome;

/// Answers one request on one of the coordinator's request subjects.
pub(crate) async fn handle(
    engine: &Arc<Engine>,
    message: &async_nats::Message,
) -> (Encoding, Bytes) {
    let encoding = match baton_nats::encoding_of(message.headers.as_ref()) {
        Ok(encoding) => encoding,
        Err(error) => {
            return (
                Encoding::Json,
                encode_reply(Encoding::Json, &to_reply(error.into())),
            );
        }
    };
    let max = engine.options.limits.max_payload_bytes;
    let payload = &message.payload;
    let reply = match message.subject.as_str() {
        subject::SUBMIT => match encoding.decode::<SubmitRequest>(payload, max) {
            Ok(request) => engine
                .submit(request, None, spans::submitter(message.headers.as_ref()))
                .await
                .map(|(job_id, existing)| {
                    encode_reply(encoding, &SubmitReply { job_id, existing })
                }),
            Err(error) => Err(error.into()),
        },
        subject::STATUS => match encoding.decode::<StatusRequest>(payload, max) {
            Ok(request) => status(engine, request)
                .await
                .map(|r| encode_reply(encoding, &r)),
            Err(error) => Err(error.into()),
        },
        subject::RERUN => {
            match encoding.decode::<baton_protocol::messages::RerunRequest>(payload, max) {
                Ok(request) => engine.rerun(request).await.map(|(job_id, existing)| {
                    encode_reply(encoding, &SubmitReply { job_id, existing })
                }),
                Err(error) => Err(error.into()),
            }
        }
        subject::TRACE => match encoding.decode::<TraceRequest>(payload, max) {
            Ok(request) => trace(engine, request.job_id)
                .await
                .map(|r| encode_reply(encoding, &r)),
            Err(error) => Err(error.into()),
        },
        subject::ESCALATIONS_LIST => {
            // An empty body means "no options".
            let request = if payload.is_empty() {
                Ok(ListEscalationsRequest::default())
            } else {
                encoding.decode::<ListEscalationsRequest>(payload, max)
            };
            match request {
                Ok(request) => list_escalations(engine, request)
                    .await
                    .map(|r| encode_reply(encoding, &r)),
                Err(error) => Err(error.into()),
            }
        }
        subject::ESCALATIONS_GET => match encoding.decode::<GetEscalationRequest>(payload, max) {
            Ok(request) => get_escalation(engine, &request.id)
                .await
                .map(|r| encode_reply(encoding, &r)),
            Err(error) => Err(error.into()),
        },
        subject::ESCALATIONS_RESOLVE => {
            match encoding.decode::<ResolveEscalationRequest>(payload, max) {
                Ok(request) => resolve(engine, request)
                    .await
                    .map(|r| encode_reply(encoding, &r)),
                Err(error) => Err(error.into()),
            }
        }
        subject::CANCEL => {
            match encoding.decode::<baton_protocol::messages::CancelRequest>(payload, max) {
                Ok(request) => cancel(engine, request)
                    .await
                    .map(|r| encode_reply(encoding, &r)),
                Err(error) => Err(error.into()),
            }
        }
        other => Err(ApiError::new(
            ErrorCode::UnknownSubject,
            format!("no handler for {other}"),
        )),
    };
    let bytes = reply.unwrap_or_else(|error| {
        tracing::debug!(subject = %message.subject, error = %error, "Request rejected");
        encode_reply(encoding, &to_reply(error))
    });
    (encoding, bytes)
}

fn to_reply(error: ApiError) -> ErrorReply {
    ErrorReply::new(error.code.as_str(), error.message)
}

async fn cancel(
    engine: &Engine,
    request: baton_protocol::messages::CancelRequest,
) -> Result<baton_protocol::messages::CancelReply, ApiError> {
    let job = job_of(engine, request.job_id, request.idempotency_key).await?;
    let transition = engine
        .cancel(job, request.reason.as_deref(), request.by.as_deref(), None)
        .await?;
    let error =
        (transition.outcome != Outcome::Cancelled).then(|| baton_protocol::messages::ErrorBody {
            code: ErrorCode::AlreadyEnded.as_str().to_owned(),
            message: format!(
                "job {job} had already ended ({}); nothing changed",
                transition.status.as_str()
            ),
        });
    if transition.outcome == Outcome::Missing {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("job {job} does not exist (or its retention ended)"),
        ));
    }
    Ok(baton_protocol::messages::CancelReply {
        job_id: job,
        status: transition.status,
        error,
    })
}

/// The job a request names: by id, or by the idempotency key it was submitted with.
async fn job_of(
    engine: &Engine,
    job_id: Option<Uuid>,
    idempotency_key: Option<String>,
) -> Result<Uuid, ApiError> {
    match (job_id, idempotency_key) {
        (Some(job), None) => Ok(job),
        (None, Some(key)) => engine
            .store
            .idempotency_key(&keys::idempotency(&key))
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no job has this idempotency key")),
        _ => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "give exactly one of job_id and idempotency_key",
        )),
    }
}

async fn status(engine: &Engine, request: StatusRequest) -> Result<StatusReply, ApiError> {
    let job = job_of(engine, request.job_id, request.idempotency_key).await?;
    job_status(engine, job).await
}

pub(crate) async fn job_status(engine: &Engine, job: Uuid) -> Result<StatusReply, ApiError> {
    let fields = engine.store.job(job).await?;
    status_of(engine, job, &fields).await
}

/// The status reply from the job hash's fields.
async fn status_of(
    engine: &Engine,
    job: Uuid,
    fields: &std::collections::HashMap<String, String>,
) -> Result<StatusReply, ApiError> {
    if fields.is_empty() {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("job {job} does not exist (or its retention ended)"),
        ));
    }
    let get = |name: &str| fields.get(name).map(String::as_str);
    let revision = get(field::PLAN_REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let plan = engine
        .plan_at(job, revision)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "job vanished"))?;
    let status = get(field::STATUS)
        .and_then(JobStatus::parse)
        .unwrap_or(JobStatus::Pending);
    let mut steps = BTreeMap::new();
    for step in plan.steps() {
        let id = step.id.as_str();
        let step_status = get(&field::step_status(id))
            .and_then(StepStatus::parse)
            .unwrap_or(StepStatus::Waiting);
        let output = get(&field::step_output(id)).and_then(|raw| serde_json::from_str(raw).ok());
        let error: Option<Failure> =
            get(&field::step_error(id)).and_then(|raw| serde_json::from_str(raw).ok());
        let attempts: u32 = get(&field::step_attempt(id))
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        // While retrying, the stored attempt is the one about to start; report those made.
        let attempts: u32 = if step_status == StepStatus::Retrying {
            attempts.saturating_sub(1)
        } else {
            attempts
        };
        let [ui, uo, uc, um] = field::step_usage(id);
        let owned = |name: &str| get(name).map(str::to_owned);
        let usage = usage_totals(owned(&ui), owned(&uo), owned(&uc), owned(&um));
        steps.insert(
            id.to_owned(),
            StepView {
                usage,
                status: step_status,
                attempts,
                agent: step.agent().to_string(),
                output,
                error: if step_status == StepStatus::Succeeded {
                    None
                } else {
                    error
                },
            },
        );
    }
    Ok(StatusReply {
        job_id: job,
        status,
        plan: plan.name().map(str::to_owned),
        steps,
        output: job_output(&plan, status, get),
        error: get(field::ERROR).map(str::to_owned),
        usage: usage_totals(
            get(field::USAGE_INPUT).map(str::to_owned),
            get(field::USAGE_OUTPUT).map(str::to_owned),
            get(field::USAGE_COST).map(str::to_owned),
            None,
        ),
        created_ms: get(field::CREATED)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        updated_ms: get(field::UPDATED)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}

/// The job's status, plan, input and decision log.
async fn trace(engine: &Engine, job: Uuid) -> Result<TraceReply, ApiError> {
    let fields = engine.store.job(job).await?;
    let status = status_of(engine, job, &fields).await?;
    let parse = |name: &str| {
        fields
            .get(name)
            .and_then(|raw| serde_json::from_str::<Value>(raw).ok())
            .unwrap_or(Value::Null)
    };
    let log = engine.store.log(job).await?;
    let decisions: Vec<_> = log
        .split(|&b| b == b'\n')
        .filter(|entry| !entry.is_empty())
        .filter_map(|entry| serde_json::from_slice(entry).ok())
        .collect();
    Ok(TraceReply {
        job: status,
        plan: parse(field::PLAN),
        input: parse(field::INPUT),
        dropped: fields
            .get(field::LOG_DROPPED)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        decisions,
    })
}

/// What the index knows of one escalation id after reading its job.
enum Lookup {
    Open(EscalationView),
    /// The step may still escalate (its failure is in flight): keep the index entry.
    Pending,
    /// The job is gone or the step moved on for good: drop the index entry.
    Gone,
}

async fn lookup(engine: &Engine, id: &str, with_input: bool) -> Result<Lookup, ApiError> {
    let Some((job, step_id)) = keys::parse_escalation_id(id) else {
        return Ok(Lookup::Gone);
    };
    let Some(plan) = engine.plan_with(job, step_id).await? else {
        return Ok(Lookup::Gone);
    };
    let Some(step) = plan.step(step_id) else {
        return Ok(Lookup::Gone);
    };
    let fields = [
        field::STATUS.to_owned(),
        field::step_status(step_id),
        field::step_attempt(step_id),
        field::step_error(step_id),
    ];
    let values = engine.store.job_fields(job, &fields).await?;
    let [job_status, step_status, attempts, error] = <[Option<String>; 4]>::try_from(values)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "short HMGET reply"))?;
    let job_status = job_status.as_deref().and_then(JobStatus::parse);
    let step_status = step_status.as_deref().and_then(StepStatus::parse);
    match (job_status, step_status) {
        (None, _) => return Ok(Lookup::Gone),
        (Some(status), _) if status.is_terminal() => return Ok(Lookup::Gone),
        (_, Some(StepStatus::Escalated)) => {}
        (_, Some(StepStatus::Running | StepStatus::Retrying)) => return Ok(Lookup::Pending),
        _ => return Ok(Lookup::Gone),
    }
    let input = if with_input {
        Some(engine.current_input(job, step).await?)
    } else {
        None
    };
    Ok(Lookup::Open(EscalationView {
        id: id.to_owned(),
        job_id: job,
        step_id: step_id.to_owned(),
        agent: step.agent().to_string(),
        attempts: attempts.and_then(|a| a.parse().ok()).unwrap_or(0),
        plan: plan.name().map(str::to_owned),
        error: error.and_then(|raw| serde_json::from_str(&raw).ok()),
        input,
        job_status: job_status.unwrap_or(JobStatus::Escalated),
    }))
}

async fn list_escalations(
    engine: &Engine,
    request: ListEscalationsRequest,
) -> Result<ListEscalationsReply, ApiError> {
    let limit = request.limit.unwrap_or(100).clamp(1, 1000);
    let mut escalations = Vec::new();
    // The index may hold entries that never became escalations (written before the
    // transition) or were resolved: read a little more than asked and drop the dead ones.
    for id in engine.store.escalation_ids(limit * 2 + 16).await? {
        match lookup(engine, &id, false).await? {
            Lookup::Open(view) if escalations.len() < limit => escalations.push(view),
            Lookup::Open(_) | Lookup::Pending => {}
            Lookup::Gone => engine.store.unindex_escalation(&id).await?,
        }
    }
    Ok(ListEscalationsReply { escalations })
}

async fn get_escalation(engine: &Engine, id: &str) -> Result<EscalationView, ApiError> {
    match lookup(engine, id, true).await? {
        Lookup::Open(view) => Ok(view),
        _ => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no open escalation {id:?}"),
        )),
    }
}

async fn resolve(
    engine: &Engine,
    request: ResolveEscalationRequest,
) -> Result<ResolveEscalationReply, ApiError> {
    let not_found = || {
        ApiError::new(
            ErrorCode::NotFound,
            format!("no open escalation {:?}", request.id),
        )
    };
    let (job, step_id) = keys::parse_escalation_id(&request.id).ok_or_else(not_found)?;
    let plan = engine
        .plan_with(job, step_id)
        .await?
        .ok_or_else(not_found)?;
    let step = plan.step(step_id).ok_or_else(not_found)?;
    let limits = &engine.options.limits;
    let payload = match request.action {
        ResolveAction::Output => {
            let output = request.output.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    "action \"output\" needs an \"output\" value",
                )
            })?;
            if let Some(schema) = &step.output_schema {
                schema
                    .check(&output)
                    .map_err(|message| ApiError::new(ErrorCode::InvalidOutput, message))?;
            }
            if let Some(routes) = &step.routes {
                routes
                    .pick(&output)
                    .map_err(|message| ApiError::new(ErrorCode::InvalidOutput, message))?;
            }
            check_value(&output, limits.max_depth, limits.max_payload_bytes)?
        }
        ResolveAction::Retry => match &request.input {
            Some(input) => check_value(input, limits.max_depth, limits.max_payload_bytes)?,
            None => String::new(),
        },
        ResolveAction::Fail => failed_by_human(step_id, request.reason.as_deref()),
    };
    let attempts = engine
        .store
        .job_fields(job, &[field::step_attempt(step_id)])
        .await?;
    let attempt: u32 = attempts
        .into_iter()
        .next()
        .flatten()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let resolution = match request.action {
        ResolveAction::Output => baton_core::Resolution::Output(&payload),
        ResolveAction::Retry => baton_core::Resolution::Retry {
            input: (!payload.is_empty()).then_some(payload.as_str()),
        },
        ResolveAction::Fail => baton_core::Resolution::Fail { reason: &payload },
    };
    let cause = baton_core::Cause::Resolved {
        step: step.id.as_str(),
        resolution,
    };
    let transition = engine.handle(job, &plan, &cause, now_ms()).await?;
    if transition.outcome != Outcome::Resolved {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            match &transition.outcome {
                Outcome::Ended => format!(
                    "no open escalation {:?}: job {job} has already {}",
                    request.id,
                    transition.status.as_str()
                ),
                Outcome::Missing => format!(
                    "no open escalation {:?}: job {job} does not exist",
                    request.id
                ),
                Outcome::NotEscalated {
                    step: Some(current),
                } => format!(
                    "no open escalation {:?}: step {step_id} is {}",
                    request.id,
                    current.as_str()
                ),
                _ => format!(
                    "no open escalation {:?}: step {step_id} is not escalated",
                    request.id
                ),
            },
        ));
    }
    engine.store.unindex_escalation(&request.id).await?;
    engine
        .spans
        .resolved(&engine.store, job, step, attempt, request.action, &payload)
        .await;
    engine
        .event(
            job,
            EventKind::EscalationResolved {
                step_id: step_id.to_owned(),
                escalation_id: request.id.clone(),
                action: request.action,
                by: request.by.clone(),
                reason: request.reason.clone(),
                input: match request.action {
                    ResolveAction::Retry => request.input.clone(),
                    _ => None,
                },
            },
        )
        .await;
    tracing::info!(job = %job, step = %step_id, action = request.action.as_str(), "Escalation resolved");
    match request.action {
        ResolveAction::Output => {
            engine
                .event(
                    job,
                    EventKind::StepSucceeded {
                        step_id: step_id.to_owned(),
                        attempt,
                        human: true,
                        report: Default::default(),
                    },
                )
                .await;
        }
        ResolveAction::Retry | ResolveAction::Fail => {}
    }
    let job_status = transition.status;
    engine.apply(job, transition).await;
    Ok(ResolveEscalationReply {
        job_id: job,
        step_id: step_id.to_owned(),
        action: request.action,
        job_status,
    })
}

/// A succeeded job's output: its sinks' outputs (one sink: its output; several: a map by step
/// id). Jobs written before the decision core stored it whole, as `output`.
fn job_output<'a>(
    plan: &plan::Plan,
    status: JobStatus,
    get: impl Fn(&str) -> Option<&'a str>,
) -> Option<Value> {
    if let Some(stored) = get(field::OUTPUT) {
        return serde_json::from_str(stored).ok();
    }
    if status != JobStatus::Succeeded {
        return None;
    }
    let output = |id: &str| {
        get(&field::step_output(id))
            .and_then(|raw| serde_json::from_str(raw).ok())
            .unwrap_or(Value::Null)
    };
    // Skipped sinks give no output; when every sink was skipped, the output is null.
    let skipped = StepStatus::Skipped.as_str();
    let sinks: Vec<&str> = plan
        .sinks()
        .map(|s| s.id.as_str())
        .filter(|id| get(&field::step_status(id)) != Some(skipped))
        .collect();
    match sinks.as_slice() {
        [] => Some(Value::Null),
        [one] if plan.sinks().nth(1).is_none() => Some(output(one)),
        many => Some(Value::Object(
            many.iter()
                .map(|id| ((*id).to_owned(), output(id)))
                .collect(),
        )),
    }
}

/// The job error a human's `fail` records.
pub(crate) fn failed_by_human(step_id: &str, reason: Option<&str>) -> String {
    let reason = reason.unwrap_or("failed by a human");
    format!("step {step_id} escalated and was failed by a human: {reason}")
}

fn check_value(value: &Value, max_depth: usize, max_bytes: usize) -> Result<String, ApiError> {
    codec::check_depth(value, max_depth)?;
    let raw = serde_json::to_string(value)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    if raw.len() > max_bytes {
        return Err(codec::Error::TooLarge {
            size: raw.len(),
            limit: max_bytes,
        }
        .into());
    }
    Ok(raw)
}
