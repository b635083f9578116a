//! One-sentence, human-readable summaries of query results ("EMEA revenue in 2024-Q3 was
//! $931,242.73 (1,284 units sold).").

use serde_json::Value;

use super::query::{Metric, compares_named_regions};
use crate::nlu::{Entities, Intent};

/// Summarises `rows` (shaped as built by `query::build` for `intent`).
pub(super) fn summarise(intent: Intent, entities: &Entities, rows: &[Vec<Value>]) -> String {
    let metric = Metric::from_entities(entities);
    let time = time_phrase(entities);
    match intent {
        Intent::TotalRevenue | Intent::UnitsSold => totals(intent, entities, rows, &time),
        Intent::TopProducts => ranking(entities, rows, metric, &time),
        Intent::RegionComparison => regions(entities, rows, metric, &time),
        Intent::Trend => trend(entities, rows, metric),
        Intent::PolicyQuestion | Intent::Unknown => String::new(),
    }
}

fn totals(intent: Intent, entities: &Entities, rows: &[Vec<Value>], time: &str) -> String {
    let row = rows.first().map(Vec::as_slice).unwrap_or_default();
    let (revenue, units, matched) = (int_at(row, 0), int_at(row, 1), int_at(row, 2));
    if matched == 0 {
        return no_sales(entities, time);
    }
    let regions = list(&entities.regions);
    let products = list(&entities.products);
    if intent == Intent::UnitsSold {
        let seller = if regions.is_empty() {
            "Acme".to_string()
        } else {
            regions
        };
        let of = if products.is_empty() {
            String::new()
        } else {
            format!(" of {products}")
        };
        return format!(
            "{seller} sold {} units{of} {time}, worth {}.",
            thousands(units),
            money(revenue)
        );
    }
    let subject = match (products.is_empty(), regions.is_empty()) {
        (true, true) => "Total".to_string(),
        (true, false) => regions,
        (false, true) => products,
        (false, false) => format!("{products} in {regions}"),
    };
    format!(
        "{subject} revenue {time} was {} ({} units sold).",
        money(revenue),
        thousands(units)
    )
}

fn ranking(entities: &Entities, rows: &[Vec<Value>], metric: Metric, time: &str) -> String {
    if rows.is_empty() {
        return no_sales(entities, time);
    }
    let scope = in_regions(entities);
    let items: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "{} ({})",
                text_at(row, 0),
                measure(metric, int_at(row, 2), int_at(row, 3))
            )
        })
        .collect();
    format!(
        "Top {} products by {}{scope} {time}: {}.",
        rows.len(),
        metric_name(metric),
        list(&items)
    )
}

fn regions(entities: &Entities, rows: &[Vec<Value>], metric: Metric, time: &str) -> String {
    let mut scope = String::new();
    if !entities.products.is_empty() {
        scope = format!(" for {}", list(&entities.products));
    }
    let Some((first, rest)) = rows.split_first() else {
        return no_sales(entities, time);
    };
    let value = |row: &Vec<Value>| measure(metric, int_at(row, 2), int_at(row, 3));
    let mut sentence = format!(
        "By {}{scope} {time}, {} led with {}",
        metric_name(metric),
        text_at(first, 0),
        value(first)
    );
    if !rest.is_empty() {
        let others: Vec<String> = rest
            .iter()
            .map(|row| format!("{} ({})", text_at(row, 0), value(row)))
            .collect();
        sentence.push_str(&format!(", followed by {}", list(&others)));
    }
    if !compares_named_regions(entities) && entities.regions.len() == 1 {
        sentence.push_str(&format!(
            " ({} is shown among all regions)",
            entities.regions[0]
        ));
    }
    sentence.push('.');
    sentence
}

fn trend(entities: &Entities, rows: &[Vec<Value>], metric: Metric) -> String {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return no_sales(entities, &time_phrase(entities));
    };
    let value_of = |row: &Vec<Value>| match metric {
        Metric::Revenue => int_at(row, 1),
        Metric::Units => int_at(row, 2),
    };
    let show = |row: &Vec<Value>| measure(metric, int_at(row, 1), int_at(row, 2));
    let subject = subject_for_trend(entities, metric);
    if rows.len() == 1 {
        return format!("{subject} in {} was {}.", text_at(first, 0), show(first));
    }
    let (start, end) = (value_of(first), value_of(last));
    let direction = match end.cmp(&start) {
        std::cmp::Ordering::Greater => "rose",
        std::cmp::Ordering::Less => "fell",
        std::cmp::Ordering::Equal => "held steady",
    };
    let change = if start > 0 {
        format!(" ({:+.1}%)", (end - start) as f64 * 100.0 / start as f64)
    } else {
        String::new()
    };
    // Ties go to the earliest quarter, so the sentence is deterministic.
    let best = rows
        .iter()
        .rev()
        .max_by_key(|row| value_of(row))
        .unwrap_or(first);
    format!(
        "{subject} {direction} from {} in {} to {} in {}{change}; the best quarter was {} ({}).",
        show(first),
        text_at(first, 0),
        show(last),
        text_at(last, 0),
        text_at(best, 0),
        show(best)
    )
}

fn subject_for_trend(entities: &Entities, metric: Metric) -> String {
    let noun = match metric {
        Metric::Revenue => "revenue",
        Metric::Units => "units sold",
    };
    let mut scope: Vec<String> = Vec::new();
    if !entities.products.is_empty() {
        scope.push(list(&entities.products));
    }
    if !entities.regions.is_empty() {
        scope.push(list(&entities.regions));
    }
    if scope.is_empty() {
        format!("Total {noun}")
    } else {
        format!("{} {noun}", scope.join(" "))
    }
}

fn no_sales(entities: &Entities, time: &str) -> String {
    let mut scope: Vec<String> = Vec::new();
    if !entities.products.is_empty() {
        scope.push(list(&entities.products));
    }
    if !entities.regions.is_empty() {
        scope.push(format!("in {}", list(&entities.regions)));
    }
    let scope = if scope.is_empty() {
        String::new()
    } else {
        format!(" for {}", scope.join(" "))
    };
    format!("No sales were recorded{scope} {time}.")
}

fn in_regions(entities: &Entities) -> String {
    if entities.regions.is_empty() {
        String::new()
    } else {
        format!(" in {}", list(&entities.regions))
    }
}

fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Revenue => "revenue",
        Metric::Units => "units sold",
    }
}

fn measure(metric: Metric, revenue_cents: i64, units: i64) -> String {
    match metric {
        Metric::Revenue => money(revenue_cents),
        Metric::Units => format!("{} units", thousands(units)),
    }
}

/// "in 2024-Q3", "in 2023-Q3 to 2024-Q2", "in 2023 and 2024-Q1", or "across all quarters".
fn time_phrase(entities: &Entities) -> String {
    let mut parts: Vec<String> = Vec::new();
    let quarters = &entities.quarters;
    if quarters.len() >= 3 && is_contiguous(quarters) {
        parts.push(format!(
            "{} to {}",
            quarters[0],
            quarters[quarters.len() - 1]
        ));
    } else {
        parts.extend(quarters.iter().cloned());
    }
    parts.extend(entities.years.iter().map(i32::to_string));
    if parts.is_empty() {
        "across all quarters".to_string()
    } else {
        format!("in {}", list(&parts))
    }
}

fn is_contiguous(quarters: &[String]) -> bool {
    let linear: Option<Vec<i32>> = quarters.iter().map(|q| parse_quarter(q)).collect();
    linear.is_some_and(|l| l.windows(2).all(|w| w[1] == w[0] + 1))
}

fn parse_quarter(label: &str) -> Option<i32> {
    let (year, quarter) = label.split_once("-Q")?;
    Some(year.parse::<i32>().ok()? * 4 + quarter.parse::<i32>().ok()? - 1)
}

/// "A", "A and B", "A, B and C".
fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [only] => only.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn int_at(row: &[Value], index: usize) -> i64 {
    row.get(index).and_then(Value::as_i64).unwrap_or(0)
}

fn text_at(row: &[Value], index: usize) -> &str {
    row.get(index).and_then(Value::as_str).unwrap_or("?")
}

/// Cents as dollars with thousands separators: 93124273 → "$931,242.73".
pub(crate) fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}${}.{:02}", thousands_u(cents / 100), cents % 100)
}

pub(crate) fn thousands(value: i64) -> String {
    let sign = if value < 0 { "-" } else { "" };
    format!("{sign}{}", thousands_u(value.unsigned_abs()))
}

fn thousands_u(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_thousands_formatting() {
        assert_eq!(money(93_124_273), "$931,242.73");
        assert_eq!(money(5), "$0.05");
        assert_eq!(money(-123_456), "-$1,234.56");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn lists_and_time_phrases() {
        assert_eq!(list(&["a".into(), "b".into(), "c".into()]), "a, b and c");
        let mut e = Entities::default();
        assert_eq!(time_phrase(&e), "across all quarters");
        e.quarters = vec!["2023-Q4".into(), "2024-Q1".into(), "2024-Q2".into()];
        assert_eq!(time_phrase(&e), "in 2023-Q4 to 2024-Q2");
        e.quarters = vec!["2024-Q3".into()];
        e.years = vec![2023];
        assert_eq!(time_phrase(&e), "in 2024-Q3 and 2023");
    }
}
