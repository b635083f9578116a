//! Extraction of quarters ("Q3 2024", "third quarter of 2024", "H1 2023") and years from the
//! question's word tokens.

/// Year assumed for a quarter named without one ("revenue in Q3"). It is the latest complete
/// year in the bundled sales data, so a bare quarter means its most recent occurrence.
pub(super) const DEFAULT_YEAR: i32 = 2024;

/// Longest range "from Q1 2015 to Q4 2024" is expanded into; guards against absurd inputs.
const MAX_RANGE_QUARTERS: i32 = 40;

/// How many tokens after a quarter mention may separate it from its year ("Q3 of fiscal 2024").
const YEAR_LOOKAHEAD: usize = 3;

const RANGE_WORDS: &[&str] = &["to", "through", "thru", "until", "till"];

#[derive(Debug, Default, PartialEq)]
pub(super) struct TimeRefs {
    /// Sorted, deduplicated "YYYY-Qn" labels.
    pub(super) quarters: Vec<String>,
    /// Years mentioned on their own, not as the year of a quarter.
    pub(super) years: Vec<i32>,
}

/// One quarter mention: the token span it covers and the quarter numbers it names (two for a
/// half year).
struct Mention {
    start: usize,
    end: usize,
    quarters: Vec<u8>,
    year: i32,
}

pub(super) fn extract(tokens: &[String]) -> TimeRefs {
    let year_at: Vec<Option<i32>> = tokens.iter().map(|t| parse_year(t)).collect();
    let mut used_year = vec![false; tokens.len()];
    let mut mentions = find_mentions(tokens);

    for mention in &mut mentions {
        if let Some(index) = year_for(mention, &year_at) {
            used_year[index] = true;
            mention.year = year_at[index].unwrap_or(DEFAULT_YEAR);
        }
    }

    let mut linear: Vec<i32> = Vec::new();
    for (i, mention) in mentions.iter().enumerate() {
        linear.extend(mention.quarters.iter().map(|&q| to_linear(mention.year, q)));
        // "from Q1 2023 to Q4 2024": fill in every quarter between the two mentions.
        if let Some(next) = mentions.get(i + 1) {
            let between = &tokens[mention.end..next.start];
            let is_range =
                between.len() <= 2 && between.iter().any(|t| RANGE_WORDS.contains(&&**t));
            if is_range {
                let from = to_linear(
                    mention.year,
                    mention.quarters.iter().copied().max().unwrap_or(1),
                );
                let to = to_linear(next.year, next.quarters.iter().copied().min().unwrap_or(4));
                if to > from && to - from <= MAX_RANGE_QUARTERS {
                    linear.extend(from..=to);
                }
            }
        }
    }
    linear.sort_unstable();
    linear.dedup();

    let mut years: Vec<i32> = year_at
        .iter()
        .zip(&used_year)
        .filter_map(|(year, used)| if *used { None } else { *year })
        .collect();
    years.sort_unstable();
    years.dedup();

    TimeRefs {
        quarters: linear.into_iter().map(label).collect(),
        years,
    }
}

/// Finds "q3", "h1", "third quarter", "first half" mentions, left to right.
fn find_mentions(tokens: &[String]) -> Vec<Mention> {
    let mut mentions = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i].as_str();
        let next = tokens.get(i + 1).map(String::as_str);
        let found = if let Some(q) = token.strip_prefix('q').and_then(quarter_digit) {
            Some((1, vec![q]))
        } else if let Some(h) = token.strip_prefix('h').and_then(half_digit) {
            Some((1, half(h)))
        } else if let (Some(n), Some("quarter")) = (ordinal(token), next) {
            (n <= 4).then(|| (2, vec![n]))
        } else if let (Some(n), Some("half")) = (ordinal(token), next) {
            (n <= 2).then(|| (2, half(n)))
        } else {
            None
        };
        match found {
            Some((len, quarters)) => {
                mentions.push(Mention {
                    start: i,
                    end: i + len,
                    quarters,
                    year: DEFAULT_YEAR,
                });
                i += len;
            }
            None => i += 1,
        }
    }
    mentions
}

/// The token index of the year a quarter mention belongs to: the first year shortly after it
/// ("Q3 2024", "Q3 and Q4 2024"), else one just before ("2024 Q3"), else the nearest year
/// anywhere in the question. `None` leaves the default year.
fn year_for(mention: &Mention, year_at: &[Option<i32>]) -> Option<usize> {
    let after = (mention.end..year_at.len()).take(YEAR_LOOKAHEAD);
    let before = (mention.start.saturating_sub(2)..mention.start).rev();
    after
        .chain(before)
        .find(|&i| year_at[i].is_some())
        .or_else(|| {
            (0..year_at.len())
                .filter(|&i| year_at[i].is_some())
                .min_by_key(|&i| i.abs_diff(mention.start))
        })
}

/// Years 2000–2099, also written "fy2024" or "fy24".
pub(super) fn parse_year(token: &str) -> Option<i32> {
    let digits = token.strip_prefix("fy").unwrap_or(token);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i32 = digits.parse().ok()?;
    match digits.len() {
        4 if (2000..=2099).contains(&value) => Some(value),
        2 if token.starts_with("fy") => Some(2000 + value),
        _ => None,
    }
}

fn quarter_digit(rest: &str) -> Option<u8> {
    match rest {
        "1" => Some(1),
        "2" => Some(2),
        "3" => Some(3),
        "4" => Some(4),
        _ => None,
    }
}

fn half_digit(rest: &str) -> Option<u8> {
    match rest {
        "1" => Some(1),
        "2" => Some(2),
        _ => None,
    }
}

fn ordinal(token: &str) -> Option<u8> {
    match token {
        "first" | "1st" => Some(1),
        "second" | "2nd" => Some(2),
        "third" | "3rd" => Some(3),
        "fourth" | "4th" => Some(4),
        _ => None,
    }
}

fn half(n: u8) -> Vec<u8> {
    if n == 1 { vec![1, 2] } else { vec![3, 4] }
}

/// Quarters as consecutive integers, so ranges can be walked across year boundaries.
fn to_linear(year: i32, quarter: u8) -> i32 {
    year * 4 + i32::from(quarter) - 1
}

fn label(linear: i32) -> String {
    format!("{}-Q{}", linear.div_euclid(4), linear.rem_euclid(4) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str) -> TimeRefs {
        let tokens: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
        extract(&tokens)
    }

    #[test]
    fn quarter_with_year_in_either_order() {
        assert_eq!(refs("q3 2024").quarters, ["2024-Q3"]);
        assert_eq!(refs("2023 q1").quarters, ["2023-Q1"]);
        assert!(refs("q3 2024").years.is_empty());
    }

    #[test]
    fn ordinal_quarters_halves_and_shared_years() {
        assert_eq!(refs("third quarter of 2024").quarters, ["2024-Q3"]);
        assert_eq!(refs("q3 and q4 2023").quarters, ["2023-Q3", "2023-Q4"]);
        assert_eq!(refs("h1 2024").quarters, ["2024-Q1", "2024-Q2"]);
        assert_eq!(refs("second half of fy23").quarters, ["2023-Q3", "2023-Q4"]);
    }

    #[test]
    fn bare_quarter_uses_default_year_and_standalone_years_are_kept() {
        assert_eq!(refs("revenue in q2").quarters, ["2024-Q2"]);
        let both = refs("compare 2023 with q1 2024");
        assert_eq!(both.quarters, ["2024-Q1"]);
        assert_eq!(both.years, [2023]);
    }

    #[test]
    fn ranges_are_expanded_across_years() {
        assert_eq!(
            refs("from q3 2023 to q2 2024").quarters,
            ["2023-Q3", "2023-Q4", "2024-Q1", "2024-Q2"]
        );
    }

    #[test]
    fn non_years_are_ignored() {
        assert!(refs("top 5 products").years.is_empty());
        assert!(refs("q5 1999 3000").quarters.is_empty());
        assert!(refs("1999 3000").years.is_empty());
    }
}
