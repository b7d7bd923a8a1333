//! Thread-per-core serving. Each worker thread runs its own single-threaded tokio runtime with
//! its own SO_REUSEPORT listeners and its own upstream connection pools, the way nginx workers
//! do: a request, its client connection and its upstream connection stay on one thread, so
//! there is no work stealing and no cross-thread wake-up on the hot path.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Index of the calling worker thread; `usize::MAX` off the worker threads.
pub(crate) fn current() -> usize {
    WORKER.with(Cell::get)
}

pub(crate) fn set_current(i: usize) {
    WORKER.with(|w| w.set(i));
}

/// Default worker count: one per available core.
pub(crate) fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Bind a listening socket that several workers can share (SO_REUSEPORT).
pub(crate) fn bind_shared(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_reuseaddr(true)?;
    sock.set_reuseport(true)?;
    sock.bind(addr)?;
    let l = sock.listen(4096)?;
    l.into_std()
}
