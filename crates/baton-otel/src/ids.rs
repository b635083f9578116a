//! Deterministic trace and span ids of a job, so any coordinator replica can end a span
//! another replica started without sharing anything but the job id and the stored
//! `traceparent` of the submitter.

use opentelemetry::trace::{SpanId, TraceId};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::TraceParent;

/// The trace of one job: the submitter's trace when it sent a `traceparent`, else one whose
/// id is the job id's 16 bytes (a UUIDv7, never zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobTrace {
    job: Uuid,
    trace_id: TraceId,
    /// The submitter's span: the job span's parent.
    parent: Option<SpanId>,
    sampled: bool,
}

impl JobTrace {
    pub fn new(job: Uuid, submitter: Option<&TraceParent>) -> Self {
        match submitter {
            Some(parent) => Self {
                job,
                trace_id: parent.trace_id,
                parent: Some(parent.span_id),
                sampled: parent.sampled,
            },
            None => {
                // A job id is a UUIDv7, never zero; `nonzero` keeps even the nil UUID valid.
                let trace_id = TraceId::from_bytes(nonzero(*job.as_bytes()));
                Self {
                    job,
                    trace_id,
                    parent: None,
                    sampled: true,
                }
            }
        }
    }

    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The submitter's span, parent of the job span.
    pub fn parent(&self) -> Option<SpanId> {
        self.parent
    }

    /// Whether the submitter sampled the trace (a job submitted without one always is).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    pub fn job_span(&self) -> SpanId {
        self.span_id(&[b"job"])
    }

    pub fn step_span(&self, step: &str) -> SpanId {
        self.span_id(&[b"step", step.as_bytes()])
    }

    pub fn attempt_span(&self, step: &str, attempt: u32) -> SpanId {
        self.span_id(&[b"attempt", step.as_bytes(), &attempt.to_be_bytes()])
    }

    /// The `traceparent` of an attempt's task: this trace, the attempt span as parent.
    pub fn task_parent(&self, step: &str, attempt: u32) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            span_id: self.attempt_span(step, attempt),
            sampled: self.sampled,
        }
    }

    /// The first 8 bytes of sha256(job id, then each part length-prefixed), never zero.
    /// Length prefixes keep ("ab", "c") and ("a", "bc") apart.
    fn span_id(&self, parts: &[&[u8]]) -> SpanId {
        let mut hash = Sha256::new();
        hash.update(self.job.as_bytes());
        for part in parts {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        let digest: [u8; 32] = hash.finalize().into();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        SpanId::from_bytes(nonzero(id))
    }
}

/// An all-zero id is invalid in OpenTelemetry; its odds are 2^-64, but the fix is free.
fn nonzero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id.iter().all(|b| *b == 0) {
        id[N - 1] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_follow_the_submitter() {
        let job = Uuid::now_v7();
        let own = JobTrace::new(job, None);
        assert_eq!(own.trace_id(), TraceId::from_bytes(*job.as_bytes()));
        assert_eq!(own.parent(), None);
        assert!(own.sampled());
        assert_eq!(own, JobTrace::new(job, None));
        let ids = [
            own.job_span(),
            own.step_span("a"),
            own.step_span("b"),
            own.attempt_span("a", 1),
            own.attempt_span("a", 2),
            own.attempt_span("b", 1),
        ];
        for (i, x) in ids.iter().enumerate() {
            assert_ne!(*x, SpanId::INVALID);
            for y in &ids[i + 1..] {
                assert_ne!(x, y);
            }
        }
        let parent =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        let theirs = JobTrace::new(job, Some(&parent));
        assert_eq!(theirs.trace_id(), parent.trace_id);
        assert_eq!(theirs.parent(), Some(parent.span_id));
        assert!(!theirs.sampled());
        // Span ids depend on the job only, so a replica that does not know the submitter's
        // trace still names the same spans.
        assert_eq!(theirs.attempt_span("a", 1), own.attempt_span("a", 1));
        let task = theirs.task_parent("a", 2);
        assert_eq!(task.span_id, own.attempt_span("a", 2));
        assert!(!task.sampled);
        assert_ne!(
            JobTrace::new(Uuid::now_v7(), None).job_span(),
            own.job_span()
        );
    }
}
