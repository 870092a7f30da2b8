use std::io::BufRead;

use base64::Engine;
use serde_json::{json, Value};

use super::*;

fn sample() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/clusters/sample/objects.jsonl.gz"
    );
    let file = std::fs::File::open(path).expect("sample objects.jsonl.gz");
    std::io::BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

fn b64(s: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().unwrap())
        .unwrap()
}

/// `testdata/decoding/builtin-kinds.jsonl`: stored bytes of every built-in kind with the JSON the
/// v1.36.3 apiserver code serves for them. Every mismatch is reported, not only the first.
#[test]
fn every_builtin_kind_decodes_to_the_served_json() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/decoding/builtin-kinds.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("builtin-kinds.jsonl");
    let mut failures = Vec::new();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let r: Value = serde_json::from_str(line).unwrap();
        n += 1;
        let label = format!("{} {} ({})", r["kind"], r["case"], r["etcd_key"]);
        let stored = b64(&r["stored_b64"]);
        let want: Value = serde_json::from_str(r["json"].as_str().unwrap()).unwrap();
        match decode_object_at(&stored, r["mod_revision"].as_i64().unwrap()) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!("{label}: {}", first_difference(&got, &want, ""))),
            Err(e) => failures.push(format!("{label}: {e}")),
        }
    }
    assert_eq!(n, 189);
    assert!(
        failures.is_empty(),
        "{} of {n} records differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The first path where two JSON values differ, for readable failures.
fn first_difference(got: &Value, want: &Value, path: &str) -> String {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, wv) in w {
                match g.get(k) {
                    None => return format!("{path}.{k} missing (want {})", short(wv)),
                    Some(gv) if gv != wv => {
                        return first_difference(gv, wv, &format!("{path}.{k}"))
                    }
                    _ => {}
                }
            }
            for (k, gv) in g {
                if !w.contains_key(k) {
                    return format!("{path}.{k} unexpected ({})", short(gv));
                }
            }
            format!("{path}: differs")
        }
        (Value::Array(g), Value::Array(w)) if g.len() == w.len() => {
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                if gv != wv {
                    return first_difference(gv, wv, &format!("{path}[{i}]"));
                }
            }
            format!("{path}: differs")
        }
        _ => format!("{path}: got {} want {}", short(got), short(want)),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(117).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

#[test]
fn sample_objects_decode_like_the_api() {
    let mut n = 0;
    for o in sample() {
        let plaintext = b64(&o["plaintext_b64"]);
        let want = &o["object_json"];
        let got = decode_object(&plaintext).unwrap_or_else(|e| panic!("{}: {e}", o["etcd_key"]));
        assert!(
            &got == want,
            "{}: {}",
            o["etcd_key"],
            first_difference(&got, want, "")
        );
        let (api_version, kind) = type_of(&plaintext).unwrap();
        assert_eq!(
            format!("{api_version}/{kind}").trim_start_matches("/"),
            o["gvk"].as_str().unwrap()
        );
        n += 1;
    }
    assert_eq!(n, 2000);
}

#[test]
fn media_detection() {
    assert_eq!(media_of(b"k8s\x00\x0a"), Media::Protobuf);
    assert_eq!(media_of(b" {\"a\":1}"), Media::Json);
    assert_eq!(media_of(&[0xd9, 0xd9, 0xf7, 0xa0]), Media::Cbor);
    assert_eq!(media_of(b"k8s:enc:aescbc:v1:k:"), Media::Unknown);
    assert_eq!(decode_object(&[0xd9, 0xd9, 0xf7]), Err(DecodeError::Cbor));
    assert_eq!(decode_object(b"garbage"), Err(DecodeError::UnknownEncoding));
    assert!(matches!(
        decode_object(b"{not json"),
        Err(DecodeError::Json(_))
    ));
}

#[test]
fn malformed_protobuf_is_an_error_not_a_panic() {
    assert!(matches!(
        decode_object(b"k8s\x00\x0a\xff\xff"),
        Err(DecodeError::Protobuf(_))
    ));
    // Truncated inputs of a real object never panic.
    let o = &sample()[0];
    let plaintext = b64(&o["plaintext_b64"]);
    for n in 0..plaintext.len() {
        let _ = decode_object(&plaintext[..n]);
    }
}

#[test]
fn minimal_secret_fields() {
    // Unknown{typeMeta{v1, Secret}, raw: Secret{metadata{name: "s"}, immutable: false}}
    let meta = [&[0x0a, 0x01][..], b"s"].concat(); // ObjectMeta{name: "s"}
    let secret = [&[0x0a, meta.len() as u8][..], &meta, &[0x28, 0x00]].concat();
    let type_meta = [&[0x0a, 0x02][..], b"v1", &[0x12, 0x06], b"Secret"].concat();
    let mut bytes = PROTOBUF_MAGIC.to_vec();
    bytes.extend([0x0a, type_meta.len() as u8]);
    bytes.extend(&type_meta);
    bytes.extend([0x12, secret.len() as u8]);
    bytes.extend(&secret);
    bytes.extend([0x1a, 0x00, 0x22, 0x00]);
    assert_eq!(
        decode_object(&bytes).unwrap(),
        json!({"kind": "Secret", "apiVersion": "v1", "immutable": false,
               "metadata": {"name": "s"}})
    );
    assert_eq!(
        decode_object_at(&bytes, 42).unwrap()["metadata"]["resourceVersion"],
        "42"
    );
    // A field number the schema does not know is an error, not silently dropped.
    let mut unknown = bytes.clone();
    let at = unknown.len() - 4;
    unknown[at - secret.len() - 1] += 3;
    unknown.splice(at..at, [0xf8, 0x06, 0x01]); // field 111 varint 1
    assert!(matches!(decode_object(&unknown), Err(DecodeError::Protobuf(m)) if m.contains("111")));
}

#[test]
fn random_and_mutated_inputs_never_panic() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let originals: Vec<Vec<u8>> = sample()
        .iter()
        .step_by(50)
        .map(|o| b64(&o["plaintext_b64"]))
        .collect();
    for i in 0..20_000 {
        let mut buf = if i % 2 == 0 {
            let len = (next() % 300) as usize;
            let mut b = PROTOBUF_MAGIC.to_vec();
            b.extend((0..len).map(|_| next() as u8));
            b
        } else {
            originals[i % originals.len()].clone()
        };
        for _ in 0..(next() % 4) {
            let pos = (next() as usize) % buf.len();
            buf[pos] ^= 1 << (next() % 8);
        }
        let _ = decode_object(&buf);
        let _ = type_of(&buf);
    }
}
