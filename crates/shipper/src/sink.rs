//! [`ShippingSink`]: `record` pushes onto a bounded queue and returns; a writer thread gives each
//! event its id, serializes it once and appends it to the spool, fsyncing once per tick, then hands
//! the tick's lines (one buffer) to the sender through a bounded in-memory queue. Invariants:
//! `record` never blocks and never fails; a drop is always counted; a chunk is in the memory queue
//! only once it is durable, and chunks left out of it (overflow) are read back from the spool.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_core::audit::{AuditEvent, AuditSink};
use tokio::sync::Notify;

use crate::sender::{Backoff, Poster, Sender, Source};
use crate::spool::{self, Appended, Chunk, SpoolWriter, WriteFailed};
use crate::{ShipperConfig, ShipperError};

/// The longest a "spool full" warning stays quiet while events are being dropped.
const FULL_WARN_EVERY: Duration = Duration::from_secs(10);

/// Counters for metrics, read with [`ShippingSink::stats`]. Counts are since this sink was opened,
/// except `pending` and `spool_bytes`, which include what an earlier run left in the spool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Events written to the spool and fsynced.
    pub spooled: u64,
    /// Events put in a request (a retried event counts once per attempt).
    pub sent: u64,
    /// Events the server acknowledged (2xx).
    pub acknowledged: u64,
    /// Events lost: `dropped_queue_full + dropped_spool_full + dropped_io_error`.
    pub dropped: u64,
    /// `record` found the queue to the writer full (or the sink shut down).
    pub dropped_queue_full: u64,
    /// The spool was at `max_spool_bytes`.
    pub dropped_spool_full: u64,
    /// The spool could not be written.
    pub dropped_io_error: u64,
    /// Events the server reported as already stored (a re-send after a lost acknowledgement).
    pub server_duplicates: u64,
    /// Events shipped from the spool file rather than from memory: left by an earlier run, or
    /// after the in-memory queue overflowed (a long outage). While the server keeps up, 0.
    pub read_from_spool: u64,
    /// Times the in-memory queue overflowed (newer chunks left out of memory, not out of the
    /// spool) and the sender, once past the queued ones, went back to reading the spool.
    pub memory_overflows: u64,
    /// Whether the sender is reading the spool back (from the start, for what an earlier run left,
    /// and after an overflow until it has caught up) rather than shipping from memory.
    pub reading_spool: bool,
    /// Spool lines that were not records (damaged files), skipped.
    pub skipped_lines: u64,
    /// Bytes of a torn last line (a crash mid-write) cut from the spool on open.
    pub torn_bytes_cut: u64,
    /// Durable events not yet acknowledged.
    pub pending: u64,
    /// Bytes in the spool's segment files.
    pub spool_bytes: u64,
    /// The last send or spool error (never holds the token).
    pub last_error: Option<String>,
}

/// State shared by the sink, the writer thread and the sender task.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    /// Highest seq fsynced to the spool.
    pub(crate) durable: AtomicU64,
    /// Highest seq acknowledged by the server.
    pub(crate) acked: AtomicU64,
    pub(crate) spool_bytes: Arc<AtomicU64>,
    pub(crate) spooled: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) acknowledged: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_spool_full: AtomicU64,
    pub(crate) dropped_io_error: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub(crate) read_from_spool: AtomicU64,
    pub(crate) memory_overflows: AtomicU64,
    /// See [`Stats::reading_spool`].
    pub(crate) reading_spool: AtomicBool,
    /// Segments the writer created (the sender looks for acknowledged ones to delete only after one was).
    pub(crate) rolls: Arc<AtomicU64>,
    /// Durable chunks for the sender, at most `max_memory_bytes` of them.
    pub(crate) queue: Mutex<MemQueue>,
    pub(crate) max_memory_bytes: usize,
    pub(crate) torn_bytes_cut: u64,
    pub(crate) last_error: Mutex<Option<String>>,
    /// The writer made more records durable.
    pub(crate) data: Notify,
    /// Shutdown: stop waiting (idle or backoff) and try now.
    pub(crate) wake: Notify,
    pub(crate) closing: AtomicBool,
    pub(crate) writer_done: AtomicBool,
}

/// The sender's in-memory queue.
#[derive(Default)]
pub(crate) struct MemQueue {
    pub(crate) chunks: VecDeque<Chunk>,
    pub(crate) bytes: usize,
    /// A chunk did not fit: it and every later one were left out (the spool has them); the
    /// chunks already queued stay. The sender ships those, then reads the spool from there on
    /// and clears this; until then the queue takes nothing.
    pub(crate) overflowed: bool,
}

impl Shared {
    pub(crate) fn set_error(&self, msg: String) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg);
        }
    }

    pub(crate) fn queue(&self) -> std::sync::MutexGuard<'_, MemQueue> {
        // A panic while holding the lock leaves the queue consistent (pushes and pops are whole).
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publish a durable chunk: `durable` moves with it, under the queue's lock, so that
    /// everything not in the queue after the sender saw it empty and not overflowed is at or
    /// below the `durable` it reads next.
    fn publish(&self, chunk: Chunk) {
        let Some(last) = chunk.last_seq() else { return };
        let n = chunk.lines.len() as u64;
        let mut q = self.queue();
        self.durable.store(last, Ordering::Release);
        self.spooled.fetch_add(n, Ordering::Relaxed);
        if !q.overflowed {
            let len = chunk.data.len();
            if q.bytes.saturating_add(len) > self.max_memory_bytes {
                // The queued chunks are the oldest, the ones the sender needs first: keep them.
                q.overflowed = true;
                self.memory_overflows.fetch_add(1, Ordering::Relaxed);
            } else {
                q.bytes = q.bytes.saturating_add(len);
                q.chunks.push_back(chunk);
            }
        }
        drop(q);
        self.data.notify_one();
    }
}

/// An [`AuditSink`] that ships events to the Palisade audit server through an on-disk spool.
/// Every event gets the id `<instance id>-<seq>`: the instance id is random, made once per spool
/// directory; seq grows across restarts. Events the server did not acknowledge are re-sent (same
/// ids) until it does, also after a restart; the server deduplicates by id.
pub struct ShippingSink {
    tx: SyncSender<AuditEvent>,
    shared: Arc<Shared>,
    instance: String,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    sender: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for ShippingSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShippingSink").field("spool_dir", &self.shared.dir).field("instance", &self.instance).finish()
    }
}

impl ShippingSink {
    /// Open (creating, mode 0700) and lock the spool directory, repair it (a torn last line is
    /// cut), start the writer thread and the sender task. Must be called inside a tokio runtime.
    /// Unacknowledged events left by an earlier run are sent first.
    pub fn open(config: ShipperConfig) -> Result<ShippingSink, ShipperError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ShipperError::NoRuntime)?;
        let poster = Poster::new(&config)?;
        let opened = spool::open_dir(&config.spool_dir)?;
        let dir = config.spool_dir.clone();
        let spool_bytes = Arc::new(AtomicU64::new(opened.bytes));
        let durable = opened.next_seq.saturating_sub(1);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            durable: AtomicU64::new(durable),
            acked: AtomicU64::new(opened.acked),
            spool_bytes: spool_bytes.clone(),
            spooled: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            dropped_spool_full: AtomicU64::new(0),
            dropped_io_error: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            read_from_spool: AtomicU64::new(0),
            memory_overflows: AtomicU64::new(0),
            reading_spool: AtomicBool::new(true),
            rolls: Arc::new(AtomicU64::new(0)),
            queue: Mutex::new(MemQueue::default()),
            max_memory_bytes: config.max_memory_bytes,
            torn_bytes_cut: opened.cut,
            last_error: Mutex::new(None),
            data: Notify::new(),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            writer_done: AtomicBool::new(false),
        });
        let writer = SpoolWriter::new(
            dir.clone(),
            opened.instance.clone(),
            opened.next_seq,
            config.segment_bytes(),
            config.max_spool_bytes,
            spool_bytes,
            shared.rolls.clone(),
        );
        let (tx, rx) = sync_channel(config.queue_capacity);
        let lock = opened.lock;
        let thread_shared = shared.clone();
        let tick = config.flush_interval;
        let writer = std::thread::Builder::new()
            .name("palisade-audit-spool".into())
            .spawn(move || {
                write_loop(rx, writer, &thread_shared, tick);
                // The spool stays locked until the writer has flushed its last record.
                drop(lock);
            })
            .map_err(|e| ShipperError::Spool { path: dir.clone(), what: "starting the spool writer", source: e })?;
        let sender = Sender {
            shared: shared.clone(),
            poster,
            source: Source::Spool(spool::SpoolReader::new(dir, opened.acked)),
            last: opened.acked,
            max_events: config.batch_max_events as u64,
            max_bytes: config.batch_max_bytes,
            backoff: Backoff::new(config.retry_initial, config.retry_max),
            clean_rolls: u64::MAX,
            unsaved: None,
            saved_at: tokio::time::Instant::now(),
            cursor_every: config.flush_interval,
        };
        let sender = runtime.spawn(sender.run());
        Ok(ShippingSink {
            tx,
            shared,
            instance: opened.instance,
            writer: Mutex::new(Some(writer)),
            sender: Mutex::new(Some(sender)),
        })
    }

    /// This spool's instance id: the prefix of every event id it assigns.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    pub fn spool_dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (q, f, io) = (get(&s.dropped_queue_full), get(&s.dropped_spool_full), get(&s.dropped_io_error));
        Stats {
            spooled: get(&s.spooled),
            sent: get(&s.sent),
            acknowledged: get(&s.acknowledged),
            dropped: q.saturating_add(f).saturating_add(io),
            dropped_queue_full: q,
            dropped_spool_full: f,
            dropped_io_error: io,
            server_duplicates: get(&s.duplicates),
            read_from_spool: get(&s.read_from_spool),
            memory_overflows: get(&s.memory_overflows),
            reading_spool: s.reading_spool.load(Ordering::Relaxed),
            skipped_lines: get(&s.skipped),
            torn_bytes_cut: s.torn_bytes_cut,
            pending: get(&s.durable).saturating_sub(get(&s.acked)),
            spool_bytes: get(&s.spool_bytes),
            last_error: s.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// Stop taking events, write every queued event to the spool (fsynced), then keep sending
    /// until everything is acknowledged or `timeout` passes. What is still pending then stays in
    /// the spool for the next start (`stats().pending`). Later `record` calls drop and count.
    pub async fn shutdown(&self, timeout: Duration) -> Stats {
        let deadline = tokio::time::Instant::now() + timeout;
        self.shared.closing.store(true, Ordering::Release);
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            writer.thread().unpark();
            // The writer finishes within one drain and fsync: it is not bounded by `timeout`,
            // because leaving it running would leave queued events unwritten.
            if tokio::task::spawn_blocking(move || writer.join()).await.is_err() {
                tracing::error!("audit spool writer could not be joined");
            }
        }
        self.shared.wake.notify_one();
        let sender = self.sender.lock().ok().and_then(|mut s| s.take());
        if let Some(mut sender) = sender {
            if tokio::time::timeout_at(deadline, &mut sender).await.is_err() {
                sender.abort();
                let pending = self.stats().pending;
                tracing::warn!(
                    pending,
                    "audit shipper shut down with events still unacknowledged; they stay in the spool"
                );
            }
        }
        self.stats()
    }
}

impl Drop for ShippingSink {
    /// Without [`ShippingSink::shutdown`]: the writer flushes what it has and stops, the sender
    /// stops at once; nothing acknowledged is lost, the rest is sent by the next start.
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        if let Some(sender) = self.sender.get_mut().ok().and_then(Option::take) {
            sender.abort();
        }
        if let Some(writer) = self.writer.get_mut().ok().and_then(Option::take) {
            writer.thread().unpark();
            let _ = writer.join();
        }
    }
}

impl AuditSink for ShippingSink {
    fn record(&self, event: AuditEvent) {
        if self.shared.closing.load(Ordering::Acquire) {
            self.shared.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.shared.dropped_queue_full.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "audit shipping queue full: events dropped");
                }
            }
        }
    }
}

/// The writer polls: it drains the queue, fsyncs once, publishes the tick's lines (durable now),
/// then sleeps a tick (or until shutdown unparks it). `record` never wakes it, so the request path
/// pays a queue push only.
fn write_loop(rx: Receiver<AuditEvent>, mut w: SpoolWriter, shared: &Shared, tick: Duration) {
    let mut last_full_warn: Option<Instant> = None;
    let mut full_since_warn = 0u64;
    let failed = |f: WriteFailed| {
        shared.dropped_io_error.fetch_add(f.lost, Ordering::Relaxed);
        tracing::error!(dir = %shared.dir.display(), error = %f.error, lost = f.lost, "cannot write to the audit spool: events dropped");
        shared.set_error(format!("writing the spool {}: {}", shared.dir.display(), f.error));
    };
    loop {
        let closing = shared.closing.load(Ordering::Acquire);
        let mut disconnected = false;
        loop {
            match rx.try_recv() {
                Ok(ev) => match w.append(&ev) {
                    Ok(Appended::Written) => {}
                    Ok(Appended::Full) => {
                        shared.dropped_spool_full.fetch_add(1, Ordering::Relaxed);
                        full_since_warn = full_since_warn.saturating_add(1);
                        if last_full_warn.is_none_or(|t| t.elapsed() >= FULL_WARN_EVERY) {
                            tracing::warn!(
                                dir = %shared.dir.display(),
                                dropped = full_since_warn,
                                total_dropped = shared.dropped_spool_full.load(Ordering::Relaxed),
                                "AUDIT SPOOL FULL: audit events are being dropped (is the audit server reachable?)"
                            );
                            last_full_warn = Some(Instant::now());
                            full_since_warn = 0;
                        }
                    }
                    Err(f) => failed(f),
                },
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        let (chunk, failure) = w.sync();
        if let Some(f) = failure {
            failed(f);
        }
        if let Some(chunk) = chunk {
            shared.publish(chunk);
        }
        if closing || disconnected {
            shared.writer_done.store(true, Ordering::Release);
            shared.data.notify_one();
            return;
        }
        std::thread::park_timeout(tick);
    }
}
