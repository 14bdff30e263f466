//! Arbitrary bytes as the body (or query string) of each API request, through the same parsing
//! the handlers use (`parse_json` into the request types, `parse_query`, the policy text, the
//! webhook checks): never a panic, and every rejection is a 4xx naming a field, whose JSON body
//! renders.
//!
//! The first byte picks the request; the rest is the body.

#![no_main]

use axum::response::IntoResponse;
use libfuzzer_sys::fuzz_target;
use loopgate_domain::policy::Policy;
use loopgate_server::error::ApiError;
use loopgate_server::extract::parse_json;
use loopgate_server::http::parse_query;
use loopgate_server::http::{
    accounts, actions, admin, conversations, events, pauses, reviews, stats, webhooks,
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let result: Result<(), ApiError> = match which % 20 {
        0 => parse_json::<actions::SubmitAction>(body).map(drop),
        1 => parse_json::<reviews::DecisionBody>(body).map(drop),
        2 => parse_json::<conversations::PostMessage>(body).map(drop),
        3 => parse_json::<conversations::FeedbackBody>(body).map(drop),
        4 => parse_json::<conversations::NewConversation>(body).map(drop),
        5 => parse_json::<conversations::TransitionBody>(body).map(drop),
        6 => parse_json::<webhooks::NewWebhookBody>(body).and_then(|b| {
            webhooks::new_webhook(
                "ws",
                "admin:fuzz",
                &b.url,
                b.secret.as_deref(),
                b.events,
                b.format.as_deref(),
            )
            .map(drop)
        }),
        7 => parse_json::<pauses::PauseBody>(body).map(drop),
        8 => parse_json::<pauses::ResumeBody>(body).map(drop),
        9 => parse_json::<accounts::NewKeyBody>(body).map(drop),
        10 => parse_json::<accounts::NewUserBody>(body).map(drop),
        11 => {
            // PUT /v1/policy: UTF-8 text, then the policy parser.
            match std::str::from_utf8(body) {
                Ok(text) => {
                    let _ = Policy::parse(text);
                    Ok(())
                }
                Err(_) => Ok(()),
            }
        }
        q => match std::str::from_utf8(body) {
            Err(_) => Ok(()),
            Ok(query) => {
                let raw = Some(query);
                match q {
                    12 => parse_query::<actions::WaitQuery>(raw).map(drop),
                    13 => parse_query::<reviews::ListQuery>(raw).map(drop),
                    14 => parse_query::<reviews::NextQuery>(raw).map(drop),
                    15 => parse_query::<conversations::ListQuery>(raw).map(drop),
                    16 => parse_query::<admin::AuditQuery>(raw).map(drop),
                    17 => parse_query::<stats::StatsQuery>(raw).map(drop),
                    18 => parse_query::<webhooks::DeliveriesQuery>(raw).map(drop),
                    _ => parse_query::<events::StreamQuery>(raw).map(drop),
                }
            }
        },
    };
    if let Err(e) = result {
        assert!(e.status.is_client_error(), "{:?}", e);
        assert!(e.field.is_some(), "a rejection names its field: {:?}", e);
        let response = e.into_response();
        assert!(response.status().is_client_error());
    }
});
