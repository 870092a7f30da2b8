use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

fn endpoints(ready: ReadyFn) -> (Endpoints, Counter) {
    let mut registry = Registry::default();
    let counter = Counter::<u64>::default();
    registry.register("demo_events", "Events seen.", counter.clone());
    (
        Endpoints {
            registry: Arc::new(registry),
            ready,
        },
        counter,
    )
}

async fn start(limits: Limits, ready: ReadyFn) -> (ServerHandle, SocketAddr, Counter) {
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (endpoints, counter) = endpoints(ready);
    let server = spawn(listener, endpoints, limits);
    let addr = server.local_addr().unwrap();
    (server, addr, counter)
}

/// One request with `Connection: close`; returns (status line, headers, body).
async fn request(addr: SocketAddr, head: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let (headers, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let status = headers.lines().next().unwrap_or("").to_string();
    (status, headers.to_lowercase(), body.to_string())
}

#[tokio::test]
async fn serves_metrics_in_both_formats_and_health() {
    let ok = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ok);
    let ready: ReadyFn = Arc::new(move || {
        if flag.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("not scanned yet".into())
        }
    });
    let (_server, addr, counter) = start(Limits::default(), ready).await;
    counter.inc_by(3);

    let (status, headers, body) = request(addr, "GET /metrics HTTP/1.1").await;
    assert!(status.contains("200"), "{status}");
    assert!(headers.contains("text/plain; version=0.0.4"), "{headers}");
    assert!(body.contains("# TYPE demo_events_total counter"), "{body}");
    assert!(body.contains("demo_events_total 3\n"), "{body}");
    assert!(!body.contains("# EOF"), "{body}");

    let (_, headers, body) = request(
        addr,
        "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0",
    )
    .await;
    assert!(
        headers.contains("application/openmetrics-text"),
        "{headers}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");

    let (status, _, body) = request(addr, "GET /readyz HTTP/1.1").await;
    assert!(status.contains("503"), "{status}");
    assert_eq!(body, "not scanned yet\n");
    ok.store(true, Ordering::SeqCst);
    let (status, _, body) = request(addr, "GET /readyz HTTP/1.1").await;
    assert!(status.contains("200") && body == "ok\n", "{status} {body}");
    let (status, _, _) = request(addr, "GET /healthz HTTP/1.1").await;
    assert!(status.contains("200"), "{status}");
    let (status, _, _) = request(addr, "GET /nope HTTP/1.1").await;
    assert!(status.contains("404"), "{status}");
    let (status, _, _) = request(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0").await;
    assert!(status.contains("405"), "{status}");
}

#[tokio::test]
async fn garbage_and_slow_clients_are_cut_off() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (_server, addr, _) = start(limits, Arc::new(|| Ok(()))).await;

    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(b"\x00\x01\x02 not http\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut buf))
        .await
        .expect("server closes a garbage connection");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );

    // A client that never finishes its headers is closed by the header read timeout.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "slow client still connected");

    // The server still answers.
    let (status, _, _) = request(addr, "GET /healthz HTTP/1.1").await;
    assert!(status.contains("200"), "{status}");
}

#[tokio::test]
async fn the_connection_cap_holds_new_connections_until_a_slot_frees() {
    let limits = Limits {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let (_server, addr, _) = start(limits, Arc::new(|| Ok(()))).await;
    // Two idle connections take both slots (the server only accepts a third when one closes).
    let first = TcpStream::connect(addr).await.unwrap();
    let second = TcpStream::connect(addr).await.unwrap();
    // Make sure the server accepted both before the third connects.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = tokio::spawn(request(addr, "GET /healthz HTTP/1.1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served over the cap of 2"
    );
    drop(first);
    let started = Instant::now();
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(second);
}
