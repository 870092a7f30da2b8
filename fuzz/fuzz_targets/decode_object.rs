//! Arbitrary bytes as a decrypted etcd value: decoding (protobuf through the type table, JSON,
//! CRD conversion) must never panic, and memory stays bounded whatever lengths the input claims
//! (libFuzzer's -rss_limit_mb catches a hostile length that allocates). A value that decodes must
//! decode the same way again.
#![no_main]

use atrest_store::decode::{decode_object, decode_object_at, type_of};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = type_of(data);
    if let Ok(first) = decode_object(data) {
        assert!(first.is_object());
        assert_eq!(decode_object(data).ok(), Some(first));
        let at = decode_object_at(data, 42).expect("decodes again");
        assert_eq!(at["metadata"]["resourceVersion"], "42");
    }
});
