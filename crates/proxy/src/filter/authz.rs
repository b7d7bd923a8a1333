//! Authorization filter (request phase): one Cedar engine decides every request of a route with
//! an `authz` section, from the verified identity (or `Anonymous`), the method, the route and
//! the request context. A deny is a 403 whose body names no policy; the audit event carries the
//! determining policy ids. Evaluation errors never allow (palisade-policy fails closed).

use std::sync::Arc;

use http::StatusCode;
use palisade_core::audit::Stage;
use palisade_policy::{Authorizer, AuthzRequest, Principal};

use crate::error::ProxyError;
use crate::filter::{Filter, Flow, Session};
use crate::identity::PrincipalKind;

pub(crate) struct AuthzFilter {
    pub(crate) authorizer: Arc<Authorizer>,
}

#[async_trait::async_trait]
impl Filter for AuthzFilter {
    fn name(&self) -> &'static str {
        "authz"
    }

    async fn request_filter(&self, s: &mut Session) -> Result<Flow, ProxyError> {
        self.decide(s)
    }

    fn request_filter_now(&self, s: &mut Session) -> Option<Result<Flow, ProxyError>> {
        Some(self.decide(s))
    }
}

impl AuthzFilter {
    /// Cedar decides synchronously.
    fn decide(&self, s: &mut Session) -> Result<Flow, ProxyError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let id = s.identity.as_deref();
        let principal = match id {
            None => Principal::Anonymous,
            Some(i) => match i.kind() {
                PrincipalKind::User => Principal::User(i.id().to_owned()),
                PrincipalKind::Service => Principal::Service(i.id().to_owned()),
                PrincipalKind::Client => Principal::Client(i.id().to_owned()),
            },
        };
        let empty: [String; 0] = [];
        let decision = self.authorizer.decide(&AuthzRequest {
            principal,
            method: s.request.method.as_str(),
            route: &s.route,
            path: s.request.uri.path(),
            authenticated: id.is_some(),
            scopes: id.map_or(&empty[..], |i| i.scopes()),
            roles: id.map_or(&empty[..], |i| i.roles()),
            client_id: id.and_then(|i| i.client_id()),
            issuer: id.and_then(|i| i.issuer.as_deref()),
            claims: id.and_then(|i| i.claims.as_deref()),
            client_ip: s.client_ip,
            mtls_identity: id.and_then(|i| i.mtls_identity.as_deref()),
            now,
        });
        s.audit.policy_ids = decision.policy_ids;
        if decision.allow {
            s.allow(Stage::Authz, "permitted by policy");
            Ok(Flow::Continue)
        } else {
            let reason = if decision.errors.is_empty() {
                "no policy permits this request".to_owned()
            } else {
                format!("denied; policy evaluation errors: {}", decision.errors.join("; "))
            };
            s.deny(Stage::Authz, reason);
            Err(ProxyError::rejected(StatusCode::FORBIDDEN, "access denied"))
        }
    }
}
