//! The load generator's HTTP side: one keep-alive HTTP/1.1 connection per simulated client, and a
//! closed-loop driver that keeps N clients busy for a while and records every latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One client connection, kept alive across requests.
pub struct Conn {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { addr, sender })
    }

    /// Sends a request and returns the response with its body still streaming (for SSE).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>> {
        self.sender.ready().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if !token.is_empty() {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Full::new(b))?,
            None => req.body(Full::new(Bytes::new()))?,
        };
        Ok(self.sender.send_request(req).await?)
    }

    /// Sends a request and reads the whole answer.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        let resp = self.send(method, path, token, body).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// A call that must answer with `expect`; returns the body as JSON (null when empty).
    pub async fn json(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
        expect: u16,
    ) -> Result<serde_json::Value> {
        let body = body.map(|b| Bytes::from(b.to_string()));
        let (status, bytes) = self.call(method.clone(), path, token, body).await?;
        if status.as_u16() != expect {
            return Err(anyhow!(
                "{method} {path}: expected {expect}, got {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// What one closed-loop run measured.
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Microseconds per request, successful ones only.
    pub latency: Histogram<u64>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    pub fn p99_ms(&self) -> f64 {
        self.latency.value_at_quantile(0.99) as f64 / 1000.0
    }
    pub fn p50_ms(&self) -> f64 {
        self.latency.value_at_quantile(0.5) as f64 / 1000.0
    }
}

pub fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One request a client makes: method, path, token, body, and the status that counts as success.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub token: String,
    pub body: Option<Bytes>,
    pub expect: u16,
}

/// Builds client `c`'s `i`-th request.
pub type MakeCall = Arc<dyn Fn(usize, u64) -> Call + Send + Sync>;
/// Checks a successful answer's body (e.g. that an AI message was `delivered`).
pub type CheckBody = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Keeps `clients` connections busy for `duration` (closed loop: each client sends its next
/// request when the previous answer arrived), after `warmup` of unrecorded requests.
pub async fn closed_loop(
    addr: SocketAddr,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    make: MakeCall,
    check: Option<CheckBody>,
) -> Result<LoadResult> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::connect(addr).await?);
    }
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let make = make.clone();
        let check = check.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
            let mut i = 0u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let call = make(c, i);
                i += 1;
                let sent = Instant::now();
                let result = conn
                    .call(call.method, &call.path, &call.token, call.body)
                    .await;
                let took = sent.elapsed();
                let recording = sent >= start;
                match result {
                    Ok((status, body))
                        if status.as_u16() == call.expect
                            && check.as_ref().is_none_or(|f| f(&body)) =>
                    {
                        if recording {
                            ok += 1;
                            hist.saturating_record(took.as_micros() as u64);
                        }
                    }
                    Ok((status, body)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!("{status}: {}", String::from_utf8_lossy(&body))
                        });
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                        // A broken connection: open a new one and go on.
                        match Conn::connect(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (ok, errors, first_error, hist)
        }));
    }
    let mut result = LoadResult {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: duration,
        latency: histogram(),
    };
    for t in tasks {
        let (ok, errors, first_error, hist) = t.await?;
        result.ok += ok;
        result.errors += errors;
        if result.first_error.is_none() {
            result.first_error = first_error;
        }
        result.latency.add(&hist)?;
    }
    // The last requests may finish a little after `end`; count the real span.
    result.elapsed = start.elapsed().max(duration);
    Ok(result)
}
