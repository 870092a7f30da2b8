//! The backup reader on arbitrary input: header parsing (stanza counts and sizes; headers past
//! the bounds are refused before age parses them), the STREAM chunks, truncation. Must return an
//! error, never panic, hang or allocate without bound.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn identity() -> &'static atrest_backup::keys::GeneratedIdentity {
    static ID: OnceLock<atrest_backup::keys::GeneratedIdentity> = OnceLock::new();
    ID.get_or_init(atrest_backup::keys::generate)
}

fuzz_target!(|data: &[u8]| {
    let ids = [atrest_backup::Identity::File(vec![Box::new(
        identity().identity.clone(),
    )])];
    let mut input = data;
    let mut sink = std::io::sink();
    let _ = atrest_backup::decrypt(&ids, &mut input, &mut sink, &mut |_| {});
});
