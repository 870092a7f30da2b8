//! Prints what the snapshot reader sees: `cargo run -p atrest-store --example snapshot_dump -- FILE [REVISION]`.
use atrest_store::snapshot::{IndexOptions, OpenOptions, Snapshot};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: snapshot_dump FILE [REVISION]")?;
    let at_revision = args.next().map(|r| r.parse()).transpose()?;
    let snap = Snapshot::open(path.as_ref(), OpenOptions::default())?;
    eprintln!("{:?}", snap.info());
    let index = snap.index(&IndexOptions {
        at_revision,
        key_prefix: Vec::new(),
    })?;
    eprintln!(
        "revision {} scanned {} live {} deleted {}",
        index.revision,
        index.revisions_scanned,
        index.len(),
        index.deleted_keys
    );
    for kv in snap.latest(&index) {
        let kv = kv?;
        println!(
            "{} mod={} create={} version={} len={}",
            String::from_utf8_lossy(&kv.key),
            kv.mod_revision,
            kv.create_revision,
            kv.version,
            kv.value.len()
        );
    }
    Ok(())
}
