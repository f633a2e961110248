//! The transport of protocol version 3 ("Version 3" in `docs/sync-protocol.md`): one exchange's
//! request body uploaded in pieces under its SHA-256 and continued from the offset the server
//! acknowledges, its response downloaded from any offset. Each call of
//! [`SyncClient::attempt_resumable`] is one HTTP request; the caller ([`SyncClient::sync`]) decides
//! whether to go on (it does while attempts make progress).

use super::*;

/// Header carrying the whole length of a stored response (`GET` answers from an offset).
const RESPONSE_LENGTH: &str = protocol::RESPONSE_LENGTH_HEADER;

/// One exchange's bytes in transit, kept across attempts.
pub(super) struct Upload {
    body: Arc<Vec<u8>>,
    hash: [u8; 32],
    hex: String,
    /// Bytes of `body` the server acknowledged holding.
    pub acked: u64,
    /// Whether the next attempt must first ask where things stand (after a cut, the device does
    /// not know what arrived).
    pub probe: bool,
    /// Response bytes received so far.
    pub resp: Vec<u8>,
    /// The response's whole length, once known.
    pub resp_total: Option<u64>,
    /// An attempt of this exchange failed: the link drops, so ask the server for short waits.
    pub dropped: bool,
}

/// Seconds the device lets the server hold a request while the exchange runs (`wait=`): long on
/// a link that has not dropped in this exchange (a slow merge is still one round trip), short
/// once it has (the answer must come back before the next drop).
const WAIT_STEADY_SECS: u64 = 40;
const WAIT_DROPPING_SECS: u64 = 2;

/// The `wait=` to ask for: never as long as the request's own timeout, or the client would give
/// up on a request the server is about to answer (`202 processing`), count it as a drop and
/// make every later request of the exchange short.
fn hold_secs(dropped: bool, timeout: std::time::Duration) -> u64 {
    let wanted = if dropped {
        WAIT_DROPPING_SECS
    } else {
        WAIT_STEADY_SECS
    };
    // Leave the answer a margin to come back within the timeout.
    let limit = timeout
        .as_secs()
        .saturating_sub(timeout.as_secs() / 4)
        .max(1);
    wanted.min(limit)
}

/// What one attempt achieved.
pub(super) enum Step {
    /// The exchange's response, complete and decoded.
    Done(SyncResponse),
    /// More requests are needed (the next piece, or the download after a probe).
    More,
}

impl Upload {
    /// The upload of one exchange: a fresh 16-byte exchange id, then the encoded request. The
    /// id makes every exchange's name unique, so an identical request made later (say, "nothing
    /// changed" at the same cursor) never gets the answer stored for an earlier one.
    pub fn new(encoded: Vec<u8>) -> Upload {
        let mut body = Vec::with_capacity(protocol::EXCHANGE_ID_LEN + encoded.len());
        body.extend_from_slice(&followup_domain::ids::random_bytes::<
            { protocol::EXCHANGE_ID_LEN },
        >());
        body.extend_from_slice(&encoded);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &body).as_ref());
        Upload {
            body: Arc::new(body),
            hex: hash.iter().map(|b| format!("{b:02x}")).collect(),
            hash,
            acked: 0,
            probe: false,
            resp: Vec::new(),
            resp_total: None,
            dropped: false,
        }
    }

    pub fn len(&self) -> u64 {
        self.body.len() as u64
    }

    /// A number that grows whenever something got through: bytes acknowledged plus response
    /// bytes received.
    pub fn mark(&self) -> u64 {
        self.acked + self.resp.len() as u64
    }

    /// Whether the next attempt is an upload (not a probe or a download).
    pub fn next_is_post(&self) -> bool {
        !self.probe && self.resp.is_empty() && self.acked < self.len()
    }

    fn show(&self, prog: &mut SyncProgress) {
        prog.upload_done = self.acked;
        prog.upload_total = self.len();
        prog.download_done = self.resp.len() as u64;
        prog.download_total = self.resp_total.unwrap_or(0);
    }
}

/// `received` from a JSON status body (202 / 409).
fn received_of(body: &[u8]) -> Option<u64> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.received)
}

impl SyncClient {
    /// One HTTP request of a version 3 exchange.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn attempt_resumable(
        &self,
        base: &str,
        device: &Device,
        enrolled: &Enrolled,
        up: &mut Upload,
        prog: &mut SyncProgress,
        progress: &(dyn Fn(SyncProgress) + Send + Sync),
        cancel: &CancelToken,
    ) -> Result<Step, Failure> {
        let download = up.probe || !up.resp.is_empty() || up.acked >= up.len();
        let wait = hold_secs(up.dropped, self.options.timeout);
        let (method, path) = if download {
            (
                "GET",
                format!(
                    "{}/{}?offset={}&wait={wait}",
                    protocol::SYNC_RESUMABLE_PATH,
                    up.hex,
                    up.resp.len()
                ),
            )
        } else {
            (
                "POST",
                format!(
                    "{}/{}?offset={}&length={}&wait={wait}",
                    protocol::SYNC_RESUMABLE_PATH,
                    up.hex,
                    up.acked,
                    up.len()
                ),
            )
        };
        let url = self.endpoint(base, &path).map_err(Failure::Fatal)?;
        let identity = device
            .identity()
            .map_err(|e| Failure::Fatal(SyncError::Config(e.to_string())))?;
        let signed =
            identity.sign_request_hashed(enrolled.device_id, method, &path, &up.hash, now_ms());
        let mut rb = if download {
            self.http.get(url)
        } else {
            let from = usize::try_from(up.acked)
                .unwrap_or(usize::MAX)
                .min(up.body.len());
            let to = from
                .saturating_add(protocol::MAX_UPLOAD_PIECE)
                .min(up.body.len());
            let piece = up.body[from..to].to_vec();
            prog.phase = SyncPhase::Sending;
            prog.bytes_sent += piece.len() as u64;
            self.http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, SYNC_CONTENT_TYPE)
                .body(piece)
        };
        rb = rb.header(reqwest::header::ACCEPT, SYNC_CONTENT_TYPE);
        for (k, v) in signed.to_header_pairs() {
            rb = rb.header(k, v);
        }
        up.show(prog);
        progress(*prog);
        let max = self.options.max_response_bytes;
        let work = async {
            let resp = rb.send().await.map_err(|e| {
                up.probe = true;
                Failure::Transient(describe(&e))
            })?;
            let status = resp.status().as_u16();
            match status {
                200 => {}
                202 | 409 => {
                    let body = read_capped(resp, MAX_ERROR_BODY, |_| {}).await?;
                    let Some(received) = received_of(&body) else {
                        return Err(Failure::Transient(format!(
                            "the server answered {status} without saying what it holds"
                        )));
                    };
                    up.acked = received.min(up.len());
                    up.probe = false;
                    up.resp.clear();
                    up.resp_total = None;
                    return Ok(Step::More);
                }
                404 => {
                    let body = read_capped(resp, MAX_ERROR_BODY, |_| {}).await?;
                    let code = serde_json::from_slice::<ErrorBody>(&body)
                        .ok()
                        .map(|b| b.code);
                    // A version 1 server: no such route.
                    if code == Some(ErrorCode::NotFound) || code.is_none() {
                        return Err(Failure::OldServer);
                    }
                    return Err(Failure::Fatal(SyncError::Server {
                        status,
                        code: format!("{code:?}"),
                        message: String::from_utf8_lossy(&body).chars().take(200).collect(),
                    }));
                }
                _ => {
                    up.probe = true;
                    return Err(error_from(resp).await);
                }
            }
            self.note_audit_head(&resp);
            // 200: the response, from our offset (a POST's answer always starts at 0).
            if !download {
                up.resp.clear();
                up.acked = up.len();
            }
            let total = resp
                .headers()
                .get(RESPONSE_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let Some(total) = total else {
                return Err(Failure::Transient(
                    "the response's length is missing".into(),
                ));
            };
            if total > max as u64 {
                return Err(Failure::Fatal(SyncError::Server {
                    status,
                    code: "too_large".into(),
                    message: format!("the response exceeds {max} bytes"),
                }));
            }
            up.resp_total = Some(total);
            prog.phase = SyncPhase::Receiving;
            up.show(prog);
            progress(*prog);
            let mut resp = resp;
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        if up.resp.len() as u64 + chunk.len() as u64 > total {
                            up.resp.clear();
                            up.probe = true;
                            return Err(Failure::Transient(
                                "the response is longer than announced".into(),
                            ));
                        }
                        up.resp.extend_from_slice(&chunk);
                        prog.bytes_received += chunk.len() as u64;
                        up.show(prog);
                        progress(*prog);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // What arrived is kept: the next attempt asks for the rest.
                        up.probe = true;
                        return Err(Failure::Transient(describe(&e)));
                    }
                }
            }
            if (up.resp.len() as u64) < total {
                up.probe = true;
                return Err(Failure::Transient("the response was cut short".into()));
            }
            let bytes = std::mem::take(&mut up.resp);
            let decoded = tokio::task::spawn_blocking(move || {
                let r = decode_sync_response(&bytes, max);
                (r, bytes)
            })
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
            match decoded {
                (Ok(r), _) => Ok(Step::Done(r)),
                (Err(protocol::ProtocolError::UnsupportedVersion { supported, .. }), _) => {
                    Err(Failure::Fatal(SyncError::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        supported,
                    }))
                }
                (Err(e), _) => {
                    // Damaged (the zstd checksum catches it): fetch it again from the start.
                    up.resp_total = None;
                    up.probe = true;
                    Err(Failure::Transient(format!("damaged response: {e}")))
                }
            }
        };
        tokio::select! {
            r = work => r,
            _ = cancel.cancelled() => Err(Failure::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_server_is_never_asked_to_hold_a_request_past_its_timeout() {
        assert_eq!(hold_secs(false, Duration::from_secs(60)), WAIT_STEADY_SECS);
        assert_eq!(hold_secs(true, Duration::from_secs(60)), WAIT_DROPPING_SECS);
        // A 30 s timeout: the server answers `processing` by 23 s, before the client gives up.
        assert_eq!(hold_secs(false, Duration::from_secs(30)), 23);
        assert_eq!(hold_secs(false, Duration::from_secs(1)), 1);
        assert_eq!(hold_secs(true, Duration::from_millis(500)), 1);
    }
}
