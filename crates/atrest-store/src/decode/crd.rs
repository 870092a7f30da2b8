//! CustomResourceDefinitions: kube-apiserver stores them as apiextensions.k8s.io/v1beta1 JSON and
//! serves them as v1. This is the v1beta1 → v1 conversion (apiextensions' conversion.go) on the
//! JSON: top-level `validation` / `subresources` / `additionalPrinterColumns` / `selectableFields`
//! move into every
//! version, `JSONPath` becomes `jsonPath`, `conversion.webhookClientConfig` and
//! `conversionReviewVersions` move under `conversion.webhook`, `spec.version` goes, and
//! `preserveUnknownFields: false` (a plain bool with `omitempty` in v1) is left out.

use serde_json::{Map, Value};

pub const STORAGE_API_VERSION: &str = "apiextensions.k8s.io/v1beta1";
pub const SERVED_API_VERSION: &str = "apiextensions.k8s.io/v1";

/// Whether a decoded JSON object is a stored v1beta1 CRD.
pub fn is_stored_crd(obj: &Value) -> bool {
    obj.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
        && obj.get("apiVersion").and_then(Value::as_str) == Some(STORAGE_API_VERSION)
}

/// Converts a stored v1beta1 CRD to the v1 object kube-apiserver serves.
pub fn to_v1(mut obj: Value) -> Value {
    if let Some(o) = obj.as_object_mut() {
        o.insert(
            "apiVersion".into(),
            Value::String(SERVED_API_VERSION.into()),
        );
        if let Some(Value::Object(spec)) = o.get_mut("spec") {
            convert_spec(spec);
        }
    }
    obj
}

fn convert_spec(spec: &mut Map<String, Value>) {
    let version = spec.remove("version");
    let validation = spec.remove("validation");
    let subresources = spec.remove("subresources");
    let columns = spec.remove("additionalPrinterColumns").map(columns_to_v1);
    let selectable = spec.remove("selectableFields");
    let versions = spec
        .entry("versions")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = versions {
        if list.is_empty() {
            if let Some(Value::String(name)) = version {
                let mut v = Map::new();
                v.insert("name".into(), Value::String(name));
                v.insert("served".into(), Value::Bool(true));
                v.insert("storage".into(), Value::Bool(true));
                list.push(Value::Object(v));
            }
        }
        for v in list.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(per_version) = v.remove("additionalPrinterColumns") {
                v.insert(
                    "additionalPrinterColumns".into(),
                    columns_to_v1(per_version),
                );
            }
            for (key, top) in [
                ("schema", &validation),
                ("subresources", &subresources),
                ("additionalPrinterColumns", &columns),
                ("selectableFields", &selectable),
            ] {
                if let Some(top) = top.as_ref().filter(|t| !t.is_null()) {
                    v.insert(key.into(), top.clone());
                }
            }
        }
    }
    if let Some(Value::Object(conversion)) = spec.get_mut("conversion") {
        let client = conversion.remove("webhookClientConfig");
        let review = conversion.remove("conversionReviewVersions");
        if client.is_some() || review.is_some() {
            let mut webhook = Map::new();
            if let Some(c) = client {
                webhook.insert("clientConfig".into(), c);
            }
            if let Some(r) = review {
                webhook.insert("conversionReviewVersions".into(), r);
            }
            conversion.insert("webhook".into(), Value::Object(webhook));
        }
    }
    if spec.get("preserveUnknownFields") == Some(&Value::Bool(false)) {
        spec.remove("preserveUnknownFields");
    }
}

fn columns_to_v1(columns: Value) -> Value {
    match columns {
        Value::Array(list) => Value::Array(
            list.into_iter()
                .map(|mut c| {
                    if let Some(o) = c.as_object_mut() {
                        if let Some(p) = o.remove("JSONPath") {
                            o.insert("jsonPath".into(), p);
                        }
                    }
                    c
                })
                .collect(),
        ),
        other => other,
    }
}
