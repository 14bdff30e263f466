//! Abuse limits through the real server: per-key rate limits (API keys and console sessions),
//! the JSON 413, caps on open long-polls and event streams (freed when the client leaves), the
//! header-read timeout against slow clients (raw TCP), the request timeout, and the console's
//! security headers.

use crate::helpers::{test_config, TestApp};
use loopgate_domain::auth::Role;
use loopgate_server::limits::RateLimit;
use loopgate_server::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rate(text: &str) -> Option<RateLimit> {
    RateLimit::parse(text).expect("a valid rate")
}

/// Assert a 429 in our shape with a whole-seconds `Retry-After` of at least 1; returns it.
async fn assert_limited(resp: reqwest::Response) -> u64 {
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry = resp
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .expect("ASCII")
        .parse::<u64>()
        .expect("whole seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    let body: Value = resp.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    retry
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let app = TestApp::spawn_with(Config {
        rate_limit: rate("1/m,burst=3"),
        ..test_config()
    })
    .await;
    for _ in 0..3 {
        let (status, body) = app.send(app.get("/v1/pauses", &app.ann)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let resp = app.get("/v1/pauses", &app.ann).send().await.unwrap();
    let retry = assert_limited(resp).await;
    assert!(
        retry <= 60,
        "one request a minute refills within 60 s, not {retry}"
    );
    // Refused requests count too: a role the endpoint refuses is still this key's traffic.
    let resp = app.post("/v1/actions", &app.ann).send().await.unwrap();
    assert_limited(resp).await;
    // Another key of the same workspace has its own bucket.
    let (status, _) = app.send(app.get("/v1/pauses", &app.bob)).await;
    assert_eq!(status, StatusCode::OK);
    // Unauthenticated requests are not counted against anyone: they are simply 401.
    let (status, _) = app.send(app.get("/v1/pauses", "nonsense")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_console_session_has_its_own_rate() {
    let app = TestApp::spawn_with(Config {
        rate_limit: rate("1/m,burst=2"),
        ..test_config()
    })
    .await;
    let hash = loopgate_store::secrets::hash_password("correct horse battery").unwrap();
    let user = app
        .store
        .create_user("default", "rita", Role::Reviewer, &hash)
        .await
        .unwrap();
    let session = app.store.create_session(&user, 3_600_000).await.unwrap();
    let get = || {
        app.client
            .get(format!("{}/console/inbox/rows", app.base))
            .header("cookie", format!("loopgate_session={}", session.token))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    }
    assert_limited(get().await.unwrap()).await;
    // The API keys are untouched by the session's use.
    let (status, _) = app.send(app.get("/v1/pauses", &app.ann)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn rate_limit_off_lets_a_burst_through() {
    let app = TestApp::spawn_with(Config {
        rate_limit: rate("off"),
        ..test_config()
    })
    .await;
    for _ in 0..30 {
        let (status, _) = app.send(app.get("/v1/pauses", &app.ann)).await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn the_default_rate_is_generous() {
    // Whatever the test config does, the shipped default must let a busy agent through.
    let r = Config::default().rate_limit.expect("on by default");
    assert!(
        r.count.get() >= 500 && r.per == Duration::from_secs(1),
        "{r}"
    );
    assert!(r.burst.get() >= 1000, "{r}");
    let app = TestApp::spawn_with(Config::default()).await;
    let calls = (0..200).map(|_| app.send(app.get("/v1/pauses", &app.ann)));
    for (status, _) in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK);
    }
}

async fn assert_too_large(resp: reqwest::Response) {
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let body: Value = resp.json().await.expect("a JSON body");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    assert_eq!(body["error"]["field"], "body", "{body}");
}

#[tokio::test]
async fn an_oversized_body_is_a_json_413_on_every_kind_of_endpoint() {
    let app = TestApp::spawn_with(Config {
        body_limit: 1024,
        ..test_config()
    })
    .await;
    let (_, conv) = app
        .send(app.post("/v1/conversations", &app.agent).json(&json!({})))
        .await;
    let conv = conv["id"].as_str().expect("a conversation").to_owned();
    let big = json!({"name": "x", "arguments": {"pad": "a".repeat(4096)}}).to_string();
    // Declared (Content-Length) and streamed (chunked) bodies, through a JSON extractor, a raw
    // body, and a handler that reads its (optional) body itself.
    let targets = [
        ("/v1/actions".to_owned(), app.agent.clone()),
        (format!("/v1/conversations/{conv}/close"), app.agent.clone()),
        ("/v1/conversations".to_owned(), app.agent.clone()),
        ("/v1/workspace/resume".to_owned(), app.ann.clone()),
    ];
    for (path, token) in &targets {
        let resp = app
            .post(path, token)
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_too_large(resp).await;
        let (head, body) = chunked_post(&app, path, token, big.as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 413"), "{path}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        assert!(
            body.contains("\"code\":\"payload_too_large\""),
            "{path}: {body}"
        );
    }
    let resp = app
        .request(reqwest::Method::PUT, "/v1/policy", &app.admin)
        .body("#".repeat(4096))
        .send()
        .await
        .unwrap();
    assert_too_large(resp).await;
}

/// POST `body` with chunked transfer encoding (no declared length), over a raw connection;
/// the response's head and body as text.
async fn chunked_post(app: &TestApp, path: &str, token: &str, body: &[u8]) -> (String, String) {
    let mut conn = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.addr
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(512) {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        // The server may answer and close before taking it all.
        if conn.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

/// A pending action (no policy: everything waits for a human).
async fn pending_action(app: &TestApp) -> String {
    let (status, body) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 5}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "pending", "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Retry `probe` until it gives `want`, for at most `within`.
async fn eventually<F, Fut>(within: Duration, want: StatusCode, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StatusCode>,
{
    let start = Instant::now();
    loop {
        let got = probe().await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < within,
            "still {got} after {within:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn long_polls_are_capped_per_key_and_freed_when_the_client_leaves() {
    let app = TestApp::spawn_with(Config {
        max_long_polls: 2,
        ..test_config()
    })
    .await;
    let id = pending_action(&app).await;
    let path = format!("/v1/actions/{id}?wait=30");
    // Two long-polls in flight, each on its own connection (each retries until it holds a slot,
    // since a probe below may hold one for a moment).
    let mut polls = Vec::new();
    for _ in 0..2 {
        let (client, url, token) = (
            reqwest::Client::new(),
            format!("{}{path}", app.base),
            app.agent.clone(),
        );
        polls.push(tokio::spawn(async move {
            loop {
                let resp = client.get(&url).bearer_auth(&token).send().await;
                if !matches!(&resp, Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS) {
                    return resp;
                }
            }
        }));
    }
    // A third is refused once both are registered.
    let probe = format!("/v1/actions/{id}?wait=0.2");
    eventually(
        Duration::from_secs(5),
        StatusCode::TOO_MANY_REQUESTS,
        || async { app.get(&probe, &app.agent).send().await.unwrap().status() },
    )
    .await;
    let resp = app.get(&path, &app.agent).send().await.unwrap();
    assert_limited(resp).await;
    // A read without `wait` is not a long-poll and still works.
    let (status, _) = app
        .send(app.get(&format!("/v1/actions/{id}"), &app.agent))
        .await;
    assert_eq!(status, StatusCode::OK);
    // Another key has its own cap.
    let (status, _) = app
        .send(app.get(&format!("/v1/actions/{id}?wait=0.1"), &app.ann))
        .await;
    assert_eq!(status, StatusCode::OK);
    // The clients give up (their connections close): the slots come back.
    for p in polls {
        p.abort();
        let _ = p.await;
    }
    eventually(Duration::from_secs(5), StatusCode::OK, || async {
        app.get(&format!("/v1/actions/{id}?wait=0.1"), &app.agent)
            .send()
            .await
            .unwrap()
            .status()
    })
    .await;
    // And a long-poll that ends normally frees its slot too: many in a row never hit the cap.
    for _ in 0..4 {
        let (status, _) = app
            .send(app.get(&format!("/v1/actions/{id}?wait=0.05"), &app.agent))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn event_streams_are_capped_per_key_and_freed_when_the_client_leaves() {
    let app = TestApp::spawn_with(Config {
        max_streams: 2,
        ..test_config()
    })
    .await;
    let (_, conv) = app
        .send(app.post("/v1/conversations", &app.agent).json(&json!({})))
        .await;
    let conv_events = format!("/v1/conversations/{}/events", conv["id"].as_str().unwrap());
    // The workspace stream and a conversation's stream count toward the same cap.
    let first = app.get("/v1/events", &app.agent).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = app.get(&conv_events, &app.agent).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_limited(app.get("/v1/events", &app.agent).send().await.unwrap()).await;
    assert_limited(app.get(&conv_events, &app.agent).send().await.unwrap()).await;
    // Another key is not affected.
    let other = app.get("/v1/events", &app.ann).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    // Closing a stream (dropping the response closes its connection) frees its slot.
    drop(first);
    eventually(Duration::from_secs(5), StatusCode::OK, || async {
        // Keep nothing open: the probe's own stream is dropped at once.
        app.get("/v1/events", &app.agent)
            .send()
            .await
            .unwrap()
            .status()
    })
    .await;
    drop(second);
    drop(other);
}

async fn raw_connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr).await.expect("connect")
}

/// Read until the server closes the connection; how long that took, or `None` if it did not
/// within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

fn slow_config() -> Config {
    Config {
        header_read_timeout: Duration::from_millis(600),
        ..test_config()
    }
}

#[tokio::test]
async fn a_silent_connection_is_dropped_after_the_header_timeout() {
    let app = TestApp::spawn_with(slow_config()).await;
    let mut idle = raw_connect(&app).await;
    let took = closed_within(&mut idle, Duration::from_secs(5))
        .await
        .expect("the server closes a connection that sends nothing");
    assert!(
        took >= Duration::from_millis(400),
        "closed too soon: {took:?}"
    );
    // The server still serves everyone else.
    let (status, _) = app
        .send(app.client.get(format!("{}/healthz", app.base)))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_dropped() {
    let app = TestApp::spawn_with(slow_config()).await;
    let mut slow = raw_connect(&app).await;
    let head = format!(
        "GET /v1/pauses HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nX-Padding: {}\r\n\r\n",
        app.addr,
        app.ann,
        "a".repeat(64)
    );
    let start = Instant::now();
    let mut cut = false;
    // One byte every 100 ms: the head would take ~20 s to arrive.
    for byte in head.as_bytes() {
        if slow.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            Ok(Ok(_)) => {} // a 408 or similar before closing is fine
            Err(_) => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the slow client is still connected after 5 s"
        );
    }
    assert!(cut, "the whole head trickled in without the server closing");
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_prompt_raw_request_is_served() {
    let app = TestApp::spawn_with(slow_config()).await;
    let mut conn = raw_connect(&app).await;
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_times_out_with_our_error() {
    let app = TestApp::spawn_with(Config {
        request_timeout: Duration::from_millis(500),
        ..slow_config()
    })
    .await;
    let mut conn = raw_connect(&app).await;
    // A complete head promising a body that never comes.
    let head = format!(
        "POST /v1/actions HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        app.addr, app.agent
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("the server answers within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("\"code\":\"timeout\""), "{text}");
    assert!(start.elapsed() >= Duration::from_millis(400));
    // Long-polls are not cut by the request timeout: they may wait their whole `wait`.
    let id = pending_action(&app).await;
    let t = Instant::now();
    let (status, body) = app
        .send(app.get(&format!("/v1/actions/{id}?wait=1.2"), &app.agent))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(t.elapsed() >= Duration::from_millis(1100));
    // Neither are event streams, whose head is sent at once and whose body is not timed.
    let mut stream = app.get("/v1/events", &app.ann).send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let (_, action) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 6}}))
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, later) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": 7}}))
        .await;
    let later = later["id"].as_str().unwrap().to_owned();
    let mut seen = String::new();
    while !seen.contains(&later) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("the stream keeps flowing past the request timeout")
            .expect("no error")
            .expect("not ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(action["id"].as_str().unwrap()));
}

#[tokio::test]
async fn console_pages_carry_security_headers() {
    let app = TestApp::spawn().await;
    let resp = app
        .client
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h.contains_key("referrer-policy"));
}

#[test]
fn serve_refuses_a_bad_rate_limit_in_one_line() {
    for (flag, value) in [
        ("--rate-limit", "lots"),
        ("--rate-limit", "0/s"),
        ("--header-timeout", "soon"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_loopgate"))
            .args(["serve", "--listen", "127.0.0.1:0", flag, value])
            .env("LOOPGATE_DATABASE_URL", "sqlite::memory:")
            .output()
            .expect("run loopgate");
        assert!(!out.status.success(), "{flag} {value} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{stderr}");
        assert!(stderr.contains(value), "{stderr}");
    }
}
