//! Exactly-once under concurrency: many clients racing for the same review, the same queue, the
//! same idempotency key. Each test runs on a multi-threaded runtime and releases its requests
//! together through a barrier. Run with `--nocapture` to see the counts.

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
    let (aid, rid) = held_refund(&app, 100).await;

    let results = race(&app, 20, |app, i| {
        let rid = rid.clone();
        async move {
            let token = if i % 2 == 0 {
                app.ann.clone()
            } else {
                app.bob.clone()
            };
            let verdict = if i % 4 < 2 { "approve" } else { "reject" };
            let (s, body) = app.decide(&token, &rid, json!({"verdict": verdict})).await;
            (s, verdict, body)
        }
    })
    .await;
    let statuses: Vec<StatusCode> = results.iter().map(|r| r.0).collect();
    let ok = count(&statuses, StatusCode::OK);
    let conflict = count(&statuses, StatusCode::CONFLICT);
    println!("20 concurrent decisions: {ok} x 200, {conflict} x 409");
    assert_eq!(ok, 1, "exactly one decision wins: {statuses:?}");
    assert_eq!(conflict, 19, "the rest are conflicts: {statuses:?}");

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
    println!("review.decided events: {decided}, action.decided events: {action_decided}");
    assert_eq!(decided, 1);
    assert_eq!(action_decided, 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_of_one_review_one_wins() {
    let app = Arc::new(TestApp::spawn().await);
    app.put_policy(REFUND_POLICY).await;
    let (_, rid) = held_refund(&app, 100).await;
    const N: usize = 20;
    let mut tokens = Vec::new();
    for i in 0..N {
        tokens.push(
            app.key("default", &format!("reviewer-{i}"), Role::Reviewer)
                .await,
        );
    }
    let tokens = Arc::new(tokens);

    let results = race(&app, N, |app, i| {
        let (rid, tokens) = (rid.clone(), tokens.clone());
        async move {
            app.send(app.post(&format!("/v1/reviews/{rid}/claim"), &tokens[i]))
                .await
        }
    })
    .await;
    let statuses: Vec<StatusCode> = results.iter().map(|r| r.0).collect();
    let ok = count(&statuses, StatusCode::OK);
    let conflict = count(&statuses, StatusCode::CONFLICT);
    println!("{N} concurrent claims by {N} reviewers: {ok} x 200, {conflict} x 409");
    assert_eq!(ok, 1, "{statuses:?}");
    assert_eq!(conflict, N - 1, "{statuses:?}");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_submissions_with_one_idempotency_key_make_one_action() {
    let app = Arc::new(TestApp::spawn().await);
    app.put_policy(REFUND_POLICY).await;
    let body = json!({"name": "issue_refund", "arguments": {"amount": 75, "order": "B2"}});

    let results = race(&app, 20, |app, _| {
        let body = body.clone();
        async move {
            app.send(
                app.post("/v1/actions", &app.agent)
                    .header("Idempotency-Key", "race-key")
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
    println!(
        "20 concurrent submissions, one key: {created} x 201, {replayed} x 200, {} distinct ids",
        ids.len()
    );
    assert_eq!(created, 1, "{results:?}");
    assert_eq!(replayed, 19, "{results:?}");
    assert_eq!(ids.len(), 1, "all return the same action: {ids:?}");
    let review_ids: HashSet<&str> = results
        .iter()
        .filter_map(|r| r.1["review_id"].as_str())
        .collect();
    assert_eq!(review_ids.len(), 1);

    let events = all_events(&app).await;
    let created_events = events
        .iter()
        .filter(|e| e["type"] == "action.created")
        .count();
    println!("action.created events: {created_events}");
    assert_eq!(created_events, 1);
    assert_eq!(all_reviews(&app, None).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_racing_a_decision_one_wins() {
    let app = Arc::new(TestApp::spawn().await);
    app.put_policy(REFUND_POLICY).await;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for round in 0..10 {
        let (aid, rid) = held_refund(&app, round + 1).await;
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
    }
    println!("cancel vs decision, 10 rounds: {outcomes:?}");
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
