//! The parts of the OpenAPI document not written next to a handler: the document's
//! head and the error responses shared by many routes.

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Object, Ref, RefOr, Type};
use utoipa::{IntoResponses, OpenApi};

use crate::problem::PROBLEM_JSON;

/// The head of the document; paths and their schemas are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Conversations",
        description = "Multi-session AI-agent conversations: create, list, rename, pin, archive and \
            delete conversations of a scope, append messages, read the context window, stream \
            a model's reply as Server-Sent Events, search, export and import conversations \
            as JSON Lines and act on many at once. Every error is an RFC 9457 problem document \
            (`application/problem+json`) with a stable `code`.",
    ),
    components(schemas(
        conversation_core::ArchivedFilter,
        conversation_core::MessageView,
        crate::Problem,
        crate::ReplyStreamEvent,
        crate::StoredMessage,
        crate::ReplyDelta,
        crate::RunFinished,
        conversation_core::Run,
        conversation_core::ToolCall,
    )),
    tags(
        (name = "conversations", description = "Conversations of a scope"),
        (name = "messages", description = "Messages and the context window"),
        (name = "runs", description = "Agent runs: replies with their tool loop, events, stop"),
        (name = "lifecycle", description = "Export and import as JSON Lines, bulk actions"),
        (name = "meta", description = "This document"),
    )
)]
pub(crate) struct ApiDoc;

/// A problem response with `description`.
pub(crate) fn problem_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    )
}

fn entry(status: u16, response: ResponseBuilder) -> (String, RefOr<Response>) {
    (status.to_string(), RefOr::T(response.build()))
}

/// The errors of every route under `/{scope}`: 400, 401, 403, 404, 500, 503.
pub(crate) struct ScopeErrors;

impl IntoResponses for ScopeErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            entry(
                400,
                problem_response(
                    "A path or query parameter does not parse (`invalid_parameter`), the body is \
                     not JSON (`invalid_json`) or not of the documented shape (`invalid_body`), \
                     or a header is malformed (`invalid_header`).",
                ),
            ),
            entry(
                401,
                problem_response("The host's authorizer wants credentials (`unauthorized`).")
                    .header(
                        "WWW-Authenticate",
                        HeaderBuilder::new()
                            .schema(Some(Object::with_type(Type::String)))
                            .description(Some("The challenge, when the authorizer gives one."))
                            .build(),
                    ),
            ),
            entry(
                403,
                problem_response(
                    "The host's authorizer refuses this caller (`forbidden`), the `Host` is not \
                     one the server answers to (`host_not_allowed`), or a write comes from a \
                     page of another site (`cross_origin_refused`).",
                ),
            ),
            entry(
                404,
                problem_response(
                    "No such conversation in this scope (`not_found`); a conversation of \
                     another scope is reported alike.",
                ),
            ),
            entry(
                500,
                problem_response(
                    "A fault of the store or the model (`internal_error`); the cause is logged, \
                     not sent.",
                ),
            ),
            entry(
                503,
                problem_response(
                    "A transient failure (`unavailable`), a request that took too long \
                     (`timeout`) or, for message pages and the context window, too many large \
                     reads at once (`busy`); retry after `Retry-After` seconds.",
                )
                .header(
                    "Retry-After",
                    HeaderBuilder::new()
                        .schema(Some(Object::with_type(Type::Integer)))
                        .description(Some("Seconds to wait before retrying."))
                        .build(),
                ),
            ),
        ])
    }
}

/// The errors of a route that reads a JSON body: 413, 415, 422.
pub(crate) struct BodyErrors;

impl IntoResponses for BodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([
            entry(
                413,
                problem_response("The body exceeds the size limit (`payload_too_large`)."),
            ),
            entry(
                415,
                problem_response(
                    "The body is not sent as `application/json` (`unsupported_media_type`).",
                ),
            ),
            entry(
                422,
                problem_response(
                    "Well-formed input that breaks a rule (`invalid_input`, with `field`): too \
                     long, a NUL character, an empty title, a tool message without \
                     `toolCallId`, too many messages.",
                ),
            ),
        ])
    }
}
