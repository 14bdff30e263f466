//! Completes the OpenAPI document with the error responses that every route gives by the way it
//! is built, so that each operation lists all its statuses (schemathesis checks that no response
//! is undocumented) without every annotation repeating them:
//! - a route with `security` (a bearer token): 401 without a valid token, 429 when the caller is
//!   rate limited, 503 when the database cannot be reached;
//! - a route with a request body: 400 (not JSON, or not UTF-8), 413 (over the body limit),
//!   422 (a field is wrong);
//! - a route with path or query parameters: 400 (a malformed id or query string).
//!
//! What depends on the route (403 for a role, 404 for an id, 409 for a state) stays in its
//! `#[utoipa::path]` annotation. A status an annotation already documents is left as it is.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// Adds the route-independent error responses to every operation of `doc`.
pub fn complete(doc: &mut OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            complete_operation(operation);
        }
    }
}

fn complete_operation(operation: &mut Operation) {
    let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = operation.request_body.is_some();
    let has_params = operation
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p.parameter_in, ParameterIn::Path | ParameterIn::Query));
    if secured {
        add(operation, "401", "No valid bearer token");
        add(
            operation,
            "429",
            "Too many requests; retry after `Retry-After` seconds",
        );
        add(operation, "503", "The database is unavailable; retry later");
    }
    if has_body {
        add(
            operation,
            "400",
            "The body is not valid JSON (or not UTF-8 text)",
        );
        add(
            operation,
            "413",
            "The body is larger than the server accepts",
        );
        add(
            operation,
            "422",
            "A field is missing or invalid; `field` names it",
        );
    }
    if has_params {
        add(
            operation,
            "400",
            "A malformed id or query string; `field` names it",
        );
    }
}

fn add(operation: &mut Operation, status: &str, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        });
}
