//! OVSDB's JSON notation for atoms, sets and maps (RFC 7047 §5.1).

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// `["uuid", u]`.
pub fn uuid(u: &str) -> Value {
    json!(["uuid", u])
}

/// `["named-uuid", n]`: refers to a row inserted earlier in the same transaction.
pub fn named_uuid(n: &str) -> Value {
    json!(["named-uuid", n])
}

/// `["set", [...]]`.
pub fn set(items: impl IntoIterator<Item = Value>) -> Value {
    json!(["set", items.into_iter().collect::<Vec<_>>()])
}

/// `["map", [[k, v], ...]]` with string keys and values.
pub fn string_map<'a>(items: impl IntoIterator<Item = (&'a String, &'a String)>) -> Value {
    json!(["map", items.into_iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()])
}

/// The elements of a set column's value: a bare atom is a one-element set.
pub fn set_elements(v: &Value) -> Vec<Value> {
    match tagged(v, "set") {
        Some(elems) => elems.as_array().cloned().unwrap_or_default(),
        None => vec![v.clone()],
    }
}

/// The payload of `[tag, payload]`, if `v` has that form.
fn tagged<'a>(v: &'a Value, tag: &str) -> Option<&'a Value> {
    match v.as_array().map(Vec::as_slice) {
        Some([t, payload]) if t == tag => Some(payload),
        _ => None,
    }
}

/// The entries of a map column's value.
pub fn map_entries(v: &Value) -> Vec<(Value, Value)> {
    let pairs = tagged(v, "map").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    pairs
        .iter()
        .filter_map(|p| match p.as_array().map(Vec::as_slice) {
            Some([k, v]) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect()
}

/// A string-to-string map column as a `BTreeMap`.
pub fn string_map_of(v: &Value) -> BTreeMap<String, String> {
    map_entries(v).into_iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string()))).collect()
}

/// The uuid string of `["uuid", u]`.
pub fn as_uuid(v: &Value) -> Option<&str> {
    tagged(v, "uuid").and_then(Value::as_str)
}
