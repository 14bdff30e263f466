//! Webhooks through the real API, delivered to a real local HTTP receiver: registration and its
//! validation, Standard Webhooks signatures, subscriptions, retries with the same `webhook-id`
//! (backoff and `Retry-After`), a receiver that was down, 410 Gone, the delivery log, no loss
//! across a restart of Loopgate, the Slack format, and deletion.

use crate::conversations::{audit, change, open, post};
use crate::helpers::*;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Response};
use loopgate_server::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A fixed Standard Webhooks secret (32 bytes, base64).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3ZzBmNlM+Zw=";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    headers: HeaderMap,
    body: String,
    at: Instant,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
    }
    fn id(&self) -> &str {
        self.header("webhook-id")
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
    fn seq(&self) -> i64 {
        self.json()["seq"].as_i64().expect("an event body")
    }
}

/// How the receiver answers: given the hit and how many times it has seen this `webhook-id`
/// (1 on the first attempt).
type Answer = Arc<dyn Fn(&Hit, usize) -> Response + Send + Sync>;

fn always(status: u16) -> Answer {
    Arc::new(move |_, _| AxumStatus::from_u16(status).unwrap().into_response())
}

/// A local HTTP receiver on 127.0.0.1 that records every request.
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    answer: Answer,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    async fn start(answer: Answer) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, Arc::new(Mutex::new(Vec::new())), answer)
    }

    fn serve(
        listener: tokio::net::TcpListener,
        hits: Arc<Mutex<Vec<Hit>>>,
        answer: Answer,
    ) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let (h, a) = (hits.clone(), answer.clone());
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
            let (hits, answer) = (h.clone(), a.clone());
            async move {
                let hit = Hit {
                    headers,
                    body,
                    at: Instant::now(),
                };
                let attempt = {
                    let mut hits = hits.lock().unwrap();
                    hits.push(hit.clone());
                    hits.iter()
                        .filter(|x| x.headers.get("webhook-id") == hit.headers.get("webhook-id"))
                        .count()
                };
                answer(&hit, attempt)
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Receiver {
            addr,
            hits,
            answer,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Stop listening (the port is closed: connections are refused).
    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                panic!("the receiver did not stop");
            }
        }
    }

    /// Listen again on the same port, keeping the record.
    async fn restart(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("rebind the receiver's port");
        let fresh = Self::serve(listener, self.hits.clone(), self.answer.clone());
        *self = fresh;
    }

    /// Wait until `check` holds for the hits so far; returns them.
    async fn wait_for(&self, within: Duration, check: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let hits = self.hits();
            if check(&hits) {
                return hits;
            }
            if Instant::now() > deadline {
                panic!(
                    "the receiver never got what was expected; it got {:?}",
                    hits.iter()
                        .map(|h| (h.id().to_owned(), h.body.clone()))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Register a webhook as the admin; returns its JSON.
async fn register(app: &TestApp, body: Value) -> Value {
    let (s, w) = app
        .send(app.post("/v1/webhooks", &app.admin).json(&body))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{w}");
    assert!(w["id"].is_string(), "{w}");
    w
}

async fn webhooks(app: &TestApp) -> Vec<Value> {
    let (s, body) = app.send(app.get("/v1/webhooks", &app.admin)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["webhooks"].as_array().expect("webhooks").clone()
}

async fn deliveries(app: &TestApp, hook: &str) -> Vec<Value> {
    let (s, body) = app
        .send(app.get(&format!("/v1/webhooks/{hook}/deliveries"), &app.admin))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["deliveries"].as_array().expect("deliveries").clone()
}

/// Open a conversation and escalate it: `conversation.escalated` and `review.created` (plus the
/// unsubscribed `conversation.created`). Returns the conversation id.
async fn escalation(app: &TestApp) -> String {
    let cid = open(app, json!({})).await;
    let (s, b) = change(
        app,
        &app.agent,
        &cid,
        "escalate",
        Some(json!({"reason": "a human, please", "queue": "tier2"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    cid
}

/// The seqs of the audit events a subscription takes, after `after`.
async fn subscribed_seqs(app: &TestApp, after: i64, types: &[&str]) -> BTreeSet<i64> {
    audit(app)
        .await
        .iter()
        .filter(|e| e["seq"].as_i64().unwrap() > after)
        .filter(|e| {
            let t = e["type"].as_str().unwrap();
            types
                .iter()
                .any(|p| *p == t || p.strip_suffix('*').is_some_and(|pre| t.starts_with(pre)))
        })
        .map(|e| e["seq"].as_i64().unwrap())
        .collect()
}

async fn head(app: &TestApp) -> i64 {
    audit(app)
        .await
        .last()
        .map_or(0, |e| e["seq"].as_i64().unwrap())
}

fn distinct_seqs(hits: &[Hit]) -> BTreeSet<i64> {
    hits.iter().map(Hit::seq).collect()
}

#[tokio::test]
async fn registration_is_validated_and_secrets_stay_secret() {
    let app = TestApp::spawn().await;
    let good = json!({"url": "http://127.0.0.1:9/hook", "secret": SECRET, "events": ["review.*"]});

    // Admins only.
    for token in [&app.ann, &app.agent] {
        let (s, b) = app.send(app.post("/v1/webhooks", token).json(&good)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        let (s, _) = app.send(app.get("/v1/webhooks", token)).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }

    // Bad input names the field.
    let with = |key: &str, value: Value| {
        let mut b = good.clone();
        b[key] = value;
        b
    };
    let cases = [
        (with("url", json!("not a url")), "url"),
        (with("url", json!("ftp://example.com/hook")), "url"),
        (with("url", json!("/relative/hook")), "url"),
        (json!({"secret": SECRET, "events": ["*"]}), "url"),
        (with("secret", json!("plain-text-secret")), "secret"),
        (with("secret", json!("whsec_***not base64***")), "secret"),
        (with("secret", json!("whsec_c2hvcnQ=")), "secret"),
        (with("events", json!([])), "events"),
        (with("events", json!(["Review.Created"])), "events"),
        (with("events", json!(["review created"])), "events"),
        (
            json!({"url": "http://127.0.0.1:9/hook", "secret": SECRET}),
            "events",
        ),
        (with("format", json!("xml")), "format"),
    ];
    for (body, field) in cases {
        let (s, b) = app
            .send(app.post("/v1/webhooks", &app.admin).json(&body))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {b}");
        assert_eq!(b["error"]["field"], field, "{body} -> {b}");
    }
    assert!(webhooks(&app).await.is_empty(), "nothing was registered");

    // A good one: 201, the secret is not echoed.
    let w = register(&app, good.clone()).await;
    assert_eq!(w["status"], "active");
    assert_eq!(w["format"], "standard");
    assert_eq!(w["events"], json!(["review.*"]));
    assert!(w.get("secret").is_none(), "{w}");

    // No secret given: one is made and shown once.
    let rx = Receiver::start(always(200)).await;
    let generated = register(
        &app,
        json!({"url": rx.url(), "events": ["conversation.escalated"]}),
    )
    .await;
    let secret = generated["secret"]
        .as_str()
        .expect("the generated secret")
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    // It is the secret deliveries are signed with.
    escalation(&app).await;
    let hits = rx.wait_for(Duration::from_secs(5), |h| !h.is_empty()).await;
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(hits[0].body.as_bytes(), &hits[0].headers)
        .expect("signed with the generated secret");
    assert!(standardwebhooks::Webhook::new(SECRET)
        .unwrap()
        .verify(hits[0].body.as_bytes(), &hits[0].headers)
        .is_err());

    // The list never shows a secret.
    let (s, list) = app.send(app.get("/v1/webhooks", &app.admin)).await;
    assert_eq!(s, StatusCode::OK);
    let text = list.to_string();
    assert!(!text.contains(&secret) && !text.contains(SECRET), "{text}");
    let hooks = list["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2);
    assert!(hooks.iter().all(|h| h.get("secret").is_none()), "{list}");
    // Nor does the audit log.
    let log = serde_json::to_string(&audit(&app).await).unwrap();
    assert!(!log.contains(&secret[6..]) && !log.contains(&SECRET[6..]));

    // Another workspace sees none of them.
    let acme = app
        .key("acme", "root", loopgate_domain::auth::Role::Admin)
        .await;
    let (_, other) = app.send(app.get("/v1/webhooks", &acme)).await;
    assert!(other["webhooks"].as_array().unwrap().is_empty(), "{other}");
    let id = w["id"].as_str().unwrap();
    let (s, _) = app
        .send(app.get(&format!("/v1/webhooks/{id}/deliveries"), &acme))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn subscribed_events_arrive_signed() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start(always(200)).await;
    let types = ["review.*", "conversation.escalated"];
    let w = register(
        &app,
        json!({"url": rx.url(), "secret": SECRET, "events": types}),
    )
    .await;
    let hook = w["id"].as_str().unwrap().to_owned();
    let h0 = head(&app).await;

    let cid = escalation(&app).await;
    post(&app, &app.agent, &cid, "user", "hello?", None).await; // message.created: not subscribed
    change(&app, &app.ann, &cid, "takeover", None).await; // review.decided: subscribed
    let want = subscribed_seqs(&app, h0, &types).await;
    assert_eq!(want.len(), 3, "escalated, review created, review decided");

    let hits = rx
        .wait_for(Duration::from_secs(5), |h| distinct_seqs(h) == want)
        .await;
    let log: HashMap<i64, Value> = audit(&app)
        .await
        .into_iter()
        .map(|e| (e["seq"].as_i64().unwrap(), e))
        .collect();
    let verifier = standardwebhooks::Webhook::new(SECRET).unwrap();
    for hit in &hits {
        // Signed per Standard Webhooks, over exactly the bytes received.
        verifier
            .verify(hit.body.as_bytes(), &hit.headers)
            .unwrap_or_else(|e| panic!("bad signature ({e}) on {hit:?}"));
        assert!(hit.header("webhook-signature").starts_with("v1,"));
        let ts: i64 = hit
            .header("webhook-timestamp")
            .parse()
            .expect("unix seconds");
        assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
        assert!(hit.id().starts_with("msg_"), "{}", hit.id());
        assert!(hit.header("content-type").starts_with("application/json"));
        // The body is the event, as the audit log has it.
        let e = hit.json();
        assert_eq!(&e, &log[&hit.seq()]);
        let t = e["type"].as_str().unwrap();
        assert!(
            t.starts_with("review.") || t == "conversation.escalated",
            "{t}"
        );
    }
    // A tampered body does not verify.
    let h = &hits[0];
    assert!(verifier
        .verify(h.body.replace("default", "defaulT").as_bytes(), &h.headers)
        .is_err());
    // Nothing unsubscribed came, and each event came once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hits = rx.hits();
    assert_eq!(distinct_seqs(&hits), want);
    assert_eq!(hits.len(), want.len(), "one delivery per event");

    // The delivery log: one row per event, delivered on the first attempt, ids matching.
    let log = deliveries(&app, &hook).await;
    assert_eq!(log.len(), want.len(), "{log:?}");
    for d in &log {
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["attempts"], 1, "{d}");
        assert_eq!(d["last_status"], 200, "{d}");
        assert_eq!(d["webhook_id"], hook.as_str());
        assert!(d["delivered_at"].is_string(), "{d}");
        let hit = hits
            .iter()
            .find(|h| h.id() == d["id"])
            .expect("a hit per delivery");
        assert_eq!(d["event_seq"].as_i64().unwrap(), hit.seq());
        assert_eq!(d["event_type"], hit.json()["type"]);
    }
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_same_id() {
    let app = TestApp::spawn().await;
    // First a 500 (exponential backoff), then a 429 asking for 1 s, then success.
    let rx = Receiver::start(Arc::new(|_, attempt| match attempt {
        1 => AxumStatus::INTERNAL_SERVER_ERROR.into_response(),
        2 => (AxumStatus::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response(),
        _ => AxumStatus::NO_CONTENT.into_response(),
    }))
    .await;
    let w = register(
        &app,
        json!({"url": rx.url(), "secret": SECRET, "events": ["conversation.escalated"]}),
    )
    .await;
    let hook = w["id"].as_str().unwrap();
    escalation(&app).await;

    // The API answered at once; the first attempt fails and is logged.
    rx.wait_for(Duration::from_secs(5), |h| h.len() == 1).await;
    let log = deliveries(&app, hook).await;
    assert_eq!(log.len(), 1);
    // (The log is updated right after the attempt: poll briefly.)
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut d = log[0].clone();
    while d["attempts"] != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        d = deliveries(&app, hook).await[0].clone();
    }
    assert_eq!(d["status"], "pending", "{d}");
    assert_eq!(d["attempts"], 1, "{d}");
    assert_eq!(d["last_status"], 500, "{d}");
    assert!(d["next_attempt_at"].is_string(), "{d}");

    let hits = rx.wait_for(Duration::from_secs(12), |h| h.len() >= 3).await;
    assert_eq!(
        hits.len(),
        3,
        "delivered on the third attempt, then no more"
    );
    let id = hits[0].id();
    assert!(
        hits.iter().all(|h| h.id() == id),
        "the same webhook-id on every attempt"
    );
    assert!(hits.iter().all(|h| h.body == hits[0].body), "the same body");
    let verifier = standardwebhooks::Webhook::new(SECRET).unwrap();
    for h in &hits {
        verifier
            .verify(h.body.as_bytes(), &h.headers)
            .expect("each attempt is signed");
    }
    // Backoff after the 500 (at least 2.5 s, jittered); Retry-After honoured after the 429.
    let first_gap = hits[1].at - hits[0].at;
    let second_gap = hits[2].at - hits[1].at;
    assert!(first_gap >= Duration::from_millis(2400), "{first_gap:?}");
    assert!(
        second_gap >= Duration::from_millis(900) && second_gap < Duration::from_secs(4),
        "Retry-After: 1 should set the next attempt ~1 s later (not the >= 5 s backoff), took {second_gap:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let d = &deliveries(&app, hook).await[0];
        if d["status"] == "delivered" {
            assert_eq!(d["attempts"], 3, "{d}");
            assert_eq!(d["last_status"], 204, "{d}");
            assert_eq!(d["id"], id);
            break;
        }
        assert!(Instant::now() < deadline, "never marked delivered: {d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_the_event_later() {
    let app = TestApp::spawn().await;
    let mut rx = Receiver::start(always(200)).await;
    let w = register(
        &app,
        json!({"url": rx.url(), "secret": SECRET, "events": ["review.created"]}),
    )
    .await;
    let hook = w["id"].as_str().unwrap().to_owned();
    rx.stop().await; // the port is closed now

    // The API does not wait for the dead endpoint.
    let started = Instant::now();
    escalation(&app).await;
    assert!(started.elapsed() < Duration::from_secs(2));

    // The first attempt finds nobody.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d = deliveries(&app, &hook).await;
        if d.len() == 1 && d[0]["attempts"] == 1 {
            assert_eq!(d[0]["status"], "pending", "{}", d[0]);
            assert!(d[0]["last_status"].is_null(), "no HTTP answer: {}", d[0]);
            assert!(d[0]["last_error"].is_string(), "{}", d[0]);
            break;
        }
        assert!(Instant::now() < deadline, "no failed attempt logged: {d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The receiver comes back: the retry delivers it.
    rx.restart().await;
    let hits = rx.wait_for(Duration::from_secs(8), |h| !h.is_empty()).await;
    assert_eq!(hits[0].json()["type"], "review.created");
    standardwebhooks::Webhook::new(SECRET)
        .unwrap()
        .verify(hits[0].body.as_bytes(), &hits[0].headers)
        .expect("signed");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let d = deliveries(&app, &hook).await;
        if d[0]["status"] == "delivered" {
            assert_eq!(d[0]["attempts"], 2, "{}", d[0]);
            assert_eq!(d[0]["id"], hits[0].id());
            break;
        }
        assert!(Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn gone_disables_the_webhook() {
    let app = TestApp::spawn().await;
    let gone = Receiver::start(always(410)).await;
    let control = Receiver::start(always(200)).await;
    let types = json!(["conversation.escalated"]);
    let w = register(
        &app,
        json!({"url": gone.url(), "secret": SECRET, "events": types}),
    )
    .await;
    let hook = w["id"].as_str().unwrap().to_owned();
    register(
        &app,
        json!({"url": control.url(), "secret": SECRET, "events": types}),
    )
    .await;

    escalation(&app).await;
    gone.wait_for(Duration::from_secs(5), |h| h.len() == 1)
        .await;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let hooks = webhooks(&app).await;
        let me = hooks.iter().find(|h| h["id"] == hook.as_str()).unwrap();
        if me["status"] == "disabled" {
            assert!(
                me["disabled_reason"].as_str().unwrap().contains("410"),
                "{me}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not disabled: {me}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = deliveries(&app, &hook).await;
    assert_eq!(d[0]["status"], "dead", "{}", d[0]);
    assert_eq!(d[0]["last_status"], 410, "{}", d[0]);
    assert!(audit(&app)
        .await
        .iter()
        .any(|e| e["type"] == "webhook.disabled" && e["subject"] == format!("webhook:{hook}")));

    // Later events go to the other endpoint only.
    escalation(&app).await;
    escalation(&app).await;
    control
        .wait_for(Duration::from_secs(5), |h| h.len() == 3)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        gone.hits().len(),
        1,
        "a disabled endpoint gets nothing more"
    );
    assert_eq!(deliveries(&app, &hook).await.len(), 1);
}

#[tokio::test]
async fn nothing_is_lost_across_a_restart() {
    let app = TestApp::spawn().await;
    let mut rx = Receiver::start(always(200)).await;
    let types = ["review.*", "conversation.escalated"];
    register(
        &app,
        json!({"url": rx.url(), "secret": SECRET, "events": types}),
    )
    .await;
    rx.stop().await;
    let h0 = head(&app).await;

    // Events happen while the receiver is down; Loopgate restarts right after.
    for _ in 0..4 {
        escalation(&app).await;
    }
    let app = app.restart(Duration::from_millis(100)).await;
    let want = subscribed_seqs(&app, h0, &types).await;
    assert_eq!(want.len(), 8);
    // One more on the new server.
    escalation(&app).await;
    let want = subscribed_seqs(&app, h0, &types).await;
    assert_eq!(want.len(), 10);

    rx.restart().await;
    let hits = rx
        .wait_for(Duration::from_secs(10), |h| distinct_seqs(h) == want)
        .await;
    // At-least-once: a repeat, if any, carries the same webhook-id as the first.
    let mut ids: HashMap<i64, &str> = HashMap::new();
    for h in &hits {
        let first = *ids.entry(h.seq()).or_insert(h.id());
        assert_eq!(first, h.id(), "one webhook-id per event");
    }
    let verifier = standardwebhooks::Webhook::new(SECRET).unwrap();
    for h in &hits {
        verifier
            .verify(h.body.as_bytes(), &h.headers)
            .expect("signed");
    }
}

#[tokio::test]
async fn slack_payloads_link_to_the_review() {
    let app = TestApp::spawn_with(Config {
        public_url: "https://loopgate.example.com/".to_owned(),
        ..test_config()
    })
    .await;
    let rx = Receiver::start(always(200)).await;
    register(
        &app,
        json!({
            "url": rx.url(), "secret": SECRET, "format": "slack",
            "events": ["review.created", "conversation.escalated"],
        }),
    )
    .await;
    let cid = escalation(&app).await;
    let review_id = crate::conversations::reviews(&app)
        .await
        .into_iter()
        .find(|r| r["conversation_id"] == cid.as_str())
        .expect("the escalation review")["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Both the new review and the escalation link to the review.
    let hits = rx.wait_for(Duration::from_secs(5), |h| h.len() >= 2).await;
    let link = format!("https://loopgate.example.com/reviews/{review_id}");
    let verifier = standardwebhooks::Webhook::new(SECRET).unwrap();
    for hit in &hits {
        let body = hit.json();
        assert_eq!(body.as_object().unwrap().len(), 1, "only `text`: {body}");
        let text = body["text"].as_str().expect("a Slack text field");
        assert!(text.contains(&link), "{text}");
        // Still signed.
        verifier
            .verify(hit.body.as_bytes(), &hit.headers)
            .expect("signed");
    }
    assert!(
        hits.iter()
            .any(|h| h.json()["text"].as_str().unwrap().contains("tier2")),
        "the new review's message names its queue"
    );
}

#[tokio::test]
async fn deleted_webhooks_get_nothing_more() {
    let app = TestApp::spawn().await;
    let rx = Receiver::start(always(200)).await;
    let control = Receiver::start(always(200)).await;
    let types = json!(["conversation.escalated"]);
    let w = register(
        &app,
        json!({"url": rx.url(), "secret": SECRET, "events": types}),
    )
    .await;
    let hook = w["id"].as_str().unwrap().to_owned();
    register(
        &app,
        json!({"url": control.url(), "secret": SECRET, "events": types}),
    )
    .await;

    escalation(&app).await;
    rx.wait_for(Duration::from_secs(5), |h| h.len() == 1).await;

    // Reviewers may not delete; admins may, once.
    let (s, _) = app
        .send(app.request(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{hook}"),
            &app.ann,
        ))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = app
        .send(app.request(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{hook}"),
            &app.admin,
        ))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, _) = app
        .send(app.request(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{hook}"),
            &app.admin,
        ))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(webhooks(&app)
        .await
        .iter()
        .all(|h| h["id"] != hook.as_str()));

    escalation(&app).await;
    escalation(&app).await;
    control
        .wait_for(Duration::from_secs(5), |h| h.len() == 3)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.hits().len(), 1, "a deleted endpoint gets nothing more");
}

#[tokio::test]
async fn a_hanging_endpoint_never_blocks_the_api() {
    let app = TestApp::spawn_with(Config {
        webhook_timeout: Duration::from_secs(2),
        ..test_config()
    })
    .await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    // Accepts connections (the kernel backlog does) but never reads or answers.
    register(&app, json!({"url": url, "secret": SECRET, "events": ["*"]})).await;

    let started = Instant::now();
    for _ in 0..10 {
        let t = Instant::now();
        escalation(&app).await;
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "an API call took {:?}",
            t.elapsed()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}
