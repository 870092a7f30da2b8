//! Protobuf messages → the JSON the API serves (Go `encoding/json` rules: `omitempty` fields
//! dropped when empty, pointers kept when set, `creationTimestamp` always present).

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value};

use super::proto;
use super::time::format_rfc3339;

fn put_str(obj: &mut Map<String, Value>, key: &str, value: Option<String>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        obj.insert(key.into(), Value::String(v));
    }
}

fn string_map(map: BTreeMap<String, String>) -> Value {
    Value::Object(
        map.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

fn bytes_map(map: BTreeMap<String, Vec<u8>>) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    Value::Object(
        map.into_iter()
            .map(|(k, v)| (k, Value::String(b64.encode(v))))
            .collect(),
    )
}

fn time(t: Option<proto::Time>) -> Value {
    match t {
        Some(proto::Time { seconds, nanos })
            if seconds.unwrap_or(0) != 0 || nanos.unwrap_or(0) != 0 =>
        {
            Value::String(format_rfc3339(seconds.unwrap_or(0)))
        }
        _ => Value::Null,
    }
}

pub(super) fn object_meta(m: proto::ObjectMeta) -> Value {
    let mut o = Map::new();
    put_str(&mut o, "name", m.name);
    put_str(&mut o, "generateName", m.generate_name);
    put_str(&mut o, "namespace", m.namespace);
    put_str(&mut o, "selfLink", m.self_link);
    put_str(&mut o, "uid", m.uid);
    put_str(&mut o, "resourceVersion", m.resource_version);
    if let Some(g) = m.generation.filter(|g| *g != 0) {
        o.insert("generation".into(), g.into());
    }
    o.insert("creationTimestamp".into(), time(m.creation_timestamp));
    if m.deletion_timestamp.is_some() {
        o.insert("deletionTimestamp".into(), time(m.deletion_timestamp));
    }
    if let Some(s) = m.deletion_grace_period_seconds {
        o.insert("deletionGracePeriodSeconds".into(), s.into());
    }
    if !m.labels.is_empty() {
        o.insert("labels".into(), string_map(m.labels));
    }
    if !m.annotations.is_empty() {
        o.insert("annotations".into(), string_map(m.annotations));
    }
    if !m.owner_references.is_empty() {
        o.insert(
            "ownerReferences".into(),
            m.owner_references
                .into_iter()
                .map(owner_reference)
                .collect(),
        );
    }
    if !m.finalizers.is_empty() {
        o.insert(
            "finalizers".into(),
            m.finalizers.into_iter().map(Value::String).collect(),
        );
    }
    if !m.managed_fields.is_empty() {
        o.insert(
            "managedFields".into(),
            m.managed_fields
                .into_iter()
                .map(managed_fields_entry)
                .collect(),
        );
    }
    Value::Object(o)
}

fn owner_reference(r: proto::OwnerReference) -> Value {
    let mut o = Map::new();
    o.insert(
        "apiVersion".into(),
        Value::String(r.api_version.unwrap_or_default()),
    );
    o.insert("kind".into(), Value::String(r.kind.unwrap_or_default()));
    o.insert("name".into(), Value::String(r.name.unwrap_or_default()));
    o.insert("uid".into(), Value::String(r.uid.unwrap_or_default()));
    if let Some(c) = r.controller {
        o.insert("controller".into(), Value::Bool(c));
    }
    if let Some(b) = r.block_owner_deletion {
        o.insert("blockOwnerDeletion".into(), Value::Bool(b));
    }
    Value::Object(o)
}

fn managed_fields_entry(e: proto::ManagedFieldsEntry) -> Value {
    let mut o = Map::new();
    put_str(&mut o, "manager", e.manager);
    put_str(&mut o, "operation", e.operation);
    put_str(&mut o, "apiVersion", e.api_version);
    if e.time.is_some() {
        o.insert("time".into(), time(e.time));
    }
    put_str(&mut o, "fieldsType", e.fields_type);
    if let Some(f) = e.fields_v1 {
        let raw = f.raw.unwrap_or_default();
        // FieldsV1 is raw JSON; fall back to a string if a writer stored something else.
        let v = serde_json::from_slice(&raw)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into()));
        o.insert("fieldsV1".into(), v);
    }
    put_str(&mut o, "subresource", e.subresource);
    Value::Object(o)
}

pub(super) fn secret(s: proto::Secret, obj: &mut Map<String, Value>) {
    obj.insert(
        "metadata".into(),
        object_meta(s.metadata.unwrap_or_default()),
    );
    if let Some(i) = s.immutable {
        obj.insert("immutable".into(), Value::Bool(i));
    }
    if !s.data.is_empty() {
        obj.insert("data".into(), bytes_map(s.data));
    }
    if !s.string_data.is_empty() {
        obj.insert("stringData".into(), string_map(s.string_data));
    }
    put_str(obj, "type", s.r#type);
}

pub(super) fn config_map(c: proto::ConfigMap, obj: &mut Map<String, Value>) {
    obj.insert(
        "metadata".into(),
        object_meta(c.metadata.unwrap_or_default()),
    );
    if let Some(i) = c.immutable {
        obj.insert("immutable".into(), Value::Bool(i));
    }
    if !c.data.is_empty() {
        obj.insert("data".into(), string_map(c.data));
    }
    if !c.binary_data.is_empty() {
        obj.insert("binaryData".into(), bytes_map(c.binary_data));
    }
}
