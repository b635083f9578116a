//! The coordinator's inputs: request/reply subscriptions, the durable submission and result
//! consumers, each handled concurrently up to `max_in_flight`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};
use baton_protocol::ErrorCode;
use baton_protocol::messages::{
    Failure, FailureClass, MaxDeliveriesAdvisory, SubmitRequest, Task, TaskResult,
};
use baton_protocol::{Encoding, codec, keys, subject};
use futures::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::engine::{Engine, agent_of_subject};
use crate::report::AttemptInfo;

/// Serves one core-NATS subject in the coordinators' queue group (each message goes to one
/// replica) until shutdown, handing each message to `handler` on its own task, at most
/// `limit` at once.
pub(crate) async fn serve<F, Fut>(
    engine: Arc<Engine>,
    subject: &'static str,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    limit: Arc<Semaphore>,
    handler: F,
) -> Result<(), async_nats::SubscribeError>
where
    F: Fn(Arc<Engine>, async_nats::Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut subscription = engine
        .client
        .queue_subscribe(subject, subject::COORDINATOR_QUEUE_GROUP.to_owned())
        .await?;
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = subscription.next() => message,
        };
        let Some(message) = message else { break };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        // Boxed: the handler's future is kilobytes, and a task's future is copied when it is
        // spawned and again when it finishes; a box moves as a pointer.
        let work = Box::pin(handler(engine.clone(), message));
        tasks.spawn(async move {
            work.await;
            drop(permit);
        });
    }
    let _ = subscription.unsubscribe().await;
    Ok(())
}

/// Answers one request and sends the reply in the request's encoding.
pub(crate) async fn on_request(engine: Arc<Engine>, message: async_nats::Message) {
    let (encoding, mut reply) = api::handle(&engine, &message).await;
    // Replies within Baton's own payload limit fit the server (the limit is documented to stay
    // at or below its max_payload); only a larger one is worth the server-info copy.
    if reply.len() > engine.options.limits.max_payload_bytes
        && let max = engine.client.server_info().max_payload
        && reply.len() > max
    {
        // A reply the server would refuse: say so instead of leaving the requester waiting.
        let error = baton_protocol::messages::ErrorReply::new(
            "reply_too_large",
            format!(
                "the reply is {} bytes; the server's max_payload is {max}",
                reply.len()
            ),
        );
        reply = crate::engine::encode_reply(encoding, &error);
    }
    if let Some(to) = message.reply {
        let headers = baton_nats::headers_for(encoding);
        if let Err(error) = engine.client.publish_with_headers(to, headers, reply).await {
            tracing::warn!(error = %error, "Reply not sent");
        }
    }
}

/// Pulls from a durable consumer with one long-lived stream, handing each message to
/// `handler` on its own task, until shutdown. The stream is re-opened if it ends (e.g. the
/// consumer was deleted while the server restarted).
pub(crate) async fn consume<F, Fut>(
    engine: Arc<Engine>,
    consumer: jetstream::consumer::PullConsumer,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    limit: Arc<Semaphore>,
    handler: F,
) where
    F: Fn(Arc<Engine>, jetstream::Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let batch = engine.options.max_in_flight.clamp(1, 256);
    while !shutdown.is_cancelled() {
        let stream = consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        let mut messages = match stream {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(error = %error, "Cannot open pull stream; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = limit.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { break };
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = messages.next() => message,
            };
            match message {
                Some(Ok(message)) => {
                    let engine = engine.clone();
                    // Boxed, as above.
                    let work = Box::pin(handler(engine, message));
                    tasks.spawn(async move {
                        work.await;
                        drop(permit);
                    });
                }
                Some(Err(error)) => {
                    tracing::debug!(error = %error, "Pull stream hiccup");
                }
                None => break,
            }
        }
        baton_nats::hand_back(messages).await;
    }
}

/// Handles one message from `baton.results.>`.
pub(crate) async fn on_result(engine: Arc<Engine>, message: jetstream::Message) {
    let max = engine.options.limits.max_payload_bytes;
    // JSON outputs are kept as they came: checked, stored and spliced into the next inputs
    // without being built into a value and written out again.
    let decoded =
        baton_nats::encoding_of(message.headers.as_ref()).and_then(|encoding| match encoding {
            Encoding::Json => encoding.decode::<TaskResult<Box<RawValue>>>(&message.payload, max),
            Encoding::MsgPack => encoding
                .decode::<TaskResult>(&message.payload, max)
                .and_then(raw_output),
        });
    let result = match decoded {
        Ok(result) => result,
        Err(error) => {
            return dead_letter(&engine, &message, subject::DLQ_RESULTS, &error.to_string()).await;
        }
    };
    let depth = result
        .output
        .as_ref()
        .map_or(0, |output| codec::raw_depth(output.get()));
    if depth >= codec::MAX_DECODE_DEPTH {
        // Decoding into a value would have met the decoder's depth limit; raw text does not,
        // so the same message is refused here.
        let error = codec::Error::TooDeep(codec::MAX_DECODE_DEPTH);
        return dead_letter(&engine, &message, subject::DLQ_RESULTS, &error.to_string()).await;
    }
    let Some(agent) = agent_of_subject(&message.subject) else {
        return dead_letter(
            &engine,
            &message,
            subject::DLQ_RESULTS,
            "not a result subject",
        )
        .await;
    };
    let plan = match engine.plan_with(result.job_id, &result.step_id).await {
        Ok(Some(plan)) => plan,
        Ok(None) => {
            tracing::info!(job = %result.job_id, "Result for an unknown or expired job dropped");
            return ack(&message).await;
        }
        Err(error) => return retry_later(&message, &error.to_string()).await,
    };
    let Some(step) = plan.step(&result.step_id) else {
        return dead_letter(
            &engine,
            &message,
            subject::DLQ_RESULTS,
            "the job has no such step",
        )
        .await;
    };
    if step.agent() != &agent {
        return dead_letter(
            &engine,
            &message,
            subject::DLQ_RESULTS,
            "result published on another agent's subject",
        )
        .await;
    }
    let limits = &engine.options.limits;
    let info = AttemptInfo {
        usage: result.usage,
        duration_ms: result.duration_ms,
        worker: result.worker,
    };
    let outcome = match (result.output, result.error) {
        (Some(output), None) => {
            let checked = if depth > limits.max_depth {
                Err(codec::Error::TooDeep(limits.max_depth).to_string())
            } else {
                Ok(())
            }
            .and_then(|()| match &step.output_schema {
                Some(schema) => serde_json::from_str(output.get())
                    .map_err(|error| error.to_string())
                    .and_then(|value| schema.check(&value)),
                None => Ok(()),
            });
            match checked
                .map_err(invalid)
                .and_then(|()| check_route(step, output.get()))
            {
                Ok(()) => Ok(String::from(Box::<str>::from(output))),
                Err(failure) => Err(failure),
            }
        }
        (None, Some(error)) => Err(Failure {
            message: error.message,
            class: FailureClass::Error,
            retryable: error.retryable,
        }),
        (Some(_), Some(_)) => Err(invalid("result has both output and error".into())),
        (None, None) => Err(invalid("result has neither output nor error".into())),
    };
    let attempt = result.attempt;
    match engine
        .record(result.job_id, &plan, step, attempt, outcome, info)
        .await
    {
        Ok(transition) => {
            if let Some(reason) = transition.outcome.fence_reason(transition.status) {
                tracing::info!(job = %result.job_id, step = %step.id, attempt, reason = %reason, "Result fenced");
                let fenced = baton_protocol::messages::EventKind::ResultFenced {
                    step_id: step.id.to_string(),
                    attempt,
                    reason,
                };
                if transition.outcome == baton_core::Outcome::Ended {
                    engine.event_after_end(result.job_id, fenced).await;
                } else {
                    engine.event(result.job_id, fenced).await;
                }
            }
            ack(&message).await;
        }
        Err(error) => retry_later(&message, &error.to_string()).await,
    }
}

/// A MessagePack result with its output as JSON text.
fn raw_output(result: TaskResult) -> Result<TaskResult<Box<RawValue>>, codec::Error> {
    let output = result
        .output
        .map(|output| serde_json::value::to_raw_value(&output))
        .transpose()
        .map_err(|error| codec::Error::Schema(error.to_string()))?;
    Ok(TaskResult {
        job_id: result.job_id,
        step_id: result.step_id,
        attempt: result.attempt,
        output,
        error: result.error,
        worker: result.worker,
        duration_ms: result.duration_ms,
        usage: result.usage,
    })
}

/// A router's output must name a branch (or the router must have `_default`): otherwise the
/// attempt failed, class `invalid_output`, and the router's retry policy applies.
pub(crate) fn check_route(step: &baton_protocol::plan::Step, output: &str) -> Result<(), Failure> {
    let Some(routes) = &step.routes else {
        return Ok(());
    };
    let value: serde_json::Value = serde_json::from_str(output).unwrap_or_default();
    routes.pick(&value).map(drop).map_err(|message| Failure {
        message,
        class: FailureClass::InvalidOutput,
        retryable: true,
    })
}

fn invalid(message: String) -> Failure {
    Failure {
        message,
        class: FailureClass::Invalid,
        retryable: true,
    }
}

/// Handles one durable submission from `baton.jobs.enqueue`.
pub(crate) async fn on_submission(engine: Arc<Engine>, message: jetstream::Message) {
    let max = engine.options.limits.max_payload_bytes;
    let decoded = baton_nats::encoding_of(message.headers.as_ref())
        .and_then(|encoding| encoding.decode::<SubmitRequest>(&message.payload, max));
    let request = match decoded {
        Ok(request) => request,
        Err(error) => {
            return dead_letter(
                &engine,
                &message,
                subject::DLQ_SUBMISSIONS,
                &error.to_string(),
            )
            .await;
        }
    };
    // Without a key of its own, its place in the stream makes a redelivery idempotent.
    let enqueued = message
        .info()
        .ok()
        .map(|info| keys::enqueued(info.stream_sequence, info.published.unix_timestamp_nanos()));
    let traceparent = crate::spans::submitter(message.headers.as_ref());
    match engine.submit(request, enqueued, traceparent).await {
        Ok((job, existing)) => {
            tracing::info!(job = %job, existing, "Durable submission accepted");
            ack(&message).await;
        }
        Err(error) if error.code == ErrorCode::Unavailable => {
            retry_later(&message, &error.to_string()).await
        }
        Err(error) => {
            dead_letter(
                &engine,
                &message,
                subject::DLQ_SUBMISSIONS,
                &error.to_string(),
            )
            .await
        }
    }
}

async fn ack(message: &jetstream::Message) {
    if let Err(error) = message.ack().await {
        tracing::debug!(error = %error, "Ack not sent; the message will be redelivered and fenced");
    }
}

async fn retry_later(message: &jetstream::Message, reason: &str) {
    tracing::warn!(subject = %message.subject, error = %reason, "Message will be redelivered");
    let _ = message
        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
        .await;
}

/// Moves a message that can never be processed to a dead-letter subject, with the reason,
/// then removes it from its work queue.
async fn dead_letter(engine: &Engine, message: &jetstream::Message, to: &str, reason: &str) {
    tracing::warn!(subject = %message.subject, error = %reason, dead_letter = to, "Message dead-lettered");
    let mut headers = HeaderMap::new();
    headers.insert(
        subject::header::DLQ_REASON,
        reason.chars().take(1000).collect::<String>().as_str(),
    );
    headers.insert(subject::header::DLQ_SUBJECT, message.subject.as_str());
    // Keep room for the headers: a message at the size limit must still fit once annotated.
    let room = engine.options.limits.max_payload_bytes.saturating_sub(4096);
    if message.payload.len() > room {
        headers.insert(
            "Baton-Dlq-Truncated",
            message.payload.len().to_string().as_str(),
        );
    }
    let payload = message.payload.slice(..message.payload.len().min(room));
    let stored = match engine
        .js
        .publish_with_headers(to.to_owned(), headers, payload)
        .await
    {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    if stored {
        ack(message).await;
    } else {
        retry_later(message, "dead-letter publish failed").await;
    }
}

/// Handles a max-deliveries advisory of the tasks stream: a task that crashed its worker on
/// every delivery is failed without retry (so its step escalates and its dead letter is
/// written), then removed from the work queue, where it would otherwise stay for good.
pub(crate) async fn on_poison_advisory(engine: Arc<Engine>, message: async_nats::Message) {
    on_poison(&engine, &message.payload).await;
}

async fn on_poison(engine: &Engine, payload: &[u8]) {
    let Ok(advisory) = serde_json::from_slice::<MaxDeliveriesAdvisory>(payload) else {
        tracing::warn!("Unreadable max-deliveries advisory ignored");
        return;
    };
    let stream = match engine.js.get_stream_no_info(subject::stream::TASKS).await {
        Ok(stream) => stream,
        Err(error) => return tracing::warn!(error = %error, "Poison task left in place"),
    };
    let Ok(stored) = stream.get_raw_message(advisory.stream_seq).await else {
        // Already gone: answered at the last moment, or handled by another replica.
        return;
    };
    let max = engine.options.limits.max_payload_bytes;
    let task = baton_nats::encoding_of(Some(&stored.headers))
        .and_then(|encoding| encoding.decode::<Task>(&stored.payload, max));
    if let Ok(task) = task
        && let Ok(Some(plan)) = engine.plan_with(task.job_id, &task.step_id).await
        && let Some(step) = plan.step(&task.step_id)
    {
        let failure = Failure {
            message: format!(
                "task was delivered {} times and never answered: its worker crashed on it each time",
                advisory.deliveries
            ),
            class: FailureClass::Poison,
            retryable: false,
        };
        tracing::warn!(job = %task.job_id, step = %task.step_id, attempt = task.attempt, "Poison task");
        if let Err(error) = engine
            .record(
                task.job_id,
                &plan,
                step,
                task.attempt,
                Err(failure),
                AttemptInfo::default(),
            )
            .await
        {
            // Keep the message: the step's timeout timer still ends the attempt.
            return tracing::warn!(error = %error, "Poison task not recorded; left in place");
        }
    }
    if let Err(error) = stream.delete_message(advisory.stream_seq).await {
        tracing::debug!(error = %error, "Poison task already removed");
    }
}
