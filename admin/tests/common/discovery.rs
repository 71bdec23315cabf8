//! Google's Compute Engine v1 discovery document (the one the PyPI package
//! google-api-python-client ships, installed by scripts/setup), and checks
//! of requests against it: the method a path and verb name, its query
//! parameters, and a request body's every field, type and enum value.

use std::path::PathBuf;

use serde_json::{Map, Value};

/// Where scripts/setup installs the package.
const VENV: &str = "/var/cache/support-tunnel/venv";
const DOC: &str = "googleapiclient/discovery_cache/documents/compute.v1.json";

/// The parsed discovery document.
pub struct Discovery {
    doc: Value,
}

impl Discovery {
    /// Loads it from `SUPPORT_COMPUTE_DISCOVERY` or the setup's venv.
    pub fn load() -> Discovery {
        let path = std::env::var_os("SUPPORT_COMPUTE_DISCOVERY")
            .map(PathBuf::from)
            .or_else(|| {
                let lib = PathBuf::from(VENV).join("lib");
                std::fs::read_dir(lib)
                    .ok()?
                    .flatten()
                    .map(|e| e.path().join("site-packages").join(DOC))
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| {
                panic!(
                    "the Compute Engine discovery document is missing: run scripts/setup \
                     (it installs google-api-python-client into {VENV}) or set \
                     SUPPORT_COMPUTE_DISCOVERY"
                )
            });
        let text = std::fs::read_to_string(&path).expect("reads the discovery document");
        let doc: Value = serde_json::from_str(&text).expect("the discovery document is JSON");
        assert_eq!(doc["name"], "compute");
        assert_eq!(doc["version"], "v1");
        Discovery { doc }
    }

    /// The method (e.g. `compute.instances.insert`) that `verb path?query`
    /// calls, after checking every query parameter it carries; `Err` says
    /// what does not fit.
    pub fn method_for(&self, verb: &str, path_and_query: &str) -> Result<&Value, String> {
        let service = format!("/{}", self.doc["servicePath"].as_str().unwrap_or_default());
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let path = path
            .strip_prefix(&service)
            .ok_or_else(|| format!("{path} is not under {service}"))?;
        let method = methods(&self.doc)
            .into_iter()
            .find(|m| m["httpMethod"] == verb && template_matches(m["path"].as_str(), path))
            .ok_or_else(|| format!("no Compute Engine method is {verb} {path}"))?;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let param = &method["parameters"][name];
            if param["location"] != "query" {
                return Err(format!("{} has no query parameter {name:?}", method["id"]));
            }
            check_scalar(param, &Value::String(percent_decode(value)))
                .map_err(|e| format!("{}: query {name}: {e}", method["id"]))?;
        }
        Ok(method)
    }

    /// Every problem of `body` as the request of `method`.
    pub fn check_request(&self, method: &Value, body: &Value) -> Vec<String> {
        let Some(schema) = method["request"]["$ref"].as_str() else {
            return vec![format!("{} takes no request body", method["id"])];
        };
        let mut errors = Vec::new();
        self.check(&self.doc["schemas"][schema], body, schema, &mut errors);
        errors
    }

    fn check(&self, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
        if let Some(name) = schema["$ref"].as_str() {
            return self.check(&self.doc["schemas"][name], v, at, errors);
        }
        match schema["type"].as_str() {
            Some("object") => {
                let Some(fields) = v.as_object() else {
                    return errors.push(format!("{at}: expected an object, found {v}"));
                };
                self.check_object(schema, fields, at, errors);
            }
            Some("array") => {
                let Some(items) = v.as_array() else {
                    return errors.push(format!("{at}: expected an array, found {v}"));
                };
                for (i, item) in items.iter().enumerate() {
                    self.check(&schema["items"], item, &format!("{at}[{i}]"), errors);
                }
            }
            _ => {
                if let Err(e) = check_scalar(schema, v) {
                    errors.push(format!("{at}: {e}"));
                }
            }
        }
    }

    fn check_object(
        &self,
        schema: &Value,
        fields: &Map<String, Value>,
        at: &str,
        errors: &mut Vec<String>,
    ) {
        for (name, value) in fields {
            let here = format!("{at}.{name}");
            if let Some(prop) = schema["properties"].get(name) {
                let described = prop["description"].as_str().unwrap_or_default();
                if described.starts_with("[Output Only]") || described.starts_with("Output only.") {
                    errors.push(format!("{here}: an output-only field was sent"));
                }
                self.check(prop, value, &here, errors);
            } else if schema["additionalProperties"].is_object() {
                self.check(&schema["additionalProperties"], value, &here, errors);
            } else {
                errors.push(format!("{here}: no such field"));
            }
        }
    }
}

fn methods(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    if let Some(ms) = v["methods"].as_object() {
        out.extend(ms.values());
    }
    if let Some(rs) = v["resources"].as_object() {
        for r in rs.values() {
            out.extend(methods(r));
        }
    }
    out
}

/// `projects/{project}/zones/{zone}/instances` against a concrete path.
fn template_matches(template: Option<&str>, path: &str) -> bool {
    let Some(t) = template else { return false };
    let (ts, ps): (Vec<&str>, Vec<&str>) = (t.split('/').collect(), path.split('/').collect());
    ts.len() == ps.len()
        && ts
            .iter()
            .zip(&ps)
            .all(|(t, p)| !p.is_empty() && (*t == *p || (t.starts_with('{') && t.ends_with('}'))))
}

/// A scalar against its schema: type, int64-as-string, enum.
fn check_scalar(schema: &Value, v: &Value) -> Result<(), String> {
    let ok = match (schema["type"].as_str(), schema["format"].as_str()) {
        (Some("string"), Some("int64" | "uint64")) => {
            v.as_str().is_some_and(|s| s.parse::<i128>().is_ok())
        }
        (Some("string"), _) => v.is_string(),
        (Some("integer"), _) => v.is_i64() || v.is_u64(),
        (Some("number"), _) => v.is_number(),
        (Some("boolean"), _) => v.is_boolean(),
        (t, _) => return Err(format!("unexpected schema type {t:?}")),
    };
    if !ok {
        return Err(format!(
            "{v} is not a {} ({})",
            schema["type"],
            schema["format"].as_str().unwrap_or("-")
        ));
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            return Err(format!("{v} is not one of {allowed:?}"));
        }
    }
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(h)) => match u8::from_str_radix(&String::from_utf8_lossy(h), 16) {
                Ok(x) => {
                    out.push(x);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}
