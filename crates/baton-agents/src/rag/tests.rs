//! Unit tests for BM25 retrieval over the bundled documents.

use super::*;

fn top_id(index: &Index, query: &str) -> String {
    index
        .search(query, 1)
        .first()
        .map(|h| h.doc_id.clone())
        .unwrap_or_default()
}

#[test]
fn bundled_index_has_all_documents_with_titles() {
    let index = Index::bundled();
    assert_eq!(index.len(), DOCS.len());
    assert!(
        index
            .docs
            .iter()
            .all(|d| !d.title.is_empty() && !d.body.is_empty())
    );
    assert_eq!(index.docs[0].title, "Refund policy");
}

#[test]
fn refund_question_ranks_refund_policy_first() {
    let index = Index::bundled();
    let hits = index.search("What is the refund policy?", 3);
    assert_eq!(hits[0].doc_id, "refund-policy");
    assert_eq!(hits[0].title, "Refund policy");
    assert!(
        hits[0].snippet.to_lowercase().contains("refund"),
        "{}",
        hits[0].snippet
    );
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
}

#[test]
fn compound_demo_question_still_finds_the_refund_policy_first() {
    let index = Index::bundled();
    let q = "What was the total revenue in Q3 2024 for the EMEA region, and what is our refund \
             policy for enterprise customers?";
    let hits = index.search(q, 3);
    assert_eq!(hits[0].doc_id, "refund-policy", "{hits:#?}");
    assert!(
        hits[0].snippet.contains("Enterprise customers"),
        "{}",
        hits[0].snippet
    );
}

#[test]
fn other_topics_find_their_documents() {
    let index = Index::bundled();
    assert_eq!(
        top_id(&index, "Who is the manager of the APAC region?"),
        "region-managers"
    );
    assert_eq!(
        top_id(&index, "How are fiscal quarters defined?"),
        "fiscal-quarters"
    );
    assert_eq!(
        top_id(&index, "warranty for a broken sensor"),
        "hardware-warranty"
    );
    assert_eq!(
        top_id(&index, "Where is EMEA customer data hosted under GDPR?"),
        "region-emea"
    );
    assert_eq!(
        top_id(&index, "maximum discount without approval"),
        "discount-policy"
    );
}

#[test]
fn k_limits_results_and_unrelated_queries_find_nothing() {
    let index = Index::bundled();
    assert_eq!(index.search("revenue region customers", 2).len(), 2);
    assert!(index.search("zebra xylophone", 5).is_empty());
    assert!(index.search("", 5).is_empty());
    assert!(index.search("refund", 0).is_empty());
}

#[test]
fn results_are_deterministic() {
    let a = Index::bundled().retrieve("enterprise customers support", 5);
    let b = Index::bundled().retrieve("enterprise customers support", 5);
    assert_eq!(a, b);
    assert_eq!(a.query, "enterprise customers support");
}

#[test]
fn bm25_prefers_more_occurrences_and_shorter_documents() {
    let index = Index::from_markdown([
        (
            "long",
            "# Long\nApples are fine. Many other words fill this document up a lot here.",
        ),
        ("short", "# Short\nApples."),
        ("none", "# None\nPears and plums."),
        ("twice", "# Twice\nApples and apples again in this text."),
    ]);
    let ids: Vec<String> = index
        .search("apples", 10)
        .into_iter()
        .map(|h| h.doc_id)
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2], "long");
    assert!(!ids.contains(&"none".to_string()));
}

#[test]
fn documents_without_heading_use_their_id_as_title() {
    let index = Index::from_markdown([("plain", "Just some text about invoices.")]);
    let hits = index.search("invoices", 1);
    assert_eq!(hits[0].title, "plain");
    assert_eq!(hits[0].snippet, "Just some text about invoices.");
}

#[test]
fn index_can_be_shared_between_worker_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Index>();
}
