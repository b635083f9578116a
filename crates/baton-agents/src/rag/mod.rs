//! The RAG agent's retrieval step: Okapi BM25 ranking (via the `bm25` crate) over the bundled
//! Acme Analytics documents, with a best-matching-sentence snippet for each hit.

mod snippet;

use std::collections::{HashMap, HashSet};

use bm25::{DefaultTokenizer, Embedder, EmbedderBuilder, Language, Scorer, Tokenizer};
use serde::{Deserialize, Serialize};

/// Bundles `src/data/docs/<id>.md` files as `(id, markdown)` pairs.
macro_rules! bundled_docs {
    ($($id:literal),* $(,)?) => {
        &[$(($id, include_str!(concat!("../data/docs/", $id, ".md")))),*]
    };
}

const DOCS: &[(&str, &str)] = bundled_docs![
    "refund-policy",
    "hardware-warranty",
    "enterprise-agreements",
    "glossary-revenue",
    "glossary-units",
    "fiscal-quarters",
    "region-managers",
    "region-na",
    "region-emea",
    "region-apac",
    "region-latam",
    "product-insight-pro",
    "product-insight-lite",
    "product-datapipe",
    "product-dashboard-studio",
    "product-forecast-engine",
    "product-hardware",
    "product-services",
    "discount-policy",
    "support-sla",
    "data-privacy",
    "billing-and-invoicing",
];

/// One ranked document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub doc_id: String,
    pub title: String,
    /// BM25 score (rounded to 4 decimals); only comparable within one query.
    pub score: f64,
    /// The document's sentence(s) that best match the query.
    pub snippet: String,
}

/// What the RAG agent returns: the query it ran and its hits, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retrieval {
    pub query: String,
    pub hits: Vec<Hit>,
}

#[derive(Debug)]
struct Doc {
    id: String,
    title: String,
    body: String,
}

/// A BM25 index over a fixed set of documents.
pub struct Index {
    docs: Vec<Doc>,
    embedder: Embedder,
    scorer: Scorer<usize>,
    /// The same tokenizer the embedder uses (stop words removed, English stemming), kept for
    /// snippet selection.
    tokenizer: DefaultTokenizer,
    /// Number of documents containing each token, to weight rare words in snippets.
    doc_freq: HashMap<String, usize>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("docs", &self.docs.len())
            .finish_non_exhaustive()
    }
}

impl Index {
    /// The index over Acme's bundled policy, product, region and glossary documents.
    pub fn bundled() -> Self {
        Self::from_markdown(DOCS.iter().copied())
    }

    /// Indexes `(id, markdown)` documents. A leading `# Heading` line becomes the title (the id
    /// is used when there is none); title and body are both searchable.
    pub fn from_markdown<'a>(docs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let docs: Vec<Doc> = docs.into_iter().map(|(id, text)| parse(id, text)).collect();
        let texts: Vec<String> = docs
            .iter()
            .map(|d| format!("{}\n{}", d.title, d.body))
            .collect();
        let corpus: Vec<&str> = texts.iter().map(String::as_str).collect();
        let embedder: Embedder = EmbedderBuilder::with_fit_to_corpus(Language::English, &corpus)
            .k1(1.2)
            .b(0.75)
            .build();
        let tokenizer = DefaultTokenizer::new(Language::English);
        let mut scorer = Scorer::new();
        let mut doc_freq: HashMap<String, usize> = HashMap::new();
        for (i, text) in texts.iter().enumerate() {
            scorer.upsert(&i, embedder.embed(text));
            let distinct: HashSet<String> = tokenizer.tokenize(text).into_iter().collect();
            for token in distinct {
                *doc_freq.entry(token).or_default() += 1;
            }
        }
        Index {
            docs,
            embedder,
            scorer,
            tokenizer,
            doc_freq,
        }
    }

    /// Number of indexed documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether the index has no documents.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The `k` best documents for `query`, best first. Documents sharing no word with the
    /// query are never returned; equal scores are ordered by document order so results are
    /// deterministic.
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        let query_embedding = self.embedder.embed(query);
        let mut matches = self.scorer.matches(&query_embedding);
        matches.retain(|m| m.score > 0.0);
        matches.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));

        let query_tokens: HashSet<String> = self.tokenizer.tokenize(query).into_iter().collect();
        matches
            .into_iter()
            .take(k)
            .filter_map(|m| {
                let doc = self.docs.get(m.id)?;
                Some(Hit {
                    doc_id: doc.id.clone(),
                    title: doc.title.clone(),
                    score: (f64::from(m.score) * 1e4).round() / 1e4,
                    snippet: snippet::best(&doc.body, &query_tokens, &self.tokenizer, |t| {
                        self.idf(t)
                    }),
                })
            })
            .collect()
    }

    /// [`Index::search`] wrapped as the RAG agent's output.
    pub fn retrieve(&self, query: &str, k: usize) -> Retrieval {
        Retrieval {
            query: query.to_string(),
            hits: self.search(query, k),
        }
    }

    /// Smoothed inverse document frequency, as BM25 computes it.
    fn idf(&self, token: &str) -> f64 {
        let n = self.docs.len() as f64;
        let df = self.doc_freq.get(token).copied().unwrap_or(0) as f64;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }
}

fn parse(id: &str, text: &str) -> Doc {
    let text = text.trim();
    let (title, body) = match text.strip_prefix("# ") {
        Some(rest) => match rest.split_once('\n') {
            Some((title, body)) => (title.trim(), body.trim()),
            None => (rest.trim(), ""),
        },
        None => (id, text),
    };
    // Paragraph breaks carry no meaning for retrieval; one line per document is easier to
    // snippet.
    let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
    Doc {
        id: id.to_string(),
        title: title.to_string(),
        body,
    }
}

#[cfg(test)]
mod tests;
