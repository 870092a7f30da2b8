//! Arbitrary bytes as an EncryptionConfiguration file: loading must never panic, and whatever
//! loads must build and round-trip a value for a few resources.
#![no_main]

use std::sync::Arc;

use atrest_core::config::{load_bytes, LoadOptions};
use atrest_core::kms::testing::{InProcessConnector, ReferenceKms};
use atrest_core::{GroupResource, Transformers};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for kms_v1_enabled in [false, true] {
        let opts = LoadOptions {
            kms_v1_enabled,
            automatic_reload: data.len() % 2 == 1,
        };
        let Ok(config) = load_bytes(data, "fuzz.yaml", &opts) else {
            continue;
        };
        let connector = Arc::new(InProcessConnector::new(Arc::new(ReferenceKms::new(
            "fuzz-key", [9; 32],
        ))));
        let Ok(transformers) = Transformers::build(&config, connector) else {
            continue;
        };
        for resource in ["secrets", "deployments.apps", "widgets.example.com"] {
            let t = transformers.for_resource(&GroupResource::parse(resource));
            if let Ok(stored) = t.write(b"k8s\x00fuzz", b"/registry/x/y") {
                let read = t
                    .read(&stored, b"/registry/x/y")
                    .expect("a value just written reads back");
                assert_eq!(read.plaintext, b"k8s\x00fuzz");
            }
        }
    }
});
