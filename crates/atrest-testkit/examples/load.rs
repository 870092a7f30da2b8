//! Fills an etcd for manual runs and `scripts/bench-etcd`.
//!
//! ```text
//! cargo run --release -p atrest-testkit --example load -- ENDPOINT sample
//! cargo run --release -p atrest-testkit --example load -- ENDPOINT secrets COUNT BYTES CONFIG
//! ```
//! `secrets`: COUNT Secrets of about BYTES plaintext each under `/registry/secrets/ns-<i%100>/s-<i>`,
//! encrypted with CONFIG's write key for `secrets`.

use std::sync::Arc;

use atrest_core::config::{load_file, LoadOptions};
use atrest_core::{GroupResource, Transformers};
use atrest_testkit::load::TestClient;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: load ENDPOINT sample | load ENDPOINT secrets COUNT BYTES CONFIG";
    let endpoint = args.first().expect(usage).clone();
    let client = TestClient::connect_endpoints(&[endpoint], etcd_client::ConnectOptions::new());
    match args.get(1).map(String::as_str) {
        Some("sample") => {
            let objects = atrest_testkit::sample::objects();
            let kvs: Vec<(&[u8], &[u8])> = objects
                .iter()
                .map(|o| (o.etcd_key.as_bytes(), o.stored.as_slice()))
                .collect();
            client.put_all(&kvs);
            println!("loaded {} sample objects", kvs.len());
        }
        Some("secrets") => {
            let count: usize = args.get(2).expect(usage).parse().expect("COUNT");
            let bytes: usize = args.get(3).expect(usage).parse().expect("BYTES");
            let config = load_file(
                std::path::Path::new(args.get(4).expect(usage)),
                &LoadOptions::default(),
            )
            .expect("config");
            let t = Transformers::build(&config, Arc::new(atrest_core::kms::NoKms))
                .expect("transformers");
            let rt = t.for_resource(&GroupResource::new("", "secrets"));
            let chunk = 20_000;
            for start in (0..count).step_by(chunk) {
                let kvs: Vec<(String, Vec<u8>)> = (start..count.min(start + chunk))
                    .map(|i| {
                        let key = format!("/registry/secrets/ns-{:02}/s-{i:07}", i % 100);
                        let mut plain = b"k8s\x00".to_vec();
                        plain.extend(std::iter::repeat_n(
                            b'a' + (i % 26) as u8,
                            bytes.saturating_sub(4),
                        ));
                        let value = rt.write(&plain, key.as_bytes()).expect("encrypt");
                        (key, value)
                    })
                    .collect();
                client.put_all(&kvs);
            }
            println!("loaded {count} secrets");
        }
        _ => panic!("{usage}"),
    }
}
