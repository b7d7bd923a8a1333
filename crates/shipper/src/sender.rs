//! The sender: one tokio task that takes durable, unacknowledged records in order (from the
//! memory queue, or from the spool after a start or an overflow) and POSTs them as NDJSON
//! batches until the server acknowledges them (2xx).
//! Invariant: the cursor only moves past a batch after a 2xx for it; a failed batch is kept in
//! memory and re-sent as is (same ids), after an exponential, jittered delay; nothing is dropped.
//! The cursor file is written at most once per `cursor_every` while batches follow each other, and
//! always before the sender waits (idle, backoff) or stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::sink::Shared;
use crate::spool::{self, Batch, Chunk, SpoolReader};
use crate::{ShipperConfig, ShipperError};

/// Largest response body read from the server.
const MAX_RESPONSE: usize = 64 * 1024;
/// The sender looks at the spool at least this often even without a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(1);

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why one request did not succeed. Messages never hold the token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("audit server {url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("audit server {url}: no complete response within {} ms", timeout.as_millis())]
    Timeout { url: String, timeout: Duration },
    #[error("audit server {url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
}

impl SendError {
    /// A status that retrying alone will not fix (4xx other than 408 and 429): a misconfiguration.
    fn is_misconfiguration(&self) -> bool {
        matches!(self, SendError::Status { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429)
    }
}

/// The 2xx body: `{"accepted":n,"duplicates":m}`.
#[derive(Debug, Default, Deserialize)]
struct Ack {
    #[serde(default)]
    accepted: u64,
    #[serde(default)]
    duplicates: u64,
}

pub(crate) struct Poster {
    url: http::Uri,
    shown: String,
    auth: HeaderValue,
    /// For redacting an echo of the token from a server's error body.
    token: String,
    timeout: Duration,
    http: HttpClient,
}

impl Poster {
    pub(crate) fn new(config: &ShipperConfig) -> Result<Poster, ShipperError> {
        let url = crate::config::events_url(&config.server)?;
        let server_ca = match &config.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| ShipperError::Config(format!("cannot read ca_file {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let tls = palisade_core::net::client_tls(server_ca.as_deref())
            .map_err(|m| ShipperError::Config(format!("ca_file {m}")))?;
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        let http = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        let token = String::from_utf8(config.token.expose().to_vec())
            .map_err(|_| ShipperError::Config("token must be visible ASCII".into()))?;
        let mut auth = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| ShipperError::Config("token is not a valid header value".into()))?;
        auth.set_sensitive(true);
        Ok(Poster { shown: url.to_string(), url, auth, token, timeout: config.request_timeout, http })
    }

    async fn post(&self, body: Bytes) -> Result<Ack, SendError> {
        let url = &self.shown;
        let req = http::Request::post(self.url.clone())
            .header(CONTENT_TYPE, "application/x-ndjson")
            .header(http::header::ACCEPT, "application/json")
            .header(AUTHORIZATION, self.auth.clone())
            .body(Full::new(body))
            .map_err(|_| SendError::Transport { url: url.clone(), detail: "cannot build the request".into() })?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| SendError::Transport { url: url.clone(), detail: palisade_core::net::error_chain(&e) })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE).collect().await.map_err(|e| {
                SendError::Transport { url: url.clone(), detail: format!("reading the response body: {e}") }
            })?;
            Ok::<_, SendError>((status, body.to_bytes()))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SendError::Timeout { url: url.clone(), timeout: self.timeout })??;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let mut shown: String = text.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(200).collect();
            if shown.contains(&self.token) {
                shown = shown.replace(&self.token, "[redacted]");
            }
            return Err(SendError::Status { url: url.clone(), status: status.as_u16(), body: shown });
        }
        match serde_json::from_slice::<Ack>(&body) {
            Ok(ack) => Ok(ack),
            Err(_) => {
                // The 2xx is the acknowledgement; the counts are informational.
                tracing::warn!(url = %url, "audit server acknowledged without a {{\"accepted\",\"duplicates\"}} body");
                Ok(Ack::default())
            }
        }
    }
}

/// Exponential backoff with jitter: the n-th delay is drawn from [d/2, d], d = initial·2ⁿ capped at max.
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, current: initial }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        let half = d / 2;
        half.saturating_add(half.mul_f64(fastrand::f64()))
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// Where the sender takes its next batch from.
pub(crate) enum Source {
    /// The spool file, from the reader's position: after a start (what an earlier run left) and
    /// after the memory queue overflowed. Lines are parsed (damaged ones skipped and counted).
    Spool(SpoolReader),
    /// The memory queue: durable lines as the writer serialized them, never read back. The chunk
    /// being taken apart and the index of its next line.
    Memory(Option<(Chunk, usize)>),
}

pub(crate) struct Sender {
    pub(crate) shared: Arc<Shared>,
    pub(crate) poster: Poster,
    pub(crate) source: Source,
    /// Seq of the last record put in a batch.
    pub(crate) last: u64,
    pub(crate) max_events: u64,
    pub(crate) max_bytes: usize,
    pub(crate) backoff: Backoff,
    /// `rolls` when a clean-up last left a single segment: until another segment is created,
    /// there is nothing to delete.
    pub(crate) clean_rolls: u64,
    /// Acknowledged by the server, cursor not yet written: the last seq and the event count.
    pub(crate) unsaved: Option<(u64, u64)>,
    pub(crate) saved_at: tokio::time::Instant,
    /// How long an acknowledgement may wait for the cursor file while batches keep coming.
    pub(crate) cursor_every: Duration,
}

impl Sender {
    pub(crate) async fn run(mut self) {
        let shared = self.shared.clone();
        let dir = shared.dir.clone();
        let acked = shared.acked.load(Ordering::Acquire);
        self.cleanup(acked).await;
        let mut pending: Option<Batch> = None;
        loop {
            let batch = match pending.take() {
                Some(b) => b,
                None => {
                    // Read `writer_done` first: if the writer was done, what is found next is final.
                    let writer_done = shared.writer_done.load(Ordering::Acquire);
                    match self.next_batch().await {
                        Ok(Some(b)) => b,
                        Ok(None) => {
                            self.save_cursor().await;
                            if writer_done && shared.closing.load(Ordering::Acquire) {
                                return;
                            }
                            tokio::select! {
                                () = shared.data.notified() => {}
                                () = shared.wake.notified() => {}
                                () = tokio::time::sleep(IDLE_POLL) => {}
                            }
                            continue;
                        }
                        Err(e) => {
                            let msg = format!("reading the spool {}: {e}", dir.display());
                            tracing::error!(error = %msg, "audit shipper cannot read its spool");
                            shared.set_error(msg);
                            self.save_cursor().await;
                            self.pause().await;
                            continue;
                        }
                    }
                }
            };
            shared.sent.fetch_add(batch.count, Ordering::Relaxed);
            match self.poster.post(batch.body.clone()).await {
                Ok(ack) => {
                    if ack.accepted.saturating_add(ack.duplicates) != batch.count {
                        tracing::warn!(
                            sent = batch.count,
                            accepted = ack.accepted,
                            duplicates = ack.duplicates,
                            "audit server's counts do not add up to the batch size"
                        );
                    }
                    shared.duplicates.fetch_add(ack.duplicates, Ordering::Relaxed);
                    let (seq, count) = self.unsaved.unwrap_or((0, 0));
                    self.unsaved = Some((seq.max(batch.last_seq), count.saturating_add(batch.count)));
                    if self.saved_at.elapsed() >= self.cursor_every {
                        self.save_cursor().await;
                    }
                    self.backoff.reset();
                }
                Err(e) => {
                    if e.is_misconfiguration() {
                        tracing::error!(error = %e, events = batch.count, "audit server refused a batch (check server URL and token); retrying");
                    } else {
                        tracing::warn!(error = %e, events = batch.count, "audit batch not delivered; retrying");
                    }
                    shared.set_error(e.to_string());
                    pending = Some(batch);
                    self.save_cursor().await;
                    self.pause().await;
                }
            }
        }
    }

    /// The next batch after `last`: from memory while the queue holds everything after it, from
    /// the spool otherwise. `None`: nothing durable is waiting.
    async fn next_batch(&mut self) -> std::io::Result<Option<Batch>> {
        loop {
            let memory = match &mut self.source {
                Source::Spool(_) => None,
                Source::Memory(cur) => Some(cur.take()),
            };
            if let Some(cur) = memory {
                // What is queued comes first, also after an overflow (it is the oldest).
                let (batch, cur) = self.batch_from_memory(cur);
                self.source = Source::Memory(cur);
                if batch.is_some() {
                    return Ok(batch);
                }
                let mut q = self.shared.queue();
                if q.overflowed && q.chunks.is_empty() {
                    // Chunks after `last` were left out of memory: read them back from the spool.
                    // From here on the queue takes chunks again, contiguous from the next one.
                    q.overflowed = false;
                    drop(q);
                    tracing::warn!(
                        after_seq = self.last,
                        "audit shipper fell behind (in-memory queue full): reading its spool back"
                    );
                    self.source = Source::Spool(SpoolReader::new(self.shared.dir.clone(), self.last));
                    self.shared.reading_spool.store(true, Ordering::Relaxed);
                    continue;
                }
                return Ok(None);
            }
            let Source::Spool(reader) = std::mem::replace(&mut self.source, Source::Memory(None)) else {
                continue;
            };
            let durable = self.shared.durable.load(Ordering::Acquire);
            let (max_events, max_bytes) = (self.max_events, self.max_bytes);
            let mut reader = reader;
            let joined = tokio::task::spawn_blocking(move || {
                let r = reader.next_batch(durable, max_events, max_bytes);
                (reader, r)
            })
            .await;
            let Ok((mut reader, read)) = joined else {
                return Err(std::io::Error::other("the spool reader panicked"));
            };
            self.shared.skipped.fetch_add(std::mem::take(&mut reader.skipped), Ordering::Relaxed);
            match read {
                Ok(Some(b)) => {
                    self.shared.read_from_spool.fetch_add(b.count, Ordering::Relaxed);
                    self.last = b.last_seq;
                    self.source = Source::Spool(reader);
                    return Ok(Some(b));
                }
                Ok(None) => {
                    // Caught up with `durable` as read above. Every chunk published since the
                    // spool was chosen is queued, up to an overflow if there was one: what the
                    // spool reader did not reach is there (`last` skips what it did). An overflow
                    // with nothing queued: stay on the spool.
                    let mut q = self.shared.queue();
                    if q.overflowed && q.chunks.is_empty() {
                        q.overflowed = false;
                        self.source = Source::Spool(reader);
                        return Ok(None);
                    }
                    // `self.source` is already Memory(None).
                    drop(q);
                    self.shared.reading_spool.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    self.source = Source::Spool(reader);
                    return Err(e);
                }
            }
        }
    }

    /// Lines after `last` from the memory queue, at most `max_events` and `max_bytes` (unless one
    /// line alone is larger): a slice of one chunk's buffer, or one copy when they span chunks.
    fn batch_from_memory(&mut self, mut cur: Option<(Chunk, usize)>) -> (Option<Batch>, Option<(Chunk, usize)>) {
        let mut parts: Vec<Bytes> = Vec::new();
        let (mut count, mut size) = (0u64, 0usize);
        loop {
            let (chunk, mut idx) = match cur.take() {
                Some(c) => c,
                None => {
                    let mut q = self.shared.queue();
                    let Some(chunk) = q.chunks.pop_front() else { break };
                    q.bytes = q.bytes.saturating_sub(chunk.data.len());
                    (chunk, 0)
                }
            };
            let mut range: Option<(usize, usize)> = None;
            let mut full = false;
            while let Some(&(seq, end)) = chunk.lines.get(idx) {
                let start = idx.checked_sub(1).and_then(|i| chunk.lines.get(i)).map_or(0, |(_, e)| *e);
                if seq <= self.last {
                    idx = idx.saturating_add(1);
                    continue;
                }
                let len = end.saturating_sub(start);
                if count > 0 && (count >= self.max_events || size.saturating_add(len) > self.max_bytes) {
                    full = true;
                    break;
                }
                range = Some((range.map_or(start, |(s, _)| s), end));
                count = count.saturating_add(1);
                size = size.saturating_add(len);
                self.last = seq;
                idx = idx.saturating_add(1);
            }
            if let Some((s, e)) = range {
                parts.push(chunk.data.slice(s..e));
            }
            if idx < chunk.lines.len() {
                cur = Some((chunk, idx));
            }
            if full {
                break;
            }
        }
        let body = match parts.len() {
            0 => return (None, cur),
            1 => parts.pop().unwrap_or_default(),
            _ => {
                let mut v = Vec::with_capacity(size);
                for p in &parts {
                    v.extend_from_slice(p);
                }
                Bytes::from(v)
            }
        };
        (Some(Batch { body, count, last_seq: self.last }), cur)
    }

    /// Wait the next backoff delay; a shutdown cuts it short (for a final attempt).
    async fn pause(&mut self) {
        let delay = self.backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.shared.wake.notified() => {}
        }
    }

    /// Write the cursor past every acknowledged batch (and delete acknowledged segments, if a
    /// segment was created since the last look), then count them as acknowledged.
    async fn save_cursor(&mut self) {
        let Some((seq, count)) = self.unsaved.take() else { return };
        self.saved_at = tokio::time::Instant::now();
        let shared = self.shared.clone();
        let dir = shared.dir.clone();
        let rolls = shared.rolls.load(Ordering::Acquire);
        let clean = rolls != self.clean_rolls;
        let done = tokio::task::spawn_blocking(move || {
            let cursor = spool::write_cursor(&dir, seq);
            (cursor, clean.then(|| spool::delete_acked(&dir, seq)))
        })
        .await;
        let (cursor, cleaned) = match done {
            Ok((c, d)) => (c.is_ok(), d),
            Err(_) => (false, None),
        };
        if !cursor {
            // The server has the batch; after a restart it is re-sent and deduplicated by id.
            tracing::error!(dir = %shared.dir.display(), "audit shipper cannot write its cursor file");
            shared.set_error(format!("cannot write the cursor in {}", shared.dir.display()));
        }
        self.cleaned(cleaned, rolls);
        // Counted once the cursor is on disk (`acknowledged` then also means "not re-sent after a
        // restart") and acknowledged segments are gone (their space is free for new events).
        shared.acked.store(seq, Ordering::Release);
        shared.acknowledged.fetch_add(count, Ordering::Relaxed);
    }

    async fn cleanup(&mut self, acked: u64) {
        let dir = self.shared.dir.clone();
        let rolls = self.shared.rolls.load(Ordering::Acquire);
        let done = tokio::task::spawn_blocking(move || spool::delete_acked(&dir, acked)).await;
        self.cleaned(done.ok(), rolls);
    }

    fn cleaned(&mut self, result: Option<std::io::Result<(u64, usize)>>, rolls: u64) {
        match result {
            Some(Ok((freed, left))) => {
                let _ = self
                    .shared
                    .spool_bytes
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| Some(b.saturating_sub(freed)));
                if left <= 1 {
                    self.clean_rolls = rolls;
                }
            }
            Some(Err(e)) => {
                tracing::error!(dir = %self.shared.dir.display(), error = %e, "audit shipper cannot delete acknowledged spool segments")
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        for expected in [100u64, 200, 400, 400, 400] {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(expected / 2) && d <= Duration::from_millis(expected),
                "{d:?} vs {expected}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn misconfiguration_is_4xx_but_not_408_or_429() {
        let s = |status| SendError::Status { url: "u".into(), status, body: String::new() };
        assert!(s(401).is_misconfiguration());
        assert!(s(404).is_misconfiguration());
        assert!(!s(408).is_misconfiguration());
        assert!(!s(429).is_misconfiguration());
        assert!(!s(503).is_misconfiguration());
    }

    #[test]
    fn bad_ca_file_is_a_config_error() {
        assert!(palisade_core::net::client_tls(Some(b"not pem")).is_err());
    }
}
