//! Snippet selection: the sentence of a document that covers the query's rarest words best.

use std::collections::HashSet;

use bm25::{DefaultTokenizer, Tokenizer};

/// Snippets longer than this are cut at a word boundary.
const MAX_CHARS: usize = 320;

/// A best sentence shorter than this is followed by the next one, for context.
const MIN_CHARS: usize = 90;

/// Picks the sentence whose distinct query words have the highest total `idf`; the earliest
/// sentence wins ties (and is used when nothing matches, as documents lead with a summary).
pub(super) fn best(
    body: &str,
    query_tokens: &HashSet<String>,
    tokenizer: &DefaultTokenizer,
    idf: impl Fn(&str) -> f64,
) -> String {
    let sentences = split_sentences(body);
    let mut best_index = 0;
    let mut best_score = 0.0;
    for (i, sentence) in sentences.iter().enumerate() {
        let words: HashSet<String> = tokenizer.tokenize(sentence).into_iter().collect();
        let score: f64 = words.intersection(query_tokens).map(|t| idf(t)).sum();
        if score > best_score {
            best_score = score;
            best_index = i;
        }
    }
    let Some(first) = sentences.get(best_index) else {
        return String::new();
    };
    let mut snippet = first.to_string();
    if snippet.len() < MIN_CHARS
        && let Some(next) = sentences.get(best_index + 1)
    {
        snippet.push(' ');
        snippet.push_str(next);
    }
    truncate(&snippet, MAX_CHARS)
}

/// Splits after '.', '!' or '?' followed by a space and an uppercase letter or digit, which
/// keeps "$2,499" and "e.g. the" inside their sentences.
fn split_sentences(text: &str) -> Vec<&str> {
    let mut sentences = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for window in chars.windows(3) {
        let [(_, end), (space_at, space), (_, next)] = window else {
            continue;
        };
        if matches!(end, '.' | '!' | '?')
            && space.is_whitespace()
            && (next.is_uppercase() || next.is_ascii_digit())
        {
            sentences.push(text[start..*space_at].trim());
            start = space_at + space.len_utf8();
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        sentences.push(rest);
    }
    sentences
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &text[..cut];
    let head = head.rfind(' ').map_or(head, |space| &head[..space]);
    format!("{}…", head.trim_end_matches([',', ';', ':']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_sentence_ends_only() {
        let s = split_sentences("Costs $2,499. Per seat, e.g. for teams. 30 days apply! Done");
        assert_eq!(
            s,
            [
                "Costs $2,499.",
                "Per seat, e.g. for teams.",
                "30 days apply!",
                "Done"
            ]
        );
    }

    #[test]
    fn truncates_at_a_word_boundary() {
        assert_eq!(truncate("alpha beta gamma", 12), "alpha beta…");
        assert_eq!(truncate("short", 12), "short");
    }
}
