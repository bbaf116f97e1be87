//! What the egress proxy adds to a tool server's outbound request, against the same request
//! made directly in the same run:
//!
//! - `http`: connect, `GET` of a 4 KiB body, read to close (through the proxy: absolute form,
//!   relayed on a new connection to the destination);
//! - `tunnel`: connect (through the proxy: `CONNECT` and its `200`), then 100 round trips of
//!   64 bytes echoed by the destination (what a TLS session's records cost once established).
//!
//! ```sh
//! cargo bench -p mcptrail-egress --bench egress
//! ```
//!
//! The destination is a plain thread on loopback, so the proxy's share is not hidden behind a
//! slow server. Each figure is the median of 2000 requests (200 tunnels); nothing is asserted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcptrail_egress::{EgressConfig, EgressProxy};

/// Answers every connection: `GET` → a 4 KiB response then close; anything else → echo.
fn destination() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

fn serve(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 4096];
    let n = match s.read(&mut buf) {
        Ok(n) if n > 0 => n,
        _ => return,
    };
    if buf.starts_with(b"GET ") {
        let body = vec![b'x'; 4096];
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: 4096\r\nConnection: close\r\n\r\n"
        );
        let _ = s.write_all(&body);
        return;
    }
    let _ = s.write_all(&buf[..n]);
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn http_get(via: SocketAddr, request: &[u8]) -> usize {
    let mut s = TcpStream::connect(via).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::with_capacity(8192);
    s.read_to_end(&mut out).unwrap();
    out.len()
}

fn tunnel(via: SocketAddr, connect: Option<&[u8]>) {
    let mut s = TcpStream::connect(via).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [0u8; 256];
    if let Some(c) = connect {
        s.write_all(c).unwrap();
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    let msg = [7u8; 64];
    for _ in 0..100 {
        s.write_all(&msg).unwrap();
        let mut got = 0;
        while got < 64 {
            got += s.read(&mut buf[got..64]).unwrap();
        }
    }
}

fn median_of(n: usize, mut f: impl FnMut()) -> Duration {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dest = destination();
    let proxy = EgressProxy::bind(
        &EgressConfig {
            listen: "127.0.0.1:0".into(),
            ..Default::default()
        },
        Arc::new(|_r| {}),
    )
    .unwrap();
    let via = proxy.local_addr();
    let direct_req = format!("GET /x HTTP/1.1\r\nHost: {dest}\r\n\r\n");
    let proxied_req = format!("GET http://{dest}/x HTTP/1.1\r\nHost: {dest}\r\n\r\n");
    let connect = format!("CONNECT {dest} HTTP/1.1\r\nHost: {dest}\r\n\r\n");
    // Warm up both paths.
    for _ in 0..200 {
        http_get(dest, direct_req.as_bytes());
        http_get(via, proxied_req.as_bytes());
    }
    let direct = median_of(2000, || {
        http_get(dest, direct_req.as_bytes());
    });
    let proxied = median_of(2000, || {
        http_get(via, proxied_req.as_bytes());
    });
    println!(
        "http GET 4 KiB   direct {:>8.1} µs   via egress {:>8.1} µs   added {:>7.1} µs   ratio {:.2}",
        direct.as_secs_f64() * 1e6,
        proxied.as_secs_f64() * 1e6,
        (proxied.as_secs_f64() - direct.as_secs_f64()) * 1e6,
        proxied.as_secs_f64() / direct.as_secs_f64()
    );
    let direct = median_of(200, || tunnel(dest, None));
    let proxied = median_of(200, || tunnel(via, Some(connect.as_bytes())));
    println!(
        "tunnel 100×64 B  direct {:>8.1} µs   via egress {:>8.1} µs   added {:>7.1} µs   ratio {:.2}   ({:.1} µs per round trip added)",
        direct.as_secs_f64() * 1e6,
        proxied.as_secs_f64() * 1e6,
        (proxied.as_secs_f64() - direct.as_secs_f64()) * 1e6,
        proxied.as_secs_f64() / direct.as_secs_f64(),
        (proxied.as_secs_f64() - direct.as_secs_f64()) * 1e6 / 100.0
    );
    proxy.shutdown(Duration::from_secs(1));
}
