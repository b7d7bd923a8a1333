//! Format-preserving tokens. A value is split into kept characters (punctuation, and a card's last
//! four digits when asked) and free digits; only free digits change, through FF1 (radix 10, NIST
//! SP 800-38G) or at random (vault tokens). Invariant: every format has at least 6 free digits,
//! the 10^6 domain floor of SP 800-38G Rev. 1.
//!
//! Card numbers: the input must pass the Luhn check, and the token deliberately FAILS it (its
//! Luhn sum is always 5 mod 10), so a token can never be charged or mistaken for a card by a
//! scanner, while it keeps length, punctuation and (by default) the last four digits. The digit
//! just before the kept suffix is the check position: it is recomputed, not encrypted.

use fpe::ff1::{FlexibleNumeralString, FF1};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, VaultError};
use crate::keys::fill_random;

/// Longest value accepted for tokenization, in bytes.
pub const MAX_VALUE_LEN: usize = 64;
/// Fewest free digits (SP 800-38G Rev. 1: radix^len >= 1,000,000).
pub const MIN_FREE_DIGITS: usize = 6;
/// The Luhn sum of every card token, mod 10 (a valid card has 0).
const TOKEN_LUHN_RESIDUE: u32 = 5;

/// What a value looks like; decides which characters are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormat {
    /// 12 to 19 digits with optional spaces or dashes; must pass Luhn; the token fails Luhn.
    Card,
    /// `123-45-6789` or `123456789`: dashes kept.
    Ssn,
    /// 6 to 15 digits with `+ ( ) - . ` and spaces kept where they are.
    Phone,
    /// 6 to 64 digits, nothing else.
    Digits,
}

impl TokenFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenFormat::Card => "card",
            TokenFormat::Ssn => "ssn",
            TokenFormat::Phone => "phone",
            TokenFormat::Digits => "digits",
        }
    }

    pub fn parse(s: &str) -> Option<TokenFormat> {
        [TokenFormat::Card, TokenFormat::Ssn, TokenFormat::Phone, TokenFormat::Digits]
            .into_iter()
            .find(|f| f.as_str() == s)
    }

    fn punctuation(self) -> &'static [u8] {
        match self {
            TokenFormat::Card => b" -",
            TokenFormat::Ssn => b"-",
            TokenFormat::Phone => b" +()-.",
            TokenFormat::Digits => b"",
        }
    }

    fn digit_range(self) -> (usize, usize) {
        match self {
            TokenFormat::Card => (12, 19),
            TokenFormat::Ssn => (9, 9),
            TokenFormat::Phone => (6, 15),
            TokenFormat::Digits => (6, MAX_VALUE_LEN),
        }
    }
}

/// How to tokenize: the format and, for cards, whether the last four digits stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatSpec {
    pub format: TokenFormat,
    /// Cards only; default true.
    pub keep_last_four: bool,
}

impl FormatSpec {
    pub fn new(format: TokenFormat) -> FormatSpec {
        FormatSpec { format, keep_last_four: format == TokenFormat::Card }
    }
}

/// The parsed shape of one value.
struct Shape {
    bytes: Vec<u8>,
    /// Indexes (into bytes) of the digits that change.
    free: Vec<usize>,
    /// Card check position (a digit recomputed from the others), if any.
    check: Option<usize>,
    /// Digits kept as they are (the card's last four), bound into the FF1 tweak.
    kept: Vec<u8>,
}

fn shape(spec: FormatSpec, value: &str) -> Result<Shape, VaultError> {
    let f = spec.format;
    if value.len() > MAX_VALUE_LEN {
        return Err(invalid(format!("a {} value is at most {MAX_VALUE_LEN} bytes", f.as_str())));
    }
    let bytes = value.as_bytes().to_vec();
    let mut digits = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        if b.is_ascii_digit() {
            digits.push(i);
        } else if !f.punctuation().contains(b) {
            return Err(invalid(format!("a {} value may not contain {:?}", f.as_str(), char::from(*b))));
        }
    }
    let (lo, hi) = f.digit_range();
    if digits.len() < lo || digits.len() > hi {
        return Err(invalid(format!("a {} value has {lo} to {hi} digits, not {}", f.as_str(), digits.len())));
    }
    if f == TokenFormat::Ssn && bytes.len() == 11 && (bytes.get(3) != Some(&b'-') || bytes.get(6) != Some(&b'-')) {
        return Err(invalid("an ssn is 123-45-6789 or 123456789"));
    }
    if f == TokenFormat::Ssn && bytes.len() != 11 && bytes.len() != 9 {
        return Err(invalid("an ssn is 123-45-6789 or 123456789"));
    }
    let mut kept = Vec::new();
    let mut free = digits;
    let mut check = None;
    if f == TokenFormat::Card {
        if spec.keep_last_four {
            let tail = free.split_off(free.len().saturating_sub(4));
            kept = tail.iter().filter_map(|&i| bytes.get(i).copied()).collect();
        }
        check = free.pop();
    }
    if free.len() < MIN_FREE_DIGITS {
        return Err(invalid(format!("fewer than {MIN_FREE_DIGITS} digits would change")));
    }
    Ok(Shape { bytes, free, check, kept })
}

/// Luhn sum mod 10 of the digits of `bytes` (non-digits skipped).
pub(crate) fn luhn_residue(bytes: &[u8]) -> u32 {
    let mut sum = 0u32;
    for (n, d) in bytes.iter().rev().filter(|b| b.is_ascii_digit()).map(|b| u32::from(b - b'0')).enumerate() {
        let v = if n % 2 == 1 {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
        sum += v;
    }
    sum % 10
}

/// Set the digit at `pos` so the Luhn sum of `bytes` is `residue`. Each position's contribution
/// is a permutation of 0..=9, so exactly one digit fits.
fn set_check(bytes: &mut [u8], pos: usize, residue: u32) -> Result<(), VaultError> {
    for d in b'0'..=b'9' {
        if let Some(slot) = bytes.get_mut(pos) {
            *slot = d;
        }
        if luhn_residue(bytes) == residue {
            return Ok(());
        }
    }
    Err(invalid("no check digit fits"))
}

fn tweak(spec: FormatSpec, kept: &[u8], caller: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(16 + kept.len() + caller.len());
    t.extend_from_slice(spec.format.as_str().as_bytes());
    t.push(if spec.keep_last_four { 1 } else { 0 });
    t.extend_from_slice(kept);
    t.push(0);
    t.extend_from_slice(caller);
    t
}

fn free_digits(s: &Shape) -> Vec<u16> {
    s.free.iter().filter_map(|&i| s.bytes.get(i)).map(|b| u16::from(b - b'0')).collect()
}

fn put_digits(s: &mut Shape, digits: &[u16]) -> Result<(), VaultError> {
    for (&i, &d) in s.free.iter().zip(digits) {
        let d = u8::try_from(d).ok().filter(|d| *d < 10).ok_or_else(|| invalid("FF1 returned a non-digit"))?;
        if let Some(slot) = s.bytes.get_mut(i) {
            *slot = b'0' + d;
        }
    }
    Ok(())
}

fn finish(s: Shape) -> Result<String, VaultError> {
    String::from_utf8(s.bytes).map_err(|_| invalid("not UTF-8"))
}

pub(crate) const MAX_TWEAK: usize = 256;

/// FF1-encrypt the free digits of `value`.
pub(crate) fn fpe_encrypt<C>(
    ff1: &FF1<C>,
    spec: FormatSpec,
    value: &str,
    caller_tweak: &[u8],
) -> Result<String, VaultError>
where
    C: aes::cipher::BlockCipher + aes::cipher::BlockEncrypt + Clone,
{
    let mut s = shape(spec, value)?;
    if s.check.is_some() && luhn_residue(&s.bytes) != 0 {
        return Err(invalid("the card number does not pass the Luhn check"));
    }
    let t = tweak(spec, &s.kept, caller_tweak);
    let ct =
        ff1.encrypt(&t, &FlexibleNumeralString::from(free_digits(&s))).map_err(|e| invalid(format!("FF1: {e}")))?;
    put_digits(&mut s, &Vec::<u16>::from(ct))?;
    if let Some(pos) = s.check {
        set_check(&mut s.bytes, pos, TOKEN_LUHN_RESIDUE)?;
    }
    finish(s)
}

/// Invert [`fpe_encrypt`].
pub(crate) fn fpe_decrypt<C>(
    ff1: &FF1<C>,
    spec: FormatSpec,
    token: &str,
    caller_tweak: &[u8],
) -> Result<String, VaultError>
where
    C: aes::cipher::BlockCipher + aes::cipher::BlockEncrypt + Clone,
{
    let mut s = shape(spec, token)?;
    check_token_shape(&s)?;
    let t = tweak(spec, &s.kept, caller_tweak);
    let pt =
        ff1.decrypt(&t, &FlexibleNumeralString::from(free_digits(&s))).map_err(|e| invalid(format!("FF1: {e}")))?;
    put_digits(&mut s, &Vec::<u16>::from(pt))?;
    if let Some(pos) = s.check {
        set_check(&mut s.bytes, pos, 0)?;
    }
    finish(s)
}

fn check_token_shape(s: &Shape) -> Result<(), VaultError> {
    if s.check.is_some() && luhn_residue(&s.bytes) != TOKEN_LUHN_RESIDUE {
        return Err(VaultError::NotAToken("card"));
    }
    Ok(())
}

/// A random token of the same shape as `value` (for vault tokens).
pub(crate) fn random_token(spec: FormatSpec, value: &str) -> Result<String, VaultError> {
    let mut s = shape(spec, value)?;
    if s.check.is_some() && luhn_residue(&s.bytes) != 0 {
        return Err(invalid("the card number does not pass the Luhn check"));
    }
    let mut digits = Vec::with_capacity(s.free.len());
    let mut buf = [0u8; 32];
    while digits.len() < s.free.len() {
        fill_random(&mut buf)?;
        // Rejection sampling: bytes >= 250 would bias the digits.
        digits.extend(buf.iter().filter(|b| **b < 250).map(|b| u16::from(b % 10)));
    }
    digits.truncate(s.free.len());
    put_digits(&mut s, &digits)?;
    if let Some(pos) = s.check {
        set_check(&mut s.bytes, pos, TOKEN_LUHN_RESIDUE)?;
    }
    finish(s)
}

/// Check that `token` has the shape of a token of `spec` (a card token fails Luhn).
pub(crate) fn validate_token(spec: FormatSpec, token: &str) -> Result<(), VaultError> {
    check_token_shape(&shape(spec, token)?)
}

/// `****` followed by the last four letters or digits of `value` (fewer if it has fewer), for
/// display: `mask("4111 1111 1111 1234") == "****1234"`.
pub fn mask(value: &str) -> String {
    let tail: Vec<char> = value.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let start = tail.len().saturating_sub(4);
    let mut out = String::from("****");
    out.extend(tail.iter().skip(start));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::{Aes128, Aes192, Aes256};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn digits(s: &str, radix: u32) -> Vec<u16> {
        s.chars().map(|c| c.to_digit(radix).unwrap() as u16).collect()
    }

    const K128: &str = "2B7E151628AED2A6ABF7158809CF4F3C";
    const K192: &str = "2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F";
    const K256: &str = "2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F7F036D6F04FC6A94";
    const RADIX36_PT: &str = "0123456789abcdefghi";
    const TWEAK36: &str = "3737373770717273373737";
    const TWEAK10: &str = "39383736353433323130";

    /// NIST SP 800-38G FF1 samples 1-9 (FF1samples.pdf): (key, radix, tweak, pt, ct).
    fn samples() -> Vec<(&'static str, u32, &'static str, &'static str, &'static str)> {
        vec![
            (K128, 10, "", "0123456789", "2433477484"),
            (K128, 10, TWEAK10, "0123456789", "6124200773"),
            (K128, 36, TWEAK36, RADIX36_PT, "a9tv40mll9kdu509eum"),
            (K192, 10, "", "0123456789", "2830668132"),
            (K192, 10, TWEAK10, "0123456789", "2496655549"),
            (K192, 36, TWEAK36, RADIX36_PT, "xbj3kv35jrawxv32ysr"),
            (K256, 10, "", "0123456789", "6657667009"),
            (K256, 10, TWEAK10, "0123456789", "1001623463"),
            (K256, 36, TWEAK36, RADIX36_PT, "xs8a0azh2avyalyzuwd"),
        ]
    }

    fn run<C: aes::cipher::BlockCipher + aes::cipher::BlockEncrypt + aes::cipher::KeyInit + Clone>(
        key: &[u8],
        radix: u32,
        tweak: &[u8],
        pt: &str,
        ct: &str,
    ) {
        let ff = FF1::<C>::new(key, radix).unwrap();
        let got = ff.encrypt(tweak, &FlexibleNumeralString::from(digits(pt, radix))).unwrap();
        assert_eq!(Vec::<u16>::from(got), digits(ct, radix), "encrypt {pt} radix {radix}");
        let back = ff.decrypt(tweak, &FlexibleNumeralString::from(digits(ct, radix))).unwrap();
        assert_eq!(Vec::<u16>::from(back), digits(pt, radix));
    }

    #[test]
    fn nist_ff1_samples_1_to_9() {
        for (i, (key, radix, tweak, pt, ct)) in samples().into_iter().enumerate() {
            let (key, tweak) = (hex(key), hex(tweak));
            match i / 3 {
                0 => run::<Aes128>(&key, radix, &tweak, pt, ct),
                1 => run::<Aes192>(&key, radix, &tweak, pt, ct),
                _ => run::<Aes256>(&key, radix, &tweak, pt, ct),
            }
        }
    }

    fn ff() -> FF1<Aes256> {
        FF1::<Aes256>::new(&hex(K256), 10).unwrap()
    }

    #[test]
    fn card_tokens_keep_shape_and_last_four_and_fail_luhn() {
        let spec = FormatSpec::new(TokenFormat::Card);
        let card = "4111 1111 1111 1111";
        let tok = fpe_encrypt(&ff(), spec, card, b"").unwrap();
        assert_eq!(tok.len(), card.len());
        assert!(tok.ends_with(" 1111"), "{tok}");
        assert_eq!(tok.as_bytes()[4], b' ');
        assert_eq!(luhn_residue(tok.as_bytes()), 5);
        assert_ne!(tok, card);
        assert_eq!(fpe_decrypt(&ff(), spec, &tok, b"").unwrap(), card);
        // Deterministic, and the tweak matters.
        assert_eq!(fpe_encrypt(&ff(), spec, card, b"").unwrap(), tok);
        assert_ne!(fpe_encrypt(&ff(), spec, card, b"tenant-2").unwrap(), tok);
        // A real card is not a token; an invalid card is refused.
        assert!(matches!(fpe_decrypt(&ff(), spec, card, b""), Err(VaultError::NotAToken("card"))));
        assert!(matches!(fpe_encrypt(&ff(), spec, "4111111111111112", b""), Err(VaultError::InvalidInput(_))));
        let all = FormatSpec { format: TokenFormat::Card, keep_last_four: false };
        let tok2 = fpe_encrypt(&ff(), all, "4111111111111111", b"").unwrap();
        assert_eq!(tok2.len(), 16);
        assert_eq!(fpe_decrypt(&ff(), all, &tok2, b"").unwrap(), "4111111111111111");
    }

    #[test]
    fn ssn_phone_and_digits_keep_punctuation() {
        let ssn = FormatSpec::new(TokenFormat::Ssn);
        let t = fpe_encrypt(&ff(), ssn, "123-45-6789", b"").unwrap();
        assert_eq!((t.len(), &t[3..4], &t[6..7]), (11, "-", "-"));
        assert_eq!(fpe_decrypt(&ff(), ssn, &t, b"").unwrap(), "123-45-6789");
        assert!(fpe_encrypt(&ff(), ssn, "12-345-6789", b"").is_err());
        let phone = FormatSpec::new(TokenFormat::Phone);
        let t = fpe_encrypt(&ff(), phone, "+1 (415) 555-0100", b"").unwrap();
        assert_eq!(t.replace(|c: char| c.is_ascii_digit(), "0"), "+0 (000) 000-0000");
        assert_eq!(fpe_decrypt(&ff(), phone, &t, b"").unwrap(), "+1 (415) 555-0100");
        let d = FormatSpec::new(TokenFormat::Digits);
        assert!(matches!(fpe_encrypt(&ff(), d, "12345", b""), Err(VaultError::InvalidInput(_))));
        assert!(fpe_encrypt(&ff(), d, "12a456", b"").is_err());
        let t = fpe_encrypt(&ff(), d, "000000", b"").unwrap();
        assert_eq!(fpe_decrypt(&ff(), d, &t, b"").unwrap(), "000000");
    }

    #[test]
    fn random_tokens_have_the_shape() {
        let spec = FormatSpec::new(TokenFormat::Card);
        let a = random_token(spec, "5555-5555-5555-4444").unwrap();
        assert!(a.ends_with("-4444") && a.len() == 19, "{a}");
        assert_eq!(luhn_residue(a.as_bytes()), 5);
        validate_token(spec, &a).unwrap();
    }

    #[test]
    fn masking() {
        assert_eq!(mask("4111 1111 1111 1234"), "****1234");
        assert_eq!(mask("ab"), "****ab");
        assert_eq!(mask(""), "****");
    }
}
