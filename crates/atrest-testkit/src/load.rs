//! Bulk loading and reading etcd from tests (blocking wrappers around `etcd-client`).

use etcd_client::{Client, ConnectOptions, GetOptions, Txn, TxnOp};

use crate::EtcdServer;

/// A blocking etcd client for test set-up and assertions.
pub struct TestClient {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl TestClient {
    /// Connects to `server` (with the client certificate when it uses TLS).
    pub fn connect(server: &EtcdServer) -> TestClient {
        Self::connect_endpoints(&server.endpoints(), server.connect_options())
    }

    pub fn connect_endpoints(endpoints: &[String], options: ConnectOptions) -> TestClient {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt
            .block_on(Client::connect(endpoints, Some(options)))
            .expect("connect to etcd");
        TestClient { rt, client }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Puts every pair, 128 per transaction (etcd's default `--max-txn-ops`) and at most ~1 MiB per
    /// transaction, several transactions in flight.
    pub fn put_all<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, kvs: &[(K, V)]) {
        let mut batches: Vec<Vec<TxnOp>> = vec![Vec::new()];
        let mut bytes = 0;
        for (k, v) in kvs {
            let size = k.as_ref().len() + v.as_ref().len();
            let last = batches.last_mut().expect("one batch");
            if !last.is_empty() && (last.len() == 128 || bytes + size > 1 << 20) {
                batches.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            batches
                .last_mut()
                .expect("one batch")
                .push(TxnOp::put(k.as_ref(), v.as_ref(), None));
        }
        self.rt.block_on(async {
            let mut set: tokio::task::JoinSet<
                Result<etcd_client::TxnResponse, etcd_client::Error>,
            > = tokio::task::JoinSet::new();
            for ops in batches.into_iter().filter(|b| !b.is_empty()) {
                if set.len() >= 8 {
                    set.join_next()
                        .await
                        .expect("task")
                        .expect("join")
                        .expect("txn");
                }
                let mut kv = self.client.kv_client();
                set.spawn(async move { kv.txn(Txn::new().and_then(ops)).await });
            }
            while let Some(r) = set.join_next().await {
                r.expect("join").expect("txn");
            }
        });
    }

    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> i64 {
        let mut kv = self.client.kv_client();
        let r = self
            .rt
            .block_on(kv.put(key.as_ref(), value.as_ref(), None))
            .expect("put");
        r.header().expect("header").revision()
    }

    /// `(value, mod_revision)` of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<(Vec<u8>, i64)> {
        let mut kv = self.client.kv_client();
        let r = self.rt.block_on(kv.get(key.as_ref(), None)).expect("get");
        r.kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision()))
    }

    /// Every key/value under `prefix`, with mod revisions (paged).
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, Vec<u8>, i64)> {
        let mut out = Vec::new();
        let end = range_end(prefix.as_bytes());
        let mut start = prefix.as_bytes().to_vec();
        let mut kv = self.client.kv_client().max_decoding_message_size(256 << 20);
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(1000);
            let r = self
                .rt
                .block_on(kv.get(start.clone(), Some(opts)))
                .expect("range");
            for kv in r.kvs() {
                out.push((
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                    kv.mod_revision(),
                ));
            }
            if !r.more() || r.kvs().is_empty() {
                return out;
            }
            start = r.kvs().last().expect("kvs").key().to_vec();
            start.push(0);
        }
    }

    /// How many alarms (NOSPACE, CORRUPT) the cluster has raised.
    pub fn alarm_count(&self) -> usize {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            ))
            .expect("alarm list")
            .alarms()
            .len()
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        let mut kv = self.client.kv_client();
        let r = self.rt.block_on(kv.get("\0", None)).expect("get");
        r.header().expect("header").revision()
    }
}

fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
