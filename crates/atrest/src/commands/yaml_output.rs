//! JSON values (the objects `get` and `snapshot` decode) printed as YAML, keeping field order, the
//! way `kubectl get -o yaml` shows them.

use serde_json::Value;
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter};

fn to_yaml(v: &Value) -> Yaml {
    match v {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(a) => Yaml::Array(a.iter().map(to_yaml).collect()),
        Value::Object(m) => {
            let mut h = Hash::new();
            for (k, v) in m {
                h.insert(Yaml::String(k.clone()), to_yaml(v));
            }
            Yaml::Hash(h)
        }
    }
}

/// One document of a stream: starts with `---`, ends with a newline.
pub fn document(v: &Value) -> anyhow::Result<String> {
    let mut out = String::new();
    YamlEmitter::new(&mut out).dump(&to_yaml(v))?;
    out.push('\n');
    Ok(out)
}

/// A single object as kubectl prints it: block style, multi-line strings as literal blocks, no
/// `---` header.
pub fn single(v: &Value) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    emitter.multiline_strings(true);
    emitter.dump(&to_yaml(v))?;
    let body = out.strip_prefix("---\n").unwrap_or(&out).to_string();
    Ok(body + "\n")
}
