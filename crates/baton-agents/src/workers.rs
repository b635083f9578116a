//! The demo agents as worker-SDK [`Agent`]s: each reads its task input (the default mapping
//! `{"input": <job input>, "needs": {…}}`, or a bare question), does its pure work, and
//! returns JSON.

use std::sync::Mutex;

use baton_worker::{Agent, AgentError, Task};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{answer, nlu, rag, sql};

/// The user's question: `input.question` under the default mapping, a top-level
/// `question`, or the input itself when it is a string.
pub fn question_of(input: &Value) -> Option<&str> {
    input
        .pointer("/input/question")
        .or_else(|| input.get("question"))
        .or_else(|| input.get("input"))
        .and_then(Value::as_str)
        .or_else(|| input.as_str())
}

/// The first output among the task's needs that reads as a `T` (agents find their inputs
/// by shape, so plans may name steps as they like).
fn need_of<T: DeserializeOwned>(input: &Value) -> Option<T> {
    input
        .get("needs")?
        .as_object()?
        .values()
        .find_map(|output| serde_json::from_value(output.clone()).ok())
}

fn question(task: &Task) -> Result<String, AgentError> {
    question_of(&task.input)
        .map(str::to_owned)
        .ok_or_else(|| AgentError::fatal("the input has no question (expected input.question)"))
}

fn to_json(value: impl serde::Serialize) -> Result<Value, AgentError> {
    serde_json::to_value(value).map_err(|e| AgentError::fatal(e.to_string()))
}

/// Intent and entities.
pub struct Nlu;

impl Agent for Nlu {
    async fn process(&self, task: Task) -> Result<Value, AgentError> {
        to_json(nlu::analyze(&question(&task)?))
    }
}

/// SQL generation and execution on the bundled database.
pub struct Sql {
    db: Mutex<sql::Database>,
}

impl Sql {
    pub fn new() -> Result<Self, sql::Error> {
        Ok(Self {
            db: Mutex::new(sql::Database::bundled()?),
        })
    }
}

impl Agent for Sql {
    async fn process(&self, task: Task) -> Result<Value, AgentError> {
        let analysis = match need_of::<nlu::Analysis>(&task.input) {
            Some(analysis) => analysis,
            None => nlu::analyze(&question(&task)?),
        };
        let db = self
            .db
            .lock()
            .map_err(|_| AgentError::retryable("database lock poisoned"))?;
        match db.answer(&analysis) {
            Ok(result) => to_json(result),
            Err(error) => Err(AgentError::retryable(error.to_string())),
        }
    }
}

/// BM25 retrieval over the bundled documents.
pub struct Rag {
    index: rag::Index,
}

impl Rag {
    pub fn new() -> Self {
        Self {
            index: rag::Index::bundled(),
        }
    }
}

impl Default for Rag {
    fn default() -> Self {
        Self::new()
    }
}

impl Agent for Rag {
    async fn process(&self, task: Task) -> Result<Value, AgentError> {
        to_json(self.index.retrieve(&question(&task)?, 3))
    }
}

/// Composes the reply from whatever the other agents produced.
pub struct Answer;

impl Agent for Answer {
    async fn process(&self, task: Task) -> Result<Value, AgentError> {
        let analysis = need_of::<nlu::Analysis>(&task.input);
        let question = match question_of(&task.input) {
            Some(question) => question.to_owned(),
            None => analysis
                .as_ref()
                .map(|a| a.question.clone())
                .unwrap_or_default(),
        };
        let data = need_of::<sql::QueryResult>(&task.input);
        let docs = need_of::<rag::Retrieval>(&task.input);
        let reply = answer::compose(&question, analysis.as_ref(), data.as_ref(), docs.as_ref());
        let mut value = to_json(reply)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("question".into(), json!(question));
        }
        Ok(value)
    }
}
