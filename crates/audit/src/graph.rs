//! The service graph of the dashboard: who talks to whom, from the audit records of the last
//! 24 hours (loaded from the index at start, then kept up to date as records arrive).
//! Nodes are workloads named by their SPIFFE ID's `ns/sa` path, the gateway, and "clients" (the
//! outside world calling the gateway); an edge between two SPIFFE IDs went over mesh mTLS.

use std::collections::BTreeMap;

use palisade_core::audit::{AuditEvent, Decision};
use palisade_dashboard::{Edge, Graph as View, Node, NodeKind};

#[derive(Debug, Default)]
pub(crate) struct Graph {
    edges: BTreeMap<(String, String), (u64, u64)>,
}

/// The node name of a principal or service: `spiffe://td/ns/shop/sa/orders` → `shop/orders`.
pub(crate) fn node_name(id: &str) -> String {
    let id = id.strip_prefix("Service::\"").and_then(|s| s.strip_suffix('"')).unwrap_or(id);
    match id.strip_prefix("spiffe://").and_then(|r| r.split_once('/')) {
        Some((_, path)) => match path.split('/').collect::<Vec<_>>()[..] {
            ["ns", ns, "sa", sa] => format!("{ns}/{sa}"),
            _ => path.to_owned(),
        },
        None => id.to_owned(),
    }
}

fn is_service(principal: &str) -> bool {
    principal.starts_with("Service::\"spiffe://")
}

/// The edge an event stands for, if any.
fn edge_of(source: &str, service: Option<&str>, principal: &str) -> Option<(String, String)> {
    match (service, is_service(principal)) {
        (Some(me), true) => Some((node_name(principal), node_name(me))),
        (Some(me), false) => Some(("clients".to_owned(), node_name(me))),
        (None, _) if source == "gateway" => Some(("clients".to_owned(), "gateway".to_owned())),
        (None, true) if source == "sidecar" => Some((node_name(principal), "sidecar".to_owned())),
        _ => None,
    }
}

impl Graph {
    pub(crate) fn add(&mut self, e: &AuditEvent) {
        if let Some(k) = edge_of(&e.source, e.service.as_deref(), &e.principal) {
            let v = self.edges.entry(k).or_default();
            v.0 += 1;
            if e.decision == Decision::Deny {
                v.1 += 1;
            }
        }
    }

    pub(crate) fn load(&mut self, rows: Vec<(String, Option<String>, String, String, u64)>) {
        self.edges.clear();
        for (source, service, principal, decision, n) in rows {
            if let Some(k) = edge_of(&source, service.as_deref(), &principal) {
                let v = self.edges.entry(k).or_default();
                v.0 += n;
                if decision == "deny" {
                    v.1 += n;
                }
            }
        }
    }

    pub(crate) fn view(&self) -> View {
        let mut nodes: BTreeMap<String, NodeKind> = BTreeMap::new();
        let kind = |n: &str| match n {
            "clients" => NodeKind::External,
            "gateway" => NodeKind::Gateway,
            n if n.ends_with("/gateway") => NodeKind::Gateway,
            _ => NodeKind::Service,
        };
        let mut edges = Vec::new();
        for ((from, to), (requests, denies)) in &self.edges {
            nodes.entry(from.clone()).or_insert_with(|| kind(from));
            nodes.entry(to.clone()).or_insert_with(|| kind(to));
            edges.push(Edge {
                from: from.clone(),
                to: to.clone(),
                requests: *requests,
                denies: *denies,
                mtls: from != "clients",
            });
        }
        View { nodes: nodes.into_iter().map(|(id, kind)| Node { label: id.clone(), id, kind }).collect(), edges }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_become_short_node_names_and_edges() {
        assert_eq!(node_name("Service::\"spiffe://shop.local/ns/shop/sa/orders\""), "shop/orders");
        assert_eq!(node_name("spiffe://shop.local/ns/shop/sa/payments"), "shop/payments");
        assert_eq!(node_name("spiffe://shop.local/custom/path"), "custom/path");
        assert_eq!(
            edge_of("sidecar", Some("spiffe://d/ns/shop/sa/payments"), "Service::\"spiffe://d/ns/shop/sa/orders\""),
            Some(("shop/orders".into(), "shop/payments".into()))
        );
        assert_eq!(edge_of("gateway", None, "User::\"alice\""), Some(("clients".into(), "gateway".into())));
        assert_eq!(edge_of("idp", None, "User::\"alice\""), None);
    }
}
