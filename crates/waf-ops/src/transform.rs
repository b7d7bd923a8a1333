//! ModSecurity v2 transformations (`t:name`), byte for byte as `apache2/re_tfns.c` and `msc_util.c` do them.
//! Invariant: `apply` returns `None` exactly when the output equals the input, and allocates only once it
//! knows the output differs (a prefilter finds the first byte that can change). No indexing can panic.

use md5::Digest as _;

/// NBSP in ISO-8859-1, which v2 treats as whitespace in compress/removeWhitespace and emits for `&nbsp;`.
const NBSP: u8 = 0xA0;

/// One transformation function, resolved from its name once at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transform {
    Base64Decode,
    Base64DecodeExt,
    Base64Encode,
    CmdLine,
    CompressWhitespace,
    CssDecode,
    EscapeSeqDecode,
    HexDecode,
    HexEncode,
    HtmlEntityDecode,
    JsDecode,
    Length,
    Lowercase,
    Md5,
    NormalizePath,
    NormalizePathWin,
    ParityEven7bit,
    ParityOdd7bit,
    ParityZero7bit,
    RemoveComments,
    RemoveCommentsChar,
    RemoveNulls,
    RemoveWhitespace,
    ReplaceComments,
    ReplaceNulls,
    Sha1,
    SqlHexDecode,
    Trim,
    TrimLeft,
    TrimRight,
    Uppercase,
    UrlDecode,
    UrlDecodeUni,
    UrlEncode,
    Utf8ToUnicode,
}

/// C `isspace` and NBSP: what the whitespace transformations (`compressWhitespace`, `trim`, ...) take for spaces.
const SPACE_BYTES: &[u8] = b" \t\n\x0b\x0c\r\xa0";

impl Transform {
    /// This transformation's number, below 64, for bit sets of transformations (an engine may remember which ones
    /// leave a value unchanged).
    pub fn index(self) -> u32 {
        self as u32
    }

    /// `name` as written after `t:` (case-insensitive, as v2's APR table lookup is). `Ok(None)` for `none`,
    /// which the engine handles by clearing the transformations before it; `Err` for an unknown name.
    pub fn parse(name: &str) -> Result<Option<Transform>, String> {
        let lower = name.to_ascii_lowercase();
        let t = match lower.as_str() {
            "none" => return Ok(None),
            "base64decode" => Transform::Base64Decode,
            "base64decodeext" => Transform::Base64DecodeExt,
            "base64encode" => Transform::Base64Encode,
            "cmdline" => Transform::CmdLine,
            "compresswhitespace" => Transform::CompressWhitespace,
            "cssdecode" => Transform::CssDecode,
            "escapeseqdecode" => Transform::EscapeSeqDecode,
            "hexdecode" => Transform::HexDecode,
            "hexencode" => Transform::HexEncode,
            "htmlentitydecode" => Transform::HtmlEntityDecode,
            "jsdecode" => Transform::JsDecode,
            "length" => Transform::Length,
            "lowercase" => Transform::Lowercase,
            "md5" => Transform::Md5,
            "normalisepath" | "normalizepath" => Transform::NormalizePath,
            "normalisepathwin" | "normalizepathwin" => Transform::NormalizePathWin,
            "parityeven7bit" => Transform::ParityEven7bit,
            "parityodd7bit" => Transform::ParityOdd7bit,
            "parityzero7bit" => Transform::ParityZero7bit,
            "removecomments" => Transform::RemoveComments,
            "removecommentschar" => Transform::RemoveCommentsChar,
            "removenulls" => Transform::RemoveNulls,
            "removewhitespace" => Transform::RemoveWhitespace,
            "replacecomments" => Transform::ReplaceComments,
            "replacenulls" => Transform::ReplaceNulls,
            "sha1" => Transform::Sha1,
            "sqlhexdecode" => Transform::SqlHexDecode,
            "trim" => Transform::Trim,
            "trimleft" => Transform::TrimLeft,
            "trimright" => Transform::TrimRight,
            "uppercase" => Transform::Uppercase,
            "urldecode" => Transform::UrlDecode,
            "urldecodeuni" => Transform::UrlDecodeUni,
            "urlencode" => Transform::UrlEncode,
            "utf8tounicode" => Transform::Utf8ToUnicode,
            _ => return Err(format!("unknown transformation t:{name}")),
        };
        Ok(Some(t))
    }

    /// The canonical (ModSecurity) spelling, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Transform::Base64Decode => "base64Decode",
            Transform::Base64DecodeExt => "base64DecodeExt",
            Transform::Base64Encode => "base64Encode",
            Transform::CmdLine => "cmdLine",
            Transform::CompressWhitespace => "compressWhitespace",
            Transform::CssDecode => "cssDecode",
            Transform::EscapeSeqDecode => "escapeSeqDecode",
            Transform::HexDecode => "hexDecode",
            Transform::HexEncode => "hexEncode",
            Transform::HtmlEntityDecode => "htmlEntityDecode",
            Transform::JsDecode => "jsDecode",
            Transform::Length => "length",
            Transform::Lowercase => "lowercase",
            Transform::Md5 => "md5",
            Transform::NormalizePath => "normalizePath",
            Transform::NormalizePathWin => "normalizePathWin",
            Transform::ParityEven7bit => "parityEven7bit",
            Transform::ParityOdd7bit => "parityOdd7bit",
            Transform::ParityZero7bit => "parityZero7bit",
            Transform::RemoveComments => "removeComments",
            Transform::RemoveCommentsChar => "removeCommentsChar",
            Transform::RemoveNulls => "removeNulls",
            Transform::RemoveWhitespace => "removeWhitespace",
            Transform::ReplaceComments => "replaceComments",
            Transform::ReplaceNulls => "replaceNulls",
            Transform::Sha1 => "sha1",
            Transform::SqlHexDecode => "sqlHexDecode",
            Transform::Trim => "trim",
            Transform::TrimLeft => "trimLeft",
            Transform::TrimRight => "trimRight",
            Transform::Uppercase => "uppercase",
            Transform::UrlDecode => "urlDecode",
            Transform::UrlDecodeUni => "urlDecodeUni",
            Transform::UrlEncode => "urlEncode",
            Transform::Utf8ToUnicode => "utf8toUnicode",
        }
    }

    /// The bytes (256 bits) without which this transformation leaves its input as it is up to ASCII case: an input
    /// with none of them gives an output equal to it compared ASCII case-insensitively. `None` when no such set is
    /// known (decoders and hashes). Lets an engine search the raw value for what the transformed one must contain.
    pub fn case_identity_unless(&self) -> Option<[u64; 4]> {
        let set = |bytes: &[u8]| {
            let mut s = [0u64; 4];
            for &b in bytes {
                if let Some(w) = s.get_mut(usize::from(b >> 6)) {
                    *w |= 1u64 << (b & 63);
                }
            }
            s
        };
        Some(match self {
            Transform::Lowercase | Transform::Uppercase => [0; 4],
            Transform::ReplaceNulls | Transform::RemoveNulls => set(&[0]),
            // Bytes past ASCII (and NUL, where `utf8toUnicode` stops being a no-op).
            Transform::ParityZero7bit => [0, 0, u64::MAX, u64::MAX],
            Transform::Utf8ToUnicode => {
                let mut s = set(&[0]);
                s[2] = u64::MAX;
                s[3] = u64::MAX;
                s
            }
            Transform::RemoveWhitespace
            | Transform::CompressWhitespace
            | Transform::Trim
            | Transform::TrimLeft
            | Transform::TrimRight => set(SPACE_BYTES),
            Transform::UrlDecode | Transform::UrlDecodeUni => set(b"%+"),
            Transform::HtmlEntityDecode => set(b"&"),
            Transform::JsDecode | Transform::CssDecode | Transform::EscapeSeqDecode => set(b"\\"),
            // `/` and `(` only drop a space before them.
            Transform::CmdLine => set(b"\0\"'\\^ ,;\t\r\n"),
            Transform::RemoveComments | Transform::RemoveCommentsChar => set(b"/<-#"),
            Transform::ReplaceComments => set(b"/"),
            Transform::NormalizePath => set(b"./"),
            Transform::NormalizePathWin => set(b"./\\"),
            Transform::ParityEven7bit
            | Transform::ParityOdd7bit
            | Transform::Base64Decode
            | Transform::Base64DecodeExt
            | Transform::Base64Encode
            | Transform::HexDecode
            | Transform::HexEncode
            | Transform::SqlHexDecode
            | Transform::Length
            | Transform::Md5
            | Transform::Sha1
            | Transform::UrlEncode => return None,
        })
    }

    /// For searching the input for strings its output must contain: bytes (256 bits) without which every string `s`
    /// (lowercase) in the output, compared ASCII case-insensitively, has [`Transform::literal_core`]`(s)` in the
    /// input. [`Transform::case_identity_unless`] (the core of `s` is `s`), except for the transformations that only
    /// collapse, map or drop whitespace-like bytes, whose output may differ from an input with spaces only where
    /// spaces are: a sentence through `cmdLine` still has every word of it. `None` when no such set is known.
    pub fn literal_triggers(&self) -> Option<[u64; 4]> {
        match self {
            // Removing a quote, a backslash or a caret joins its neighbours ("i^f" gives "if"); the rest maps `,` `;`
            // and whitespace to a space, collapses spaces, drops a space before `/` and `(`, and stops at NUL.
            Transform::CmdLine => {
                let mut s = [0u64; 4];
                for b in *b"\"'\\^" {
                    if let Some(w) = s.get_mut(usize::from(b >> 6)) {
                        *w |= 1u64 << (b & 63);
                    }
                }
                Some(s)
            }
            Transform::CompressWhitespace | Transform::Trim | Transform::TrimLeft | Transform::TrimRight => {
                Some([0; 4])
            }
            t => t.case_identity_unless(),
        }
    }

    /// The part of `s` (a string the output contains) that the input contains, when it has none of
    /// [`Transform::literal_triggers`]: `s` itself, or for the whitespace transformations the longest part of `s`
    /// between whitespace bytes (what they collapse, write or drop), a part of less than four letters and digits
    /// last (common in text); for `cmdLine` a part also ends before `/` and `(`, which may have had a space dropped
    /// before them. Empty when no part is left (`s` is all spaces).
    pub fn literal_core<'a>(&self, s: &'a [u8]) -> &'a [u8] {
        let is_space = |b: &u8| SPACE_BYTES.contains(b);
        let parts: Vec<&[u8]> = match self {
            Transform::CmdLine => {
                let mut parts = Vec::new();
                for piece in s.split(is_space) {
                    let mut start = 0;
                    for (i, b) in piece.iter().enumerate() {
                        if i > start && matches!(b, b'/' | b'(') {
                            parts.extend(piece.get(start..i));
                            start = i;
                        }
                    }
                    parts.extend(piece.get(start..));
                }
                parts
            }
            Transform::CompressWhitespace | Transform::Trim | Transform::TrimLeft | Transform::TrimRight => {
                s.split(is_space).collect()
            }
            _ => return s,
        };
        let rank = |p: &&[u8]| (p.len() >= 4 || p.iter().any(|b| !b.is_ascii_alphanumeric()), p.len());
        parts.into_iter().max_by_key(rank).unwrap_or_default()
    }

    /// The bytes an input must contain for this transformation's output to contain a byte of `set` (256 bits):
    /// an input with none of them gives an output with none of `set`. `None` when any input might (decoders and
    /// hashes whose output bytes do not follow from the input's). Lets a rule skip a value before transforming it
    /// when its operator needs bytes the value cannot come to contain. Three exact cases:
    /// - byte maps (`lowercase`, `replaceNulls`, ...): the bytes that map into `set`;
    /// - transformations that only remove bytes or map them (`cmdLine`, `compressWhitespace`): the same per byte;
    /// - transformations that leave the input as it is unless it contains a trigger byte (`urlDecode`: `%` or `+`,
    ///   `htmlEntityDecode`: `&`, `jsDecode`: `\\`, ...): `set` and the triggers, whatever they may produce.
    pub fn preimage(&self, set: [u64; 4]) -> Option<[u64; 4]> {
        let has = |s: &[u64; 4], b: u8| s.get(usize::from(b >> 6)).is_some_and(|w| w >> (b & 63) & 1 == 1);
        let add = |s: &mut [u64; 4], b: u8| {
            if let Some(w) = s.get_mut(usize::from(b >> 6)) {
                *w |= 1u64 << (b & 63);
            }
        };
        // Every input byte a maps to at most one output byte g(a) (None: dropped).
        let per_byte = |g: &dyn Fn(u8) -> Option<u8>| {
            let mut pre = [0u64; 4];
            for a in 0..=255u8 {
                if g(a).is_some_and(|b| has(&set, b)) {
                    add(&mut pre, a);
                }
            }
            pre
        };
        let with = |triggers: &[u8]| {
            let mut pre = set;
            for &t in triggers {
                add(&mut pre, t);
            }
            pre
        };
        Some(match self {
            Transform::Lowercase => per_byte(&|a| Some(a.to_ascii_lowercase())),
            Transform::Uppercase => per_byte(&|a| Some(a.to_ascii_uppercase())),
            Transform::ReplaceNulls => per_byte(&|a| Some(if a == 0 { b' ' } else { a })),
            Transform::ParityZero7bit => per_byte(&|a| Some(a & 0x7f)),
            Transform::ParityEven7bit => per_byte(&|a| Some(parity(a, true))),
            Transform::ParityOdd7bit => per_byte(&|a| Some(parity(a, false))),
            // Only remove bytes.
            Transform::RemoveNulls
            | Transform::RemoveWhitespace
            | Transform::Trim
            | Transform::TrimLeft
            | Transform::TrimRight
            | Transform::RemoveCommentsChar => set,
            // Whitespace runs become one ' '.
            Transform::CompressWhitespace => per_byte(&|a| Some(if is_space_nbsp(a) { b' ' } else { a })),
            Transform::CmdLine => per_byte(&|a| match a {
                0 | b'"' | b'\'' | b'\\' | b'^' => None,
                b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => Some(b' '),
                b'/' | b'(' => Some(a),
                _ => Some(a.to_ascii_lowercase()),
            }),
            // `%` escapes give any byte; `+` gives only a space.
            Transform::UrlDecode | Transform::UrlDecodeUni => with(if has(&set, b' ') { b"%+" } else { b"%" }),
            Transform::HtmlEntityDecode => with(b"&"),
            Transform::JsDecode | Transform::CssDecode | Transform::EscapeSeqDecode => with(b"\\"),
            Transform::ReplaceComments => with(b"/"),
            Transform::RemoveComments => with(b"/<-#"),
            Transform::NormalizePath => with(b"./"),
            Transform::NormalizePathWin => with(b"./\\"),
            Transform::Utf8ToUnicode => {
                let mut pre = with(&[0]);
                pre.iter_mut().skip(2).for_each(|w| *w = u64::MAX);
                pre
            }
            Transform::Base64Decode
            | Transform::Base64DecodeExt
            | Transform::Base64Encode
            | Transform::HexDecode
            | Transform::HexEncode
            | Transform::SqlHexDecode
            | Transform::Length
            | Transform::Md5
            | Transform::Sha1
            | Transform::UrlEncode => return None,
        })
    }

    /// Apply to `input`; `None` when the output equals the input (so the caller can avoid a copy).
    pub fn apply(&self, input: &[u8]) -> Option<Vec<u8>> {
        let out = match self {
            Transform::Lowercase => return map_bytes(input, |b| b.to_ascii_lowercase()),
            Transform::Uppercase => return map_bytes(input, |b| b.to_ascii_uppercase()),
            Transform::ReplaceNulls => return map_bytes(input, |b| if b == 0 { b' ' } else { b }),
            Transform::ParityZero7bit => return map_bytes(input, |b| b & 0x7f),
            Transform::ParityEven7bit => return map_bytes(input, |b| parity(b, true)),
            Transform::ParityOdd7bit => return map_bytes(input, |b| parity(b, false)),
            Transform::RemoveNulls => {
                memchr::memchr(0, input)?;
                let mut out = Vec::with_capacity(input.len());
                out.extend(input.iter().copied().filter(|&b| b != 0));
                out
            }
            Transform::RemoveWhitespace => {
                input.iter().position(|&b| is_space_nbsp(b))?;
                let mut out = Vec::with_capacity(input.len());
                out.extend(input.iter().copied().filter(|&b| !is_space_nbsp(b)));
                out
            }
            Transform::CompressWhitespace => compress_whitespace(input)?,
            Transform::Trim => return trim(input, true, true),
            Transform::TrimLeft => return trim(input, true, false),
            Transform::TrimRight => return trim(input, false, true),
            Transform::UrlDecode => url_decode(input, false)?,
            Transform::UrlDecodeUni => url_decode(input, true)?,
            Transform::UrlEncode => url_encode(input),
            Transform::HtmlEntityDecode => {
                // Most `&`s start no entity (`a=1&b=2`): without one that decodes, the output is the input.
                if !memchr::memchr_iter(b'&', input).any(|i| entity_decodes_at(input, i)) {
                    return None;
                }
                html_entity_decode(input)
            }
            Transform::JsDecode => {
                memchr::memchr(b'\\', input)?;
                js_decode(input)
            }
            Transform::CssDecode => {
                memchr::memchr(b'\\', input)?;
                css_decode(input)
            }
            Transform::EscapeSeqDecode => {
                memchr::memchr(b'\\', input)?;
                escape_seq_decode(input)
            }
            Transform::CmdLine => cmd_line(input),
            Transform::RemoveComments => remove_comments(input),
            Transform::RemoveCommentsChar => remove_comments_char(input),
            Transform::ReplaceComments => {
                memchr::memmem::find(input, b"/*")?;
                replace_comments(input)
            }
            Transform::NormalizePath => normalize_path(input, false)?,
            Transform::NormalizePathWin => normalize_path(input, true)?,
            Transform::Base64Decode => base64_decode(input),
            Transform::Base64DecodeExt => base64_decode_ext(input),
            Transform::Base64Encode => base64_encode(input),
            Transform::HexDecode => hex_decode(input),
            Transform::HexEncode => hex_encode(input),
            Transform::SqlHexDecode => sql_hex_decode(input),
            Transform::Length => input.len().to_string().into_bytes(),
            Transform::Md5 => md5::Md5::digest(input).to_vec(),
            Transform::Sha1 => ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, input).as_ref().to_vec(),
            Transform::Utf8ToUnicode => utf8_to_unicode(input)?,
        };
        if out.as_slice() == input {
            None
        } else {
            Some(out)
        }
    }
}

/// C `isspace` in the "C" locale: space, \t, \n, \v, \f, \r.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_space_nbsp(b: u8) -> bool {
    is_space(b) || b == NBSP
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn is_odigit(b: u8) -> bool {
    (b'0'..=b'7').contains(&b)
}

/// v2's `x2c`: no validation, wrapping byte arithmetic (so non-hex input gives v2's garbage, never a panic).
fn x2c(a: u8, b: u8) -> u8 {
    xsingle2c(a).wrapping_mul(16).wrapping_add(xsingle2c(b))
}

fn xsingle2c(a: u8) -> u8 {
    if a >= b'A' {
        (a & 0xdf).wrapping_sub(b'A').wrapping_add(10)
    } else {
        a.wrapping_sub(b'0')
    }
}

fn at(input: &[u8], i: usize) -> u8 {
    // The C code reads the NUL terminator past the end; 0 is what it sees.
    input.get(i).copied().unwrap_or(0)
}

/// Byte-wise map that allocates only at the first changed byte.
fn map_bytes(input: &[u8], f: impl Fn(u8) -> u8) -> Option<Vec<u8>> {
    let first = input.iter().position(|&b| f(b) != b)?;
    let mut out = Vec::with_capacity(input.len());
    out.extend_from_slice(input.get(..first).unwrap_or_default());
    out.extend(input.iter().skip(first).map(|&b| f(b)));
    Some(out)
}

fn parity(x: u8, even: bool) -> u8 {
    // v2 computes the parity over all 8 bits of the input byte and then sets or clears bit 7.
    let odd_bits = (x.count_ones() & 1) == 1;
    if odd_bits == even {
        x | 0x80
    } else {
        x & 0x7f
    }
}

fn trim(input: &[u8], left: bool, right: bool) -> Option<Vec<u8>> {
    let mut start = 0;
    let mut end = input.len();
    if left {
        while start < end && input.get(start).is_some_and(|&b| is_space(b)) {
            start += 1;
        }
    }
    if right {
        while end > start && input.get(end - 1).is_some_and(|&b| is_space(b)) {
            end -= 1;
        }
    }
    if start == 0 && end == input.len() {
        None
    } else {
        Some(input.get(start..end).unwrap_or_default().to_vec())
    }
}

fn compress_whitespace(input: &[u8]) -> Option<Vec<u8>> {
    // Unchanged iff every whitespace run is a single ' '.
    let needs = input
        .iter()
        .enumerate()
        .any(|(i, &b)| is_space_nbsp(b) && (b != b' ' || input.get(i + 1).is_some_and(|&n| is_space_nbsp(n))));
    if !needs {
        return None;
    }
    let mut out = Vec::with_capacity(input.len());
    let mut in_ws = false;
    for &b in input {
        if is_space_nbsp(b) {
            in_ws = true;
        } else {
            if in_ws {
                out.push(b' ');
                in_ws = false;
            }
            out.push(b);
        }
    }
    if in_ws {
        out.push(b' ');
    }
    Some(out)
}

/// `urldecode_nonstrict_inplace_ex` / `urldecode_uni_nonstrict_inplace_ex` (with `uni`): invalid escapes stay.
fn url_decode(input: &[u8], uni: bool) -> Option<Vec<u8>> {
    let mut next = memchr::memchr2(b'%', b'+', input)?;
    let mut out = Vec::with_capacity(input.len());
    let n = input.len();
    // Bytes before `next` (the next `%` or `+`) are copied as they are, a run at a time.
    let mut copied = 0;
    loop {
        out.extend_from_slice(input.get(copied..next).unwrap_or_default());
        let mut i = next;
        if at(input, i) == b'+' {
            out.push(b' ');
            i += 1;
        } else {
            let c1 = at(input, i + 1);
            if uni && (c1 == b'u' || c1 == b'U') {
                if i + 5 < n && (2..=5).all(|k| is_hex(at(input, i + k))) {
                    // IIS %uHHHH: the low byte, plus the full-width ASCII (U+FF01..U+FF5E) fix-up.
                    let mut d = x2c(at(input, i + 4), at(input, i + 5));
                    let (h1, h2) = (at(input, i + 2), at(input, i + 3));
                    if d > 0 && d < 0x5f && (h1 == b'f' || h1 == b'F') && (h2 == b'f' || h2 == b'F') {
                        d += 0x20;
                    }
                    out.push(d);
                    i += 6;
                } else {
                    out.extend_from_slice(&[b'%', c1]);
                    i += 2;
                }
            } else if i + 2 < n && is_hex(c1) && is_hex(at(input, i + 2)) {
                out.push(x2c(c1, at(input, i + 2)));
                i += 3;
            } else {
                out.push(b'%');
                i += 1;
            }
        }
        copied = i;
        match input.get(i..).and_then(|rest| memchr::memchr2(b'%', b'+', rest)) {
            Some(k) => next = i + k,
            None => break,
        }
    }
    out.extend_from_slice(input.get(copied..).unwrap_or_default());
    Some(out)
}

fn url_encode(input: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(input.len() * 3);
    for &c in input {
        if c == b' ' {
            out.push(b'+');
        } else if c == b'*' || c.is_ascii_alphanumeric() {
            out.push(c);
        } else {
            out.push(b'%');
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0x0f)]);
        }
    }
    out
}

/// Named entities v2 decodes (case-insensitively): the classic five plus the ASCII punctuation set added
/// by the GHSA-cxqf-vgrr-xxrv fix (`&colon;`, `&apos;`, ...).
pub(crate) fn named_entity(name: &[u8]) -> Option<u8> {
    // The lowercased name, matched (by length first); `tests::NAMED_ENTITIES` lists the same names.
    let mut buf = [0u8; 6];
    let lower = buf.get_mut(..name.len()).filter(|_| name.len() >= 2)?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    Some(match &*lower {
        b"quot" => b'"',
        b"amp" => b'&',
        b"lt" => b'<',
        b"gt" => b'>',
        b"nbsp" => NBSP,
        b"colon" => b':',
        b"apos" => b'\'',
        b"num" => b'#',
        b"dollar" => b'$',
        b"percnt" => b'%',
        b"lpar" => b'(',
        b"rpar" => b')',
        b"ast" => b'*',
        b"plus" => b'+',
        b"comma" => b',',
        b"hyphen" => b'-',
        b"period" => b'.',
        b"sol" => b'/',
        b"semi" => b';',
        b"equals" => b'=',
        b"quest" => b'?',
        b"commat" => b'@',
        b"lbrack" => b'[',
        b"bsol" => b'\\',
        b"rbrack" => b']',
        b"caret" => b'^',
        b"lowbar" => b'_',
        b"grave" => b'`',
        b"lbrace" => b'{',
        b"verbar" => b'|',
        b"rbrace" => b'}',
        b"tilde" => b'~',
        _ => return None,
    })
}

/// C `strtol` on a run of digits, truncated to a byte: overflow saturates at LONG_MAX (low byte 0xff).
fn strtol_byte(digits: &[u8], radix: u32) -> u8 {
    let mut v: u64 = 0;
    for &d in digits {
        let x = match char::from(d).to_digit(radix) {
            Some(x) => u64::from(x),
            None => break,
        };
        v = match v.checked_mul(u64::from(radix)).and_then(|v| v.checked_add(x)) {
            Some(v) if v <= i64::MAX as u64 => v,
            _ => return 0xff,
        };
    }
    (v & 0xff) as u8
}

/// Whether [`html_entity_decode`] decodes the `&` at `i` (rather than copying it): `&#` and decimal digits, `&#x`
/// and hex digits, or `&` and a run of letters and digits that names an entity.
fn entity_decodes_at(input: &[u8], i: usize) -> bool {
    let n = input.len();
    if at(input, i) != b'&' || i + 1 >= n {
        return false;
    }
    if at(input, i + 1) == b'#' {
        if i + 2 >= n {
            return false;
        }
        let hex = matches!(at(input, i + 2), b'x' | b'X');
        if hex {
            i + 3 < n && is_hex(at(input, i + 3))
        } else {
            at(input, i + 2).is_ascii_digit()
        }
    } else {
        let run = input.get(i + 1..).unwrap_or_default().iter().take_while(|b| b.is_ascii_alphanumeric()).count();
        run > 0 && named_entity(input.get(i + 1..i + 1 + run).unwrap_or_default()).is_some()
    }
}

pub(crate) fn html_entity_decode(input: &[u8]) -> Vec<u8> {
    let n = input.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let mut copy = 1;
        if at(input, i) == b'&' && i + 1 < n {
            let mut j = i + 1;
            if at(input, j) == b'#' {
                copy += 1;
                if j + 1 < n {
                    j += 1;
                    let hex = matches!(at(input, j), b'x' | b'X');
                    let ok = if hex {
                        copy += 1;
                        j + 1 < n
                    } else {
                        true
                    };
                    if ok {
                        if hex {
                            j += 1;
                        }
                        let k = j;
                        while j < n && (if hex { is_hex(at(input, j)) } else { at(input, j).is_ascii_digit() }) {
                            j += 1;
                        }
                        if j > k {
                            out.push(strtol_byte(input.get(k..j).unwrap_or_default(), if hex { 16 } else { 10 }));
                            i = if at(input, j) == b';' && j < n { j + 1 } else { j };
                            continue;
                        }
                    }
                }
            } else {
                let k = j;
                while j < n && at(input, j).is_ascii_alphanumeric() {
                    j += 1;
                }
                if j > k {
                    if let Some(v) = named_entity(input.get(k..j).unwrap_or_default()) {
                        out.push(v);
                        i = if j < n && at(input, j) == b';' { j + 1 } else { j };
                        continue;
                    }
                    copy = j - k + 1;
                }
            }
        }
        let end = (i + copy).min(n);
        out.extend_from_slice(input.get(i..end).unwrap_or_default());
        i = end;
    }
    out
}

/// v2 octal escape: up to 3 octal digits after the backslash at `i`; returns (value, digits used).
fn octal_at(input: &[u8], i: usize, limit_byte: bool) -> (u32, usize) {
    let n = input.len();
    let mut j = 0;
    while i + 1 + j < n && j < 3 {
        j += 1;
        if !is_odigit(at(input, i + 1 + j)) {
            break;
        }
    }
    if limit_byte && j == 3 && at(input, i + 1) > b'3' {
        j = 2;
    }
    let v = input.get(i + 1..i + 1 + j).unwrap_or_default().iter().fold(0u32, |v, &d| v * 8 + u32::from(d - b'0'));
    (v, j)
}

fn js_decode(input: &[u8]) -> Vec<u8> {
    let n = input.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let c = at(input, i);
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let c1 = at(input, i + 1);
        if i + 5 < n && c1 == b'u' && (2..=5).all(|k| is_hex(at(input, i + k))) {
            let mut d = x2c(at(input, i + 4), at(input, i + 5));
            let (h1, h2) = (at(input, i + 2), at(input, i + 3));
            if d > 0 && d < 0x5f && (h1 == b'f' || h1 == b'F') && (h2 == b'f' || h2 == b'F') {
                d += 0x20;
            }
            out.push(d);
            i += 6;
        } else if i + 3 < n && c1 == b'x' && is_hex(at(input, i + 2)) && is_hex(at(input, i + 3)) {
            out.push(x2c(at(input, i + 2), at(input, i + 3)));
            i += 4;
        } else if i + 1 < n && is_odigit(c1) {
            let (v, j) = octal_at(input, i, true);
            out.push((v & 0xff) as u8);
            i += 1 + j;
        } else if i + 1 < n {
            out.push(match c1 {
                b'a' => 0x07,
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 0x0b,
                other => other,
            });
            i += 2;
        } else {
            out.extend_from_slice(input.get(i..).unwrap_or_default());
            i = n;
        }
    }
    out
}

fn css_decode(input: &[u8]) -> Vec<u8> {
    let n = input.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let c = at(input, i);
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        if i + 1 >= n {
            // A trailing backslash is a continuation to nothing.
            i += 1;
            continue;
        }
        i += 1;
        let mut j = 0;
        while j < 6 && i + j < n && is_hex(at(input, i + j)) {
            j += 1;
        }
        if j > 0 {
            let last2 = |k: usize| x2c(at(input, i + k - 2), at(input, i + k - 1));
            let mut fullcheck = false;
            let mut d = match j {
                1 => xsingle2c(at(input, i)),
                2 | 3 => last2(j),
                4 => {
                    fullcheck = true;
                    last2(j)
                }
                5 => {
                    fullcheck = at(input, i) == b'0';
                    last2(j)
                }
                _ => {
                    fullcheck = at(input, i) == b'0' && at(input, i + 1) == b'0';
                    last2(j)
                }
            };
            if fullcheck
                && d > 0
                && d < 0x5f
                && matches!(at(input, i + j - 3), b'f' | b'F')
                && matches!(at(input, i + j - 4), b'f' | b'F')
            {
                d += 0x20;
            }
            out.push(d);
            // A single whitespace after a hex escape is part of the escape.
            if i + j < n && is_space(at(input, i + j)) {
                j += 1;
            }
            i += j;
        } else if at(input, i) == b'\n' {
            i += 1;
        } else {
            out.push(at(input, i));
            i += 1;
        }
    }
    out
}

fn escape_seq_decode(input: &[u8]) -> Vec<u8> {
    let n = input.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let c = at(input, i);
        if !(c == b'\\' && i + 1 < n) {
            out.push(c);
            i += 1;
            continue;
        }
        let c1 = at(input, i + 1);
        let simple = match c1 {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' => Some(b'\\'),
            b'?' => Some(b'?'),
            b'\'' => Some(b'\''),
            b'"' => Some(b'"'),
            _ => None,
        };
        if let Some(v) = simple {
            out.push(v);
            i += 2;
            continue;
        }
        if (c1 == b'x' || c1 == b'X') && i + 3 < n && is_hex(at(input, i + 2)) && is_hex(at(input, i + 3)) {
            out.push(x2c(at(input, i + 2), at(input, i + 3)));
            i += 4;
            continue;
        }
        if is_odigit(c1) {
            let (v, j) = octal_at(input, i, false);
            if j > 0 {
                out.push((v & 0xff) as u8);
                i += 1 + j;
                continue;
            }
        }
        // Unrecognised: drop the backslash, keep the character.
        out.push(c1);
        i += 2;
    }
    out
}

/// v2 `cmdline`: works on a C string, so it stops at the first NUL.
fn cmd_line(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut space = false;
    for &c in input.iter().take_while(|&&b| b != 0) {
        match c {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                if space {
                    out.pop();
                }
                space = false;
                out.push(c);
            }
            _ => {
                out.push(c.to_ascii_lowercase());
                space = false;
            }
        }
    }
    out
}

fn starts(input: &[u8], i: usize, pat: &[u8]) -> bool {
    input.get(i..).is_some_and(|s| s.starts_with(pat))
}

/// v2 `removeComments` (with the fix of the later 2.9 releases: text after a closing `*/` or `-->` is
/// scanned again instead of copied blindly). `--` and `#` outside a comment end the value.
fn remove_comments(input: &[u8]) -> Vec<u8> {
    let n = input.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    let mut incomment = false;
    while i < n {
        if !incomment {
            if starts(input, i, b"/*") {
                incomment = true;
                i += 2;
            } else if starts(input, i, b"<!--") {
                incomment = true;
                i += 4;
            } else if starts(input, i, b"--") || at(input, i) == b'#' {
                break;
            } else {
                out.push(at(input, i));
                i += 1;
            }
        } else if starts(input, i, b"*/") {
            incomment = false;
            i += 2;
        } else if starts(input, i, b"-->") {
            incomment = false;
            i += 3;
        } else {
            i += 1;
        }
    }
    if incomment {
        out.push(b' ');
    }
    out
}

fn remove_comments_char(input: &[u8]) -> Vec<u8> {
    let n = input.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        if starts(input, i, b"/*") || starts(input, i, b"*/") {
            i += 2;
        } else if starts(input, i, b"<!--") {
            i += 4;
        } else if starts(input, i, b"-->") {
            i += 3;
        } else if starts(input, i, b"--") {
            i += 2;
        } else if at(input, i) == b'#' {
            i += 1;
        } else {
            out.push(at(input, i));
            i += 1;
        }
    }
    out
}

fn replace_comments(input: &[u8]) -> Vec<u8> {
    let n = input.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    let mut incomment = false;
    while i < n {
        if !incomment {
            if starts(input, i, b"/*") {
                incomment = true;
                i += 2;
            } else {
                out.push(at(input, i));
                i += 1;
            }
        } else if starts(input, i, b"*/") {
            incomment = false;
            i += 2;
            out.push(b' ');
        } else {
            i += 1;
        }
    }
    if incomment {
        out.push(b' ');
    }
    out
}

/// v2 `normalize_path_inplace`, transcribed with signed indices (`dst` may step before the start, as the
/// C pointer does, and is clamped back the same way).
fn normalize_path(input: &[u8], win: bool) -> Option<Vec<u8>> {
    let has_dot = memchr::memchr(b'.', input).is_some();
    let has_dslash = memchr::memmem::find(input, b"//").is_some();
    let has_bslash = win && memchr::memchr(b'\\', input).is_some();
    if !has_dot && !has_dslash && !has_bslash {
        return None;
    }
    let mut buf = input.to_vec();
    let len = buf.len() as isize;
    if len == 0 {
        return None;
    }
    let is_sep = |b: u8| b == b'/' || (win && b == b'\\');
    let end: isize = len - 1;
    let get =
        |buf: &Vec<u8>, k: isize| -> u8 { usize::try_from(k).ok().and_then(|k| buf.get(k).copied()).unwrap_or(0) };
    let relative = !is_sep(get(&buf, 0));
    let trailing = is_sep(get(&buf, end));
    let (mut src, mut dst): (isize, isize) = (0, 0);
    let mut hitroot = false;
    let mut done = false;
    while !done && src <= end && dst <= end {
        if win {
            for k in [src, src + 1] {
                if k <= end && get(&buf, k) == b'\\' {
                    if let Some(b) = usize::try_from(k).ok().and_then(|k| buf.get_mut(k)) {
                        *b = b'/';
                    }
                }
            }
        }
        let mut skip_copy = false;
        let mut normalize = true;
        if src == end {
            done = true;
        } else if get(&buf, src + 1) != b'/' {
            normalize = false;
        }
        if normalize {
            let s = get(&buf, src);
            if src != end && s == b'/' {
                // Empty segment: the copy below collapses repeated slashes.
            } else if s == b'.' {
                if dst > 0 && get(&buf, dst - 1) == b'.' {
                    if relative && (hitroot || dst - 2 <= 0) {
                        hitroot = true;
                    } else {
                        dst -= 3;
                        while dst > 0 && get(&buf, dst) != b'/' {
                            dst -= 1;
                        }
                        if dst <= 0 {
                            hitroot = true;
                            dst = 0;
                            if !relative && src == end {
                                dst += 1;
                            }
                        }
                        if done {
                            break;
                        }
                        src += 1;
                    }
                } else if dst == 0 {
                    if done {
                        break;
                    }
                    src += 1;
                } else if get(&buf, dst - 1) == b'/' {
                    if done {
                        break;
                    }
                    dst -= 1;
                    src += 1;
                }
            } else if dst > 0 {
                hitroot = false;
            }
        }
        // copy:
        if get(&buf, src) == b'/' {
            while src < end && is_sep(get(&buf, src + 1)) {
                src += 1;
            }
            if relative && dst == 0 {
                src += 1;
                skip_copy = true;
            }
        }
        if !skip_copy {
            let v = get(&buf, src);
            if let Some(b) = usize::try_from(dst).ok().and_then(|d| buf.get_mut(d)) {
                *b = v;
            }
            dst += 1;
            src += 1;
        }
    }
    if !trailing && dst > 0 && get(&buf, dst - 1) == b'/' {
        dst -= 1;
    }
    buf.truncate(usize::try_from(dst.max(0)).unwrap_or(0));
    Some(buf)
}

/// apr's base64 table: standard alphabet only.
fn b64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// `apr_base64_decode`: decodes the longest prefix of alphabet characters, ignores the rest.
fn base64_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    // Four characters at a time; the first one outside the alphabet ends the data (reading on past it is harmless:
    // its group is the last).
    let mut vals = input.iter().map_while(|&c| b64_value(c));
    loop {
        match (vals.next(), vals.next(), vals.next(), vals.next()) {
            (Some(a), Some(b), Some(c), Some(d)) => {
                out.extend_from_slice(&[a << 2 | b >> 4, b << 4 | c >> 2, c << 6 | d])
            }
            (Some(a), Some(b), Some(c), None) => break out.extend_from_slice(&[a << 2 | b >> 4, b << 4 | c >> 2]),
            (Some(a), Some(b), None, _) => break out.push(a << 2 | b >> 4),
            _ => break,
        }
    }
    out
}

/// v2 `decode_base64_ext`: also accepts the URL-safe alphabet, skips other characters, and gives an empty
/// result when `=` appears in the middle of the data.
fn base64_decode_ext(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut acc: u8 = 0;
    let mut i: usize = 0;
    for (pos, &c) in input.iter().enumerate() {
        if c == 0 {
            break;
        }
        if c == b'=' {
            if at(input, pos + 1) != b'=' && i % 4 == 1 {
                return Vec::new();
            }
            continue;
        }
        let v = match c {
            b'-' => 62,
            b'_' => 63,
            _ => match b64_value(c) {
                Some(v) => v,
                None => continue,
            },
        };
        match i % 4 {
            0 => acc = v << 2,
            1 => {
                out.push(acc | v >> 4);
                acc = (v & 0x0f) << 4;
            }
            2 => {
                out.push(acc | v >> 2);
                acc = (v & 0x03) << 6;
            }
            _ => out.push(acc | v),
        }
        i += 1;
    }
    out
}

fn base64_encode(input: &[u8]) -> Vec<u8> {
    const ALPHA: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let enc = |v: u32| ALPHA[(v & 63) as usize];
    let mut out = Vec::with_capacity(input.len().div_ceil(3) * 4);
    for ch in input.chunks(3) {
        let b = [at(ch, 0), at(ch, 1), at(ch, 2)];
        let v = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        out.push(enc(v >> 18));
        out.push(enc(v >> 12));
        out.push(if ch.len() > 1 { enc(v >> 6) } else { b'=' });
        out.push(if ch.len() > 2 { enc(v) } else { b'=' });
    }
    out
}

/// v2 `hex2bytes_inplace`: pairs of characters through `x2c`, no validation; an odd last character is dropped.
fn hex_decode(input: &[u8]) -> Vec<u8> {
    input.chunks_exact(2).map(|p| x2c(at(p, 0), at(p, 1))).collect()
}

fn hex_encode(input: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(input.len() * 2);
    for &b in input {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
    out
}

/// v2 `sql_hex2bytes_inplace`: `0xHHHH..` runs become bytes; works on a C string (stops at NUL).
fn sql_hex_decode(input: &[u8]) -> Vec<u8> {
    let s: &[u8] = input.split(|&b| b == 0).next().unwrap_or_default();
    let n = s.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        if at(s, i) == b'0' && at(s, i + 1).eq_ignore_ascii_case(&b'x') && is_hex(at(s, i + 2)) && is_hex(at(s, i + 3))
        {
            i += 2;
            while is_hex(at(s, i)) && is_hex(at(s, i + 1)) {
                out.push(x2c(at(s, i), at(s, i + 1)));
                i += 2;
            }
        } else {
            out.push(at(s, i));
            i += 1;
        }
    }
    out
}

/// v2 `utf8_unicode_inplace_ex`: valid multi-byte UTF-8 becomes `%uHHHH` (lowercase, at least 4 digits);
/// quirks kept: invalid lead bytes with bad continuations are dropped, overlong/surrogate forms emit the
/// lead byte after the escape, and the 4-byte form computes the third byte with v2's `< 6` (not `<< 6`).
/// The result is a C string: it ends at the first NUL. `None` when nothing multi-byte was converted and
/// no NUL truncated the input (v2's `changed == 0`).
fn utf8_to_unicode(input: &[u8]) -> Option<Vec<u8>> {
    if input.iter().all(|&b| b != 0 && b < 0x80) {
        return None;
    }
    let n = input.len();
    let mut out = Vec::with_capacity(n * 2);
    let mut i = 0;
    let push_u = |out: &mut Vec<u8>, d: u32| {
        let hex = format!("{d:x}");
        out.extend_from_slice(b"%u");
        for _ in hex.len()..4 {
            out.push(b'0');
        }
        out.extend_from_slice(hex.as_bytes());
    };
    while i < n {
        let c = at(input, i);
        let left = n - i;
        let cont = |k: usize| at(input, i + k) & 0xC0 == 0x80;
        let mut unicode_len = 0usize;
        let mut d: u32 = 0;
        if c & 0x80 == 0 {
            out.push(c);
        } else if c & 0xE0 == 0xC0 {
            if left >= 2 && cont(1) {
                unicode_len = 2;
                d = (u32::from(c & 0x1F) << 6) | u32::from(at(input, i + 1) & 0x3F);
                push_u(&mut out, d);
            }
        } else if c & 0xF0 == 0xE0 {
            if left >= 3 && cont(1) && cont(2) {
                unicode_len = 3;
                d = (u32::from(c & 0x0F) << 12)
                    | (u32::from(at(input, i + 1) & 0x3F) << 6)
                    | u32::from(at(input, i + 2) & 0x3F);
                push_u(&mut out, d);
            }
        } else if c & 0xF8 == 0xF0 {
            if c >= 0xF5 {
                out.push(c);
            }
            if left >= 4 && cont(1) && cont(2) && cont(3) {
                unicode_len = 4;
                d = (u32::from(c & 0x07) << 18)
                    | (u32::from(at(input, i + 1) & 0x3F) << 12)
                    | u32::from((at(input, i + 2) & 0x3F) < 6)
                    | u32::from(at(input, i + 3) & 0x3F);
                push_u(&mut out, d);
            }
        } else {
            out.push(c);
        }
        if (0xD800..=0xDFFF).contains(&d) {
            out.push(c);
        }
        if (unicode_len == 4 && d < 0x10000) || (unicode_len == 3 && d < 0x800) || (unicode_len == 2 && d < 0x80) {
            out.push(c);
        }
        i += unicode_len.max(1);
    }
    if let Some(nul) = memchr::memchr(0, &out) {
        out.truncate(nul);
    }
    Some(out)
}
