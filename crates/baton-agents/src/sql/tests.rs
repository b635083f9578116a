//! Unit tests for the SQL agent: results are checked against independently written queries or
//! aggregations over the raw seed rows.

use std::collections::HashMap;

use super::*;
use crate::nlu::{Entities, Intent, analyze};

fn db() -> Database {
    Database::bundled().unwrap()
}

fn scalar(db: &Database, sql: &str) -> i64 {
    db.conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

fn analysis(intent: Intent, entities: Entities) -> Analysis {
    Analysis {
        question: String::new(),
        intent,
        entities,
        confidence: 1.0,
    }
}

#[test]
fn seed_data_has_expected_shape() {
    let db = db();
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM sales"), 4 * 9 * 8);
    assert_eq!(scalar(&db, "SELECT COUNT(DISTINCT quarter) FROM sales"), 8);
    assert_eq!(
        scalar(&db, "SELECT COUNT(*) FROM sales WHERE units <= 0"),
        0
    );
}

#[test]
fn total_revenue_matches_hand_written_query() {
    let db = db();
    let a = analyze("What was the total revenue in Q3 2024 for EMEA?");
    let result = db.answer(&a).unwrap().unwrap();
    let expected = scalar(
        &db,
        "SELECT SUM(revenue_cents) FROM sales \
         WHERE region_id = (SELECT id FROM regions WHERE code = 'EMEA') AND quarter = '2024-Q3'",
    );
    assert_eq!(result.columns[0], "revenue_cents");
    assert_eq!(result.rows[0][0], serde_json::json!(expected));
    assert_eq!(
        result.params,
        [serde_json::json!("EMEA"), serde_json::json!("2024-Q3")]
    );
    assert!(
        result.summary.contains(&money(expected)),
        "{}",
        result.summary
    );
    assert!(
        result.summary.starts_with("EMEA revenue in 2024-Q3 was $"),
        "{}",
        result.summary
    );
    // The figure the demo script relies on, computed from the seed formulas.
    assert_eq!(money(expected), "$931,242.73");
}

#[test]
fn units_for_a_year_and_products_match_hand_written_query() {
    let db = db();
    let a = analyze("How many units of Sensor Kit did APAC sell in 2023?");
    assert_eq!(a.intent, Intent::UnitsSold);
    let result = db.answer(&a).unwrap().unwrap();
    let expected = scalar(
        &db,
        "SELECT SUM(units) FROM sales WHERE region_id = 3 AND product_id = 6 \
         AND quarter LIKE '2023-%'",
    );
    assert_eq!(result.rows[0][1], serde_json::json!(expected));
    assert!(
        result.summary.starts_with("APAC sold "),
        "{}",
        result.summary
    );
}

#[test]
fn top_products_ordering_and_limit_match_independent_aggregation() {
    let db = db();
    let a = analyze("What were the top 3 best-selling products in 2024?");
    let result = db.answer(&a).unwrap().unwrap();

    let mut units: HashMap<String, i64> = HashMap::new();
    let mut stmt = db
        .conn
        .prepare(
            "SELECT p.name, s.quarter, s.units FROM sales s, products p WHERE p.id = s.product_id",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (name, quarter, n) = row.unwrap();
        if quarter.starts_with("2024") {
            *units.entry(name).or_default() += n;
        }
    }
    let mut expected: Vec<(String, i64)> = units.into_iter().collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    expected.truncate(3);

    let got: Vec<(String, i64)> = result
        .rows
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[3].as_i64().unwrap()))
        .collect();
    assert_eq!(got, expected);
    assert!(
        result
            .summary
            .starts_with("Top 3 products by units sold in 2024: ")
    );
    assert!(result.summary.contains(&expected[0].0));
}

#[test]
fn top_products_default_limit_is_five() {
    let result = db()
        .answer(&analyze("best selling products by revenue"))
        .unwrap()
        .unwrap();
    assert_eq!(result.rows.len(), 5);
    let revenue: Vec<i64> = result.rows.iter().map(|r| r[2].as_i64().unwrap()).collect();
    assert!(revenue.windows(2).all(|w| w[0] >= w[1]), "{revenue:?}");
}

#[test]
fn region_comparison_covers_named_regions_in_descending_order() {
    let db = db();
    let result = db
        .answer(&analyze("Compare NA and LATAM revenue in 2024-Q3"))
        .unwrap()
        .unwrap();
    let regions: Vec<&str> = result.rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(regions, ["NA", "LATAM"]);
    let na = scalar(
        &db,
        "SELECT SUM(revenue_cents) FROM sales WHERE region_id = 1 AND quarter = '2024-Q3'",
    );
    assert_eq!(result.rows[0][2], serde_json::json!(na));
    assert!(
        result
            .summary
            .starts_with("By revenue in 2024-Q3, NA led with"),
        "{}",
        result.summary
    );

    let all = db
        .answer(&analyze("Which region sold the most units?"))
        .unwrap()
        .unwrap();
    assert_eq!(all.rows.len(), 4);
}

#[test]
fn trend_lists_every_quarter_in_order() {
    let db = db();
    let result = db
        .answer(&analyze("How has EMEA revenue trended over time?"))
        .unwrap()
        .unwrap();
    let quarters: Vec<&str> = result.rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(quarters.len(), 8);
    assert!(quarters.windows(2).all(|w| w[0] < w[1]));
    assert!(
        result.summary.starts_with("EMEA revenue rose from"),
        "{}",
        result.summary
    );
}

#[test]
fn non_data_intents_return_none() {
    let db = db();
    assert_eq!(
        db.answer(&analyze("What is the refund policy?")).unwrap(),
        None
    );
    assert_eq!(db.answer(&analyze("hello")).unwrap(), None);
}

#[test]
fn entity_text_is_bound_not_interpolated() {
    let db = db();
    let hostile = "EMEA'); DROP TABLE sales; --";
    let entities = Entities {
        regions: vec![hostile.to_string()],
        quarters: vec!["2024-Q3' OR '1'='1".to_string()],
        ..Entities::default()
    };
    let result = db
        .answer(&analysis(Intent::TotalRevenue, entities))
        .unwrap()
        .unwrap();
    assert!(!result.sql.contains("DROP") && !result.sql.contains("EMEA"));
    assert_eq!(result.params[0], serde_json::json!(hostile));
    assert_eq!(result.rows[0][2], serde_json::json!(0));
    assert!(
        result.summary.starts_with("No sales were recorded"),
        "{}",
        result.summary
    );
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM sales"), 288);
}

#[test]
fn years_outside_the_data_report_no_sales() {
    let result = db()
        .answer(&analyze("Total revenue in 2019"))
        .unwrap()
        .unwrap();
    assert_eq!(result.summary, "No sales were recorded in 2019.");
}

#[test]
fn query_result_round_trips_through_json() {
    let result = db()
        .answer(&analyze("revenue in Q1 2023"))
        .unwrap()
        .unwrap();
    let json = serde_json::to_string(&result).unwrap();
    let back: QueryResult = serde_json::from_str(&json).unwrap();
    assert_eq!(back, result);
}

#[test]
fn database_can_move_to_a_worker_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Database>();
}
