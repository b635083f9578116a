//! Unit tests for the NLU agent's intent and entity rules.

use super::*;

#[test]
fn demo_revenue_question() {
    let a = analyze("What was the total revenue in Q3 2024 for EMEA?");
    assert_eq!(a.intent, Intent::TotalRevenue);
    assert_eq!(a.entities.regions, ["EMEA"]);
    assert_eq!(a.entities.quarters, ["2024-Q3"]);
    assert!(a.entities.years.is_empty());
    assert_eq!(a.entities.metric.as_deref(), Some("revenue"));
    assert!(a.confidence >= 0.8, "confidence {}", a.confidence);
}

#[test]
fn compound_demo_question_is_a_data_question_that_also_mentions_policy() {
    let q = "What was the total revenue in Q3 2024 for the EMEA region, and what is our refund \
             policy for enterprise customers?";
    let a = analyze(q);
    assert_eq!(a.intent, Intent::TotalRevenue);
    assert_eq!(a.entities.regions, ["EMEA"]);
    assert_eq!(a.entities.quarters, ["2024-Q3"]);
    assert!(mentions_policy(q));
}

#[test]
fn synonyms_for_regions_and_quarters() {
    let a = analyze("How much did we earn in Europe in the third quarter of 2023?");
    assert_eq!(a.intent, Intent::TotalRevenue);
    assert_eq!(a.entities.regions, ["EMEA"]);
    assert_eq!(a.entities.quarters, ["2023-Q3"]);

    let b = analyze("Revenue for Asia-Pacific in 2024-Q1");
    assert_eq!(b.entities.regions, ["APAC"]);
    assert_eq!(b.entities.quarters, ["2024-Q1"]);
}

#[test]
fn pronoun_us_is_not_a_region_but_capital_us_is() {
    assert!(
        analyze("Tell us the revenue in 2024")
            .entities
            .regions
            .is_empty()
    );
    assert_eq!(
        analyze("What was US revenue in 2024?").entities.regions,
        ["NA"]
    );
}

#[test]
fn top_products_with_limit_and_best_selling_means_units() {
    let a = analyze("What were the top 5 best-selling products in 2024?");
    assert_eq!(a.intent, Intent::TopProducts);
    assert_eq!(a.entities.limit, Some(5));
    assert_eq!(a.entities.years, [2024]);
    assert_eq!(a.entities.metric.as_deref(), Some("units"));

    let b = analyze("Show the three highest grossing products by revenue in EMEA");
    assert_eq!(b.intent, Intent::TopProducts);
    assert_eq!(b.entities.limit, Some(3));
    assert_eq!(b.entities.metric.as_deref(), Some("revenue"));

    let c = analyze("Top five products");
    assert_eq!(c.entities.limit, Some(5));
}

#[test]
fn comparison_trend_and_units() {
    let a = analyze("Compare North America and LATAM revenue in 2023");
    assert_eq!(a.intent, Intent::RegionComparison);
    assert_eq!(a.entities.regions, ["NA", "LATAM"]);
    assert_eq!(a.entities.years, [2023]);

    let b = analyze("Which region sold the most units in Q4?");
    assert_eq!(b.intent, Intent::RegionComparison);
    assert_eq!(b.entities.metric.as_deref(), Some("units"));
    assert_eq!(b.entities.quarters, ["2024-Q4"]);

    let c = analyze("How has Insight Pro revenue grown over time?");
    assert_eq!(c.intent, Intent::Trend);
    assert_eq!(c.entities.products, ["Insight Pro"]);

    let d = analyze("How many units of hardware did APAC ship in H2 2023?");
    assert_eq!(d.intent, Intent::UnitsSold);
    assert_eq!(d.entities.products, ["Sensor Kit", "Edge Gateway"]);
    assert_eq!(d.entities.quarters, ["2023-Q3", "2023-Q4"]);
}

#[test]
fn policy_and_definition_questions() {
    let a = analyze("What is the refund policy?");
    assert_eq!(a.intent, Intent::PolicyQuestion);
    assert_eq!(a.entities.metric, None);
    assert!(!a.intent.is_data_question());

    assert_eq!(
        analyze("What does revenue mean?").intent,
        Intent::PolicyQuestion
    );
    assert_eq!(analyze("Who manages EMEA?").intent, Intent::PolicyQuestion);
    assert!(!mentions_policy("Top 3 products in 2024"));
}

#[test]
fn policy_words_beat_weak_metric_words_but_not_a_data_scope() {
    let a = analyze("What is the discount policy for Insight Pro sales?");
    assert_eq!(a.intent, Intent::PolicyQuestion);
    assert_eq!(a.entities.products, ["Insight Pro"]);
    assert_eq!(
        analyze("What is the maximum discount without approval?").intent,
        Intent::PolicyQuestion
    );

    let b = analyze("How many Support Plus units did we sell in 2024?");
    assert_eq!(b.intent, Intent::UnitsSold);
    assert_eq!(b.entities.products, ["Support Plus"]);
    assert!(!mentions_policy(
        "How many Support Plus units did we sell in 2024?"
    ));

    let c = analyze("Who is the EMEA manager, and what was EMEA revenue in 2024?");
    assert_eq!(c.intent, Intent::TotalRevenue);
    assert!(mentions_policy(&c.question));
}

#[test]
fn unknown_and_empty_questions() {
    let a = analyze("Hello there!");
    assert_eq!(a.intent, Intent::Unknown);
    assert!(a.confidence < 0.5);
    assert_eq!(analyze("").confidence, 0.0);
}

#[test]
fn analysis_serialises_with_snake_case_intent() {
    let a = analyze("Top 3 products in Q3 2024");
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["intent"], "top_products");
    assert_eq!(json["entities"]["quarters"][0], "2024-Q3");
    let back: Analysis = serde_json::from_value(json).unwrap();
    assert_eq!(back, a);
}
