//! Search rules, shared by the room's index and its queries: how text is
//! cut into words, and when a message matches a query.
//!
//! Words are maximal runs of alphanumeric characters (Unicode), lowercased.
//! A query is a list of terms, cut the same way; a message matches when
//! every term is a prefix of some word of its text (a whole word is its own
//! prefix). So `hel wor` matches "Hello, World!" and `world` matches
//! "worldwide" but `orld` matches neither.
//!
//! ```
//! use chat_demo::protocol::search::{matches, words};
//!
//! assert_eq!(words("Hello, WORLD! it's 2024"), ["hello", "world", "it", "s", "2024"]);
//! let terms = words("hel wor");
//! assert!(matches("Hello, World!", &terms));
//! assert!(!matches("Hello there", &terms));
//! ```

use super::{ProtocolError, exceeds_chars};

/// Longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 64;

/// Most terms in a query (after dropping repeats).
pub const MAX_TERMS: usize = 4;

/// Results per page when the request gives no `limit`.
pub const SEARCH_PAGE_DEFAULT: u32 = 20;

/// Most results per page; larger limits are clamped.
pub const SEARCH_PAGE_MAX: u32 = 50;

/// The words of `text`: lowercased runs of alphanumeric characters, in
/// order, repeats kept.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether every term is a prefix of some word of `text`.
pub fn matches(text: &str, terms: &[String]) -> bool {
    let words = words(text);
    terms
        .iter()
        .all(|term| words.iter().any(|w| w.starts_with(term.as_str())))
}

/// The terms of a query: its distinct words, in order.
///
/// # Errors
///
/// [`ProtocolError::InvalidSearch`] for a query over [`MAX_QUERY_CHARS`]
/// characters, without any word, or with more than [`MAX_TERMS`] distinct
/// words.
pub fn terms(query: &str) -> Result<Vec<String>, ProtocolError> {
    if exceeds_chars(query, MAX_QUERY_CHARS) {
        return Err(ProtocolError::InvalidSearch);
    }
    let mut terms: Vec<String> = Vec::new();
    for word in words(query) {
        if !terms.contains(&word) {
            terms.push(word);
        }
    }
    if terms.is_empty() || terms.len() > MAX_TERMS {
        return Err(ProtocolError::InvalidSearch);
    }
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercased_alphanumeric_runs() {
        assert_eq!(words(""), Vec::<String>::new());
        assert_eq!(words("  --  "), Vec::<String>::new());
        assert_eq!(words("Ünïcode straße ÉTÉ"), ["ünïcode", "straße", "été"]);
        assert_eq!(words("a<b>c</b>"), ["a", "b", "c", "b"]);
        assert_eq!(words("漢字 テスト"), ["漢字", "テスト"]);
    }

    #[test]
    fn prefixes_and_whole_words_match_infixes_do_not() {
        let t = |q: &str| terms(q).expect("valid");
        assert!(matches("Worldwide news", &t("world")));
        assert!(matches("Worldwide news", &t("NEWS wor")));
        assert!(!matches("Worldwide news", &t("orld")));
        assert!(!matches("Worldwide news", &t("world sports")));
        assert!(matches("ÉTÉ", &t("été")));
    }

    #[test]
    fn query_bounds() {
        assert_eq!(terms("a b a"), Ok(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(terms("  !! "), Err(ProtocolError::InvalidSearch));
        assert_eq!(terms("a b c d e"), Err(ProtocolError::InvalidSearch));
        assert!(terms(&"x".repeat(64)).is_ok());
        assert_eq!(terms(&"x".repeat(65)), Err(ProtocolError::InvalidSearch));
    }
}
