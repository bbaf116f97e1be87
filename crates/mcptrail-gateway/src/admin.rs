//! The admin listener: `/healthz` (the process serves), `/readyz` (routes built, ledger
//! keeping up: fewer than [`READY_MAX_LAG`] events waiting to be durable) and `/metrics`
//! (Prometheus text format).

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::proxy::Shared;

/// Ledger lag above which the gateway reports not ready.
pub(crate) const READY_MAX_LAG: u64 = 10_000;

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let shared = Arc::clone(&shared);
                async move {
                    let (status, ctype, body) = match req.uri().path() {
                        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
                        "/readyz" => {
                            let lag = shared.metrics.ledger_lag();
                            if lag < READY_MAX_LAG {
                                (StatusCode::OK, "text/plain", "ready\n".to_string())
                            } else {
                                (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "text/plain",
                                    format!("not ready: {lag} events waiting for the ledger\n"),
                                )
                            }
                        }
                        "/metrics" => (
                            StatusCode::OK,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            shared.metrics.encode(),
                        ),
                        _ => (
                            StatusCode::NOT_FOUND,
                            "text/plain",
                            "not found\n".to_string(),
                        ),
                    };
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = status;
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static(ctype),
                    );
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
