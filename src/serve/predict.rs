//! `POST /v1/predict`: classify texts with an exported classifier pipeline. Texts are
//! tokenised here, checked against the limits, and queued for the model's batching worker.

use super::api::PredictRequest;
use super::classify::ClassifyJob;
use super::error::ApiError;
use super::routes::json;
use super::state::{refused, Served, Shared};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use reft_core::deploy::TASK_CLASSIFICATION;
use reft_core::runtime::ort::softmax;
use reft_core::task::classification::argmax;
use std::time::Instant;

pub async fn handle(State(state): State<Shared>, raw: Result<Bytes, BytesRejection>) -> Result<Json<serde_json::Value>, ApiError> {
    let req: PredictRequest = json(&state, raw)?;
    state.require_ready()?;
    let model = state.model(req.model.as_deref(), TASK_CLASSIFICATION, "POST /v1/predict")?;
    let Served::Classifier(clf) = &model.served else { unreachable!("model() checked the task") };
    let limits = state.limits;
    if req.inputs.is_empty() {
        return Err(ApiError::bad_request("`inputs` is empty: give at least one text").with_param("inputs"));
    }
    if req.inputs.len() > limits.max_texts {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} texts in `inputs`: over the --max-texts limit of {} per request", req.inputs.len(), limits.max_texts),
        )
        .with_param("inputs"));
    }
    // Tokenise, refusing texts over --max-input-tokens; longer than the pipeline's
    // max_length (what it was trained and exported with) is truncated as `reft infer`
    // truncates, and the response says so.
    let max_length = clf.spec.max_length;
    let mut rows = Vec::with_capacity(req.inputs.len());
    let mut counts = Vec::with_capacity(req.inputs.len());
    for (i, text) in req.inputs.iter().enumerate() {
        let ids = clf.tokenizer.encode(text, None).map_err(|e| ApiError::bad_request(format!("inputs[{i}]: {e}")).with_param(format!("inputs[{i}]")))?;
        if ids.len() > limits.max_input_tokens {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("inputs[{i}] has {} tokens: over the --max-input-tokens limit of {}", ids.len(), limits.max_input_tokens),
            )
            .with_param(format!("inputs[{i}]")));
        }
        counts.push(ids.len());
        rows.push(if ids.len() > max_length {
            clf.tokenizer.encode(text, Some(max_length)).map_err(|e| ApiError::internal(format!("inputs[{i}]: {e}")))?
        } else {
            ids
        });
    }
    let (reply, rx) = tokio::sync::oneshot::channel();
    clf.queue.try_push(ClassifyJob { rows, reply, queued_at: Instant::now() }).map_err(|r| refused(&model.name, r))?;
    let logits = match rx.await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return Err(ApiError::internal(format!("`{}` failed on this request: {e}", model.name))),
        Err(_) => return Err(ApiError::internal(format!("`{}`'s worker stopped before answering", model.name))),
    };
    let labels = &clf.spec.labels;
    let predictions: Vec<serde_json::Value> = logits
        .iter()
        .zip(&counts)
        .map(|(l, &tokens)| {
            let p = softmax(l);
            let probabilities: serde_json::Map<String, serde_json::Value> = labels.iter().zip(&p).map(|(n, v)| (n.clone(), serde_json::json!(v))).collect();
            serde_json::json!({
                "label": labels[argmax(&p)],
                "probabilities": probabilities,
                "model": model.name,
                "tokens": tokens.min(max_length),
                "truncated": tokens > max_length,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "model": model.name, "predictions": predictions })))
}
