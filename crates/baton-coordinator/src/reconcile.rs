//! The reconciler: the final guarantee that every dispatched attempt ends, whatever happened
//! to its task in the broker.
//!
//! Redis says which attempts run; the broker may disagree. A task can be missing because its
//! publish was lost (the coordinator died between the transition and the publish, or the
//! broker lost unsynced messages in a crash), or because it left the work queue without a
//! result (a worker whose ack deadline had passed acknowledged it while the redelivered copy's
//! worker died). The attempt's timer fires early for this — `reconcile_after` after it
//! started, and at that interval until its deadline — and each time the reconciler looks:
//!
//! 1. The first look publishes the task again under its original `Nats-Msg-Id`. Inside the
//!    stream's duplicate window that stores nothing if the first publish landed, and either
//!    way the acknowledgement names the stored copy's sequence, which is noted in the job
//!    (`q.<step>`). If nothing had been stored, this publish is the re-dispatch.
//! 2. Later looks fetch that sequence from the stream. Present (waiting, or being worked on):
//!    nothing to do. Gone: the worker published its result before acking, so a result may
//!    still be on its way; gone again at the next look with the attempt still running, a
//!    fresh copy is published under a new id (`…:r<n>`).
//!
//! Every copy carries the same attempt number, so a late result of an earlier copy counts
//! once and later ones are fenced. A re-dispatch announces itself with a `step_redispatched`
//! event. The attempt's deadline still applies: the reconciler never extends it.

use async_nats::jetstream::stream::RawMessageErrorKind;
use baton_protocol::keys::{TimerMember, field};
use baton_protocol::messages::EventKind;
use baton_protocol::plan::Step;
use baton_protocol::subject;
use uuid::Uuid;

use crate::clock::now_ms;
use crate::engine::Engine;
use crate::error::ApiError;

/// Time kept in hand before the duplicate window closes: a first look later than this cannot
/// rely on the original id to tell a lost publish from a consumed task.
const WINDOW_MARGIN_MS: u64 = 20_000;

/// The reconciler's note on a running attempt, stored as `attempt:seq:gone:copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Note {
    attempt: u32,
    /// Stream sequence of the task copy the attempt waits on.
    seq: u64,
    /// Consecutive looks that found that copy gone.
    gone: u32,
    /// Which copy: 0 is the original publish, n the n-th re-dispatch.
    copy: u32,
}

impl Note {
    fn parse(raw: &str) -> Option<Self> {
        let parts: Vec<&str> = raw.split(':').collect();
        let [attempt, seq, gone, copy] = parts.as_slice() else {
            return None;
        };
        Some(Self {
            attempt: attempt.parse().ok()?,
            seq: seq.parse().ok()?,
            gone: gone.parse().ok()?,
            copy: copy.parse().ok()?,
        })
    }

    fn encode(&self) -> String {
        format!("{}:{}:{}:{}", self.attempt, self.seq, self.gone, self.copy)
    }
}

/// The `Nats-Msg-Id` of one copy of an attempt's task.
fn copy_msg_id(job: Uuid, step: &Step, attempt: u32, copy: u32) -> String {
    let original = subject::task_msg_id(job, &step.id, attempt);
    match copy {
        0 => original,
        n => format!("{original}:r{n}"),
    }
}

type Failed = Box<dyn std::error::Error + Send + Sync>;

impl Engine {
    /// Called when an attempt's timer fires. While the attempt runs and its deadline is ahead,
    /// checks on its task and returns when to look again; `None` means the timer is due as a
    /// timeout (or the attempt is over, which recording the timeout finds out).
    pub(crate) async fn reconcile(
        &self,
        member: &TimerMember,
        step: &Step,
    ) -> Result<Option<u64>, ApiError> {
        let id = step.id.as_str();
        let fields = [
            field::step_status(id),
            field::step_attempt(id),
            field::step_deadline(id),
            field::step_reconcile(id),
        ];
        let mut values = self
            .store
            .job_fields(member.job, &fields)
            .await?
            .into_iter();
        let mut next = || values.next().flatten();
        let (status, attempt, deadline, note) = (next(), next(), next(), next());
        let now = now_ms();
        let running = status.as_deref() == Some("running")
            && attempt.and_then(|a| a.parse::<u32>().ok()) == Some(member.attempt);
        let deadline = deadline.and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
        if !running || deadline <= now {
            return Ok(None);
        }
        let note = note
            .as_deref()
            .and_then(Note::parse)
            .filter(|n| n.attempt == member.attempt);
        if let Err(error) = self.check_task(member, step, deadline, note, now).await {
            tracing::warn!(
                job = %member.job, step = %step.id, attempt = member.attempt, error = %error,
                "Reconciler could not check a task; it will look again"
            );
        }
        let again = now + self.store.reconcile_after().as_millis() as u64;
        Ok(Some(again.min(deadline)))
    }

    async fn check_task(
        &self,
        member: &TimerMember,
        step: &Step,
        deadline: u64,
        note: Option<Note>,
        now: u64,
    ) -> Result<(), Failed> {
        let (job, attempt) = (member.job, member.attempt);
        let Some(note) = note else {
            let started = deadline.saturating_sub(step.timeout_ms);
            let window = baton_nats::DUPLICATE_WINDOW.as_millis() as u64;
            if now.saturating_sub(started) + WINDOW_MARGIN_MS >= window {
                // Looked at too late (every coordinator was down): the original id no longer
                // tells a lost publish from a consumed task, and a blind copy could run the
                // agent twice. The attempt's deadline decides instead.
                return Ok(());
            }
            let (seq, stored) = self.publish_copy(job, step, attempt, deadline, 0).await?;
            if stored {
                self.redispatched(job, step, attempt, "the task was not in the broker")
                    .await;
            }
            let note = Note {
                attempt,
                seq,
                gone: 0,
                copy: 0,
            };
            self.note_reconcile(job, step, attempt, &note.encode())
                .await?;
            return Ok(());
        };
        let stream = self.js.get_stream_no_info(subject::stream::TASKS).await?;
        let expected = copy_msg_id(job, step, attempt, note.copy);
        let present = match stream.get_raw_message(note.seq).await {
            // A broker that lost its tail reuses sequences: check that it is our copy.
            Ok(message) => {
                message
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .map(|v| v.as_str())
                    == Some(expected.as_str())
            }
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => false,
            Err(error) => return Err(error.into()),
        };
        let updated = if present {
            Note { gone: 0, ..note }
        } else if note.gone == 0 {
            // Its worker may have published a result that is still queued for us.
            Note { gone: 1, ..note }
        } else {
            let copy = note.copy + 1;
            let (seq, _) = self
                .publish_copy(job, step, attempt, deadline, copy)
                .await?;
            self.redispatched(
                job,
                step,
                attempt,
                "the task left the broker without a result",
            )
            .await;
            Note {
                attempt,
                seq,
                gone: 0,
                copy,
            }
        };
        if updated != note {
            self.note_reconcile(job, step, attempt, &updated.encode())
                .await?;
        }
        Ok(())
    }

    /// Publishes copy `copy` of an attempt's task; returns the stream sequence of the stored
    /// copy and whether this publish stored it (false: a duplicate of an earlier publish).
    /// Keeps the reconciler's note on `attempt`, only while it is the step's running attempt:
    /// a note never outlives the attempt it describes, nor creates a job that is gone.
    async fn note_reconcile(
        &self,
        job: Uuid,
        step: &Step,
        attempt: u32,
        note: &str,
    ) -> Result<(), Failed> {
        let Some(plan) = self.plan(job).await? else {
            return Ok(());
        };
        let cause = baton_core::Cause::Reconcile {
            step: step.id.as_str(),
            attempt,
            note,
        };
        self.handle(job, &plan, &cause, now_ms()).await?;
        Ok(())
    }

    async fn publish_copy(
        &self,
        job: Uuid,
        step: &Step,
        attempt: u32,
        deadline: u64,
        copy: u32,
    ) -> Result<(u64, bool), Failed> {
        let (job_input, item) = self.dispatch_item(job, step, attempt).await?;
        let (payload, _) = self.build_task(job, step, &job_input, &item, deadline)?;
        let msg_id = copy_msg_id(job, step, attempt, copy);
        let ack = self
            .publish_task(job, step, attempt, payload, &msg_id)
            .await?;
        Ok((ack.sequence, !ack.duplicate))
    }

    async fn redispatched(&self, job: Uuid, step: &Step, attempt: u32, reason: &str) {
        tracing::warn!(job = %job, step = %step.id, attempt, reason, "Reconciler re-dispatched a task");
        self.event(
            job,
            EventKind::StepRedispatched {
                step_id: step.id.to_string(),
                attempt,
                reason: reason.to_owned(),
            },
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_reject_garbage() {
        let note = Note {
            attempt: 3,
            seq: 12_345_678_901,
            gone: 1,
            copy: 2,
        };
        assert_eq!(Note::parse(&note.encode()), Some(note));
        for bad in ["", "1:2:3", "a:1:0:0", "1:2:3:4:5x", "-1:2:0:0"] {
            assert_eq!(Note::parse(bad), None, "{bad}");
        }
    }
}
