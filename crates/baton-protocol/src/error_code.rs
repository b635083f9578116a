//! Every `code` an error reply can carry (docs/protocol.md, section 11). The wire keeps the
//! code a string (`ErrorBody::code`), so a client that meets a newer code still decodes the
//! reply; inside Baton every code is this enum, so none is misspelt or left undocumented.

use serde::{Deserialize, Serialize};

/// A stable snake_case error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MalformedPayload,
    InvalidRequest,
    UnsupportedContentType,
    PayloadTooLarge,
    PayloadTooDeep,
    InvalidPlanSyntax,
    EmptyPlan,
    PlanTooLarge,
    InvalidName,
    DuplicateStep,
    UnknownNeed,
    RepeatedNeed,
    TooManyNeeds,
    FanOutTooWide,
    PlanCycle,
    InvalidPolicy,
    InvalidInputMapping,
    InvalidOutputSchema,
    InvalidPlan,
    InvalidIdempotencyKey,
    NotFound,
    UnknownStep,
    NotReusable,
    ReplyTooLarge,
    InvalidOutput,
    AlreadyEnded,
    DeadlineExceeded,
    Unavailable,
    Internal,
    UnknownSubject,
}

impl ErrorCode {
    /// Every code, in the order of the documentation's table.
    pub const ALL: [ErrorCode; 30] = [
        ErrorCode::MalformedPayload,
        ErrorCode::InvalidRequest,
        ErrorCode::UnsupportedContentType,
        ErrorCode::PayloadTooLarge,
        ErrorCode::PayloadTooDeep,
        ErrorCode::InvalidPlanSyntax,
        ErrorCode::EmptyPlan,
        ErrorCode::PlanTooLarge,
        ErrorCode::InvalidName,
        ErrorCode::DuplicateStep,
        ErrorCode::UnknownNeed,
        ErrorCode::RepeatedNeed,
        ErrorCode::TooManyNeeds,
        ErrorCode::FanOutTooWide,
        ErrorCode::PlanCycle,
        ErrorCode::InvalidPolicy,
        ErrorCode::InvalidInputMapping,
        ErrorCode::InvalidOutputSchema,
        ErrorCode::InvalidPlan,
        ErrorCode::InvalidIdempotencyKey,
        ErrorCode::NotFound,
        ErrorCode::UnknownStep,
        ErrorCode::NotReusable,
        ErrorCode::ReplyTooLarge,
        ErrorCode::InvalidOutput,
        ErrorCode::AlreadyEnded,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::UnknownSubject,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedPayload => "malformed_payload",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnsupportedContentType => "unsupported_content_type",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::PayloadTooDeep => "payload_too_deep",
            ErrorCode::InvalidPlanSyntax => "invalid_plan_syntax",
            ErrorCode::EmptyPlan => "empty_plan",
            ErrorCode::PlanTooLarge => "plan_too_large",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::DuplicateStep => "duplicate_step",
            ErrorCode::UnknownNeed => "unknown_need",
            ErrorCode::RepeatedNeed => "repeated_need",
            ErrorCode::TooManyNeeds => "too_many_needs",
            ErrorCode::FanOutTooWide => "fan_out_too_wide",
            ErrorCode::PlanCycle => "plan_cycle",
            ErrorCode::InvalidPolicy => "invalid_policy",
            ErrorCode::InvalidInputMapping => "invalid_input_mapping",
            ErrorCode::InvalidOutputSchema => "invalid_output_schema",
            ErrorCode::InvalidPlan => "invalid_plan",
            ErrorCode::InvalidIdempotencyKey => "invalid_idempotency_key",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UnknownStep => "unknown_step",
            ErrorCode::NotReusable => "not_reusable",
            ErrorCode::ReplyTooLarge => "reply_too_large",
            ErrorCode::InvalidOutput => "invalid_output",
            ErrorCode::AlreadyEnded => "already_ended",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::UnknownSubject => "unknown_subject",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == raw)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets tests and callers compare a code with its wire spelling.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn names_round_trip_and_match_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).expect("encodes");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    /// The documentation's table lists exactly the codes of the enum, in its order.
    #[test]
    fn the_protocol_document_lists_every_code() {
        let doc = include_str!("../../../docs/protocol.md");
        let table = doc
            .split("## 11. Error codes")
            .nth(1)
            .expect("section 11")
            .split("\n\n")
            .find(|part| part.starts_with("| Code"))
            .expect("the table");
        let documented: Vec<&str> = table
            .lines()
            .skip(2)
            .filter_map(|line| line.strip_prefix("| `")?.split('`').next())
            .collect();
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(documented, codes);
    }
}
