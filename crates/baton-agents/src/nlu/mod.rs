//! The NLU agent: turns a user's question into an intent and entities with a rule and lexicon
//! based analyser (no model), so the downstream SQL and RAG agents get structured input.

mod lexicon;
mod time;

use serde::{Deserialize, Serialize};

use lexicon::{
    CASE_SENSITIVE_REGIONS, CATEGORIES, COMPARE_CUES, DEFINITION_CUES, EXPLICIT_REVENUE_CUES,
    NUMBER_WORDS, PRODUCTS, REGIONS, REVENUE_CUES, STRONG_POLICY_CUES, SUPERLATIVES, TOP_CUES,
    TREND_CUES, UNITS_CUES, WEAK_POLICY_CUES,
};

/// The analysed question, as the NLU agent returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub question: String,
    pub intent: Intent,
    pub entities: Entities,
    /// How sure the rules are, in `[0, 1]`: higher when an explicit cue and entities agree.
    pub confidence: f64,
}

/// What the user is asking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// A revenue total for some scope ("revenue in EMEA in Q3 2024").
    TotalRevenue,
    /// A units total for some scope.
    UnitsSold,
    /// A ranking of products ("top 5 best-selling products").
    TopProducts,
    /// Regions side by side ("compare NA and APAC").
    RegionComparison,
    /// A metric quarter by quarter ("how has revenue grown").
    Trend,
    /// A question for the documents (policies, definitions, people).
    PolicyQuestion,
    /// Nothing recognisable.
    Unknown,
}

impl Intent {
    /// Whether the SQL agent can answer this intent from the sales database.
    pub fn is_data_question(self) -> bool {
        !matches!(self, Intent::PolicyQuestion | Intent::Unknown)
    }
}

/// Entities found in the question, in canonical form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entities {
    /// Region codes: "NA", "EMEA", "APAC", "LATAM".
    pub regions: Vec<String>,
    /// Product names as in the catalogue, e.g. "Insight Pro".
    pub products: Vec<String>,
    /// Quarter labels such as "2024-Q3", sorted.
    pub quarters: Vec<String>,
    /// Years mentioned on their own (not as the year of a quarter), sorted.
    pub years: Vec<i32>,
    /// "revenue" or "units" for data intents.
    pub metric: Option<String>,
    /// The N of "top N", when the user gave one.
    pub limit: Option<u32>,
}

/// Analyses a question. Never fails: an unrecognisable question yields [`Intent::Unknown`].
pub fn analyze(question: &str) -> Analysis {
    let tokens = tokenize(question);
    let has = |cues: &[&str]| cues.iter().any(|cue| contains_phrase(&tokens, cue));

    let time = time::extract(&tokens);
    let mut entities = Entities {
        regions: find_regions(question, &tokens),
        products: find_products(&tokens),
        quarters: time.quarters,
        years: time.years,
        metric: None,
        limit: find_limit(&tokens),
    };

    let has_time = !entities.quarters.is_empty() || !entities.years.is_empty();
    let has_scope = !entities.regions.is_empty() || !entities.products.is_empty() || has_time;
    let superlative = has(SUPERLATIVES);
    let about_products = has(&["product", "products"]);
    let about_regions = has(&["region", "regions"]);

    let explicit_metric = has(EXPLICIT_REVENUE_CUES) || has(UNITS_CUES);

    // Order matters: a definition question mentions a metric but wants a document, and so does
    // a policy question without a time scope or explicit metric; a ranking or trend question
    // also mentions revenue, so the generic totals come last.
    let asks_for_document = has(DEFINITION_CUES) || (has(STRONG_POLICY_CUES) && !explicit_metric);
    let (intent, cue_strength) = if asks_for_document && !has_time {
        (Intent::PolicyQuestion, 0.85)
    } else if has(TOP_CUES) || (superlative && about_products) {
        (Intent::TopProducts, 0.85)
    } else if has(TREND_CUES) {
        (Intent::Trend, 0.8)
    } else if has(COMPARE_CUES) || entities.regions.len() >= 2 || (superlative && about_regions) {
        (Intent::RegionComparison, 0.8)
    } else if has(UNITS_CUES) {
        (Intent::UnitsSold, 0.8)
    } else if has(REVENUE_CUES) {
        (Intent::TotalRevenue, 0.8)
    } else if has(WEAK_POLICY_CUES) {
        (Intent::PolicyQuestion, 0.7)
    } else if has_scope {
        // "How did EMEA do in Q3?" names a scope but no metric: revenue is the best guess.
        (Intent::TotalRevenue, 0.5)
    } else {
        (Intent::Unknown, 0.1)
    };

    let mut confidence: f64 = cue_strength;
    if intent.is_data_question() {
        let selling = has(&["selling", "seller", "sellers", "sold"]);
        let units = has(UNITS_CUES)
            || (intent == Intent::TopProducts && selling && !has(EXPLICIT_REVENUE_CUES));
        entities.metric = Some(if units { "units" } else { "revenue" }.to_string());
        if has_scope && cue_strength > 0.5 {
            confidence += 0.1;
        }
    } else if intent == Intent::PolicyQuestion && has(&["policy", "policies"]) {
        confidence += 0.05;
    }
    if tokens.is_empty() {
        confidence = 0.0;
    }

    Analysis {
        question: question.to_string(),
        intent,
        entities,
        confidence: round2(confidence.min(0.95)),
    }
}

/// Whether the question (also) asks about documents: policies, definitions, people, prices.
/// The answer agent uses this to decide whether a compound question ("revenue in Q3, and the
/// refund policy?") needs a document-based part besides the figures.
pub fn mentions_policy(question: &str) -> bool {
    let tokens = tokenize(question);
    STRONG_POLICY_CUES
        .iter()
        .chain(DEFINITION_CUES)
        .any(|cue| contains_phrase(&tokens, cue))
}

/// Lowercase alphanumeric words; punctuation (including '-') separates words, so "2024-Q3"
/// becomes ["2024", "q3"] and "best-selling" becomes ["best", "selling"].
fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn phrase_words(phrase: &str) -> Vec<&str> {
    phrase.split(' ').collect()
}

fn contains_phrase(tokens: &[String], phrase: &str) -> bool {
    let words = phrase_words(phrase);
    tokens
        .windows(words.len())
        .any(|window| window.iter().zip(&words).all(|(t, w)| t == w))
}

/// Region codes in order of first mention.
fn find_regions(question: &str, tokens: &[String]) -> Vec<String> {
    let mut found: Vec<(usize, &str)> = Vec::new();
    for (code, phrases) in REGIONS {
        if let Some(pos) = phrases
            .iter()
            .filter_map(|p| first_position(tokens, p))
            .min()
        {
            found.push((pos, code));
        }
    }
    // Capitalised abbreviations are looked up in the original text; their position is only
    // approximate (word index in the raw text), which is enough for ordering.
    let raw_words: Vec<&str> = question
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    for (word, code) in CASE_SENSITIVE_REGIONS {
        if let Some(pos) = raw_words.iter().position(|w| w == word) {
            found.push((pos, code));
        }
    }
    found.sort();
    let mut regions: Vec<String> = Vec::new();
    for (_, code) in found {
        if !regions.iter().any(|r| r == code) {
            regions.push(code.to_string());
        }
    }
    regions
}

/// Product names in catalogue order; a category word adds all of its products.
fn find_products(tokens: &[String]) -> Vec<String> {
    let mut wanted: Vec<&str> = Vec::new();
    for (name, phrases) in PRODUCTS {
        if phrases.iter().any(|p| contains_phrase(tokens, p)) {
            wanted.push(name);
        }
    }
    for (category, names) in CATEGORIES {
        if contains_phrase(tokens, category) {
            wanted.extend(names.iter());
        }
    }
    PRODUCTS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| wanted.contains(name))
        .map(str::to_string)
        .collect()
}

fn first_position(tokens: &[String], phrase: &str) -> Option<usize> {
    let words = phrase_words(phrase);
    tokens
        .windows(words.len())
        .position(|window| window.iter().zip(&words).all(|(t, w)| t == w))
}

/// "top 5", "top five", "5 best selling", "3 most popular": a number right after "top", or
/// right before a superlative / "top".
fn find_limit(tokens: &[String]) -> Option<u32> {
    for (i, token) in tokens.iter().enumerate() {
        let next = tokens.get(i + 1).map(String::as_str);
        let limit = if token == "top" {
            next.and_then(parse_count)
        } else if next.is_some_and(|n| n == "top" || SUPERLATIVES.contains(&n)) {
            parse_count(token)
        } else {
            None
        };
        if limit.is_some() {
            return limit;
        }
    }
    None
}

/// A small positive count; years and other large numbers are not limits.
fn parse_count(token: &str) -> Option<u32> {
    let value = match token.parse::<u32>() {
        Ok(value) => value,
        Err(_) => NUMBER_WORDS
            .iter()
            .find(|(word, _)| *word == token)
            .map(|(_, n)| *n)?,
    };
    (1..=100).contains(&value).then_some(value)
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests;
