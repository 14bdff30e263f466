//! Server-Sent Events through the real API: the frame format, per-conversation filtering, resume
//! with `Last-Event-ID` (also across a server restart) with no gap and no duplicate,
//! keep-alives, and a slow subscriber that neither holds up others nor loses events.

use crate::conversations::{about, audit, change, open, post};
use crate::helpers::*;
use futures::future::join_all;
use loopgate_server::Config;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// One SSE frame: its fields, and whether it held a comment line (a keep-alive).
#[derive(Debug, Clone, Default)]
pub(crate) struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub comment: bool,
}

/// A hand-rolled SSE client over a `reqwest` response.
pub(crate) struct SseStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl SseStream {
    /// Open a stream (optionally resuming with `Last-Event-ID`); asserts a 200 event stream.
    pub(crate) async fn open(
        app: &TestApp,
        path: &str,
        token: &str,
        last_event_id: Option<i64>,
    ) -> SseStream {
        let mut req = app.get(path, token).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.expect("the stream opens");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        SseStream {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next frame, or `None` if none arrives by `deadline` or the stream ended.
    pub(crate) async fn frame_until(&mut self, deadline: Instant) -> Option<Frame> {
        loop {
            if let Some(frame) = self.parse_one() {
                return Some(frame);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.extend_from_slice(&bytes),
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    fn parse_one(&mut self) -> Option<Frame> {
        // Normalise line ends once, then split off a block ending in a blank line.
        if self.buf.contains(&b'\r') {
            let text = String::from_utf8_lossy(&self.buf).replace("\r\n", "\n");
            self.buf = text.into_bytes();
        }
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let block: Vec<u8> = self.buf.drain(..end + 2).collect();
        let block = String::from_utf8(block).expect("UTF-8 frames");
        let mut frame = Frame::default();
        for line in block.lines() {
            if line.starts_with(':') {
                frame.comment = true;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => frame.id = Some(value),
                "event" => frame.event = Some(value),
                "data" => {
                    frame.data = Some(match frame.data.take() {
                        Some(d) => format!("{d}\n{value}"),
                        None => value,
                    })
                }
                _ => {}
            }
        }
        Some(frame)
    }

    /// The next event (keep-alives skipped), checked for the frame contract: `id:` is the
    /// event's seq and `event:` its type. `None` on timeout or end of stream.
    pub(crate) async fn event_until(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            let frame = self.frame_until(deadline).await?;
            let Some(data) = frame.data else { continue };
            let e: Value = serde_json::from_str(&data).expect("data: is JSON");
            let seq = e["seq"].as_i64().expect("the event has a seq");
            assert_eq!(frame.id.as_deref(), Some(seq.to_string().as_str()), "{e}");
            assert_eq!(frame.event.as_deref(), e["type"].as_str(), "{e}");
            return Some(e);
        }
    }

    /// Exactly `n` events, each within `within` of the previous; panics if they do not come.
    pub(crate) async fn take(&mut self, n: usize, within: Duration) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.event_until(Instant::now() + within).await {
                Some(e) => out.push(e),
                None => panic!(
                    "only {} of {n} events arrived; the last: {:?}",
                    out.len(),
                    out.last().map(|e: &Value| e["seq"].clone())
                ),
            }
        }
        out
    }

    /// Events until one with `seq >= last`; panics if it does not come.
    pub(crate) async fn take_through(&mut self, last: i64, within: Duration) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        while out.last().and_then(|e| e["seq"].as_i64()).unwrap_or(-1) < last {
            match self.event_until(Instant::now() + within).await {
                Some(e) => out.push(e),
                None => panic!("the stream stopped before seq {last}; got {:?}", seqs(&out)),
            }
        }
        out
    }

    /// Assert no event arrives for a while.
    pub(crate) async fn assert_quiet(&mut self, for_: Duration) {
        if let Some(e) = self.event_until(Instant::now() + for_).await {
            panic!("no event expected, got {e}");
        }
    }
}

pub(crate) fn seqs(events: &[Value]) -> Vec<i64> {
    events.iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

async fn head(app: &TestApp) -> i64 {
    audit(app)
        .await
        .last()
        .map_or(0, |e| e["seq"].as_i64().unwrap())
}

/// How long to wait for each expected event.
const WAIT: Duration = Duration::from_secs(5);

/// Post `n` user messages to a conversation, `concurrency` at a time; each is one event.
pub(crate) async fn chatter(app: &TestApp, cid: &str, n: usize, concurrency: usize) {
    use futures::StreamExt;
    let results: Vec<StatusCode> = futures::stream::iter(0..n)
        .map(|i| async move {
            post(app, &app.agent, cid, "user", &format!("message {i}"), None)
                .await
                .0
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    assert!(
        results.iter().all(|s| *s == StatusCode::CREATED),
        "{results:?}"
    );
}

#[tokio::test]
async fn frames_carry_the_seq_the_type_and_the_event() {
    let app = TestApp::spawn().await;
    let mut stream = SseStream::open(&app, "/v1/events", &app.ann, None).await;
    let h0 = head(&app).await;
    let cid = open(&app, json!({"tags": ["demo"]})).await;
    post(&app, &app.agent, &cid, "user", "hello", None).await;
    let (s, _) = change(
        &app,
        &app.agent,
        &cid,
        "escalate",
        Some(json!({"reason": "why not"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let want: Vec<Value> = audit(&app)
        .await
        .into_iter()
        .filter(|e| e["seq"].as_i64().unwrap() > h0)
        .collect();
    let types: Vec<&str> = want.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for t in [
        "conversation.created",
        "message.created",
        "conversation.escalated",
        "review.created",
    ] {
        assert!(types.contains(&t), "{types:?}");
    }
    // `take` checks id == seq and event == type for every frame; the data is the event itself,
    // exactly as the audit log serves it (hashes included).
    let got = stream.take(want.len(), WAIT).await;
    assert_eq!(got, want);
    for pair in got.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"]);
        assert_eq!(
            pair[1]["seq"].as_i64().unwrap(),
            pair[0]["seq"].as_i64().unwrap() + 1
        );
    }
    for e in &got {
        assert_eq!(e["workspace"], "default");
        assert_eq!(e["hash"].as_str().unwrap().len(), 64, "{e}");
        assert!(e["at"].is_string() && e["actor"].is_string() && e["subject"].is_string());
    }
    stream.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_conversation_stream_carries_only_that_conversation() {
    let app = TestApp::spawn().await;
    let a = open(&app, json!({})).await;
    let b = open(&app, json!({})).await;
    // The agent watches its conversation A.
    let mut stream = SseStream::open(
        &app,
        &format!("/v1/conversations/{a}/events"),
        &app.agent,
        None,
    )
    .await;
    let mut workspace = SseStream::open(&app, "/v1/events", &app.bob, None).await;
    let h0 = head(&app).await;

    for i in 0..3 {
        post(&app, &app.agent, &a, "user", &format!("a{i}"), None).await;
        post(&app, &app.agent, &b, "user", &format!("b{i}"), None).await;
    }
    change(&app, &app.agent, &b, "escalate", None).await;
    change(&app, &app.agent, &a, "escalate", None).await;
    // The agent is told of a takeover and hears the human, though it may not speak.
    change(&app, &app.ann, &a, "takeover", None).await;
    change(&app, &app.ann, &b, "takeover", None).await;
    post(&app, &app.ann, &a, "human", "Ann here", None).await;
    change(&app, &app.ann, &b, "close", None).await;
    // A last event on A: anything about B would have come before it.
    let (_, last) = post(&app, &app.agent, &a, "user", "thanks", None).await;
    assert!(last["id"].is_string());

    let log: Vec<Value> = audit(&app)
        .await
        .into_iter()
        .filter(|e| e["seq"].as_i64().unwrap() > h0)
        .collect();
    let want: Vec<Value> = log.iter().filter(|e| about(e, &a)).cloned().collect();
    let last_seq = want.last().unwrap()["seq"].as_i64().unwrap();
    let got = stream.take_through(last_seq, WAIT).await;
    assert_eq!(seqs(&got), seqs(&want));
    assert_eq!(got, want);
    assert!(got.iter().all(|e| !about(e, &b)), "nothing about B");
    let types: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for t in [
        "message.created",
        "conversation.escalated",
        "review.created",
        "review.decided",
        "conversation.taken_over",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }

    // The workspace stream carries both, in log order.
    let all = workspace
        .take_through(log.last().unwrap()["seq"].as_i64().unwrap(), WAIT)
        .await;
    assert_eq!(all, log);

    // From the start (`?after=0`), A's whole history, creation included.
    let mut from_start = SseStream::open(
        &app,
        &format!("/v1/conversations/{a}/events?after=0"),
        &app.ann,
        None,
    )
    .await;
    let history: Vec<Value> = audit(&app)
        .await
        .into_iter()
        .filter(|e| about(e, &a))
        .collect();
    assert_eq!(history[0]["type"], "conversation.created");
    let got = from_start.take(history.len(), WAIT).await;
    assert_eq!(got, history);
    from_start.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn resuming_with_last_event_id_has_no_gap_and_no_duplicate() {
    let app = TestApp::spawn().await;
    let cid = open(&app, json!({})).await;
    // The workspace stream of a reviewer carries every event (an agent's only those naming it).
    let mut stream = SseStream::open(&app, "/v1/events", &app.ann, None).await;
    let mut conv_stream = SseStream::open(
        &app,
        &format!("/v1/conversations/{cid}/events"),
        &app.agent,
        None,
    )
    .await;
    chatter(&app, &cid, 10, 1).await;
    let first = stream.take(5, WAIT).await;
    let n = first.last().unwrap()["seq"].as_i64().unwrap();
    let conv_first = conv_stream.take(3, WAIT).await;
    let cn = conv_first.last().unwrap()["seq"].as_i64().unwrap();
    drop(stream);
    drop(conv_stream);

    // More happens while nobody listens.
    chatter(&app, &cid, 10, 4).await;
    change(&app, &app.agent, &cid, "escalate", None).await;
    let log = audit(&app).await;
    let head = log.last().unwrap()["seq"].as_i64().unwrap();
    let missed: Vec<Value> = log
        .iter()
        .filter(|e| e["seq"].as_i64().unwrap() > n)
        .cloned()
        .collect();
    assert_eq!(seqs(&missed), ((n + 1)..=head).collect::<Vec<_>>());

    // Last-Event-ID: exactly what was missed, in order.
    let mut resumed = SseStream::open(&app, "/v1/events", &app.ann, Some(n)).await;
    let got = resumed.take(missed.len(), WAIT).await;
    assert_eq!(got, missed);
    // `?after=` does the same for clients that cannot set headers.
    let mut by_query =
        SseStream::open(&app, &format!("/v1/events?after={n}"), &app.ann, None).await;
    assert_eq!(by_query.take(missed.len(), WAIT).await, missed);
    // The conversation stream resumes the same way (with only its own events).
    let mut conv_resumed = SseStream::open(
        &app,
        &format!("/v1/conversations/{cid}/events"),
        &app.agent,
        Some(cn),
    )
    .await;
    let conv_missed: Vec<Value> = log
        .iter()
        .filter(|e| e["seq"].as_i64().unwrap() > cn && about(e, &cid))
        .cloned()
        .collect();
    assert_eq!(
        conv_resumed.take(conv_missed.len(), WAIT).await,
        conv_missed
    );

    // Then the live feed continues, without repeating anything.
    post(&app, &app.agent, &cid, "user", "still there?", None).await;
    for s in [&mut resumed, &mut by_query, &mut conv_resumed] {
        let next = s
            .event_until(Instant::now() + WAIT)
            .await
            .expect("the live event");
        assert_eq!(next["seq"].as_i64().unwrap(), head + 1, "{next}");
        s.assert_quiet(Duration::from_millis(150)).await;
    }

    // A resume point past the end is fine (nothing yet); a bad one is a 400 naming it.
    let mut ahead = SseStream::open(&app, "/v1/events", &app.agent, Some(head + 1)).await;
    ahead.assert_quiet(Duration::from_millis(150)).await;
    let (s, b) = app
        .send(
            app.get("/v1/events", &app.agent)
                .header("last-event-id", "yesterday"),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["field"], "Last-Event-ID", "{b}");
    let (s, b) = app.send(app.get("/v1/events?after=-3", &app.agent)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["field"], "after", "{b}");
}

#[tokio::test]
async fn resuming_across_a_server_restart() {
    let app = TestApp::spawn().await;
    let cid = open(&app, json!({})).await;
    let mut stream = SseStream::open(
        &app,
        &format!("/v1/conversations/{cid}/events"),
        &app.agent,
        None,
    )
    .await;
    chatter(&app, &cid, 5, 1).await;
    let seen = stream.take(3, WAIT).await;
    let n = seen.last().unwrap()["seq"].as_i64().unwrap();

    // The server goes away with the stream still open: the stream ends, shutdown is not held up.
    let started = Instant::now();
    let app = app.restart(Duration::from_millis(100)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an open event stream held up the shutdown for {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + WAIT;
    while stream.event_until(deadline).await.is_some() {}
    assert!(
        Instant::now() < deadline,
        "the old stream should have ended"
    );

    // More happens on the new server (a new port) before the client comes back.
    chatter(&app, &cid, 5, 1).await;
    change(&app, &app.ann, &cid, "takeover", None).await;
    let missed: Vec<Value> = audit(&app)
        .await
        .into_iter()
        .filter(|e| e["seq"].as_i64().unwrap() > n && about(e, &cid))
        .collect();
    assert_eq!(missed.len(), 2 + 5 + 1, "{missed:?}");

    let mut resumed = SseStream::open(
        &app,
        &format!("/v1/conversations/{cid}/events"),
        &app.agent,
        Some(n),
    )
    .await;
    assert_eq!(resumed.take(missed.len(), WAIT).await, missed);
    resumed.assert_quiet(Duration::from_millis(150)).await;

    // The workspace stream too.
    let mut ws = SseStream::open(&app, "/v1/events", &app.ann, Some(n)).await;
    let all: Vec<Value> = audit(&app)
        .await
        .into_iter()
        .filter(|e| e["seq"].as_i64().unwrap() > n)
        .collect();
    assert_eq!(ws.take(all.len(), WAIT).await, all);
}

#[tokio::test]
async fn idle_streams_get_keep_alives() {
    let app = TestApp::spawn_with(Config {
        sse_keepalive: Duration::from_millis(200),
        ..test_config()
    })
    .await;
    let cid = open(&app, json!({})).await;
    for path in [
        "/v1/events".to_owned(),
        format!("/v1/conversations/{cid}/events"),
    ] {
        let mut stream = SseStream::open(&app, &path, &app.agent, None).await;
        let started = Instant::now();
        let frame = stream
            .frame_until(started + Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("no keep-alive on {path}"));
        assert!(frame.comment, "a comment line, not an event: {frame:?}");
        assert!(frame.data.is_none() && frame.id.is_none(), "{frame:?}");
        // And they keep coming.
        let again = stream
            .frame_until(Instant::now() + Duration::from_secs(3))
            .await
            .expect("a second keep-alive");
        assert!(again.comment, "{again:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_neither_holds_up_others_nor_loses_events() {
    const N: usize = 2000;
    let app = TestApp::spawn().await;
    // Spread over conversations: the cost of a post grows with its conversation's length.
    let mut cids = Vec::new();
    for _ in 0..40 {
        cids.push(open(&app, json!({})).await);
    }
    // Opened, then not read at all for now.
    let mut slow = SseStream::open(&app, "/v1/events", &app.admin, None).await;
    let fast = SseStream::open(&app, "/v1/events", &app.ann, None).await;
    let h0 = head(&app).await;

    let reader = tokio::spawn(async move {
        let mut fast = fast;
        let got = fast.take(N, Duration::from_secs(10)).await;
        (got, Instant::now())
    });
    join_all(cids.iter().map(|cid| chatter(&app, cid, N / cids.len(), 1))).await;
    let produced = Instant::now();
    let (fast_got, fast_done) = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the fast subscriber kept up")
        .expect("the reader task");
    assert!(
        fast_done.saturating_duration_since(produced) < Duration::from_secs(5),
        "the fast subscriber lagged {:?} behind the last write",
        fast_done.saturating_duration_since(produced)
    );
    let want: Vec<i64> = ((h0 + 1)..=(h0 + N as i64)).collect();
    assert_eq!(seqs(&fast_got), want);

    // The slow one finally reads: everything, in order, no gap, no duplicate.
    let slow_got = slow.take(N, Duration::from_secs(10)).await;
    assert_eq!(seqs(&slow_got), want);
    let log: Vec<Value> = audit(&app)
        .await
        .into_iter()
        .filter(|e| e["seq"].as_i64().unwrap() > h0)
        .collect();
    assert_eq!(slow_got, log);
    slow.assert_quiet(Duration::from_millis(150)).await;
}

#[tokio::test]
async fn an_agents_workspace_stream_hides_other_agents_conversations() {
    let app = TestApp::spawn().await;
    let other = app
        .key("default", "otherbot", loopgate_domain::auth::Role::Agent)
        .await;
    let mut mine = SseStream::open(&app, "/v1/events", &app.agent, None).await;
    // Another agent's customer says something private...
    let (s, c) = app
        .send(app.post("/v1/conversations", &other).json(&json!({})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let theirs = c["id"].as_str().unwrap().to_owned();
    let (s, _) = post(
        &app,
        &other,
        &theirs,
        "user",
        "my card number is 4111...",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    // ...then something happens in my own conversation.
    let own = open(&app, json!({})).await;
    let got = mine.take_through(head(&app).await, WAIT).await;
    assert!(
        got.iter().any(|e| about(e, &own)),
        "my own conversation's events arrive"
    );
    let leaked: Vec<&Value> = got.iter().filter(|e| about(e, &theirs)).collect();
    assert!(
        leaked.is_empty(),
        "an agent may not read another agent's conversation (GET answers 404), \
         but its workspace stream carried: {leaked:?}"
    );
}
