//! A validator for the subset of JSON Schema (2020-12) the CLI's documented
//! schemas use: type (one or several), const, enum, required, properties,
//! additionalProperties false, items, oneOf (exactly one), minimum, and
//! pattern (only `^[0-9a-f]{N}$`). Anything else in a schema fails the
//! check, so a schema cannot say more than is checked.

use serde_json::Value;

/// Every way `v` breaks `schema`, with where.
pub fn violations(schema: &Value, v: &Value, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(s) = schema.as_object() else {
        return vec![format!("{at}: the schema is not an object")];
    };
    for key in s.keys() {
        let known = [
            "$schema",
            "$id",
            "title",
            "description",
            "type",
            "const",
            "enum",
            "required",
            "properties",
            "additionalProperties",
            "items",
            "oneOf",
            "minimum",
            "pattern",
        ];
        if !known.contains(&key.as_str()) {
            out.push(format!(
                "{at}: the schema uses {key}, which this checker does not know"
            ));
        }
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if !types
            .iter()
            .any(|t| *t == actual || (*t == "number" && actual == "integer"))
        {
            out.push(format!("{at}: {actual}, not {types:?}"));
            return out;
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            out.push(format!("{at}: {v}, not {c}"));
        }
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.contains(v) {
            out.push(format!("{at}: {v} is not one of {options:?}"));
        }
    }
    if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_i64), v.as_i64()) {
        if n < min {
            out.push(format!("{at}: {n} < {min}"));
        }
    }
    if let (Some(p), Some(text)) = (s.get("pattern").and_then(Value::as_str), v.as_str()) {
        let n: usize = p
            .strip_prefix("^[0-9a-f]{")
            .and_then(|r| r.strip_suffix("}$"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX);
        if text.len() != n
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            out.push(format!("{at}: {text:?} does not match {p}"));
        }
    }
    if let Some(obj) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = r.as_str() {
                if !obj.contains_key(name) {
                    out.push(format!("{at}: no {name}"));
                }
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => out.extend(violations(sub, val, &format!("{at}.{k}"))),
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    out.push(format!("{at}: {k} is not in the schema"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            out.extend(violations(items, x, &format!("{at}[{i}]")));
        }
    }
    if let Some(Value::Array(options)) = s.get("oneOf") {
        let matching = options
            .iter()
            .filter(|o| violations(o, v, at).is_empty())
            .count();
        if matching != 1 {
            out.push(format!(
                "{at}: {v} matches {matching} of oneOf's schemas, not exactly one"
            ));
        }
    }
    out
}
