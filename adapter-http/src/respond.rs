//! Large JSON responses written as they are sent, not built whole first: pages of
//! items, and exports as JSON Lines.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse as _, Response};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _, stream};
use serde::Serialize;

use crate::problem::{ApiError, Problem};

/// How many bytes of serialised items make one chunk of the body.
const CHUNK_BYTES: usize = 64 * 1024;

/// The start every envelope of [`items_response`] serialises to.
const ITEMS_START: &[u8] = b"{\"items\":[";

/// A `200` JSON response for `envelope`, a document whose first member is a large
/// `items` array (a message page, a context window), written as it is sent: each item
/// is serialised when the body reaches it and dropped right after, so the response
/// never holds the page and its JSON whole at once. A page whose items fit in one
/// chunk ([`CHUNK_BYTES`]) is sent as one body with its length. The other members are
/// serialised as usual. An envelope of another shape is serialised whole.
pub(crate) fn items_response<E, T>(
    mut envelope: E,
    items_of: impl Fn(&mut E) -> &mut Vec<T>,
) -> Result<Response, ApiError>
where
    E: Serialize,
    T: Serialize + Send + 'static,
{
    let items = std::mem::take(items_of(&mut envelope));
    let rest = serde_json::to_vec(&envelope).map_err(serialisation_failed)?;
    let Some(tail) = rest.strip_prefix(b"{\"items\":[]".as_slice()) else {
        *items_of(&mut envelope) = items;
        let whole = serde_json::to_vec(&envelope).map_err(serialisation_failed)?;
        return Ok(json(Body::from(whole)));
    };
    // `]` closes the items, then the other members and `}`.
    let mut closing = Vec::with_capacity(1 + tail.len());
    closing.push(b']');
    closing.extend_from_slice(tail);
    let mut chunks = ItemChunks {
        items: items.into_iter(),
        first: true,
    };
    let first = chunks
        .next()
        .transpose()
        .map_err(serialisation_failed)?
        .unwrap_or_default();
    if chunks.items.len() == 0 {
        // A small page fits in one chunk: one body with its length, no streaming.
        let mut whole = Vec::with_capacity(ITEMS_START.len() + first.len() + closing.len());
        whole.extend_from_slice(ITEMS_START);
        whole.extend_from_slice(&first);
        whole.extend_from_slice(&closing);
        return Ok(json(Body::from(whole)));
    }
    let body = stream::iter([Ok(Bytes::from_static(ITEMS_START)), Ok(first)])
        .chain(stream::iter(chunks))
        .chain(stream::iter([Ok(Bytes::from(closing))]));
    Ok(json(Body::from_stream(body)))
}

/// The media type of an export.
pub(crate) const NDJSON: &str = "application/x-ndjson";

/// A `200` JSON Lines response (`application/x-ndjson`, `Content-Disposition:
/// attachment` as `filename`) of `lines`, written as they come: lines ready at once
/// are sent together in chunks of about [`CHUNK_BYTES`], and the next line is asked
/// for only when the connection has taken the last chunk, so a response of any size
/// holds one chunk and what `lines` holds.
///
/// The body has no length: HTTP/1.1 sends it chunked. When `lines` fails, the
/// failure is logged and the body is cut off there: HTTP/1.1 closes the connection
/// without the terminating chunk (HTTP/2 resets the stream), so a client never takes
/// a cut export for a complete one.
pub(crate) fn ndjson_response(
    lines: BoxStream<'static, conversation_core::Result<String>>,
    filename: &str,
) -> Result<Response, ApiError> {
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .map_err(|error| {
            tracing::error!(%error, "could not build a Content-Disposition header");
            ApiError::from(Problem::internal())
        })?;
    let body = Body::from_stream(Coalesced {
        lines,
        buffer: Vec::new(),
        failed: None,
        done: false,
    });
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    Ok(response)
}

/// Why a streamed body stopped before its end: what the client's connection sees
/// (the cause is in the log).
#[derive(Debug, thiserror::Error)]
#[error("the export failed midway; the cause is logged")]
pub(crate) struct CutOff;

/// Lines gathered into chunks of about [`CHUNK_BYTES`]: as many as are ready, never
/// waiting for more while some are gathered.
struct Coalesced {
    lines: BoxStream<'static, conversation_core::Result<String>>,
    buffer: Vec<u8>,
    /// The failure to report once the lines gathered before it are sent.
    failed: Option<CutOff>,
    done: bool,
}

impl Coalesced {
    fn take(&mut self) -> Option<Result<Bytes, CutOff>> {
        (!self.buffer.is_empty()).then(|| Ok(Bytes::from(std::mem::take(&mut self.buffer))))
    }
}

impl Stream for Coalesced {
    type Item = Result<Bytes, CutOff>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(this.take().or_else(|| this.failed.take().map(Err)));
            }
            if this.buffer.len() >= CHUNK_BYTES {
                return Poll::Ready(this.take());
            }
            match this.lines.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(line))) => this.buffer.extend_from_slice(line.as_bytes()),
                Poll::Ready(Some(Err(error))) => {
                    // Logs the cause, as a problem answered before the head would.
                    let problem = Problem::from_error(&error);
                    tracing::error!(
                        code = problem.code,
                        "an export failed after its head was sent; the body is cut off"
                    );
                    this.failed = Some(CutOff);
                    this.done = true;
                }
                Poll::Ready(None) => this.done = true,
                Poll::Pending => {
                    return match this.take() {
                        Some(chunk) => Poll::Ready(Some(chunk)),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }
}

fn json(body: Body) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn serialisation_failed(error: serde_json::Error) -> ApiError {
    tracing::error!(%error, "could not serialise a response");
    Problem::internal().into()
}

/// The items of a page as body chunks of about [`CHUNK_BYTES`], each item separated
/// from the previous one by a comma.
struct ItemChunks<T> {
    items: std::vec::IntoIter<T>,
    first: bool,
}

impl<T: Serialize> Iterator for ItemChunks<T> {
    type Item = Result<Bytes, serde_json::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut chunk = Vec::new();
        while chunk.len() < CHUNK_BYTES {
            let Some(item) = self.items.next() else { break };
            if !std::mem::take(&mut self.first) {
                chunk.push(b',');
            }
            if let Err(error) = serde_json::to_writer(&mut chunk, &item) {
                tracing::error!(%error, "could not serialise an item of a response");
                return Some(Err(error));
            }
        }
        (!chunk.is_empty()).then(|| Ok(Bytes::from(chunk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conversation_core::{ConversationId, MessagePage, NewMessage};

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn page(n: usize, content: &str) -> MessagePage {
        let id = ConversationId::new();
        let at = conversation_core::backend::now();
        MessagePage {
            items: (1..=n)
                .map(|seq| {
                    NewMessage::user(format!("{content} \"{seq}\"\n"))
                        .into_message(id, seq as u64, None, at)
                })
                .collect(),
            has_more: true,
        }
    }

    #[tokio::test]
    async fn a_streamed_page_is_the_json_of_the_page() {
        for (n, content) in [(0, ""), (1, "one"), (3, "x"), (40, &"long ".repeat(5000))] {
            let page = page(n, content);
            let expected = serde_json::to_value(&page).unwrap();
            let response = items_response(page, |p| &mut p.items).unwrap();
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(body_of(response).await, expected, "{n} items");
        }
    }

    #[tokio::test]
    async fn an_envelope_of_another_shape_is_serialised_whole() {
        #[derive(Serialize)]
        struct Reordered {
            first: u8,
            items: Vec<u8>,
        }
        let response = items_response(
            Reordered {
                first: 1,
                items: vec![2, 3],
            },
            |r| &mut r.items,
        )
        .unwrap();
        assert_eq!(
            body_of(response).await,
            serde_json::json!({"first": 1, "items": [2, 3]})
        );
    }
}
