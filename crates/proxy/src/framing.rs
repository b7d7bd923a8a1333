//! Request-smuggling defence for HTTP/1.1 client connections.
//!
//! hyper frames requests correctly, but it silently resolves some ambiguous messages (it drops
//! `Content-Length` when `Transfer-Encoding` is present). A front proxy must refuse those
//! instead, because the next hop may frame them differently. [`FramingTracker`] observes the
//! bytes a client sends, follows message boundaries (heads, Content-Length bodies, chunked
//! bodies) and flags the connection as soon as it sees an ambiguous or malformed message. The
//! service then answers 400 and closes the connection. The tracker never changes bytes.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a connection was flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    ContentLengthAndTransferEncoding = 1,
    ConflictingContentLength = 2,
    BadChunkedFraming = 3,
    BadTransferEncoding = 4,
}

impl Violation {
    pub fn message(self) -> &'static str {
        match self {
            Violation::ContentLengthAndTransferEncoding => "both Content-Length and Transfer-Encoding",
            Violation::ConflictingContentLength => "conflicting Content-Length headers",
            Violation::BadChunkedFraming => "malformed chunked framing",
            Violation::BadTransferEncoding => "unsupported Transfer-Encoding",
        }
    }
    fn from_u8(v: u8) -> Option<Violation> {
        Some(match v {
            1 => Violation::ContentLengthAndTransferEncoding,
            2 => Violation::ConflictingContentLength,
            3 => Violation::BadChunkedFraming,
            4 => Violation::BadTransferEncoding,
            _ => return None,
        })
    }
}

const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug)]
enum State {
    Head(Vec<u8>),
    Body(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkCrlf(u8),
    Trailers(Vec<u8>),
    /// Stop following: HTTP/2, upgrade, or a head hyper will reject itself.
    Passthrough,
}

/// Follows HTTP/1.1 request framing on a byte stream.
#[derive(Debug)]
pub struct FramingTracker {
    state: State,
    max_head: usize,
    first: bool,
    /// Request heads completed so far.
    heads: u64,
}

impl FramingTracker {
    pub fn new(max_head: usize) -> Self {
        FramingTracker { state: State::Head(Vec::new()), max_head, first: true, heads: 0 }
    }

    /// Part of a request head has arrived, not all of it.
    fn partial_head(&self) -> bool {
        matches!(&self.state, State::Head(buf) if !buf.is_empty())
    }

    /// Feed bytes received from the client. Returns the first violation found.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Violation> {
        while !data.is_empty() {
            match &mut self.state {
                State::Passthrough => return Ok(()),
                State::Head(buf) => {
                    if buf.is_empty() {
                        // RFC 9112 §2.2: ignore empty lines before a request line.
                        let skip = data.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return Ok(());
                        }
                        if self.first && data.starts_with(b"PRI ") {
                            self.state = State::Passthrough;
                            return Ok(());
                        }
                        // The whole head in this read (the usual case): inspected in place.
                        if let Some(i) = head_end(data) {
                            let end = i + 4;
                            self.state = inspect_head(&data[..end])?;
                            self.first = false;
                            self.heads += 1;
                            data = &data[end..];
                            continue;
                        }
                    }
                    let start = buf.len().saturating_sub(3);
                    buf.extend_from_slice(data);
                    match head_end(&buf[start..]) {
                        None => {
                            if buf.len() > self.max_head {
                                self.state = State::Passthrough;
                            }
                            return Ok(());
                        }
                        Some(i) => {
                            let end = start + i + 4;
                            let rest_len = buf.len() - end;
                            let next = inspect_head(&buf[..end])?;
                            self.first = false;
                            self.heads += 1;
                            let consumed_here = data.len() - rest_len;
                            data = &data[consumed_here..];
                            self.state = next;
                        }
                    }
                }
                State::Body(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) => match memchr::memchr(b'\n', data) {
                    None => {
                        line.extend_from_slice(data);
                        if line.len() > MAX_CHUNK_LINE {
                            return Err(Violation::BadChunkedFraming);
                        }
                        return Ok(());
                    }
                    Some(i) => {
                        line.extend_from_slice(&data[..=i]);
                        data = &data[i + 1..];
                        if line.len() > MAX_CHUNK_LINE || !line.ends_with(b"\r\n") {
                            return Err(Violation::BadChunkedFraming);
                        }
                        let size = match httparse::parse_chunk_size(line) {
                            Ok(httparse::Status::Complete((_, size))) => size,
                            _ => return Err(Violation::BadChunkedFraming),
                        };
                        self.state = if size == 0 { State::Trailers(Vec::new()) } else { State::ChunkData(size) };
                    }
                },
                State::ChunkData(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::ChunkCrlf(0);
                    }
                }
                State::ChunkCrlf(seen) => {
                    let want = if *seen == 0 { b'\r' } else { b'\n' };
                    if data[0] != want {
                        return Err(Violation::BadChunkedFraming);
                    }
                    data = &data[1..];
                    if *seen == 0 {
                        *seen = 1;
                    } else {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Trailers(buf) => {
                    buf.extend_from_slice(data);
                    let done = if buf.starts_with(b"\r\n") { Some(2) } else { head_end(buf).map(|i| i + 4) };
                    match done {
                        None => {
                            if buf.len() > self.max_head {
                                return Err(Violation::BadChunkedFraming);
                            }
                            return Ok(());
                        }
                        Some(end) => {
                            let rest_len = buf.len() - end;
                            data = &data[data.len() - rest_len..];
                            self.state = State::Head(Vec::new());
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Decide how the body of this request is framed, refusing ambiguity.
/// Where the first `\r\n\r\n` (the end of a head) starts. The searcher is built once:
/// `memmem::find` builds one per call, which cost more than the search of a whole head.
fn head_end(data: &[u8]) -> Option<usize> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    FINDER.find(data)
}

fn inspect_head(head: &[u8]) -> Result<State, Violation> {
    if !may_frame_a_body(head) {
        return Ok(State::Head(Vec::new()));
    }
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(_)) => {}
        // hyper rejects these itself (400/431), so stop following the stream.
        _ => return Ok(State::Passthrough),
    }
    if req.method == Some("CONNECT") {
        return Ok(State::Passthrough);
    }
    let mut content_length: Option<u64> = None;
    let mut te: Option<Vec<u8>> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            for part in h.value.split(|b| *b == b',') {
                let s = std::str::from_utf8(part).map_err(|_| Violation::ConflictingContentLength)?.trim();
                if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Violation::ConflictingContentLength);
                }
                let n: u64 = s.parse().map_err(|_| Violation::ConflictingContentLength)?;
                match content_length {
                    Some(prev) if prev != n => return Err(Violation::ConflictingContentLength),
                    _ => content_length = Some(n),
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let t = te.get_or_insert_with(Vec::new);
            if !t.is_empty() {
                t.push(b',');
            }
            t.extend_from_slice(h.value);
        }
    }
    match (te, content_length) {
        (Some(_), Some(_)) => Err(Violation::ContentLengthAndTransferEncoding),
        (Some(t), None) => {
            let last = t.rsplit(|b| *b == b',').next().unwrap_or_default();
            if req.version != Some(1) || !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Violation::BadTransferEncoding);
            }
            Ok(State::ChunkSize(Vec::new()))
        }
        (None, Some(0)) | (None, None) => Ok(State::Head(Vec::new())),
        (None, Some(n)) => Ok(State::Body(n)),
    }
}

/// False only when no header line can be `Content-Length` or `Transfer-Encoding` and the method
/// is not CONNECT: such a request has no body, whatever else its head holds (a head hyper cannot
/// parse it refuses itself). A line that starts with whitespace (obs-fold) or with either name
/// in any case means true, and the head is parsed in full.
fn may_frame_a_body(head: &[u8]) -> bool {
    if head.starts_with(b"CONNECT ") {
        return true;
    }
    let starts = |line: &[u8], name: &[u8]| line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name);
    // Line ends found with memchr: a head can carry a long token, which a byte-by-byte split
    // would walk at several instructions a byte.
    let mut next = memchr::memchr(b'\n', head).map(|i| i + 1); // past the request line
    while let Some(start) = next.filter(|s| *s < head.len()) {
        let line = &head[start..];
        if matches!(line[0], b' ' | b'\t') || starts(line, b"content-length") || starts(line, b"transfer-encoding") {
            return true;
        }
        next = memchr::memchr(b'\n', line).map(|i| start + i + 1);
    }
    false
}

/// Per-connection state shared between the IO wrapper, the service, the connection task and its
/// watchdog (`server::conn_watchdog`).
#[derive(Debug, Default)]
pub struct ConnState {
    activity: AtomicBool,
    pub(crate) in_flight: AtomicUsize,
    violation: AtomicU8,
    /// HTTP/1.1 request heads completed on this connection (followed by the framing tracker).
    pub(crate) heads: AtomicU64,
    /// Part of a request head has arrived, not all of it.
    pub(crate) partial_head: AtomicBool,
    /// The watchdog asks the connection task to close: [`CLOSE_GRACEFUL`] or [`CLOSE_NOW`].
    pub(crate) close: tokio::sync::Notify,
    pub(crate) close_kind: AtomicU8,
}

/// Finish the request in flight, then close (idle, drain).
pub(crate) const CLOSE_GRACEFUL: u8 = 1;
/// Close at once (a request head took longer than `header_read_timeout`).
pub(crate) const CLOSE_NOW: u8 = 2;

impl ConnState {
    pub fn violation(&self) -> Option<Violation> {
        Violation::from_u8(self.violation.load(Ordering::Acquire))
    }

    /// True when nothing moved since the last call and no request is in flight.
    pub(crate) fn idle_tick(&self) -> bool {
        let active = self.activity.swap(false, Ordering::Relaxed);
        !active && self.in_flight.load(Ordering::Relaxed) == 0
    }

    fn touch(&self) {
        if !self.activity.load(Ordering::Relaxed) {
            self.activity.store(true, Ordering::Relaxed);
        }
    }
}

pin_project_lite::pin_project! {
    /// Client IO wrapper: records activity for the idle timeout and feeds the framing tracker.
    pub struct ConnIo<T> {
        #[pin]
        inner: T,
        state: std::sync::Arc<ConnState>,
        tracker: Option<FramingTracker>,
    }
}

impl<T> ConnIo<T> {
    pub fn new(inner: T, state: std::sync::Arc<ConnState>, tracker: Option<FramingTracker>) -> Self {
        ConnIo { inner, state, tracker }
    }
}

impl<T: AsyncRead> AsyncRead for ConnIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                this.state.touch();
                if let Some(t) = this.tracker {
                    if let Err(v) = t.feed(new) {
                        this.state.violation.store(v as u8, Ordering::Release);
                        *this.tracker = None;
                    } else {
                        // For the watchdog's header timeout; stores only when something changed.
                        if this.state.heads.load(Ordering::Relaxed) != t.heads {
                            this.state.heads.store(t.heads, Ordering::Relaxed);
                        }
                        let partial = t.partial_head();
                        if this.state.partial_head.load(Ordering::Relaxed) != partial {
                            this.state.partial_head.store(partial, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for ConnIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        this.state.touch();
        this.inner.poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        this.state.touch();
        this.inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Result<(), Violation> {
        let mut t = FramingTracker::new(16 * 1024);
        for c in chunks {
            t.feed(c)?;
        }
        Ok(())
    }

    #[test]
    fn plain_requests_pass_even_byte_by_byte() {
        let msg = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(run(&[msg]), Ok(()));
        let bytes: Vec<&[u8]> = msg.chunks(1).collect();
        assert_eq!(run(&bytes), Ok(()));
    }

    #[test]
    fn chunked_bodies_are_followed() {
        let msg = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        // The second request in the stream is ambiguous: found only by following the first body.
        assert_eq!(run(&[msg]), Err(Violation::ContentLengthAndTransferEncoding));
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cl_te = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(run(&[cl_te]), Err(Violation::ContentLengthAndTransferEncoding));
        let dup = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(run(&[dup]), Err(Violation::ConflictingContentLength));
        let list = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\n";
        assert_eq!(run(&[list]), Err(Violation::ConflictingContentLength));
        let te = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n";
        assert_eq!(run(&[te]), Err(Violation::BadTransferEncoding));
        let bad_chunk = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(run(&[bad_chunk]), Err(Violation::BadChunkedFraming));
        let no_crlf = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX";
        assert_eq!(run(&[no_crlf]), Err(Violation::BadChunkedFraming));
    }

    #[test]
    fn a_head_split_across_reads_or_behind_another_message_is_inspected_too() {
        let cl_te = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        // In two reads: the first ends mid-head (copied), the second completes it.
        let (a, b) = cl_te.split_at(20);
        assert_eq!(run(&[a, b]), Err(Violation::ContentLengthAndTransferEncoding));
        // Behind a clean request and its body in the same read (inspected in place).
        let mut two = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok".to_vec();
        two.extend_from_slice(cl_te);
        assert_eq!(run(&[&two]), Err(Violation::ContentLengthAndTransferEncoding));
        // Blank lines before a head are skipped in both paths.
        assert_eq!(run(&[b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"]), Ok(()));
        assert_eq!(run(&[b"\r\n", b"GET / HTTP/1.1\r\nHo", b"st: x\r\n\r\n"]), Ok(()));
    }

    #[test]
    fn heads_without_framing_headers_skip_the_full_parse_and_others_do_not() {
        assert!(!may_frame_a_body(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Type: a\r\nTE: trailers\r\n\r\n"));
        for head in [
            &b"POST / HTTP/1.1\r\nHost: x\r\ncontent-LENGTH: 2\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n Content-Length: 2\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(may_frame_a_body(head), "{}", String::from_utf8_lossy(head));
        }
        // The request line is not a header line, and a name only containing the word is another.
        assert!(!may_frame_a_body(b"GET /content-length HTTP/1.1\r\nX-Content-Length: 1\r\n\r\n"));
        // Either way the tracker follows the body: a GET with a body, then the next request.
        let msg = b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut t = FramingTracker::new(16 * 1024);
        assert_eq!(t.feed(msg), Ok(()));
        assert_eq!(t.heads, 2);
        assert!(!t.partial_head());
    }

    #[test]
    fn same_duplicate_content_length_is_allowed() {
        let dup = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(run(&[dup]), Ok(()));
    }

    #[test]
    fn h2_preface_is_not_followed() {
        assert_eq!(run(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00"]), Ok(()));
    }
}
