//! WAF filter: runs the configured SecLang rule set (the OWASP Core Rule Set, as written) on the
//! request, with the route's mode, paranoia level and exclusions. ModSecurity's phases 1 (head)
//! and 2 (body) run together once the body is known: at once for a request without a body, on
//! the buffered body otherwise. Every rule that matched goes into the audit event (id, message,
//! variable name; never the matched data); a blocked request gets 403 with the JSON error body.

use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use http::{StatusCode, Version};
use palisade_core::audit::{Stage, WafHit};
use palisade_core::config::WafMode;
use palisade_waf::{EngineMode, Intervention, OwnedTransaction, PresetVar, RequestHead, RuleSet, Transaction};

use crate::error::ProxyError;
use crate::filter::{Filter, Flow, Session};

/// A route's WAF: the shared rule set and what this route changes of it.
pub(crate) struct WafFilter {
    pub(crate) rules: Arc<RuleSet>,
    pub(crate) mode: WafMode,
    /// TX variables set before phase 1 (paranoia level, anomaly thresholds).
    pub(crate) vars: Vec<PresetVar>,
    pub(crate) removed_ids: Vec<RangeInclusive<u32>>,
    pub(crate) removed_tags: Vec<String>,
    pub(crate) removed_targets: Vec<(RangeInclusive<u32>, String)>,
    pub(crate) removed_tag_targets: Vec<(String, String)>,
    pub(crate) max_body_bytes: u64,
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The transaction kept from the request phases for the response phases (only when the rule set
/// inspects responses: `SecResponseBodyAccess On`).
#[derive(Clone)]
struct Pending(Arc<Mutex<Option<OwnedTransaction>>>);

/// The matched rules that are logged, as the audit event carries them.
fn hits(tx: &Transaction<'_>) -> Vec<WafHit> {
    tx.logged_matches()
        .map(|m| WafHit { rule: m.id, msg: m.msg.into_owned(), var: m.var_name.into_owned(), severity: m.severity })
        .collect()
}

impl WafFilter {
    /// Phases 1 and 2.
    fn inspect(&self, s: &mut Session, body: &[u8]) -> Result<(), ProxyError> {
        if !self.rules.response_body_access() {
            // Nothing is kept for the response: a transaction borrowing the rules, on the stack (no
            // allocation for it, and no reference count shared with the other workers to update).
            let mut tx = self.rules.transaction(&s.request_id, s.client_ip);
            let (verdict, found) = self.run(&mut tx, s, body, true);
            return self.decide(s, verdict, found, None);
        }
        let mut owned = OwnedTransaction::new(self.rules.clone(), &s.request_id, s.client_ip);
        let (verdict, found) = owned.with(|tx| self.run(tx, s, body, false));
        if verdict.is_none() {
            s.ext.insert(Pending(Arc::new(Mutex::new(Some(owned)))));
        }
        self.decide(s, verdict, found, None)
    }

    /// The request phases on `tx`, then the logging phase when the transaction ends here (the
    /// request is refused, or `last`: the response is not inspected), and the logged matches.
    fn run(
        &self,
        tx: &mut Transaction<'_>,
        s: &Session,
        body: &[u8],
        last: bool,
    ) -> (Option<Intervention>, Vec<WafHit>) {
        self.prepare(tx);
        let verdict = self.request_phases(tx, s, body);
        if verdict.is_some() || last {
            tx.process_logging();
        }
        (verdict, hits(tx))
    }

    fn prepare(&self, tx: &mut Transaction<'_>) {
        tx.set_vars(&self.vars);
        if !self.removed_ids.is_empty() {
            tx.remove_rule_ids(&self.removed_ids);
        }
        for tag in &self.removed_tags {
            tx.remove_rule_tag(tag);
        }
        for (ids, target) in &self.removed_targets {
            for id in ids.clone() {
                tx.remove_rule_target(id, target);
            }
        }
        for (tag, target) in &self.removed_tag_targets {
            tx.remove_rule_target_by_tag(tag, target);
        }
        if self.mode == WafMode::Detect {
            tx.set_engine_mode(EngineMode::DetectionOnly);
        }
    }

    fn request_phases(&self, tx: &mut Transaction<'_>, s: &Session, body: &[u8]) -> Option<Intervention> {
        let target: std::borrow::Cow<'_, str> = match s.request.uri.path_and_query() {
            // Absolute-form targets (`GET http://host/x`) are inspected as sent.
            Some(pq) if s.request.uri.scheme().is_none() => pq.as_str().into(),
            Some(_) => s.request.uri.to_string().into(),
            None => "/".into(),
        };
        let mut headers: Vec<(&[u8], &[u8])> =
            s.request.headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())).collect();
        // HTTP/2 carries the host in `:authority`; the rules expect a Host header.
        if let (Some(a), false) = (s.request.uri.authority(), s.request.headers.contains_key(http::header::HOST)) {
            headers.push((b"host", a.as_str().as_bytes()));
        }
        let head = RequestHead {
            method: s.request.method.as_str(),
            uri: target.as_bytes(),
            protocol: protocol(s.request.version),
            headers,
        };
        tx.process_request_headers(&head).or_else(|| tx.process_request_body(body))
    }

    /// Record what matched and refuse when the rules decided so (`status` for a refused
    /// response; a refused request gets the rule's status).
    fn decide(
        &self,
        s: &mut Session,
        verdict: Option<Intervention>,
        found: Vec<WafHit>,
        response: Option<StatusCode>,
    ) -> Result<(), ProxyError> {
        if !found.is_empty() {
            s.audit.force = true;
        }
        s.audit.waf = found;
        match verdict {
            Some(v) if self.mode == WafMode::Block => {
                s.deny(Stage::Waf, format!("WAF rule {}: {}", v.rule_id, v.msg));
                if let Some(status) = response {
                    return Err(ProxyError::rejected(status, "response blocked by the WAF"));
                }
                let status = StatusCode::from_u16(v.status).ok().filter(|c| c.is_client_error() || c.is_server_error());
                Err(ProxyError::rejected(status.unwrap_or(StatusCode::FORBIDDEN), "request blocked by the WAF"))
            }
            _ => {
                if !s.audit.waf.is_empty() && s.audit.decision.is_none() {
                    let n = s.audit.waf.len();
                    s.allow(Stage::Waf, format!("{n} WAF rule(s) matched; not blocked"));
                }
                Ok(())
            }
        }
    }
}

#[async_trait::async_trait]
impl Filter for WafFilter {
    fn name(&self) -> &'static str {
        "waf"
    }

    async fn request_filter(&self, s: &mut Session) -> Result<Flow, ProxyError> {
        if !s.body_expected {
            self.inspect(s, &[])?;
        }
        Ok(Flow::Continue)
    }

    fn wants_body(&self) -> Option<u64> {
        Some(self.max_body_bytes)
    }

    async fn request_body_filter(&self, s: &mut Session, body: &mut bytes::Bytes) -> Result<(), ProxyError> {
        self.inspect(s, body)
    }

    /// Phases 3 and 4 run on the buffered response when the rule set inspects responses
    /// (`SecResponseBodyAccess On`) and reads this content type (`SecResponseBodyMimeType`).
    fn wants_response_body(&self, s: &Session, response: &http::response::Parts) -> Option<u64> {
        s.ext.get::<Pending>()?;
        let ct = response.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        self.rules.response_mime_types().contains(&mime).then_some(self.max_body_bytes)
    }

    async fn response_body_filter(
        &self,
        s: &mut Session,
        response: &mut http::response::Parts,
        body: &mut bytes::Bytes,
    ) -> Result<(), ProxyError> {
        let taken = s.ext.get::<Pending>().and_then(|p| p.0.lock().unwrap_or_else(|e| e.into_inner()).take());
        let Some(mut owned) = taken else { return Ok(()) };
        let (verdict, found) = owned.with(|tx| {
            let headers: Vec<(&[u8], &[u8])> =
                response.headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())).collect();
            let verdict = tx
                .process_response_headers(response.status.as_u16(), protocol(response.version), &headers)
                .or_else(|| tx.process_response_body(body));
            tx.process_logging();
            (verdict, hits(tx))
        });
        // The upstream answered, but what it answered must not reach the client.
        self.decide(s, verdict, found, Some(StatusCode::BAD_GATEWAY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::tests::test_session;

    const RULES: &str = r#"
SecRuleEngine On
SecRequestBodyAccess On
SecDefaultAction "phase:2,log,pass"
SecRule ARGS "@rx (?i)union\s+select" "id:1001,phase:2,deny,status:403,msg:'SQL injection',tag:'attack-sqli'"
SecRule ARGS:note "@contains secret" "id:1002,phase:2,log,pass,msg:'note mentions a secret'"
"#;

    fn filter(mode: WafMode) -> WafFilter {
        let rules = RuleSet::parse_str(RULES, "test.conf").unwrap_or_else(|e| unreachable!("{e}"));
        WafFilter {
            rules: Arc::new(rules),
            mode,
            vars: vec![],
            removed_ids: vec![],
            removed_tags: vec![],
            removed_targets: vec![],
            removed_tag_targets: vec![],
            max_body_bytes: 1024,
        }
    }

    fn session(uri: &str) -> Session {
        let (parts, ()) =
            http::Request::builder().uri(uri).header("host", "shop").body(()).unwrap_or_default().into_parts();
        test_session(parts)
    }

    #[tokio::test]
    async fn blocks_in_block_mode_and_audits_the_rule_without_the_payload() {
        let f = filter(WafMode::Block);
        let mut s = session("/orders?id=1%20UNION%20SELECT%20password&note=secret");
        let err = f.request_filter(&mut s).await.err();
        assert_eq!(err.map(|e| e.status()), Some(StatusCode::FORBIDDEN));
        assert_eq!(s.audit.decision, Some((palisade_core::audit::Decision::Deny, Stage::Waf)));
        let ids: Vec<u32> = s.audit.waf.iter().map(|h| h.rule).collect();
        assert!(ids.contains(&1001), "{ids:?}");
        let hit = s.audit.waf.iter().find(|h| h.rule == 1001).map(|h| (h.msg.as_str(), h.var.as_str()));
        assert_eq!(hit, Some(("SQL injection", "ARGS:id")));
        let event = serde_json::to_string(&s.audit.waf).unwrap_or_default();
        assert!(!event.to_ascii_lowercase().contains("union"), "payload leaked into the audit: {event}");
        assert!(s.audit.force);
    }

    #[tokio::test]
    async fn detect_mode_records_and_passes() {
        let f = filter(WafMode::Detect);
        let mut s = session("/orders?id=1%20union%20select%201");
        assert!(matches!(f.request_filter(&mut s).await, Ok(Flow::Continue)));
        assert_eq!(s.audit.waf.iter().map(|h| h.rule).collect::<Vec<_>>(), vec![1001]);
        assert_eq!(s.audit.decision.map(|d| d.1), Some(Stage::Waf));
    }

    #[tokio::test]
    async fn exclusions_take_a_rule_or_a_target_out() {
        let mut f = filter(WafMode::Block);
        f.removed_targets = vec![(1001..=1001, "ARGS:id".to_owned())];
        let mut s = session("/orders?id=1%20union%20select%201");
        assert!(f.request_filter(&mut s).await.is_ok());
        assert!(s.audit.waf.is_empty());
        let mut s = session("/orders?other=1%20union%20select%201");
        assert!(f.request_filter(&mut s).await.is_err(), "only ARGS:id was excluded");

        let mut f = filter(WafMode::Block);
        f.removed_ids = vec![1000..=1001];
        let mut s = session("/orders?id=1%20union%20select%201");
        assert!(f.request_filter(&mut s).await.is_ok());
        let mut f = filter(WafMode::Block);
        f.removed_tags = vec!["attack-sqli".into()];
        let mut s = session("/orders?id=1%20union%20select%201");
        assert!(f.request_filter(&mut s).await.is_ok());
    }

    /// With `SecResponseBodyAccess On`, the request's transaction is kept for phases 3 and 4: a
    /// response that leaks is refused with 502, and the audit has both phases' rules.
    #[tokio::test]
    async fn responses_are_inspected_when_the_rules_ask() {
        let rules = RuleSet::parse_str(
            "SecRuleEngine On\nSecResponseBodyAccess On\nSecResponseBodyMimeType text/plain application/json\n\
             SecRule ARGS:debug \"@streq 1\" \"id:10,phase:1,pass,log,msg:'debug asked',setvar:tx.debug=1\"\n\
             SecRule RESPONSE_BODY \"@contains ORA-00933\" \"id:20,phase:4,deny,status:403,msg:'SQL error leaked',chain\"\n\
             SecRule TX:debug \"@eq 1\"\n",
            "t.conf",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let mut f = filter(WafMode::Block);
        f.rules = Arc::new(rules);
        let response = |ct: &str| {
            http::Response::builder().status(200).header("content-type", ct).body(()).unwrap_or_default().into_parts().0
        };

        let mut s = session("/orders?debug=1");
        assert!(f.request_filter(&mut s).await.is_ok());
        let mut resp = response("application/json; charset=utf-8");
        assert_eq!(f.wants_response_body(&s, &resp), Some(1024));
        let mut body = bytes::Bytes::from_static(b"{\"error\":\"ORA-00933: SQL command not properly ended\"}");
        let err = f.response_body_filter(&mut s, &mut resp, &mut body).await.err();
        assert_eq!(err.map(|e| e.status()), Some(StatusCode::BAD_GATEWAY));
        assert_eq!(
            s.audit.waf.iter().map(|h| h.rule).collect::<Vec<_>>(),
            vec![10, 20],
            "TX set in phase 1 is seen in phase 4"
        );
        assert_eq!(s.audit.decision, Some((palisade_core::audit::Decision::Deny, Stage::Waf)));

        // A clean response passes; a content type the rules do not read is not buffered.
        let mut s = session("/orders?debug=1");
        assert!(f.request_filter(&mut s).await.is_ok());
        let mut body = bytes::Bytes::from_static(b"{\"orders\":[]}");
        assert!(f.response_body_filter(&mut s, &mut response("application/json"), &mut body).await.is_ok());
        let mut s = session("/orders");
        assert!(f.request_filter(&mut s).await.is_ok());
        assert_eq!(f.wants_response_body(&s, &response("image/png")), None);
        // Without SecResponseBodyAccess nothing is kept for the response.
        let f = filter(WafMode::Block);
        let mut s = session("/orders");
        assert!(f.request_filter(&mut s).await.is_ok());
        assert_eq!(f.wants_response_body(&s, &response("text/plain")), None);
    }

    /// hyper hands over header names in lower case; rules name them as written (`Content-Type`).
    #[tokio::test]
    async fn header_names_match_whatever_their_case() {
        let rules = RuleSet::parse_str(
            "SecRuleEngine On\nSecRule REQUEST_HEADERS:Content-Type \"@contains xml\" \"id:7,phase:1,deny,status:403,msg:'xml'\"\n",
            "t.conf",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let mut f = filter(WafMode::Block);
        f.rules = Arc::new(rules);
        let (parts, ()) = http::Request::builder()
            .uri("/x")
            .header("content-type", "application/xml")
            .body(())
            .unwrap_or_default()
            .into_parts();
        let mut s = test_session(parts);
        assert!(f.request_filter(&mut s).await.is_err());
        assert_eq!(s.audit.waf.iter().map(|h| h.rule).collect::<Vec<_>>(), vec![7]);
    }

    #[tokio::test]
    async fn a_body_is_inspected_in_the_body_phase() {
        let f = filter(WafMode::Block);
        let (parts, ()) = http::Request::builder()
            .method("POST")
            .uri("/orders")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(())
            .unwrap_or_default()
            .into_parts();
        let mut s = test_session(parts);
        s.body_expected = true;
        assert!(f.request_filter(&mut s).await.is_ok(), "nothing is decided before the body");
        assert!(s.audit.waf.is_empty());
        let mut body = bytes::Bytes::from_static(b"q=x+union+select+1");
        assert!(f.request_body_filter(&mut s, &mut body).await.is_err());
        assert_eq!(s.audit.waf.iter().map(|h| h.rule).collect::<Vec<_>>(), vec![1001]);
    }
}
