//! Builds parameterised SQL for an analysed question.
//!
//! User-derived values (region codes, product names, quarters, years, limits) only ever travel
//! as bound parameters; the SQL text itself is assembled from fixed fragments chosen by intent
//! and metric, so no question text can reach the SQL parser.

use rusqlite::types::Value;

use crate::nlu::{Entities, Intent};

/// Rows a "top products" question returns when the user gave no number.
pub(super) const DEFAULT_TOP_LIMIT: u32 = 5;

const FROM: &str = "FROM sales s \
                    JOIN regions r ON r.id = s.region_id \
                    JOIN products p ON p.id = s.product_id";

/// The measure a question ranks or totals by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Metric {
    Revenue,
    Units,
}

impl Metric {
    pub(super) fn from_entities(entities: &Entities) -> Self {
        match entities.metric.as_deref() {
            Some("units") => Metric::Units,
            _ => Metric::Revenue,
        }
    }

    /// The output column alias to order by; a fixed string, never user text.
    fn column(self) -> &'static str {
        match self {
            Metric::Revenue => "revenue_cents",
            Metric::Units => "units",
        }
    }
}

/// A statement ready to run: SQL text with `?` placeholders and the values bound to them.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Query {
    pub(super) sql: String,
    pub(super) params: Vec<Value>,
}

/// Conjunction of `WHERE` conditions and the parameters they bind, in placeholder order.
#[derive(Debug, Default)]
struct Filter {
    conditions: Vec<String>,
    params: Vec<Value>,
}

impl Filter {
    /// `column IN (?, ?, ...)` for a non-empty list; nothing for an empty one (no filter).
    fn in_list(&mut self, column: &str, values: Vec<Value>) {
        if let Some(condition) = in_condition(column, values.len()) {
            self.conditions.push(condition);
            self.params.extend(values);
        }
    }

    /// Quarters and standalone years widen each other ("2023 and Q1 2024"), so they are OR-ed.
    fn time(&mut self, entities: &Entities) {
        let quarters = in_condition("s.quarter", entities.quarters.len());
        let years = in_condition(
            "CAST(substr(s.quarter, 1, 4) AS INTEGER)",
            entities.years.len(),
        );
        let condition = match (quarters, years) {
            (Some(q), Some(y)) => format!("({q} OR {y})"),
            (Some(q), None) => q,
            (None, Some(y)) => y,
            (None, None) => return,
        };
        self.conditions.push(condition);
        self.params
            .extend(entities.quarters.iter().map(|q| Value::Text(q.clone())));
        self.params
            .extend(entities.years.iter().map(|&y| Value::Integer(i64::from(y))));
    }

    fn where_clause(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        }
    }
}

fn in_condition(column: &str, count: usize) -> Option<String> {
    (count > 0).then(|| format!("{column} IN ({})", vec!["?"; count].join(", ")))
}

fn texts(values: &[String]) -> Vec<Value> {
    values.iter().map(|v| Value::Text(v.clone())).collect()
}

/// Whether a comparison should be restricted to the named regions: only when at least two are
/// named ("compare NA and APAC"); "how does EMEA compare" means against every region.
pub(super) fn compares_named_regions(entities: &Entities) -> bool {
    entities.regions.len() >= 2
}

/// The query answering `intent`, or `None` when the intent is not a data question.
pub(super) fn build(intent: Intent, entities: &Entities) -> Option<Query> {
    let metric = Metric::from_entities(entities);
    let mut filter = Filter::default();
    if intent != Intent::RegionComparison || compares_named_regions(entities) {
        filter.in_list("r.code", texts(&entities.regions));
    }
    filter.in_list("p.name", texts(&entities.products));
    filter.time(entities);
    let where_clause = filter.where_clause();
    let order = metric.column();

    let sql = match intent {
        Intent::TotalRevenue | Intent::UnitsSold => format!(
            "SELECT COALESCE(SUM(s.revenue_cents), 0) AS revenue_cents, \
             COALESCE(SUM(s.units), 0) AS units, COUNT(*) AS sales_rows {FROM}{where_clause}"
        ),
        Intent::TopProducts => format!(
            "SELECT p.name AS product, p.category AS category, SUM(s.revenue_cents) AS \
             revenue_cents, SUM(s.units) AS units {FROM}{where_clause} GROUP BY p.id \
             ORDER BY {order} DESC, p.name ASC LIMIT ?"
        ),
        Intent::RegionComparison => format!(
            "SELECT r.code AS region, r.name AS region_name, SUM(s.revenue_cents) AS \
             revenue_cents, SUM(s.units) AS units {FROM}{where_clause} GROUP BY r.id \
             ORDER BY {order} DESC, r.code ASC"
        ),
        Intent::Trend => format!(
            "SELECT s.quarter AS quarter, SUM(s.revenue_cents) AS revenue_cents, \
             SUM(s.units) AS units {FROM}{where_clause} GROUP BY s.quarter ORDER BY s.quarter"
        ),
        Intent::PolicyQuestion | Intent::Unknown => return None,
    };
    let mut params = filter.params;
    if intent == Intent::TopProducts {
        params.push(Value::Integer(i64::from(
            entities.limit.unwrap_or(DEFAULT_TOP_LIMIT),
        )));
    }
    Some(Query { sql, params })
}
