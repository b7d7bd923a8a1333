//! zstd layer streams (`application/vnd.oci.image.layer.v1.tar+zstd`): one or more frames in sequence
//! (RFC 8878 section 3), skippable frames skipped, each frame decoded by the pure-Rust `ruzstd`. Memory per
//! frame is bounded by the decoder's window limit (128 MiB) whatever a frame declares; the decompressed
//! size is bounded by the caller's tar-entry limits. Bytes that are not a frame are an error.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

/// Magic number of a zstd frame (little-endian on the wire: `28 b5 2f fd`).
const FRAME_MAGIC: u32 = 0xFD2F_B528;

/// Skippable frames use the magic numbers 0x184D2A50 to 0x184D2A5F.
fn is_skippable(magic: u32) -> bool {
    magic & 0xFFFF_FFF0 == 0x184D_2A50
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A reader that first gives back the magic number read to classify the frame.
struct Prefixed<R> {
    head: [u8; 4],
    used: usize,
    inner: R,
}

impl<R: Read> Read for Prefixed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = self.head.get(self.used..).unwrap_or_default();
        if rest.is_empty() {
            return self.inner.read(buf);
        }
        let n = rest.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.used += n;
        Ok(n)
    }
}

enum State<R: Read> {
    /// At a frame boundary (or at the start).
    Between(R),
    /// Inside a frame.
    Frame(Box<StreamingDecoder<Prefixed<R>, FrameDecoder>>),
    /// A previous read failed; the stream cannot resume.
    Failed,
}

/// Decompresses a whole zstd stream (every frame) as one `Read`.
pub(crate) struct ZstdStream<R: BufRead> {
    state: State<R>,
}

impl<R: BufRead> ZstdStream<R> {
    pub(crate) fn new(inner: R) -> Self {
        ZstdStream { state: State::Between(inner) }
    }
}

impl<R: BufRead> Read for ZstdStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            // Any early return through `?` leaves the state `Failed`.
            match std::mem::replace(&mut self.state, State::Failed) {
                State::Failed => return Err(invalid("zstd stream: an earlier read failed".into())),
                State::Frame(mut dec) => {
                    let n = dec.read(buf)?;
                    if n > 0 {
                        self.state = State::Frame(dec);
                        return Ok(n);
                    }
                    self.state = State::Between(dec.into_inner().inner);
                }
                State::Between(mut src) => {
                    if src.fill_buf()?.is_empty() {
                        self.state = State::Between(src);
                        return Ok(0);
                    }
                    let mut magic = [0u8; 4];
                    src.read_exact(&mut magic)?;
                    let m = u32::from_le_bytes(magic);
                    if is_skippable(m) {
                        let mut len = [0u8; 4];
                        src.read_exact(&mut len)?;
                        let len = u64::from(u32::from_le_bytes(len));
                        if io::copy(&mut (&mut src).take(len), &mut io::sink())? != len {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "zstd: truncated skippable frame",
                            ));
                        }
                        self.state = State::Between(src);
                        continue;
                    }
                    if m != FRAME_MAGIC {
                        return Err(invalid(format!(
                            "zstd: bytes after the last frame are not a frame (magic {m:#010x})"
                        )));
                    }
                    let dec = StreamingDecoder::new(Prefixed { head: magic, used: 0, inner: src })
                        .map_err(|e| invalid(format!("zstd frame header: {e}")))?;
                    self.state = State::Frame(Box::new(dec));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ZstdStream::new(data).read_to_end(&mut out)?;
        Ok(out)
    }

    /// A frame by hand: magic, descriptor (single segment, 1-byte content size), one raw last block.
    fn raw_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = FRAME_MAGIC.to_le_bytes().to_vec();
        f.push(0x20); // Single_Segment_flag, Frame_Content_Size_flag 0 → 1 byte
        f.push(payload.len() as u8);
        let header = (payload.len() as u32) << 3 | 1; // Last_Block, Raw_Block
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_in_sequence_with_skippable_frames() {
        assert_eq!(decode(&raw_frame(b"hello")).unwrap(), b"hello");
        let mut s = raw_frame(b"hello, ");
        s.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
        s.extend_from_slice(&3u32.to_le_bytes());
        s.extend_from_slice(b"xyz");
        s.extend(raw_frame(b""));
        s.extend(raw_frame(b"world"));
        assert_eq!(decode(&s).unwrap(), b"hello, world");
        assert_eq!(decode(b"").unwrap(), b"");
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let mut s = raw_frame(b"hello");
        s.extend_from_slice(b"junk");
        assert_eq!(decode(&s).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let whole = raw_frame(b"hello");
        assert!(decode(&whole[..whole.len() - 2]).is_err());
        let mut skip = 0x184D_2A50u32.to_le_bytes().to_vec();
        skip.extend_from_slice(&100u32.to_le_bytes());
        assert_eq!(decode(&skip).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        // A frame declaring a window far above the decoder's limit is refused before any allocation:
        // window descriptor exponent 31 (2 GiB), no single-segment flag.
        let mut big = FRAME_MAGIC.to_le_bytes().to_vec();
        big.extend_from_slice(&[0x00, (31 - 10) << 3]);
        big.extend_from_slice(&[1, 0, 0]);
        assert_eq!(decode(&big).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
