//! Macro strings (`tx.%{rule.id}-x=%{MATCHED_VAR}`), split once at load into literal parts and variable references
//! that the transaction resolves at run time. A reference to an unknown variable stays literal text.

use crate::vars::{name_hash, Key, Var};

#[derive(Debug, Clone)]
pub(crate) enum Part {
    Lit(Vec<u8>),
    Ref(Var, Key),
}

#[derive(Debug, Clone)]
pub(crate) struct MacroStr {
    pub(crate) parts: Vec<Part>,
    /// The [`name_hash`] of the text when it is a literal (a setvar's variable name, looked up without hashing).
    hash: Option<u64>,
}

impl MacroStr {
    pub(crate) fn parse(s: &str) -> MacroStr {
        let mut parts = Vec::new();
        let mut lit = Vec::new();
        let mut rest = s;
        while let Some(pos) = rest.find("%{") {
            lit.extend_from_slice(rest.get(..pos).unwrap_or("").as_bytes());
            let after = rest.get(pos + 2..).unwrap_or("");
            let Some(end) = after.find('}') else {
                lit.extend_from_slice(rest.get(pos..).unwrap_or("").as_bytes());
                rest = "";
                break;
            };
            let inner = after.get(..end).unwrap_or("");
            match parse_ref(inner) {
                Some(part) => {
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(part);
                }
                None => lit.extend_from_slice(rest.get(pos..pos + 3 + end).unwrap_or("").as_bytes()),
            }
            rest = after.get(end + 1..).unwrap_or("");
        }
        lit.extend_from_slice(rest.as_bytes());
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        let mut m = MacroStr { parts, hash: None };
        m.hash = m.literal().map(name_hash);
        m
    }

    /// The text and its [`name_hash`] when it contains no variable reference.
    pub(crate) fn literal_hashed(&self) -> Option<(&[u8], u64)> {
        Some((self.literal()?, self.hash?))
    }

    /// Whether every variable reference satisfies `ok` (a literal: always).
    pub(crate) fn refs_all(&self, ok: impl Fn(Var, &Key) -> bool) -> bool {
        self.parts.iter().all(|p| match p {
            Part::Lit(_) => true,
            Part::Ref(v, k) => ok(*v, k),
        })
    }

    /// The variables this refers to, with their keys.
    pub(crate) fn refs(&self) -> impl Iterator<Item = (Var, &Key)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Lit(_) => None,
            Part::Ref(v, k) => Some((*v, k)),
        })
    }

    /// Whether every variable this refers to satisfies `ok`, whatever the key.
    pub(crate) fn vars_all(&self, ok: impl Fn(Var) -> bool) -> bool {
        self.refs_all(|v, _| ok(v))
    }

    /// The text when it contains no variable reference.
    pub(crate) fn literal(&self) -> Option<&[u8]> {
        match self.parts.as_slice() {
            [] => Some(b""),
            [Part::Lit(l)] => Some(l),
            _ => None,
        }
    }
}

fn parse_ref(inner: &str) -> Option<Part> {
    let (name, key) = match inner.find(['.', ':']) {
        Some(i) => (inner.get(..i)?, Some(inner.get(i + 1..)?)),
        None => (inner, None),
    };
    let var = Var::lookup(name)?;
    let key = match key {
        Some(k) => Key::name(k),
        None => Key::All,
    };
    Some(Part::Ref(var, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_literals_and_references() {
        let m = MacroStr::parse("tx.%{rule.id}-x=%{MATCHED_VAR}%{nope}%{tx.a");
        assert_eq!(m.parts.len(), 5);
        assert!(matches!(&m.parts[0], Part::Lit(l) if l == b"tx."));
        assert!(matches!(&m.parts[1], Part::Ref(Var::Coll(_), Key::Name(k, _)) if k == b"id"));
        assert!(matches!(&m.parts[2], Part::Lit(l) if l == b"-x="));
        assert!(matches!(&m.parts[3], Part::Ref(Var::Scalar(_), Key::All)));
        assert!(matches!(&m.parts[4], Part::Lit(l) if l == b"%{nope}%{tx.a"));
        assert_eq!(MacroStr::parse("plain").literal(), Some(&b"plain"[..]));
    }
}
