//! Decoding of the KMS gRPC requests the plugin server accepts (v2 and v1beta1): protobuf from an
//! untrusted peer on the socket. Must return an error, never panic.
#![no_main]

use atrest_kms::proto::{v1beta1, v2};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let _ = v2::StatusRequest::decode(data);
    let _ = v2::EncryptRequest::decode(data);
    if let Ok(req) = v2::DecryptRequest::decode(data) {
        // Re-encoding what was decoded must not panic either.
        let _ = req.encode_to_vec();
    }
    let _ = v1beta1::VersionRequest::decode(data);
    let _ = v1beta1::EncryptRequest::decode(data);
    let _ = v1beta1::DecryptRequest::decode(data);
});
