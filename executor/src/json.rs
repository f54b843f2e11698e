//! Small helpers for walking a `serde_json::Value` with the JSON path of every place,
//! so that each error names where it is (`filter.and[2].related.via[0]`).

use serde_json::{Map, Value};

/// Joins a path and a key: `filter` + `and` = `filter.and`.
pub(crate) fn key_place(place: &str, key: &str) -> String {
    if place.is_empty() { key.to_string() } else { format!("{place}.{key}") }
}

/// Joins a path and an index: `filter.and` + 2 = `filter.and[2]`.
pub(crate) fn index_place(place: &str, index: usize) -> String {
    format!("{place}[{index}]")
}

/// Describes a JSON value's type for messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses JSON text, turning serde's message into one that names the document.
pub(crate) fn parse_document(text: &str) -> Result<Value, String> {
    serde_json::from_str::<Value>(text).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            format!("nested more than 128 levels deep (line {}, column {})", e.line(), e.column())
        } else {
            format!("not valid JSON: {e}")
        }
    })
}

/// Checks that an object has only the allowed keys; returns the first unknown one.
pub(crate) fn unknown_key<'a>(object: &'a Map<String, Value>, allowed: &[&str]) -> Option<&'a str> {
    object.keys().map(String::as_str).find(|k| !allowed.contains(k))
}

/// Suggests the closest of `candidates` to `wanted`, when one is close enough to be a typo.
pub(crate) fn did_you_mean<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let best = candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&wanted.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!(" (did you mean {c:?}?)"),
        None => String::new(),
    }
}

/// True when `name` matches `[A-Za-z_][A-Za-z0-9_]{0,127}`.
pub(crate) fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    name.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
