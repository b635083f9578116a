//! The answer agent: composes the final reply from whatever the NLU, SQL and RAG agents
//! produced, citing the sources it used and scoring its own confidence.

use serde::{Deserialize, Serialize};

use crate::nlu::{self, Analysis, Intent};
use crate::rag::{Hit, Retrieval};
use crate::sql::QueryResult;

/// Source name cited for figures from the sales database.
pub const DATA_SOURCE: &str = "db:acme_sales";

/// Prefix of cited document sources, followed by the document id ("doc:refund-policy").
pub const DOC_SOURCE_PREFIX: &str = "doc:";

/// Confidence assigned to the NLU step when its output is missing.
const DEFAULT_NLU_CONFIDENCE: f64 = 0.6;

/// The reply for the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub answer: String,
    /// `db:acme_sales` and/or `doc:<doc_id>` for every source the text relies on.
    pub sources: Vec<String>,
    /// In `[0, 1]`: the NLU confidence times how well the expected parts were answered.
    pub confidence: f64,
}

/// Composes the answer. Every input is optional so the pipeline can still reply when an agent
/// failed or timed out; the confidence drops accordingly.
pub fn compose(
    question: &str,
    nlu: Option<&Analysis>,
    data: Option<&QueryResult>,
    docs: Option<&Retrieval>,
) -> Answer {
    let intent = nlu.map(|a| a.intent);
    // A part is expected when the question asks for it; a compound question expects both.
    let wants_data = intent.is_some_and(Intent::is_data_question) || data.is_some();
    let wants_docs =
        intent == Some(Intent::PolicyQuestion) || nlu::mentions_policy(question) || !wants_data;

    let mut sentences: Vec<String> = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    let mut part_scores: Vec<f64> = Vec::new();

    if wants_data {
        match data {
            Some(result) if !result.summary.is_empty() => {
                sentences.push(result.summary.clone());
                sources.push(DATA_SOURCE.to_string());
                part_scores.push(data_confidence(result));
            }
            _ => {
                sentences.push("I could not get the figures from the sales database.".into());
                part_scores.push(0.0);
            }
        }
    }

    if wants_docs {
        match docs.and_then(|r| r.hits.first().map(|top| (top, r.hits.get(1)))) {
            Some((top, runner_up)) => {
                sentences.push(format!("According to \"{}\": {}", top.title, top.snippet));
                sources.push(format!("{DOC_SOURCE_PREFIX}{}", top.doc_id));
                part_scores.push(doc_confidence(top, runner_up));
            }
            None => {
                sentences.push("I found no document about that.".into());
                part_scores.push(0.0);
            }
        }
    }

    let coverage = if part_scores.is_empty() {
        0.0
    } else {
        part_scores.iter().sum::<f64>() / part_scores.len() as f64
    };
    let nlu_confidence = nlu.map_or(DEFAULT_NLU_CONFIDENCE, |a| a.confidence);
    let answer = if sources.is_empty() {
        "I could not find an answer to that in Acme's sales data or documents.".to_string()
    } else {
        sentences.join(" ")
    };
    Answer {
        answer,
        sources,
        confidence: round2((nlu_confidence * coverage).clamp(0.0, 1.0)),
    }
}

/// A figure from the database is trusted, unless the query matched nothing.
fn data_confidence(result: &QueryResult) -> f64 {
    if result.rows.is_empty() || result.summary.starts_with("No sales") {
        0.5
    } else {
        1.0
    }
}

/// BM25 scores are not absolute, so confidence comes from the margin over the runner-up: a
/// clear winner is a good sign the right document was found.
fn doc_confidence(top: &Hit, runner_up: Option<&Hit>) -> f64 {
    match runner_up {
        Some(second) if top.score > 0.0 => 0.6 + 0.4 * ((top.score - second.score) / top.score),
        _ => 1.0,
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nlu::analyze;
    use crate::rag::Index;
    use crate::sql::{Database, money};

    /// Runs the whole pipeline the way the workers will.
    fn pipeline(question: &str) -> (Analysis, Option<QueryResult>, Retrieval, Answer) {
        let analysis = analyze(question);
        let data = Database::bundled().unwrap().answer(&analysis).unwrap();
        let docs = Index::bundled().retrieve(question, 3);
        let answer = compose(question, Some(&analysis), data.as_ref(), Some(&docs));
        (analysis, data, docs, answer)
    }

    #[test]
    fn data_answer_mentions_the_figure_and_cites_the_database() {
        let (_, data, _, answer) = pipeline("What was the total revenue in Q3 2024 for EMEA?");
        let data = data.unwrap();
        let cents = data.rows[0][0].as_i64().unwrap();
        assert!(answer.answer.contains(&money(cents)), "{}", answer.answer);
        assert_eq!(answer.sources, [DATA_SOURCE]);
        assert!(answer.confidence >= 0.8, "{}", answer.confidence);
    }

    #[test]
    fn policy_answer_quotes_and_cites_the_document() {
        let (_, data, _, answer) = pipeline("What is the refund policy?");
        assert!(data.is_none());
        assert_eq!(answer.sources, ["doc:refund-policy"]);
        assert!(
            answer.answer.starts_with("According to \"Refund policy\":"),
            "{}",
            answer.answer
        );
    }

    #[test]
    fn demo_question_gets_both_a_figure_and_a_document() {
        let q = "What was the total revenue in Q3 2024 for the EMEA region, and what is our \
                 refund policy for enterprise customers?";
        let (analysis, data, docs, answer) = pipeline(q);
        assert_eq!(analysis.intent, Intent::TotalRevenue);
        assert_eq!(docs.hits[0].doc_id, "refund-policy");
        let summary = data.unwrap().summary;
        assert!(answer.answer.starts_with(&summary), "{}", answer.answer);
        assert!(answer.answer.contains("$931,242.73"), "{}", answer.answer);
        assert!(
            answer.answer.contains("Enterprise customers"),
            "{}",
            answer.answer
        );
        assert_eq!(answer.sources, [DATA_SOURCE, "doc:refund-policy"]);
        assert!(answer.confidence > 0.5, "{}", answer.confidence);
    }

    #[test]
    fn missing_parts_lower_the_confidence() {
        let q = "What was the total revenue in Q3 2024 for EMEA?";
        let analysis = analyze(q);
        let answer = compose(q, Some(&analysis), None, None);
        assert!(answer.sources.is_empty());
        assert_eq!(answer.confidence, 0.0);
        assert!(answer.answer.contains("could not"), "{}", answer.answer);
    }

    #[test]
    fn works_without_nlu_output() {
        let q = "refund policy";
        let docs = Index::bundled().retrieve(q, 3);
        let answer = compose(q, None, None, Some(&docs));
        assert_eq!(answer.sources, ["doc:refund-policy"]);
        assert!(answer.confidence > 0.0 && answer.confidence <= DEFAULT_NLU_CONFIDENCE);
    }

    #[test]
    fn answer_round_trips_through_json() {
        let (_, _, _, answer) = pipeline("Top 3 products in 2024");
        let back: Answer = serde_json::from_str(&serde_json::to_string(&answer).unwrap()).unwrap();
        assert_eq!(back, answer);
    }
}
