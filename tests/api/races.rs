//! Exactly-once under concurrency: many clients racing for the same review, the same queue, the
//! same conversation, the same idempotency key. Each test runs on a multi-threaded runtime and
//! releases its requests together through a barrier, for `LOOPGATE_RACE_ROUNDS` rounds (default
//! 3; `scripts/reliability` runs many). Run with `--nocapture` to see the counts: each race prints
//! one `race-rounds:` line (rounds run, winners, losers).

use crate::actions::{all_events, all_reviews, events_of};
use crate::helpers::*;
use futures::future::join_all;
use loopgate_domain::auth::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tokio::sync::Barrier;

/// Run `n` tasks at once (released together by a barrier); their results in task order.
async fn race<T, F, Fut>(app: &Arc<TestApp>, n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Arc<TestApp>, usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let work = f(app.clone(), i);
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("a racing task panicked"))
        .collect()
}

/// How many rounds each race runs: `LOOPGATE_RACE_ROUNDS`, default 3.
fn rounds() -> usize {
    match std::env::var("LOOPGATE_RACE_ROUNDS") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("LOOPGATE_RACE_ROUNDS={v:?} is not a whole number")),
        Err(_) => 3,
    }
}

/// What a race came to over its rounds. `report` prints one line that `scripts/reliability`
/// adds up.
struct Tally {
    race: &'static str,
    rounds: usize,
    winners: usize,
    losers: usize,
}

impl Tally {
    fn new(race: &'static str) -> Tally {
        Tally {
            race,
            rounds: 0,
            winners: 0,
            losers: 0,
        }
    }

    fn round(&mut self, winners: usize, losers: usize) {
        self.rounds += 1;
        self.winners += winners;
        self.losers += losers;
    }

    fn report(&self) {
        println!(
            "race-rounds: {}: rounds={} winners={} losers={}",
            self.race, self.rounds, self.winners, self.losers
        );
    }
}

fn count(statuses: &[StatusCode], want: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == want).count()
}

async fn held_refund(app: &TestApp, amount: i64) -> (String, String) {
    let (s, a) = app
        .submit(json!({"name": "issue_refund", "arguments": {"amount": amount}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["status"], "pending", "{a}");
    (
        a["id"].as_str().unwrap().to_owned(),
        a["review_id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_decisions_one_wins() {
    let app = Arc::new(TestApp::spawn().await);
    app.put_policy(REFUND_POLICY).await;
    let mut tally = Tally::new("concurrent decisions on one review");
    for round in 0..rounds() {
        let (aid, rid) = held_refund(&app, (round % 400) as i64 + 1).await;
        let results = race(&app, 20, |app, i| {
            let rid = rid.clone();
            async move {
                let token = if i % 2 == 0 {
                    app.ann.clone()
                } else {
                    app.bob.clone()
                };
                let verdict = if (i + round) % 4 < 2 {
                    "approve"
                } else {
                    "reject"
                };
                let (s, body) = app.decide(&token, &rid, json!({"verdict": verdict})).await;
                (s, verdict, body)
            }
        })
        .await;
        let statuses: Vec<StatusCode> = results.iter().map(|r| r.0).collect();
        let ok = count(&statuses, StatusCode::OK);
        let conflict = count(&statuses, StatusCode::CONFLICT);
        assert_eq!(
            ok, 1,
            "round {round}: exactly one decision wins: {statuses:?}"
        );
        assert_eq!(
            conflict, 19,
            "round {round}: the rest are conflicts: {statuses:?}"
        );
        tally.round(ok, conflict);

        let (_, verdict, winner) = results.iter().find(|r| r.0 == StatusCode::OK).unwrap();
        let want = if *verdict == "approve" {
            "approved"
        } else {
            "rejected"
        };
        assert_eq!(winner["outcome"], want, "{winner}");
        assert_eq!(app.action(&aid).await["status"], want);

        let (_, r) = app
            .send(app.get(&format!("/v1/reviews/{rid}"), &app.ann))
            .await;
        assert_eq!(r["decisions"].as_array().unwrap().len(), 1, "{r}");

        let events = all_events(&app).await;
        let decided = events_of(&events, "review.decided", &format!("review:{rid}")).len();
        let action_decided = events_of(&events, "action.decided", &format!("action:{aid}")).len();
        assert_eq!(decided, 1, "round {round}");
        assert_eq!(action_decided, 1, "round {round}");
    }
    tally.report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_approvals_of_a_four_eyes_review() {
    let app = Arc::new(TestApp::spawn().await);
    app.put_policy(REFUND_POLICY).await;
    let (aid, rid) = held_refund(&app, 900).await;

    let results = race(&app, 20, |app, i| {
        let rid = rid.clone();
        async move {
            let (who, token) = if i % 2 == 0 {
                ("ann", app.ann.clone())
            } else {
                ("bob", app.bob.clone())
            };
            let (s, _) = app
                .decide(&token, &rid, json!({"verdict": "approve"}))
                .await;
            (who, s)
        }
    })
    .await;
    let statuses: Vec<StatusCode> = results.iter().map(|r| r.1).collect();
    let ok = count(&statuses, StatusCode::OK);
    println!(
        "20 concurrent four-eyes approvals: {ok} x 200, {} x 409",
        count(&statuses, StatusCode::CONFLICT)
    );
    assert_eq!(ok, 2, "one approval from each reviewer: {results:?}");
    assert_eq!(count(&statuses, StatusCode::CONFLICT), 18, "{results:?}");
    let winners: HashSet<&str> = results
        .iter()
        .filter(|r| r.1 == StatusCode::OK)
        .map(|r| r.0)
        .collect();
    assert_eq!(winners, HashSet::from(["ann", "bob"]));

    let a = app.action(&aid).await;
    assert_eq!(a["status"], "approved");
    let events = all_events(&app).await;
    assert_eq!(
        events_of(&events, "review.decided", &format!("review:{rid}")).len(),
        1
    );
    assert_eq!(
        events_of(
            &events,
            "review.approval_recorded",
            &format!("review:{rid}")
        )
        .len(),
        1
    );
    assert_eq!(
        events_of(&events, "action.decided", &format!("action:{aid}")).len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_next_hands_out_every_review_exactly_once() {
    let app = Arc::new(TestApp::spawn().await);
    app.put_policy(REFUND_POLICY).await;
    const REVIEWS: usize = 50;
    const TASKS_PER_REVIEWER: usize = 8;

    let submitted = join_all((0..REVIEWS).map(|i| held_refund(&app, i as i64 + 1))).await;
    let want: HashSet<String> = submitted.into_iter().map(|(_, rid)| rid).collect();
    assert_eq!(want.len(), REVIEWS);

    // Each task takes reviews with `next` and decides them until the queue is empty.
    let taken = race(&app, 2 * TASKS_PER_REVIEWER, |app, i| async move {
        let (who, token) = if i % 2 == 0 {
            ("ann", app.ann.clone())
        } else {
            ("bob", app.bob.clone())
        };
        let mut got = Vec::new();
        loop {
            let (s, r) = app.send(app.post("/v1/reviews/next", &token)).await;
            if s == StatusCode::NO_CONTENT {
                return got;
            }
            assert_eq!(s, StatusCode::OK, "{r}");
            assert_eq!(r["claimed_by"], who, "{r}");
            let rid = r["id"].as_str().unwrap().to_owned();
            let (s, d) = app
                .decide(&token, &rid, json!({"verdict": "approve"}))
                .await;
            assert_eq!(
                s,
                StatusCode::OK,
                "the claimant's decision must succeed: {d}"
            );
            got.push((who, rid));
        }
    })
    .await;

    let all: Vec<(&str, String)> = taken.into_iter().flatten().collect();
    let mut per_reviewer: BTreeMap<&str, usize> = BTreeMap::new();
    for (who, _) in &all {
        *per_reviewer.entry(who).or_default() += 1;
    }
    let distinct: HashSet<String> = all.iter().map(|(_, r)| r.clone()).collect();
    println!(
        "{} reviews handed out by racing next ({} distinct), per reviewer {per_reviewer:?}",
        all.len(),
        distinct.len()
    );
    assert_eq!(all.len(), REVIEWS, "each review handed out exactly once");
    assert_eq!(distinct, want);

    let events = all_events(&app).await;
    let claimed = events
        .iter()
        .filter(|e| e["type"] == "review.claimed")
        .count();
    let decided = events
        .iter()
        .filter(|e| e["type"] == "review.decided")
        .count();
    println!("review.claimed events: {claimed}, review.decided events: {decided}");
    assert_eq!(claimed, REVIEWS);
    assert_eq!(decided, REVIEWS);
    let open = all_reviews(&app, None).await;
    assert!(open.iter().all(|r| r["status"] == "decided"), "{open:?}");
}

/// Twenty reviewer keys of the default workspace, named `reviewer-0`...
async fn reviewers(app: &TestApp, n: usize) -> Arc<Vec<(String, String)>> {
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("reviewer-{i}");
        let token = app.key("default", &name, Role::Reviewer).await;
        out.push((name, token));
    }
    Arc::new(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_of_one_review_one_wins() {
    let app = Arc::new(TestApp::spawn().await);
    app.put_policy(REFUND_POLICY).await;
    const N: usize = 20;
    let tokens = reviewers(&app, N).await;
    let mut tally = Tally::new("concurrent claims of one review");
    for round in 0..rounds() {
        let (_, rid) = held_refund(&app, (round % 400) as i64 + 1).await;
        let results = race(&app, N, |app, i| {
            let (rid, tokens) = (rid.clone(), tokens.clone());
            async move {
                app.send(app.post(&format!("/v1/reviews/{rid}/claim"), &tokens[i].1))
                    .await
            }
        })
        .await;
        let statuses: Vec<StatusCode> = results.iter().map(|r| r.0).collect();
        let ok = count(&statuses, StatusCode::OK);
        let conflict = count(&statuses, StatusCode::CONFLICT);
        assert_eq!(ok, 1, "round {round}: {statuses:?}");
        assert_eq!(conflict, N - 1, "round {round}: {statuses:?}");
        tally.round(ok, conflict);

        let winner = &results.iter().find(|r| r.0 == StatusCode::OK).unwrap().1;
        let (_, r) = app
            .send(app.get(&format!("/v1/reviews/{rid}"), &app.ann))
            .await;
        assert_eq!(r["status"], "claimed");
        assert_eq!(r["claimed_by"], winner["claimed_by"], "{r}");
        let events = all_events(&app).await;
        assert_eq!(
            events_of(&events, "review.claimed", &format!("review:{rid}")).len(),
            1
        );
    }
    tally.report();
}

/// Each round, `N` reviewers call `next` at once on a queue holding `K` reviews: exactly `K`
/// win, each with a different review, and the rest get 204.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_next_hands_each_review_to_one_reviewer() {
    let app = Arc::new(TestApp::spawn().await);
    app.put_policy(REFUND_POLICY).await;
    const N: usize = 20;
    const K: usize = 3;
    let tokens = reviewers(&app, N).await;
    let mut tally = Tally::new("concurrent next on a queue");
    for round in 0..rounds() {
        let mut want = HashSet::new();
        for k in 0..K {
            want.insert(
                held_refund(&app, ((round * K + k) % 400) as i64 + 1)
                    .await
                    .1,
            );
        }
        let results = race(&app, N, |app, i| {
            let tokens = tokens.clone();
            async move {
                let (s, r) = app
                    .send(app.post("/v1/reviews/next?queue=finance", &tokens[i].1))
                    .await;
                (i, s, r)
            }
        })
        .await;
        let statuses: Vec<StatusCode> = results.iter().map(|r| r.1).collect();
        let ok = count(&statuses, StatusCode::OK);
        let empty = count(&statuses, StatusCode::NO_CONTENT);
        assert_eq!(ok, K, "round {round}: one winner per review: {statuses:?}");
        assert_eq!(empty, N - K, "round {round}: {statuses:?}");
        tally.round(ok, empty);
        let handed: HashSet<String> = results
            .iter()
            .filter(|r| r.1 == StatusCode::OK)
            .map(|r| {
                assert_eq!(r.2["claimed_by"], tokens[r.0].0.as_str(), "{}", r.2);
                r.2["id"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(handed, want, "round {round}: each review handed out once");
        // The winners decide, so the queue is empty for the next round.
        for (i, _, r) in results.iter().filter(|r| r.1 == StatusCode::OK) {
            let rid = r["id"].as_str().unwrap();
            let (s, d) = app
                .decide(&tokens[*i].1, rid, json!({"verdict": "approve"}))
                .await;
            assert_eq!(s, StatusCode::OK, "{d}");
        }
    }
    let events = all_events(&app).await;
    let claimed = events
        .iter()
        .filter(|e| e["type"] == "review.claimed")
        .count();
    assert_eq!(
        claimed, tally.winners,
        "one claim event per review handed out"
    );
    tally.report();
}

/// Each round, twenty reviewers take over one conversation at once (from `ai`, or from `waiting`
/// where the escalation must be answered once): one wins, the rest get 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_takeovers_of_one_conversation_one_wins() {
    let app = Arc::new(TestApp::spawn().await);
    const N: usize = 20;
    let tokens = reviewers(&app, N).await;
    let mut tally = Tally::new("concurrent takeovers of one conversation");
    for round in 0..rounds() {
        let (s, c) = app
            .send(app.post("/v1/conversations", &app.agent).json(&json!({})))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        let cid = c["id"].as_str().unwrap().to_owned();
        let escalated = round % 2 == 1;
        if escalated {
            let (s, b) = app
                .send(app.post(&format!("/v1/conversations/{cid}/escalate"), &app.agent))
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
        let results = race(&app, N, |app, i| {
            let (cid, tokens) = (cid.clone(), tokens.clone());
            async move {
                let (s, _) = app
                    .send(app.post(&format!("/v1/conversations/{cid}/takeover"), &tokens[i].1))
                    .await;
                (i, s)
            }
        })
        .await;
        let statuses: Vec<StatusCode> = results.iter().map(|r| r.1).collect();
        let ok = count(&statuses, StatusCode::OK);
        let conflict = count(&statuses, StatusCode::CONFLICT);
        assert_eq!(
            ok, 1,
            "round {round}: exactly one takeover wins: {statuses:?}"
        );
        assert_eq!(conflict, N - 1, "round {round}: {statuses:?}");
        tally.round(ok, conflict);

        let winner = results.iter().find(|r| r.1 == StatusCode::OK).unwrap().0;
        let (_, c) = app
            .send(app.get(&format!("/v1/conversations/{cid}"), &app.ann))
            .await;
        assert_eq!(c["state"], "human", "{c}");
        assert_eq!(c["assignee"], tokens[winner].0.as_str(), "{c}");
        let events = all_events(&app).await;
        let subject = format!("conversation:{cid}");
        assert_eq!(
            events_of(&events, "conversation.taken_over", &subject).len(),
            1,
            "round {round}"
        );
        if escalated {
            let answered = events
                .iter()
                .filter(|e| e["type"] == "review.decided" && e["data"]["conversation_id"] == cid)
                .count();
            assert_eq!(
                answered, 1,
                "round {round}: the escalation is answered once"
            );
        }
    }
    tally.report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_submissions_with_one_idempotency_key_make_one_action() {
    let app = Arc::new(TestApp::spawn().await);
    app.put_policy(REFUND_POLICY).await;
    let mut tally = Tally::new("concurrent replays of one submission");
    for round in 0..rounds() {
        let key = format!("race-key-{round}");
        let body = json!({"name": "issue_refund", "arguments": {"amount": 75, "order": round}});
        let results = race(&app, 20, |app, _| {
            let (body, key) = (body.clone(), key.clone());
            async move {
                app.send(
                    app.post("/v1/actions", &app.agent)
                        .header("Idempotency-Key", key)
                        .json(&body),
                )
                .await
            }
        })
        .await;
        let statuses: Vec<StatusCode> = results.iter().map(|r| r.0).collect();
        let created = count(&statuses, StatusCode::CREATED);
        let replayed = count(&statuses, StatusCode::OK);
        let ids: HashSet<&str> = results.iter().filter_map(|r| r.1["id"].as_str()).collect();
        assert_eq!(created, 1, "round {round}: {results:?}");
        assert_eq!(replayed, 19, "round {round}: {results:?}");
        assert_eq!(
            ids.len(),
            1,
            "round {round}: all return the same action: {ids:?}"
        );
        tally.round(created, replayed);
        let review_ids: HashSet<&str> = results
            .iter()
            .filter_map(|r| r.1["review_id"].as_str())
            .collect();
        assert_eq!(review_ids.len(), 1);
    }

    let events = all_events(&app).await;
    let created_events = events
        .iter()
        .filter(|e| e["type"] == "action.created")
        .count();
    assert_eq!(created_events, tally.rounds, "one action.created per key");
    assert_eq!(all_reviews(&app, None).await.len(), tally.rounds);
    tally.report();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_racing_a_decision_one_wins() {
    let app = Arc::new(TestApp::spawn().await);
    app.put_policy(REFUND_POLICY).await;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut tally = Tally::new("cancel against a decision");
    for round in 0..rounds().max(10) as i64 {
        let (aid, rid) = held_refund(&app, round % 400 + 1).await;
        let results = race(&app, 2, |app, i| {
            let (aid, rid) = (aid.clone(), rid.clone());
            async move {
                if i == 0 {
                    app.send(app.post(&format!("/v1/actions/{aid}/cancel"), &app.agent))
                        .await
                        .0
                } else {
                    app.decide(&app.ann, &rid, json!({"verdict": "approve"}))
                        .await
                        .0
                }
            }
        })
        .await;
        let (cancel, decision) = (results[0], results[1]);
        let a = app.action(&aid).await;
        let status = a["status"].as_str().unwrap().to_owned();
        match (cancel, decision) {
            (StatusCode::OK, StatusCode::CONFLICT) => assert_eq!(status, "cancelled"),
            (StatusCode::CONFLICT, StatusCode::OK) => assert_eq!(status, "approved"),
            other => {
                panic!("round {round}: exactly one of cancel and decision must win: {other:?}")
            }
        }
        let events = all_events(&app).await;
        assert_eq!(
            events_of(&events, "action.decided", &format!("action:{aid}")).len(),
            1
        );
        *outcomes.entry(status).or_default() += 1;
        tally.round(1, 1);
    }
    println!("cancel vs decision: {outcomes:?}");
    tally.report();
}

/// The agent's view stays consistent while reviewers race: every long-poll sees the one final
/// status.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_polls_all_see_the_single_outcome() {
    let app = Arc::new(TestApp::spawn().await);
    app.put_policy(REFUND_POLICY).await;
    let (aid, rid) = held_refund(&app, 100).await;
    let pollers: Vec<_> = (0..10)
        .map(|_| {
            let req = app.get(&format!("/v1/actions/{aid}?wait=5"), &app.agent);
            tokio::spawn(async move {
                let resp = req.send().await.unwrap();
                resp.json::<Value>().await.unwrap()
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let results = race(&app, 10, |app, i| {
        let rid = rid.clone();
        async move {
            let token = if i % 2 == 0 {
                app.ann.clone()
            } else {
                app.bob.clone()
            };
            let verdict = if i < 5 { "approve" } else { "reject" };
            app.decide(&token, &rid, json!({"verdict": verdict}))
                .await
                .0
        }
    })
    .await;
    assert_eq!(count(&results, StatusCode::OK), 1, "{results:?}");
    let final_status = app.action(&aid).await["status"].clone();
    for p in join_all(pollers).await {
        let seen = p.unwrap();
        assert_eq!(seen["status"], final_status, "{seen}");
    }
}
