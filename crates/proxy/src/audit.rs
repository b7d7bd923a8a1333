//! Audit events from the request path: exactly one per request that a filter denied, and one per
//! request on a protected route (authn or authz configured). `FileSink` appends JSON lines from
//! a writer thread, so the request path never waits for the disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::StatusCode;
use palisade_core::audit::{AuditEvent, AuditEventView, AuditSink, Decision, Rfc3339Millis};

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
    let (principal, client_id, auth_method) = match s.identity.as_deref() {
        Some(i) => (i.principal_str(), i.client_id(), Some(i.method())),
        None => ("Anonymous", None, None),
    };
    let time = Rfc3339Millis::now();
    // On the stack: the address text is borrowed from a per-thread cache only inside a closure.
    let mut ip = [0u8; 48];
    let ip_len = crate::headers::with_ip_text(s.client_ip, |t| {
        let n = t.len().min(ip.len());
        ip[..n].copy_from_slice(&t.as_bytes()[..n]);
        n
    });
    // Borrowed throughout: the file sink serializes it without an owned copy.
    sink.record_view(&AuditEventView {
        time: time.as_str(),
        source: "gateway",
        service: None,
        request_id: &s.request_id,
        decision,
        stage,
        reason: &s.audit.reason,
        principal,
        client_id,
        auth_method,
        route: &route.name,
        method: s.request.method.as_str(),
        path: s.request.uri.path(),
        client_ip: std::str::from_utf8(&ip[..ip_len]).unwrap_or_default(),
        policy_ids: &s.audit.policy_ids[..],
        status: status.as_u16(),
        latency_ms: palisade_core::audit::latency_ms(elapsed),
        waf: &s.audit.waf,
    });
}

/// JSON lines appended to one file. Each thread that records an event writes its line into a
/// buffer of its own (no queue shared by the workers, and the event is freed on the thread that
/// made it); a writer thread takes what the buffers hold every tick, merges the lines by `time`
/// and appends them, so the request path never waits for the disk. Only a line recorded while the
/// writer is taking the buffers can land after a later one of another thread.
pub struct FileSink {
    buffers: Arc<Buffers>,
    path: PathBuf,
}

/// The per-thread buffers of one sink, and how many events were dropped because a thread's
/// buffer was full (the writer is stuck or far behind).
struct Buffers {
    all: Mutex<Vec<Buffer>>,
    dropped: AtomicU64,
    /// `MAX_PENDING_BYTES`, smaller in tests.
    max_pending: usize,
}

/// One thread's lines not yet written.
type Buffer = Arc<Mutex<Vec<u8>>>;

/// Bytes one thread may have waiting for the writer (about 70,000 events); more are dropped.
const MAX_PENDING_BYTES: usize = 32 << 20;

thread_local! {
    /// This thread's buffer in each sink it has recorded to. The `Weak` identifies the sink (it
    /// keeps the allocation, so the address is not reused while the entry exists).
    static MINE: std::cell::RefCell<Vec<(Weak<Buffers>, Buffer)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Appends and swaps only: a panic while holding a lock cannot leave a half-written line.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FileSink {
    /// Opens (creating) the file and its directory now, so a bad path is a config error.
    pub fn open(path: &Path) -> Result<FileSink, String> {
        FileSink::open_with(path, MAX_PENDING_BYTES, WRITE_TICK)
    }

    fn open_with(path: &Path, max_pending: usize, tick: Duration) -> Result<FileSink, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open audit file {}: {e}", path.display()))?;
        let buffers = Arc::new(Buffers { all: Mutex::new(Vec::new()), dropped: AtomicU64::new(0), max_pending });
        let shown = path.display().to_string();
        let theirs = Arc::clone(&buffers);
        std::thread::Builder::new()
            .name("palisade-audit".into())
            .spawn(move || write_loop(theirs, file, shown, tick))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(FileSink { buffers, path: path.to_path_buf() })
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

/// The writer polls: it takes the buffers' contents, then sleeps a tick. Recording never wakes
/// it, so the request path pays no futex wake-up or context switch per event.
const WRITE_TICK: Duration = Duration::from_millis(20);

fn write_loop(buffers: Arc<Buffers>, mut file: std::fs::File, shown: String, tick: Duration) {
    // One per thread buffer: swapped with it, written, cleared (the allocations take turns).
    let mut taken: Vec<Vec<u8>> = Vec::new();
    let mut merged = Vec::new();
    loop {
        std::thread::sleep(tick);
        // Only this thread holds the buffers once the sink is gone: write what is left, and end.
        let last = Arc::strong_count(&buffers) == 1;
        let all = {
            let mut all = lock(&buffers.all);
            // A buffer held only by the list (and by `list` here), not by a thread's `MINE`, belongs
            // to a thread that has ended: taken one last time, then forgotten.
            let list = all.clone();
            all.retain(|b| Arc::strong_count(b) > 2);
            list
        };
        taken.resize_with(all.len(), Vec::new);
        for (buf, t) in all.iter().zip(&mut taken) {
            let mut b = lock(buf);
            if !b.is_empty() {
                std::mem::swap(&mut *b, t);
            }
        }
        let full: Vec<&[u8]> = taken.iter().filter(|t| !t.is_empty()).map(Vec::as_slice).collect();
        let data: &[u8] = match full.as_slice() {
            [] => &[],
            [one] => one,
            several => {
                merged.clear();
                merge_by_time(several, &mut merged);
                &merged
            }
        };
        if !data.is_empty() {
            if let Err(e) = file.write_all(data) {
                tracing::error!(file = %shown, error = %e, "cannot write audit events");
            }
        }
        for t in &mut taken {
            t.clear();
            if t.capacity() > 4 << 20 {
                *t = Vec::new(); // after a burst
            }
        }
        if merged.capacity() > 4 << 20 {
            merged = Vec::new();
        }
        if last {
            return;
        }
    }
}

/// Merge whole lines from several threads, each in time order, into one file order: by the
/// event's `time` (the first member of every line `AuditEvent::write_json` writes), the earlier
/// buffer first on a tie.
fn merge_by_time(parts: &[&[u8]], out: &mut Vec<u8>) {
    fn line(rest: &[u8]) -> &[u8] {
        memchr::memchr(b'\n', rest).map_or(rest, |n| &rest[..=n])
    }
    fn time(line: &[u8]) -> &[u8] {
        const KEY: &[u8] = b"{\"time\":\"";
        line.strip_prefix(KEY).and_then(|t| t.get(..24)).unwrap_or_default()
    }
    let mut at = vec![0usize; parts.len()];
    loop {
        let next =
            (0..parts.len()).filter(|&i| at[i] < parts[i].len()).min_by_key(|&i| (time(line(&parts[i][at[i]..])), i));
        let Some(i) = next else { return };
        let l = line(&parts[i][at[i]..]);
        out.extend_from_slice(l);
        at[i] += l.len();
    }
}

impl AuditSink for FileSink {
    fn record(&self, event: AuditEvent) {
        self.record_view(&event.view());
    }

    fn record_view(&self, event: &AuditEventView<'_>) {
        MINE.with_borrow_mut(|mine| {
            let at = match mine.iter().position(|(s, _)| std::ptr::eq(s.as_ptr(), Arc::as_ptr(&self.buffers))) {
                Some(at) => at,
                None => {
                    mine.retain(|(s, _)| s.strong_count() > 0); // sinks replaced by a reload
                    let buf = Arc::new(Mutex::new(Vec::with_capacity(64 * 1024)));
                    lock(&self.buffers.all).push(Arc::clone(&buf));
                    mine.push((Arc::downgrade(&self.buffers), buf));
                    mine.len() - 1
                }
            };
            let mut b = lock(&mine[at].1);
            if b.len() >= self.buffers.max_pending {
                drop(b);
                let n = self.buffers.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(dropped = n, "audit writer behind: events dropped");
                }
                return;
            }
            event.write_json(&mut b);
            b.push(b'\n');
        });
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
    fn record_view(&self, event: &AuditEventView<'_>) {
        let labeled = AuditEventView { source: self.source, service: self.service.as_deref(), ..*event };
        for s in &self.sinks {
            s.record_view(&labeled);
        }
    }

    fn record(&self, event: AuditEvent) {
        self.record_view(&event.view());
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

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::audit::Stage;

    fn event(n: usize) -> AuditEvent {
        AuditEvent {
            time: "2026-11-27T08:00:00.000Z".into(),
            source: "gateway".into(),
            service: None,
            request_id: format!("r{n}"),
            decision: Decision::Allow,
            stage: Stage::Authz,
            reason: "permitted by policy".into(),
            principal: "Client::\"bench\"".into(),
            client_id: Some("bench".into()),
            auth_method: Some("jwt".into()),
            route: "orders".into(),
            method: "GET".into(),
            path: "/orders".into(),
            client_ip: "127.0.0.1".into(),
            policy_ids: vec!["read".into()],
            status: 200,
            latency_ms: 0.25,
            waf: vec![],
        }
    }

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("palisade-audit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("audit.jsonl")
    }

    /// The request ids in the file once it holds `n` lines (within 5 s); every line must parse.
    fn ids_when(path: &Path, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            if lines.len() >= n || std::time::Instant::now() > deadline {
                return lines
                    .iter()
                    .map(|l| serde_json::from_str::<AuditEvent>(l).unwrap_or_else(|e| panic!("{e}: {l}")).request_id)
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn events_from_many_threads_are_written_once_each_as_whole_lines() {
        let path = temp_file("threads");
        let sink = Arc::new(FileSink::open(&path).unwrap());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        sink.record(event(t * 1000 + i));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Dropping the sink still writes what the threads' buffers hold.
        drop(sink);
        let mut ids = ids_when(&path, 2000);
        ids.sort();
        let mut want: Vec<String> = (0..4).flat_map(|t| (0..500).map(move |i| format!("r{}", t * 1000 + i))).collect();
        want.sort();
        assert_eq!(ids, want);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn lines_of_several_threads_are_merged_by_time() {
        let at = |ms: u32, id: &str| format!("{{\"time\":\"2026-11-27T08:00:00.{ms:03}Z\",\"request_id\":\"{id}\"}}\n");
        let a = [at(1, "a1"), at(3, "a3"), at(3, "a3b"), at(7, "a7")].concat();
        let b = [at(2, "b2"), at(3, "b3"), at(9, "b9")].concat();
        let c = at(0, "c0");
        let mut out = Vec::new();
        merge_by_time(&[a.as_bytes(), b.as_bytes(), c.as_bytes()], &mut out);
        let ids: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].as_str().unwrap().to_owned())
            .collect();
        // Ties keep the earlier buffer first and each buffer's own order.
        assert_eq!(ids, ["c0", "a1", "b2", "a3", "a3b", "b3", "a7", "b9"]);
    }

    #[test]
    fn events_of_two_threads_reach_the_file_in_time_order() {
        let path = temp_file("order");
        // Every event is recorded within the first tick, so one take sees them all.
        let sink = Arc::new(FileSink::open_with(&path, MAX_PENDING_BYTES, Duration::from_secs(1)).unwrap());
        let stamped = |n: usize| {
            let mut e = event(n);
            e.time = format!("2026-11-27T08:00:{:02}.{:03}Z", n / 1000, n % 1000);
            e
        };
        // Even stamps on one thread, odd on another.
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || {
                    for n in (t..200).step_by(2) {
                        sink.record(stamped(n));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(sink);
        let ids = ids_when(&path, 200);
        let want: Vec<String> = (0..200).map(|n| format!("r{n}")).collect();
        assert_eq!(ids, want);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_thread_writes_to_each_sink_its_own_events_also_after_a_reload() {
        let (a, b, c) = (temp_file("a"), temp_file("b"), temp_file("c"));
        let sink_a = FileSink::open(&a).unwrap();
        let sink_b = FileSink::open(&b).unwrap();
        sink_a.record(event(1));
        sink_b.record(event(2));
        sink_a.record(event(3));
        drop(sink_a);
        // A new sink made after one is gone (a reload) gets its own buffer on this thread.
        let sink_c = FileSink::open(&c).unwrap();
        sink_c.record(event(4));
        sink_b.record(event(5));
        assert_eq!(ids_when(&a, 2), ["r1", "r3"]);
        assert_eq!(ids_when(&b, 2), ["r2", "r5"]);
        assert_eq!(ids_when(&c, 1), ["r4"]);
        // The first sink's entry goes once its writer has ended, when this thread next needs a new one.
        let live = || MINE.with_borrow(|m| m.iter().filter(|(s, _)| s.strong_count() > 0).count());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while live() > 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(MINE.with_borrow(|m| m.len()), 3);
        let d = temp_file("d");
        let sink_d = FileSink::open(&d).unwrap();
        sink_d.record(event(6));
        assert_eq!(MINE.with_borrow(|m| m.len()), 3, "the ended sink's entry was pruned");
        assert_eq!(ids_when(&d, 1), ["r6"]);
        for p in [a, b, c, d] {
            let _ = std::fs::remove_dir_all(p.parent().unwrap());
        }
    }

    #[test]
    fn a_full_buffer_drops_and_counts_events_and_keeps_whole_lines() {
        let path = temp_file("full");
        let line = {
            let mut v = Vec::new();
            event(0).write_json(&mut v);
            v.len() + 1
        };
        let sink = FileSink::open_with(&path, 10 * line, WRITE_TICK).unwrap();
        for i in 0..1000 {
            sink.record(event(i));
        }
        let dropped = sink.buffers.dropped.load(Ordering::Relaxed) as usize;
        drop(sink);
        // The writer empties the buffer every tick; 1000 events do not fit in 10 lines' room
        // unless recording took 100 ticks. Each event is either written or counted as dropped.
        assert!(dropped > 0, "{dropped} dropped");
        let ids = ids_when(&path, 1000 - dropped);
        assert_eq!(ids.len(), 1000 - dropped);
        assert_eq!(ids[0], "r0");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
