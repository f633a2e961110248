//! Exports over HTTP: `GET /v1/admin/export` (admin token) and the helper the console's download
//! uses, [`zip_body`], which streams a zip as the export is produced, with bounded memory.

use std::io::Write;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use followup_domain::ids::RecordId;
use followup_domain::protocol::ErrorCode;

use super::{run, Definitions, ExportError, ExportFormat, ExportPlan, ExportRequest, ZipSink};
use crate::error::ApiError;
use crate::export::source::StorageSource;
use crate::storage::Storage;

/// Bytes per chunk sent to the client.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the export thread and the connection.
const IN_FLIGHT: usize = 8;

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Forbidden(m) => ApiError::forbidden(ErrorCode::Forbidden, m),
            ExportError::BadRequest(m) => ApiError::bad_request(m),
            ExportError::NotFound(m) => ApiError::not_found(ErrorCode::NotFound, m),
            ExportError::Storage(e) => e.into(),
            other => ApiError::internal("export", other),
        }
    }
}

/// The query of `GET /v1/admin/export`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ExportQuery {
    pub format: String,
    #[serde(default)]
    pub clinic: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub identified: Option<bool>,
}

impl ExportQuery {
    /// The request it asks for, or what is wrong with it.
    pub fn request(&self) -> Result<ExportRequest, ApiError> {
        let format = ExportFormat::from_code(&self.format).ok_or_else(|| {
            ApiError::bad_request(format!("unknown format {:?}: use csv or fhir", self.format))
        })?;
        let clinic = match self.clinic.as_deref().filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => Some(
                c.parse::<RecordId>()
                    .map_err(|e| ApiError::bad_request(e.to_string()))?,
            ),
        };
        let since =
            match self.since.as_deref().filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => Some(chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(
                    |_| ApiError::bad_request(format!("since {s:?} is not a date YYYY-MM-DD")),
                )?),
            };
        Ok(ExportRequest {
            format,
            clinic,
            since,
            identified: self.identified.unwrap_or(false),
        })
    }
}

/// Sends what the zip writer produces to the connection in chunks; a closed connection is a
/// write error, which stops the export.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The zip of an authorized export (see [`super::begin_export`]) as a response body, produced on
/// a blocking thread while it is sent. If the export fails half-way the body ends with an error
/// (the client sees a broken download, and the zip has no README, which is written last).
pub fn zip_body(storage: Arc<dyn Storage>, defs: Arc<dyn Definitions>, plan: ExportPlan) -> Body {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let mut sink = ZipSink::new(writer, &plan.folder_name());
        match run(
            &StorageSource::new(storage.as_ref()),
            defs.as_ref(),
            &plan,
            &mut sink,
        ) {
            Ok(summary) => tracing::info!(records = ?summary.records, "export finished"),
            Err(e) => {
                tracing::warn!(error = %e, "export failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// `Content-Disposition` for an export's zip.
pub fn content_disposition(plan: &ExportPlan) -> String {
    format!("attachment; filename=\"{}.zip\"", plan.folder_name())
}

/// The status of a refused export.
pub fn status_of(e: &ExportError) -> StatusCode {
    match e {
        ExportError::Forbidden(_) => StatusCode::FORBIDDEN,
        ExportError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ExportError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
