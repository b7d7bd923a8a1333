//! Request parameters: `application/x-www-form-urlencoded` bodies and query strings, with the
//! RFC 6749 §3.1 rules: a repeated parameter is an error and an empty value counts as absent.

use std::collections::HashMap;

use http::{header, HeaderMap};

use crate::error::OAuthError;

#[derive(Debug, Default, Clone)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(input: &[u8]) -> Result<Params, OAuthError> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(input) {
            if v.is_empty() {
                continue;
            }
            if map.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(OAuthError::invalid_request(format!("parameter {k} is repeated")));
            }
        }
        Ok(Params(map))
    }

    /// A POST body; the content type must be a form.
    pub fn from_form(headers: &HeaderMap, body: &[u8]) -> Result<Params, OAuthError> {
        let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request("content type must be application/x-www-form-urlencoded"));
        }
        Params::parse(body)
    }

    pub fn from_query(query: Option<&str>) -> Result<Params, OAuthError> {
        Params::parse(query.unwrap_or("").as_bytes())
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub fn require(&self, k: &str) -> Result<&str, OAuthError> {
        self.get(k).ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {k}")))
    }

    pub fn contains(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
}

/// Space-separated scope values (RFC 6749 §3.3), deduplicated, in request order.
pub fn split_scope(scope: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    out
}

/// RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`.
pub fn valid_scope_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_rejected_and_empty_ones_ignored() {
        let p = Params::parse(b"a=1&b=&c=x%20y").unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("c"), Some("x y"));
        let e = Params::parse(b"a=1&a=2").unwrap_err();
        assert_eq!(e.code, "invalid_request");
        assert_eq!(e.description, "parameter a is repeated");
    }

    #[test]
    fn form_content_type_is_required() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert_eq!(Params::from_form(&h, b"a=1").unwrap_err().code, "invalid_request");
        h.insert(header::CONTENT_TYPE, "application/x-www-form-urlencoded; charset=UTF-8".parse().unwrap());
        assert_eq!(Params::from_form(&h, b"a=1").unwrap().get("a"), Some("1"));
    }

    #[test]
    fn scopes() {
        assert_eq!(split_scope(" openid  profile openid"), vec!["openid", "profile"]);
        assert!(valid_scope_token("orders:read"));
        assert!(!valid_scope_token("a\"b"));
        assert!(!valid_scope_token("é"));
    }
}
