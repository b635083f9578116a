//! The SQL agent: answers data questions by generating parameterised SQL for the NLU analysis
//! and running it on the bundled Acme Analytics sales database (SQLite, in memory).

mod query;
mod summary;

use rusqlite::Connection;
use rusqlite::types::{Value as SqlValue, ValueRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::nlu::Analysis;

#[cfg(test)]
pub(crate) use summary::money;

/// Schema and seed rows of the bundled database.
const SALES_SQL: &str = include_str!("../data/sales.sql");

/// Errors from the SQL agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundled schema or seed script could not be loaded.
    #[error("failed to load the bundled sales database")]
    Load(#[source] rusqlite::Error),
    /// A generated query failed to prepare or run.
    #[error("sales query failed")]
    Query(#[source] rusqlite::Error),
}

/// What the SQL agent returns: the statement it ran, its bound parameters, the result table and
/// a one-sentence summary of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    pub sql: String,
    pub params: Vec<Value>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// For example "EMEA revenue in 2024-Q3 was $931,242.73 (1,284 units sold)."
    pub summary: String,
}

/// The sales database. A `rusqlite::Connection` is `Send` but not `Sync`: share one across
/// threads behind a mutex, or open one per worker (opening takes a few milliseconds).
#[derive(Debug)]
pub struct Database {
    conn: Connection,
}

impl Database {
    /// Opens a fresh in-memory copy of the bundled Acme Analytics sales data.
    pub fn bundled() -> Result<Self, Error> {
        let conn = Connection::open_in_memory().map_err(Error::Load)?;
        conn.execute_batch(SALES_SQL).map_err(Error::Load)?;
        Ok(Database { conn })
    }

    /// Answers a data question. Returns `Ok(None)` for intents the database cannot answer
    /// (policy questions and unknown ones), so the caller can rely on the documents instead.
    pub fn answer(&self, analysis: &Analysis) -> Result<Option<QueryResult>, Error> {
        let Some(query) = query::build(analysis.intent, &analysis.entities) else {
            return Ok(None);
        };
        let (columns, rows) = self.run(&query.sql, &query.params)?;
        let summary = summary::summarise(analysis.intent, &analysis.entities, &rows);
        Ok(Some(QueryResult {
            sql: query.sql,
            params: query.params.iter().map(to_json_param).collect(),
            columns,
            rows,
            summary,
        }))
    }

    /// Runs a statement with bound parameters and returns its column names and rows as JSON.
    fn run(&self, sql: &str, params: &[SqlValue]) -> Result<(Vec<String>, Vec<Vec<Value>>), Error> {
        let mut statement = self.conn.prepare(sql).map_err(Error::Query)?;
        let columns: Vec<String> = statement
            .column_names()
            .into_iter()
            .map(str::to_string)
            .collect();
        let width = columns.len();
        let mut result = statement
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(Error::Query)?;
        let mut rows = Vec::new();
        while let Some(row) = result.next().map_err(Error::Query)? {
            let mut values = Vec::with_capacity(width);
            for index in 0..width {
                values.push(to_json(row.get_ref(index).map_err(Error::Query)?));
            }
            rows.push(values);
        }
        Ok((columns, rows))
    }
}

fn to_json(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(bytes) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        // The bundled schema has no BLOB columns; report their size rather than raw bytes.
        ValueRef::Blob(bytes) => Value::String(format!("<{} bytes>", bytes.len())),
    }
}

fn to_json_param(value: &SqlValue) -> Value {
    match value {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::from(*i),
        SqlValue::Real(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        SqlValue::Text(text) => Value::String(text.clone()),
        SqlValue::Blob(bytes) => Value::String(format!("<{} bytes>", bytes.len())),
    }
}

#[cfg(test)]
mod tests;
