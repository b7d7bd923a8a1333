//! Audit events from the request path: exactly one per request that a filter denied, and one per
//! request on a protected route (authn or authz configured). `FileSink` appends JSON lines from
//! a writer thread, so the request path never waits for the disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use palisade_core::audit::{now_rfc3339, AuditEvent, AuditSink, Decision};

use crate::filter::Session;
use crate::route::CompiledRoute;

pub(crate) fn emit(
    sink: &dyn AuditSink,
    route: &CompiledRoute,
    s: &mut Session,
    status: StatusCode,
    elapsed: Duration,
) {
    let Some((decision, stage)) = s.audit.decision else { return };
    if !route.protected && !s.audit.force && decision == Decision::Allow {
        return;
    }
    let (principal, client_id, auth_method) = match &s.identity {
        Some(i) => (i.principal_ref(), i.client_id().map(str::to_owned), Some(i.method().into())),
        None => ("Anonymous".to_owned(), None, None),
    };
    sink.record(AuditEvent {
        time: now_rfc3339(),
        source: "gateway".into(),
        service: None,
        request_id: s.request_id.clone(),
        decision,
        stage,
        reason: std::mem::take(&mut s.audit.reason),
        principal,
        client_id,
        auth_method,
        route: route.name.to_string(),
        method: s.request.method.as_str().to_owned(),
        path: s.request.uri.path().to_owned(),
        client_ip: crate::headers::with_ip_text(s.client_ip, str::to_owned),
        policy_ids: std::mem::take(&mut s.audit.policy_ids),
        status: status.as_u16(),
        latency_ms: palisade_core::audit::latency_ms(elapsed),
        waf: std::mem::take(&mut s.audit.waf),
    });
}

/// JSON lines appended to one file by a background thread.
pub struct FileSink {
    tx: SyncSender<AuditEvent>,
    dropped: AtomicU64,
    path: PathBuf,
}

impl FileSink {
    /// Opens (creating) the file and its directory now, so a bad path is a config error.
    pub fn open(path: &Path) -> Result<FileSink, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open audit file {}: {e}", path.display()))?;
        let (tx, rx) = sync_channel(65_536);
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("palisade-audit".into())
            .spawn(move || write_loop(rx, file, shown))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(FileSink { tx, dropped: AtomicU64::new(0), path: path.to_path_buf() })
    }

    /// What [`FileSink::open`] would find wrong with `path`, without creating anything: an existing
    /// file must be a writable file; otherwise the nearest existing ancestor must be a writable directory.
    pub fn check(path: &Path) -> Result<(), String> {
        if let Ok(m) = std::fs::metadata(path) {
            if !m.is_file() {
                return Err(format!("audit file {} is not a regular file", path.display()));
            }
            return std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map(|_| ())
                .map_err(|e| format!("cannot open audit file {}: {e}", path.display()));
        }
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            match std::fs::metadata(d) {
                Ok(m) if m.is_dir() && !m.permissions().readonly() => return Ok(()),
                Ok(_) => {
                    return Err(format!(
                        "cannot create audit file {}: {} is not a writable directory",
                        path.display(),
                        d.display()
                    ))
                }
                Err(_) => dir = d.parent(),
            }
        }
        Ok(()) // relative to the working directory
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The writer polls: it drains the queue, then sleeps a tick. Senders never wake it, so the
/// request path pays a queue push and no futex wake-up or context switch per event.
const WRITE_TICK: Duration = Duration::from_millis(20);

fn write_loop(rx: Receiver<AuditEvent>, file: std::fs::File, shown: String) {
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, file);
    // Each event is serialized into this reused buffer, then written whole: many small writes
    // are cheaper into a Vec than through the BufWriter.
    let mut line = Vec::with_capacity(1024);
    loop {
        let mut wrote = false;
        loop {
            match rx.try_recv() {
                Ok(ev) => {
                    wrote = true;
                    line.clear();
                    ev.write_json(&mut line);
                    line.push(b'\n');
                    if w.write_all(&line).is_err() {
                        tracing::error!(file = %shown, "cannot write audit event");
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = w.flush();
                    return;
                }
            }
        }
        if wrote {
            if let Err(e) = w.flush() {
                tracing::error!(file = %shown, error = %e, "cannot write audit events");
            }
        }
        std::thread::sleep(WRITE_TICK);
    }
}

impl AuditSink for FileSink {
    fn record(&self, event: AuditEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(dropped = n, "audit queue full or writer gone: events dropped");
                }
            }
        }
    }
}

/// The sinks of one gateway or sidecar: every event is labelled with who emitted it (`gateway`
/// or `sidecar`, and the SPIFFE ID of a mesh member) and goes to each sink (the local file and
/// the shipper to `palisade server`).
pub(crate) struct Labeled {
    pub(crate) sinks: Vec<Arc<dyn AuditSink>>,
    pub(crate) source: &'static str,
    pub(crate) service: Option<String>,
}

impl AuditSink for Labeled {
    fn record(&self, mut event: AuditEvent) {
        event.source = self.source.into();
        event.service.clone_from(&self.service);
        if let Some((last, rest)) = self.sinks.split_last() {
            for s in rest {
                s.record(event.clone());
            }
            last.record(event);
        }
    }
}

/// Open the shipper of `audit.ship` (inside the tokio runtime), or check it (`dry_run`).
pub(crate) fn open_shipper(
    ship: &palisade_core::config::AuditShip,
    base: &Path,
    dry_run: bool,
) -> Result<Option<Arc<palisade_shipper::ShippingSink>>, String> {
    let token = ship.token.resolve(base).map_err(|m| format!("token: {m}"))?;
    // A token file usually ends with a newline.
    let token = palisade_core::Secret::from(token.expose().trim_ascii().to_vec());
    let mut cfg = palisade_shipper::ShipperConfig::new(ship.server.clone(), token, base.join(&ship.spool_dir));
    cfg.ca_file = ship.ca_file.as_ref().map(|f| base.join(f));
    cfg.max_spool_bytes = ship.max_spool_bytes;
    if dry_run {
        return Ok(None);
    }
    palisade_shipper::ShippingSink::open(cfg).map(|s| Some(Arc::new(s))).map_err(|e| e.to_string())
}
