//! HTTP errors: a status code and a JSON [`ErrorBody`] on every route.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use followup_domain::protocol::{ErrorBody, ErrorCode, ProtocolError};

use crate::storage::StorageError;

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody::new(code, message),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }
    pub fn unauthenticated(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, message)
    }
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, context, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("internal server error ({context}); retry later"),
        )
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Busy => {
                tracing::warn!("database busy");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the registry is busy; retry shortly",
                )
            }
            other => ApiError::internal("storage", other),
        }
    }
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::UnsupportedVersion { got, supported } => ApiError {
                status: StatusCode::UPGRADE_REQUIRED,
                body: ErrorBody {
                    code: ErrorCode::UnsupportedVersion,
                    message: format!(
                        "protocol version {got} is not supported by this registry (it speaks {supported:?}); update the app"
                    ),
                    supported_versions: Some(supported),
                    received: None,
                    length: None,
                },
            },
            ProtocolError::TooLarge { .. } => ApiError::too_large(e.to_string()),
            ProtocolError::Encode(_) => ApiError::internal("encode", e),
            ProtocolError::Decompress(_) | ProtocolError::Decode(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedBody, e.to_string())
            }
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal("worker task", e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
