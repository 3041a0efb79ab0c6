//! The health and metrics endpoint: `/healthz`, `/readyz`, `/metrics` over HTTP/1 (hyper).
//!
//! It runs on a thread of its own with its own single-threaded runtime, so a probe is
//! answered whatever the reconcile loop is doing (a large commit blocks that loop's thread
//! for a fraction of a second). Every input is bounded: header bytes, connections at once,
//! and the time a client may take to send its headers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::report::counters::MasqCounters;
use crate::report::health::Health;
use crate::report::metrics::Metrics;

/// OpenMetrics text, which Prometheus scrapes natively.
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Largest request head accepted (hyper's read buffer); a probe's is a few hundred bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Connections served at once (each holds at most [`MAX_HEADER_BYTES`] of head); more wait in
/// the kernel's accept queue, and when every slot is taken the oldest connection that has
/// been sending its request head for [`EVICT_AFTER`] makes room.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection may send its head before a newcomer may take its slot: a probe's
/// head arrives with its connection, but a busy node can take a while to read it, and a
/// probe cut off this way fails (a CI run saw one reset when any head still being read could
/// be evicted).
pub const EVICT_AFTER: Duration = Duration::from_millis(250);
/// Time a client has to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a connection may live: a probe or scrape takes milliseconds.
pub const CONNECTION_LIMIT: Duration = Duration::from_secs(10);
/// Connections the kernel queues for us while every slot is busy. std binds with 128, and a
/// burst of 250 connections overflowed it: the kernel dropped SYNs, a probe caught in that
/// waited for its retransmission (1 s, kubelet's default probe timeout). Queued connections
/// cost kernel memory, not ours; the kernel caps this at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: i32 = 4096;
/// How long /healthz waits for the loop to answer before looking at what it is busy with.
const PING_WAIT: Duration = Duration::from_millis(250);

/// What the endpoint serves.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Liveness and readiness.
    pub health: Arc<Health>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Masquerade counters, read live at each scrape.
    pub counters: Arc<MasqCounters>,
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(
    req: Request<Incoming>,
    ep: Endpoints,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "GET only\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        // Alive means the reconcile loop answers (or is visibly busy), not just that this
        // thread runs.
        "/healthz" => match ep.health.liveness(PING_WAIT).await {
            Ok(note) => reply(StatusCode::OK, TEXT, format!("{note}\n")),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        },
        "/readyz" => match ep.health.readiness() {
            Ok(()) => reply(StatusCode::OK, TEXT, "ready\n".into()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => {
            ep.counters.refresh(&ep.metrics);
            reply(StatusCode::OK, METRICS_TYPE, ep.metrics.render())
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "try /healthz, /readyz or /metrics\n".into(),
        ),
    })
}

/// Binds `addr` now (so a bad address fails at start-up) and serves it on a new thread.
pub fn spawn(addr: SocketAddr, ep: Endpoints) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    // listen() again on a listening socket only changes its backlog.
    rustix::net::listen(&listener, LISTEN_BACKLOG)?;
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("cannot start the HTTP runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => serve(l, ep).await,
                    Err(e) => tracing::error!("cannot serve HTTP: {e}"),
                }
            });
        })?;
    Ok(())
}

/// A connection being served.
struct Conn {
    /// When it was accepted.
    since: tokio::time::Instant,
    /// Set once its request head has been read (the service was called).
    head_read: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

/// The connections being served, oldest first.
#[derive(Default)]
struct Slots(Vec<Conn>);

impl Slots {
    /// Makes room for one more connection if it can: finished tasks are forgotten, and when
    /// every slot is taken the oldest connection that has been sending its head for
    /// [`EVICT_AFTER`] is closed. Clients that never finish their head would otherwise hold
    /// every slot for the header timeout each, and a kubelet probe queued behind them waited
    /// seconds (soak test, `--flood 48`, with 16 slots: 5–6 s). A probe or scrape sends its
    /// head at once, so only slow senders are evicted.
    fn make_room(&mut self, now: tokio::time::Instant) -> bool {
        self.0.retain(|c| !c.task.is_finished());
        if self.0.len() < MAX_CONNECTIONS {
            return true;
        }
        let slow = |c: &Conn| !c.head_read.load(Ordering::Relaxed) && now - c.since >= EVICT_AFTER;
        match self.0.iter().position(slow) {
            Some(i) => {
                self.0.remove(i).task.abort();
                true
            }
            None => false,
        }
    }
}

/// Serves connections, at most [`MAX_CONNECTIONS`] at once, until the runtime stops.
pub async fn serve(listener: TcpListener, ep: Endpoints) {
    let mut slots = Slots::default();
    loop {
        // Wait until a slot is free or can be freed before accepting: excess clients queue
        // in the kernel's backlog, costing us nothing. Every slot busy serving a request
        // (not reading a head) frees within milliseconds.
        while !slots.make_room(tokio::time::Instant::now()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accepting an HTTP connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ep = ep.clone();
        let head_read = Arc::new(AtomicBool::new(false));
        let read = head_read.clone();
        let task = tokio::spawn(async move {
            let service = service_fn(move |req| {
                read.store(true, Ordering::Relaxed);
                handle(req, ep.clone())
            });
            // One request per connection: an idle keep-alive connection would hold a slot.
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIMIT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("HTTP connection ended with an error: {e}"),
                Err(_) => tracing::debug!("HTTP connection closed after {CONNECTION_LIMIT:?}"),
            }
        });
        slots.0.push(Conn {
            since: tokio::time::Instant::now(),
            head_read,
            task: task.abort_handle(),
        });
    }
}
