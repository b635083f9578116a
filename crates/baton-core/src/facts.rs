//! What a decision reads: the job's recorded facts, as read from its hash in one go.

use std::collections::HashMap;

use baton_protocol::messages::{JobStatus, StepStatus};

use crate::field::{Field, StepField};

/// The fields of a job that one decision read, with their values (absent fields are missing
/// from the map). Built by the store from one `HMGET`, or by replay from its own state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    values: HashMap<Field, String>,
}

impl Facts {
    /// Facts from fields and the values read for them, in the same order.
    pub fn from_values(fields: &[Field], values: Vec<Option<String>>) -> Self {
        let values = fields
            .iter()
            .cloned()
            .zip(values)
            .filter_map(|(field, value)| value.map(|value| (field, value)))
            .collect();
        Self { values }
    }

    pub fn get(&self, field: &Field) -> Option<&str> {
        self.values.get(field).map(String::as_str)
    }

    pub fn insert(&mut self, field: Field, value: impl Into<String>) {
        self.values.insert(field, value.into());
    }

    /// The job's status; `None` when the job does not exist.
    pub fn status(&self) -> Option<JobStatus> {
        self.get(&Field::Status).and_then(JobStatus::parse)
    }

    /// The revision of the job's stored plan (absent: 1, as for jobs created before plans
    /// had revisions).
    pub fn revision(&self) -> u32 {
        self.get(&Field::Revision)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
    }

    pub fn exists(&self) -> bool {
        self.values.contains_key(&Field::Status)
    }

    /// A numeric field (absent or unreadable: 0).
    pub fn number(&self, field: &Field) -> u64 {
        self.get(field).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    pub fn step_status(&self, step: &str) -> Option<StepStatus> {
        self.step(StepField::Status, step)
            .and_then(StepStatus::parse)
    }

    pub fn step(&self, field: StepField, step: &str) -> Option<&str> {
        self.get(&Field::step(field, step))
    }

    pub fn step_number(&self, field: StepField, step: &str) -> u64 {
        self.step(field, step)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn attempt(&self, step: &str) -> u32 {
        u32::try_from(self.step_number(StepField::Attempt, step)).unwrap_or(u32::MAX)
    }
}
