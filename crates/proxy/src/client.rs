//! The upstream HTTP/1.1 client: one per worker thread and upstream pool, with a LIFO stack of
//! idle keep-alive connections per endpoint.
//!
//! A connection has no task of its own. The task that sends a request (the downstream
//! connection's task) drives the upstream connection while it waits for the response head, and
//! the response body drives it while the client reads the body; when the body has been read to
//! its end the connection goes back on its endpoint's stack. A request therefore costs no task
//! wake-up, channel hop or pool-key hashing beyond hyper's own HTTP/1 dispatcher, the way an
//! nginx worker reads its upstream socket from the request's own event handler.
//!
//! Invariants:
//! - a connection is reused only if its response body was read to the end, hyper says it can
//!   take a new request when it is taken from the stack, and it has been idle for less than
//!   the keep-alive timeout;
//! - at most `max_idle_per_endpoint` idle connections are kept per endpoint and worker; an idle
//!   connection the upstream closes is dropped by the next checkout or by the reaper, which
//!   also closes connections idle for longer than the keep-alive timeout.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::body::{BoxError, RequestBody};

type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// No connection could be opened (TCP or TLS).
    #[error("connecting: {0}")]
    Connect(BoxError),
    /// The connection failed while sending the request or reading the response head.
    #[error("request: {0}")]
    Request(hyper::Error),
}

impl ClientError {
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect(_))
    }
}

/// An open HTTP/1.1 connection: the request handle and the connection state machine, which
/// whoever holds it must poll. One allocation per connection (the state is ~1.8 kB); it moves
/// between the idle stack and response bodies as a pointer.
struct Conn(Box<ConnState>);

struct ConnState {
    sender: http1::SendRequest<RequestBody>,
    conn: http1::Connection<Io, RequestBody>,
    idle_since: Instant,
    /// The client and endpoint whose idle stack it returns to.
    home: Weak<Client>,
    ep: usize,
    /// The waker the connection is polled with by the task that holds it (see [`LocalWake`]).
    local: Arc<LocalWake>,
    local_waker: Waker,
}

impl Conn {
    /// Drive the connection; `false` once it has closed (or failed).
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        self.0.conn.poll_without_shutdown(cx).is_pending()
    }

    /// Whether the connection is open and can take a request now (polled for the task in `cx`
    /// with the connection's own waker).
    fn ready(&mut self, cx: &mut Context<'_>) -> bool {
        let st = &mut *self.0;
        let ready = st.local.poll(&st.local_waker, cx, |cx| {
            Poll::Ready(
                st.conn.poll_without_shutdown(cx).is_pending()
                    && matches!(st.sender.poll_ready(cx), Poll::Ready(Ok(()))),
            )
        });
        ready == Poll::Ready(true)
    }
}

/// Not polling.
const IDLE: u8 = 0;
/// The holder is polling the connection.
const POLLING: u8 = 1;
/// ... and something woke the connection's waker meanwhile.
const POLLING_WOKEN: u8 = 2;
/// Polls in a row that a wake from inside may ask for before the task goes back to the scheduler
/// (hyper's dispatcher yields by waking itself; it must not spin here).
const MAX_LOCAL_POLLS: usize = 4;

/// The waker an upstream connection is polled with.
///
/// hyper's client wakes the connection from inside as the task holding it polls: its dispatch
/// channel when a request is handed over, the response head's oneshot when the head is parsed,
/// the body channel when the body wants more. Each of those wakes would send the downstream
/// connection's task through the scheduler for one more poll of everything it drives (the
/// downstream connection, TLS, the request future), to find what it has just done itself. While
/// the holder polls, a wake is only noted, and [`LocalWake::poll`] polls the connection again at
/// once. A wake when nobody polls (the reactor: the upstream socket is readable) goes to the task
/// that polled last.
///
/// Invariant: a wake is never lost. It either finds the state `POLLING` and turns it into
/// `POLLING_WOKEN` before the holder's closing swap (which sees it and polls again), or finds
/// `IDLE` and wakes the task.
struct LocalWake {
    state: AtomicU8,
    task: Mutex<Option<Waker>>,
}

impl LocalWake {
    fn new() -> (Arc<LocalWake>, Waker) {
        let local = Arc::new(LocalWake { state: AtomicU8::new(IDLE), task: Mutex::new(None) });
        let waker = Waker::from(local.clone());
        (local, waker)
    }

    fn task(&self) -> MutexGuard<'_, Option<Waker>> {
        // Holds a waker only: a panic while holding it leaves nothing inconsistent.
        self.task.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Poll with the connection's waker, on behalf of the task in `cx`: `f` runs again at once
    /// while it is pending and something woke the connection during the run (at most
    /// [`MAX_LOCAL_POLLS`] times; then the task is woken to come back). A wake noted during a
    /// run that ends ready is dropped: whoever holds the connection next polls it before
    /// waiting on it (the response body, the next checkout).
    fn poll<T>(&self, waker: &Waker, cx: &mut Context<'_>, mut f: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        {
            let mut task = self.task();
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let mut local = Context::from_waker(waker);
        for _ in 0..MAX_LOCAL_POLLS {
            self.state.store(POLLING, Ordering::SeqCst);
            let r = f(&mut local);
            let woken = self.state.swap(IDLE, Ordering::SeqCst) == POLLING_WOKEN;
            if r.is_ready() || !woken {
                return r;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Inside [`LocalWake::poll`]'s `f`: forget the wakes so far, because what they are for is
    /// polled next.
    fn forget_wakes(&self) {
        self.state.store(POLLING, Ordering::SeqCst);
    }

    /// Forget the task (the connection goes idle): a later wake has nobody to wake but the
    /// task that takes it next, and must not keep this one's memory alive.
    fn release(&self) {
        *self.task() = None;
    }
}

impl Wake for LocalWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let noted = self.state.compare_exchange(POLLING, POLLING_WOKEN, Ordering::SeqCst, Ordering::SeqCst);
        if matches!(noted, Ok(_) | Err(POLLING_WOKEN)) {
            return;
        }
        let task = self.task().clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

pub(crate) struct Client {
    connector: HttpsConnector<HttpConnector>,
    /// Idle connections per endpoint index, most recently used last.
    idle: Box<[Mutex<Vec<Conn>>]>,
    idle_timeout: Duration,
    max_idle: usize,
    reaper: AtomicBool,
    me: Weak<Client>,
}

impl Client {
    pub(crate) fn new(
        connector: HttpsConnector<HttpConnector>,
        endpoints: usize,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Arc<Client> {
        Arc::new_cyclic(|me| Client {
            connector,
            idle: (0..endpoints).map(|_| Mutex::new(Vec::new())).collect(),
            idle_timeout,
            max_idle,
            reaper: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    fn stack(&self, ep: usize) -> MutexGuard<'_, Vec<Conn>> {
        // A panic while holding the lock cannot leave the stack inconsistent (push and pop only).
        self.idle[ep].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The most recently used idle connection to `ep` that can take a request now.
    fn checkout(&self, ep: usize, cx: &mut Context<'_>) -> Option<Conn> {
        let now = Instant::now();
        loop {
            let mut c = self.stack(ep).pop()?;
            if now.duration_since(c.0.idle_since) < self.idle_timeout && c.ready(cx) {
                return Some(c);
            }
        }
    }

    fn checkin(&self, mut c: Conn) {
        if self.max_idle == 0 || c.0.sender.is_closed() {
            return;
        }
        c.0.idle_since = Instant::now();
        c.0.local.release();
        {
            let mut stack = self.stack(c.0.ep);
            if stack.len() >= self.max_idle {
                return;
            }
            stack.push(c);
        }
        if !self.reaper.swap(true, Ordering::Relaxed) {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(reap(self.me.clone(), self.idle_timeout));
                }
                Err(_) => self.reaper.store(false, Ordering::Relaxed),
            }
        }
    }

    async fn connect(&self, ep: usize, uri: &Uri) -> Result<Conn, ClientError> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx)).await.map_err(ClientError::Connect)?;
        let io = connector.call(uri.clone()).await.map_err(ClientError::Connect)?;
        let (sender, conn) =
            http1::Builder::new().handshake(io).await.map_err(|e| ClientError::Connect(Box::new(e)))?;
        let (local, local_waker) = LocalWake::new();
        Ok(Conn(Box::new(ConnState {
            sender,
            conn,
            idle_since: Instant::now(),
            home: self.me.clone(),
            ep,
            local,
            local_waker,
        })))
    }

    /// Send `req` to endpoint `ep` (`base`: its `scheme://authority`). `req`'s URI is sent in
    /// origin form; a request without `Host` gets the endpoint's. A request that a reused
    /// connection turned away unsent is sent once more on a new connection.
    pub(crate) async fn request(
        &self,
        ep: usize,
        base: &Uri,
        mut req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, ClientError> {
        prepare(&mut req, base);
        let pooled = poll_fn(|cx| Poll::Ready(self.checkout(ep, cx))).await;
        let (reused, conn) = match pooled {
            Some(c) => (true, c),
            None => (false, self.connect(ep, base).await?),
        };
        match exchange(conn, req).await {
            Ok((head, conn)) => Ok(head.map(|body| UpstreamBody { body, conn, ended: false })),
            Err(mut e) if reused => match e.take_message() {
                Some(req) => {
                    let conn = self.connect(ep, base).await?;
                    exchange(conn, req)
                        .await
                        .map(|(head, conn)| head.map(|body| UpstreamBody { body, conn, ended: false }))
                        .map_err(|e| ClientError::Request(e.into_error()))
                }
                None => Err(ClientError::Request(e.into_error())),
            },
            Err(e) => Err(ClientError::Request(e.into_error())),
        }
    }
}

/// Origin-form URI and a `Host` header, as hyper-util's client does for HTTP/1.
fn prepare(req: &mut Request<RequestBody>, base: &Uri) {
    if !req.headers().contains_key(header::HOST) {
        if let Some(a) = base.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
    }
    let origin = match req.uri().path_and_query() {
        Some(pq) if req.uri().scheme().is_some() => Some(Uri::from(pq.clone())),
        None => Some(Uri::from_static("/")),
        Some(_) => None,
    };
    if let Some(o) = origin {
        *req.uri_mut() = o;
    }
}

type Exchanged = (Response<Incoming>, Option<Conn>);
type Failed = hyper::client::conn::TrySendError<Request<RequestBody>>;

/// Send one request on `conn` and drive the connection until the response head arrives. The
/// connection comes back with the head unless it closed.
async fn exchange(conn: Conn, req: Request<RequestBody>) -> Result<Exchanged, Failed> {
    let (local, waker) = (conn.0.local.clone(), conn.0.local_waker.clone());
    let mut open = Some(conn);
    let mut req = Some(req);
    let mut pending = pin!(None);
    let result = poll_fn(|cx| {
        local.poll(&waker, cx, |cx| {
            if let (Some(req), Some(c)) = (req.take(), &mut open) {
                pending.set(Some(c.0.sender.try_send_request(req)));
                // Handing the request over woke the connection, which is driven right below.
                local.forget_wakes();
            }
            // The connection first: the head it parses is then ready to be taken.
            if let Some(c) = &mut open {
                if !c.drive(cx) {
                    // Closed or failed: dropping the dispatcher answers the request with its error.
                    open = None;
                }
            }
            pending.as_mut().as_pin_mut().map_or(Poll::Pending, |p| p.poll(cx))
        })
    })
    .await;
    result.map(|head| (head, open))
}

/// An upstream response body. Reading it drives the connection it arrives on; read to its end,
/// it returns the connection to its endpoint's idle stack.
pub struct UpstreamBody {
    body: Incoming,
    conn: Option<Conn>,
    /// The body has returned its end (`is_end_stream` stays false for chunked bodies).
    ended: bool,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").field("pooled", &self.conn.is_some()).finish_non_exhaustive()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let Some(c) = &mut this.conn else {
            return Pin::new(&mut this.body).poll_frame(cx).map(|f| this.saw(f));
        };
        let st = &mut *c.0;
        let body = &mut this.body;
        let mut closed = false;
        let frame = st.local.poll(&st.local_waker, cx, |cx| {
            if let Poll::Ready(f) = Pin::new(&mut *body).poll_frame(cx) {
                return Poll::Ready(f);
            }
            if closed {
                return Poll::Pending;
            }
            closed = st.conn.poll_without_shutdown(cx).is_ready();
            // The connection may have delivered (or failed) the next frame.
            Pin::new(&mut *body).poll_frame(cx)
        });
        if closed {
            this.conn = None;
        }
        frame.map(|f| this.saw(f))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl UpstreamBody {
    fn saw(&mut self, f: Option<Result<Frame<Bytes>, hyper::Error>>) -> Option<Result<Frame<Bytes>, hyper::Error>> {
        match &f {
            None => self.ended = true,
            Some(Err(_)) => self.conn = None,
            Some(Ok(_)) => {}
        }
        f
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if !self.ended && !self.body.is_end_stream() {
            return;
        }
        if let Some(c) = self.conn.take() {
            if let Some(client) = c.0.home.upgrade() {
                client.checkin(c);
            }
        }
    }
}

/// Close idle connections past the keep-alive timeout, and those the upstream closed (polling
/// them here registers this task to hear of it). Ends with its client.
async fn reap(client: Weak<Client>, idle_timeout: Duration) {
    let period = (idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(c) = client.upgrade() else { return };
        poll_fn(|cx| {
            let now = Instant::now();
            for ep in 0..c.idle.len() {
                c.stack(ep).retain_mut(|conn| now.duration_since(conn.0.idle_since) < idle_timeout && conn.drive(cx));
            }
            Poll::Ready(())
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
