//! Errors in Coffer's native envelope:
//! `{"success": false, "error": {"code": "UNAUTHORIZED", "message": "…"}}`.
//!
//! Codes are stable; messages are for people, and never carry a URL whole (see
//! [`coffer_core::redact`]). Internal failures answer an opaque 500; their cause chain travels
//! with the response ([`ErrorLog`]) and is logged once, by [`log_errors`], inside the request's
//! span.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// The cause chain of an internal failure, logged but never answered.
    cause: Option<String>,
}

/// What [`log_errors`] logs about an error answer: its code and, for an internal failure, its
/// cause chain (URLs redacted).
#[derive(Debug, Clone)]
pub struct ErrorLog {
    code: &'static str,
    cause: Option<String>,
}

/// Logs each error answer once: internal failures at `error` with their cause chain, refusals
/// at `debug` with their code.
pub async fn log_errors(response: axum::response::Response) -> axum::response::Response {
    if let Some(log) = response.extensions().get::<ErrorLog>() {
        let status = response.status().as_u16();
        match &log.cause {
            Some(cause) => {
                tracing::error!(status, code = log.code, error = %cause, "internal error")
            }
            None => tracing::debug!(status, code = log.code, "request refused"),
        }
    }
    response
}

/// `error` and its sources, outermost first, joined with `: `.
fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let text = next.to_string();
        if !chain.ends_with(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = next.source();
    }
    redacted(chain)
}

/// The JSON body of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The code and message of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code, e.g. `UNAUTHORIZED`.
    pub code: &'static str,
    /// Human-readable explanation naming the offending field or header.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `message` with any URL in it redacted to scheme, host and port: error text may quote an RPC
/// endpoint, whose URL carries an API key.
fn redacted(message: String) -> String {
    match coffer_core::redact::redact_urls(&message) {
        std::borrow::Cow::Borrowed(_) => message,
        std::borrow::Cow::Owned(redacted) => redacted,
    }
}

impl ApiError {
    /// An error with an explicit status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: redacted(message.into()),
            field: None,
            cause: None,
        }
    }

    /// A 400 about one request field: the message starts with the field's name.
    pub fn field(
        code: &'static str,
        field: impl Into<String>,
        message: impl std::fmt::Display,
    ) -> Self {
        let field = field.into();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: redacted(format!("{field}: {message}")),
            field: Some(field),
            cause: None,
        }
    }

    /// Changes the HTTP status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// 401 `UNAUTHORIZED`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    /// 500 `INTERNAL_ERROR`: the cause chain is logged (once, by [`log_errors`]) but never
    /// shown.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        ApiError {
            cause: Some(cause_chain(cause)),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "internal error",
            )
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The request field at fault, when there is one.
    pub fn field_name(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            success: false,
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let log = ErrorLog {
            code: self.code,
            cause: self.cause,
        };
        let mut response = (self.status, Json(body)).into_response();
        response.extensions_mut().insert(log);
        response
    }
}

impl From<coffer_gateway::orders::OrderError> for ApiError {
    fn from(error: coffer_gateway::orders::OrderError) -> Self {
        use coffer_gateway::orders::OrderError;
        match error {
            OrderError::Invalid {
                code,
                field,
                message,
            } => ApiError::field(code, field.native_name(), message),
            OrderError::WalletNotConfigured(chain) => ApiError::field(
                "WALLET_NOT_CONFIGURED",
                "blockchain",
                format!(
                    "no deposit wallet is configured for {chain}; set one with `coffer wallet set`"
                ),
            ),
            OrderError::DuplicateNonce(nonce) => ApiError::field(
                "DUPLICATE_NONCE",
                "nonce",
                format!("{nonce} was already used"),
            )
            .with_status(StatusCode::CONFLICT),
            OrderError::IdempotencyMismatch => ApiError::field(
                "IDEMPOTENCY_KEY_REUSED",
                "Idempotency-Key",
                "was already used with a different request body",
            )
            .with_status(StatusCode::CONFLICT),
            OrderError::NotFound(id) => {
                // The numeric `id` of an order's answer is not how it is looked up.
                let hint = if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
                    ": orders are looked up by their order_id (\"ORD-…\"), not the numeric id"
                } else {
                    ""
                };
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "ORDER_NOT_FOUND",
                    format!("payment order {id} not found{hint}"),
                )
            }
            // Only families that name orders their own way send a reference.
            error @ OrderError::ReferenceTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, "ORDER_EXISTS", error.to_string())
            }
            OrderError::Store(error) => ApiError::internal(&error),
        }
    }
}
