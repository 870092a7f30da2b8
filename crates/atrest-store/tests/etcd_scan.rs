//! Paged scans against a real etcd: every page at the first page's revision, resuming after a key,
//! compaction reported, counts.

use atrest_store::etcd::scan::Scanner;
use atrest_store::etcd::{connect, EtcdError, EtcdSettings};
use atrest_testkit::load::TestClient;
use atrest_testkit::EtcdServer;

fn settings(server: &EtcdServer) -> EtcdSettings {
    EtcdSettings {
        endpoints: server.endpoints(),
        ..Default::default()
    }
}

fn key(i: usize) -> String {
    format!("/registry/secrets/ns/s-{i:05}")
}

#[test]
fn pages_are_read_at_one_revision() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let kvs: Vec<(String, String)> = (0..2500).map(|i| (key(i), format!("v1-{i}"))).collect();
    client.put_all(&kvs);
    client.put("/registry/configmaps/ns/outside", "x");

    client.block_on(async {
        let conn = connect(&settings(&server)).await.unwrap();
        let range = atrest_store::keymap::resource_range(
            "/registry",
            &atrest_core::GroupResource::new("", "secrets"),
        );
        let mut scanner = Scanner::new(conn, vec![range], 1000);
        assert_eq!(scanner.count_remaining().await.unwrap(), 2500);
        let first = scanner.next_page().await.unwrap().unwrap();
        assert_eq!(first.len(), 1000);
        let revision = scanner.revision();
        // Changes after the first page are not seen by later pages.
        client_put(&server, &key(2400), "v2").await;
        client_put(&server, "/registry/secrets/ns/s-99999", "new").await;
        let mut seen: Vec<(String, String)> = first
            .iter()
            .map(|kv| (kv.key_str().unwrap().into(), kv.value_str().unwrap().into()))
            .collect();
        while let Some(page) = scanner.next_page().await.unwrap() {
            assert!(page.len() <= 1000);
            seen.extend(
                page.iter()
                    .map(|kv| (kv.key_str().unwrap().into(), kv.value_str().unwrap().into())),
            );
        }
        assert_eq!(scanner.revision(), revision);
        assert_eq!(seen, kvs);
    });
}

async fn client_put(server: &EtcdServer, key: &str, value: &str) -> i64 {
    let conn = connect(&settings(server)).await.unwrap();
    let r = conn.kv().put(key, value, None).await.unwrap();
    r.header().unwrap().revision()
}

#[test]
fn resume_after_a_key_and_compaction() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let kvs: Vec<(String, String)> = (0..300).map(|i| (key(i), format!("v{i}"))).collect();
    client.put_all(&kvs);
    client.block_on(async {
        let conn = connect(&settings(&server)).await.unwrap();
        let range = (
            b"/registry/".to_vec(),
            atrest_store::keymap::prefix_end(b"/registry/"),
        );
        let mut scanner =
            Scanner::new(conn.clone(), vec![range.clone()], 100).start_after(key(149).as_bytes());
        let page = scanner.next_page().await.unwrap().unwrap();
        assert_eq!(page[0].key_str().unwrap(), key(150));
        assert_eq!(scanner.count_remaining().await.unwrap(), 50);

        // The pinned revision is compacted away: the scan says so.
        let mut scanner = Scanner::new(conn.clone(), vec![range], 100);
        scanner.next_page().await.unwrap().unwrap();
        let rev = client_put(&server, &key(0), "changed").await;
        conn.client.clone().compact(rev, None).await.unwrap();
        assert!(matches!(
            scanner.next_page().await,
            Err(EtcdError::Compacted { .. })
        ));
        // Re-pinning continues after the last key read.
        scanner.unpin();
        let page = scanner.next_page().await.unwrap().unwrap();
        assert_eq!(page[0].key_str().unwrap(), key(100));
    });
}
