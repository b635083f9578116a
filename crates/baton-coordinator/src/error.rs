//! `ApiError`: what every request handler and the engine's entry points answer with when they
//! fail: a stable `ErrorCode` and a message for humans.

use baton_protocol::{ErrorCode, codec, plan};

use crate::store;

/// An error reply: a stable code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<plan::Error> for ApiError {
    fn from(error: plan::Error) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

impl From<codec::Error> for ApiError {
    fn from(error: codec::Error) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

impl From<store::Error> for ApiError {
    fn from(error: store::Error) -> Self {
        if let store::Error::Plan(_) = error {
            return Self::new(ErrorCode::Internal, error.to_string());
        }
        tracing::warn!(error = %error, "State store error");
        Self::new(
            ErrorCode::Unavailable,
            format!("job state is unavailable, try again: {error}"),
        )
    }
}
