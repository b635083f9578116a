//! Validated names: agent types and step ids. Both end up inside NATS subjects and Redis
//! hash fields, so they are restricted to characters that need no escaping anywhere.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {shown:?} is invalid: {reason}")]
pub struct Error {
    what: &'static str,
    shown: String,
    reason: &'static str,
}

impl Error {
    fn new(what: &'static str, raw: &str, reason: &'static str) -> Self {
        // Echo at most 64 characters: a 10 KB name must not turn into a 10 KB error message.
        let shown: String = raw.chars().take(64).collect();
        Self {
            what,
            shown,
            reason,
        }
    }
}

/// An agent type, e.g. `sql`. Matches `^[a-z0-9][a-z0-9_-]{0,63}$` so that it is always a
/// single NATS subject token (no `.`, `*`, `>` or whitespace).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AgentName(String);

impl AgentName {
    pub const MAX_LEN: usize = 64;

    pub fn new(raw: &str) -> Result<Self, Error> {
        let what = "agent name";
        let mut chars = raw.chars();
        match chars.next() {
            None => return Err(Error::new(what, raw, "it is empty")),
            Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
                return Err(Error::new(
                    what,
                    raw,
                    "it must start with a lowercase letter or digit",
                ));
            }
            Some(_) => {}
        }
        if raw.len() > Self::MAX_LEN {
            return Err(Error::new(what, raw, "it is longer than 64 characters"));
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
            return Err(Error::new(
                what,
                raw,
                "only lowercase letters, digits, '_' and '-' are allowed (pattern ^[a-z0-9][a-z0-9_-]{0,63}$)",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for AgentName {
    type Err = Error;

    fn from_str(raw: &str) -> Result<Self, Error> {
        Self::new(raw)
    }
}

impl<'de> Deserialize<'de> for AgentName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        AgentName::new(&raw).map_err(serde::de::Error::custom)
    }
}

/// A step id inside a plan, e.g. `fetch_data`. Matches `^[A-Za-z0-9_-]{1,64}$`: step ids are
/// used as Redis hash-field prefixes and JSON object keys, and must never need escaping.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StepId(String);

impl StepId {
    pub const MAX_LEN: usize = 64;

    pub fn new(raw: &str) -> Result<Self, Error> {
        let what = "step id";
        if raw.is_empty() {
            return Err(Error::new(what, raw, "it is empty"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(Error::new(what, raw, "it is longer than 64 characters"));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::new(
                what,
                raw,
                "only letters, digits, '_' and '-' are allowed (pattern ^[A-Za-z0-9_-]{1,64}$)",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id of step `sub` of the sub-plan of planner `planner`: `<planner>/<sub>`.
    pub fn nested(planner: &StepId, sub: &StepId) -> Self {
        Self(format!("{}/{}", planner.0, sub.0))
    }

    /// An id as a stored plan holds it: a step id, or a sub-plan step's `<planner>/<sub>`.
    pub fn stored(raw: &str) -> Result<Self, Error> {
        match raw.split_once('/') {
            Some((planner, sub)) => Ok(Self::nested(&Self::new(planner)?, &Self::new(sub)?)),
            None => Self::new(raw),
        }
    }

    /// The planner whose sub-plan holds this step, if it is a sub-plan step.
    pub fn planner(&self) -> Option<&str> {
        self.0.split_once('/').map(|(planner, _)| planner)
    }

    /// The name the step has inside its own (sub-)plan: its id without the planner's prefix.
    /// Inputs and conditions name needs by it.
    pub fn local(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, sub)| sub)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for StepId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for StepId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        StepId::new(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_follow_the_contract_pattern() {
        for good in ["a", "sql", "nlu-v2", "0abc", "a_b", &"a".repeat(64)] {
            assert!(AgentName::new(good).is_ok(), "{good} should be valid");
        }
        for bad in [
            "",
            "a.>",
            "*",
            "a b",
            "A",
            "-a",
            "_a",
            "a.b",
            ">",
            &"a".repeat(65),
        ] {
            assert!(AgentName::new(bad).is_err(), "{bad} should be invalid");
        }
    }

    #[test]
    fn long_names_are_truncated_in_errors() {
        let error = AgentName::new(&"x.".repeat(5000)).unwrap_err().to_string();
        assert!(error.len() < 300, "{error}");
    }

    #[test]
    fn step_ids_reject_separators() {
        assert!(StepId::new("fetch_data-2").is_ok());
        for bad in ["", "a.b", "a:b", "a b", "é", &"s".repeat(65)] {
            assert!(StepId::new(bad).is_err(), "{bad} should be invalid");
        }
    }
}
