//! The HTTP routes, and the middleware every request passes: a request id, the route's
//! counters and latency, one log line, and a 500 (never a dropped connection) if a handler
//! panics.

use super::error::{parse_json, ApiError};
use super::predict;
use super::completions;
use super::state::Shared;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub const REQUEST_ID: &str = "x-request-id";

pub fn router(state: Shared) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/predict", post(predict::handle))
        .route("/v1/completions", post(completions::completion))
        .route("/v1/chat/completions", post(completions::chat))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The body of a POST, or the error that says why it could not be read (413 past
/// `--max-body-bytes`).
pub fn body(state: &Shared, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over the --max-body-bytes limit of {} bytes", state.limits.max_body_bytes),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

/// Parse a POST body into `T`.
pub fn json<T: serde::de::DeserializeOwned>(state: &Shared, raw: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    parse_json(&body(state, raw)?)
}

async fn health(State(state): State<Shared>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, Json(serde_json::json!({ "status": "ready", "models": state.models.len() }))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "loading" }))).into_response()
    }
}

async fn metrics(State(state): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}

async fn models(State(state): State<Shared>) -> Json<serde_json::Value> {
    let data: Vec<serde_json::Value> = state
        .models
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.name,
                "object": "model",
                "created": m.created,
                "owned_by": "reft",
                "task": m.task(),
                "ready": state.is_ready(),
            })
        })
        .collect();
    Json(serde_json::json!({ "object": "list", "data": data }))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {}: the routes are GET /health, /metrics, /v1/models and POST /v1/predict, /v1/completions, /v1/chat/completions",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not allowed on {}", req.method(), req.uri().path()))
}

/// A request id: the client's `x-request-id` when it is short and printable, else a new one.
fn request_id(req: &Request) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let given = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok());
    match given {
        Some(id) if !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic()) => id.to_string(),
        _ => format!("{:x}-{}", super::process_tag(), NEXT.fetch_add(1, Ordering::Relaxed)),
    }
}

async fn observe(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_string();
    let id = request_id(&req);
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let mut response = AssertUnwindSafe(next.run(req)).catch_unwind().await.unwrap_or_else(|_| {
        tracing::error!(request_id = %id, "handler panicked");
        ApiError::internal("the server hit a bug handling this request (see its log)").into_response()
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let status = response.status().as_u16();
    let secs = start.elapsed().as_secs_f64();
    state.metrics.requests.with_label_values(&[route.as_str(), &status.to_string()]).inc();
    state.metrics.latency.with_label_values(&[route.as_str()]).observe(secs);
    tracing::info!(request_id = %id, %method, path, status, ms = secs * 1e3, "request");
    response
}
