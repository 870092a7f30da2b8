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

#[test]
fn sample_objects_decode_like_the_api() {
    let (mut full, mut meta_only) = (0, 0);
    for o in sample() {
        let plaintext = b64(&o["plaintext_b64"]);
        let want = &o["object_json"];
        let got = decode_object(&plaintext).unwrap_or_else(|e| panic!("{}: {e}", o["etcd_key"]));
        match o["gvk"].as_str().unwrap() {
            "v1/Secret" | "v1/ConfigMap" | "example.com/v1/Widget" => {
                assert_eq!(&got, want, "{}", o["etcd_key"]);
                full += 1;
            }
            _ => {
                for field in ["apiVersion", "kind", "metadata"] {
                    assert_eq!(got[field], want[field], "{} {field}", o["etcd_key"]);
                }
                meta_only += 1;
            }
        }
        let (api_version, kind) = type_of(&plaintext).unwrap();
        assert_eq!(
            format!("{api_version}/{kind}").trim_start_matches("/"),
            o["gvk"].as_str().unwrap()
        );
    }
    assert_eq!((full, meta_only), (780 + 440 + 150, 630));
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
    let secret = proto::Secret {
        metadata: Some(proto::ObjectMeta {
            name: Some("s".into()),
            ..Default::default()
        }),
        immutable: Some(false),
        ..Default::default()
    };
    let unknown = proto::Unknown {
        type_meta: Some(proto::TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
        }),
        raw: Some(secret.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut bytes = PROTOBUF_MAGIC.to_vec();
    bytes.extend(unknown.encode_to_vec());
    assert_eq!(
        decode_object(&bytes).unwrap(),
        json!({"kind": "Secret", "apiVersion": "v1", "immutable": false,
               "metadata": {"name": "s", "creationTimestamp": null}})
    );
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
