//! Why a request to Baton failed, and the decoding of replies into a body or an error.

use std::time::Duration;

use baton_protocol::ErrorCode;
use baton_protocol::messages::{JobStatus, Reply};
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Every way a call of this crate fails. The coordinator's own answers are
/// [`Error::Rejected`] (a code this client knows) and [`Error::UnknownCode`] (a newer one).
/// Messages do not repeat their source: print the chain (`{:#}` of an `anyhow::Error`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The NATS options are invalid (bad configuration, not a failure of the fleet).
    #[error("{0}")]
    Config(String),
    /// The connection could not be made: the server is unreachable, credentials were
    /// refused, TLS failed. Never carries a secret (see `baton-nats`).
    #[error(transparent)]
    Connect(baton_nats::Error),
    /// NATS answered *no responders*: no coordinator serves the subject.
    #[error("no coordinator is answering on {subject}: is `baton coordinator` running?")]
    NoCoordinator { subject: &'static str },
    /// A coordinator serves the subject but did not answer within the request timeout.
    #[error("no answer on {subject} within the request timeout")]
    Timeout { subject: &'static str },
    #[error("request on {subject} failed")]
    Request {
        subject: &'static str,
        #[source]
        source: async_nats::RequestError,
    },
    /// The coordinator answered with an error reply. Displayed as `message (code)`.
    #[error("{message} ({code})")]
    Rejected { code: ErrorCode, message: String },
    /// An error reply with a code this client does not know (a newer coordinator).
    #[error("{message} ({code})")]
    UnknownCode { code: String, message: String },
    #[error("unreadable reply on {subject}")]
    Decode {
        subject: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode the request")]
    Encode(#[source] serde_json::Error),
    #[error("cannot subscribe to {subject}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error("cannot flush the connection")]
    Flush(#[source] async_nats::client::FlushError),
    /// A durable submission could not be sent.
    #[error("durable publish on {subject} failed")]
    Publish {
        subject: &'static str,
        #[source]
        source: async_nats::jetstream::context::PublishError,
    },
    /// The broker did not confirm it stored a durable submission.
    #[error("the broker did not store the submission (is the BATON_JOBS stream there?)")]
    NotStored(#[source] async_nats::jetstream::context::PublishError),
    /// Declaring the streams failed.
    #[error(transparent)]
    Streams(baton_nats::Error),
    /// A subscription ended: the connection was closed.
    #[error("the subscription closed")]
    SubscriptionClosed,
    /// No coordinator answered before the wait for one ran out.
    #[error("no coordinator answered within {}s", waited.as_secs())]
    NotReady {
        waited: Duration,
        #[source]
        last: Box<Error>,
    },
    /// The job neither ended nor escalated in time. `last` is the last status read.
    #[error("job {job} did not finish within {}s (last status: {})", timeout.as_secs(), last.map_or("unknown", JobStatus::as_str))]
    NotSettled {
        job: Uuid,
        timeout: Duration,
        last: Option<JobStatus>,
    },
    /// A durable submission did not become a job in time.
    #[error("the durable submission {key} did not start in time")]
    NotStarted {
        key: String,
        #[source]
        last: Box<Error>,
    },
}

impl Error {
    /// The code of an error reply this client knows; `None` for every other error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// An error that a later attempt may not meet: nobody serving yet, no answer in time,
    /// the coordinator saying Redis is unavailable.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::NoCoordinator { .. }
                | Error::Timeout { .. }
                | Error::Rejected {
                    code: ErrorCode::Unavailable,
                    ..
                }
        )
    }

    pub(crate) fn request(subject: &'static str, source: async_nats::RequestError) -> Self {
        match source.kind() {
            async_nats::RequestErrorKind::NoResponders => Error::NoCoordinator { subject },
            async_nats::RequestErrorKind::TimedOut => Error::Timeout { subject },
            _ => Error::Request { subject, source },
        }
    }
}

/// Decodes a reply on `subject`: the expected body, or the error reply it is instead (a reply
/// is an error reply exactly when it has a top-level `error` object).
pub(crate) fn decode_reply<R: DeserializeOwned>(
    subject: &'static str,
    payload: &[u8],
) -> Result<R, Error> {
    let reply: Reply<R> =
        serde_json::from_slice(payload).map_err(|source| Error::Decode { subject, source })?;
    reply
        .into_result()
        .map_err(|body| match ErrorCode::parse(&body.code) {
            Some(code) => Error::Rejected {
                code,
                message: body.message,
            },
            None => Error::UnknownCode {
                code: body.code,
                message: body.message,
            },
        })
}

#[cfg(test)]
mod tests {
    use baton_protocol::messages::{ErrorReply, SubmitReply};

    use super::*;

    const SUBJECT: &str = baton_protocol::subject::SUBMIT;

    fn decode(payload: &str) -> Result<SubmitReply, Error> {
        decode_reply(SUBJECT, payload.as_bytes())
    }

    #[test]
    fn a_body_decodes_as_the_reply() {
        let reply = decode(&format!(
            r#"{{"job_id":"{}","existing":true}}"#,
            Uuid::nil()
        ));
        let reply = reply.expect("a body");
        assert_eq!(reply.job_id, Uuid::nil());
        assert!(reply.existing);
    }

    #[test]
    fn every_known_code_becomes_rejected_with_its_message() {
        for code in ErrorCode::ALL {
            let payload =
                serde_json::to_string(&ErrorReply::new(code.as_str(), "why")).expect("encodes");
            match decode(&payload) {
                Err(Error::Rejected { code: got, message }) => {
                    assert_eq!(got, code);
                    assert_eq!(message, "why");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
        let error = decode(r#"{"error":{"code":"plan_cycle","message":"a -> a"}}"#).unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::PlanCycle));
        // The CLI prints this; its tests look for the code and the message.
        assert_eq!(error.to_string(), "a -> a (plan_cycle)");
    }

    #[test]
    fn an_unknown_code_is_kept_as_it_came() {
        let error = decode(r#"{"error":{"code":"from_the_future","message":"m"}}"#).unwrap_err();
        assert!(
            matches!(&error, Error::UnknownCode { code, message } if code == "from_the_future" && message == "m"),
            "{error:?}"
        );
        assert_eq!(error.code(), None);
    }

    #[test]
    fn an_unreadable_reply_names_its_subject() {
        for payload in ["", "{broken", r#"{"job_id": 7}"#, r#"{"error": "flat"}"#] {
            match decode(payload) {
                Err(Error::Decode { subject, .. }) => assert_eq!(subject, SUBJECT),
                other => panic!("{payload:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn unavailable_and_absent_coordinators_are_transient() {
        let unavailable = Error::Rejected {
            code: ErrorCode::Unavailable,
            message: String::new(),
        };
        assert!(unavailable.is_transient());
        assert!(Error::NoCoordinator { subject: SUBJECT }.is_transient());
        let not_found = Error::Rejected {
            code: ErrorCode::NotFound,
            message: String::new(),
        };
        assert!(!not_found.is_transient());
    }

    #[test]
    fn the_end_of_a_wait_says_what_was_last_seen() {
        let error = Error::NotSettled {
            job: Uuid::nil(),
            timeout: Duration::from_secs(3),
            last: Some(JobStatus::Running),
        };
        assert_eq!(
            error.to_string(),
            format!(
                "job {} did not finish within 3s (last status: running)",
                Uuid::nil()
            )
        );
    }
}
