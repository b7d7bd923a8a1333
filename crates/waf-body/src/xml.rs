//! The XML body processor: the two XPath targets CRS uses, `XML:/*` and `XML://@*`, as ModSecurity v2 computes
//! them with libxml2.
//!
//! `XML:/*` is the string value of the root element (all descendant text and CDATA, concatenated, whitespace
//! kept); `XML://@*` is every attribute value in document order (namespace declarations are not attributes).
//! Parsing is roxmltree's: no external entities are ever loaded, a DTD is rejected (so no entity expansion), and
//! the node count is bounded. Only UTF-8 bodies are accepted.

use crate::BodyError;

/// Upper bound on XML nodes (elements, attributes' owners, text...) in one body.
pub const MAX_XML_NODES: u32 = 100_000;

/// The XML collections of one request body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Xml {
    /// `XML:/*`: one value, the root element's text content (empty body: no value).
    pub text: Vec<Vec<u8>>,
    /// `XML://@*`: every attribute value.
    pub attr_values: Vec<Vec<u8>>,
}

/// Parse an XML body. An empty (or whitespace-only) body gives empty collections.
pub fn parse_xml(body: &[u8]) -> Result<Xml, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| BodyError::XmlNotUtf8 { offset: e.valid_up_to() })?;
    if text.trim().is_empty() {
        return Ok(Xml::default());
    }
    let opts = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: MAX_XML_NODES, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| {
        let pos = e.pos();
        BodyError::Xml { line: pos.row, column: pos.col, reason: reason(&e) }
    })?;
    let mut content = Vec::new();
    let mut attr_values = Vec::new();
    for node in doc.root_element().descendants() {
        if node.is_text() {
            content.extend_from_slice(node.text().unwrap_or_default().as_bytes());
        } else if node.is_element() {
            attr_values.extend(node.attributes().map(|a| a.value().as_bytes().to_vec()));
        }
    }
    Ok(Xml { text: vec![content], attr_values })
}

fn reason(e: &roxmltree::Error) -> &'static str {
    use roxmltree::Error as E;
    match e {
        E::DtdDetected => "DTD is not allowed",
        E::NodesLimitReached => "too many nodes",
        E::EntityReferenceLoop(_) => "entity reference loop",
        E::UnknownEntityReference(..) => "unknown entity reference",
        E::UnexpectedCloseTag(..) => "mismatched closing tag",
        E::UnexpectedEntityCloseTag(_) => "mismatched closing tag in entity",
        E::DuplicatedAttribute(..) => "duplicated attribute",
        E::UnknownNamespace(..) => "unknown namespace prefix",
        E::NoRootNode => "no root element",
        E::UnclosedRootNode => "unclosed root element",
        E::AttributesLimitReached | E::NamespacesLimitReached => "too many attributes or namespaces",
        E::UnexpectedEndOfStream => "unexpected end of document",
        E::MalformedEntityReference(_) => "malformed entity reference",
        E::InvalidChar(..) | E::InvalidChar2(..) | E::NonXmlChar(..) => "invalid character",
        _ => "malformed XML",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes() {
        let xml = br#"<?xml version="1.0"?>
<a x="1" xmlns:n="urn:n"><b n:y="two">hello</b> <c><![CDATA[<script>]]></c><!-- no -->&lt;&#65;<?pi no?></a>"#;
        let got = parse_xml(xml).unwrap();
        assert_eq!(got.text, vec![b"hello <script><A".to_vec()]);
        assert_eq!(got.attr_values, vec![b"1".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn soap_like_body() {
        let xml = b"<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">\n  <soap:Body>\n    <q id=\"1 OR 1=1\">' or 1=1--</q>\n  </soap:Body>\n</soap:Envelope>";
        let got = parse_xml(xml).unwrap();
        assert_eq!(got.text, vec![b"\n  \n    ' or 1=1--\n  \n".to_vec()]);
        assert_eq!(got.attr_values, vec![b"1 OR 1=1".to_vec()]);
    }

    #[test]
    fn empty_body_has_no_values() {
        assert_eq!(parse_xml(b"").unwrap(), Xml::default());
        assert_eq!(parse_xml(b" \n").unwrap(), Xml::default());
        assert_eq!(parse_xml(b"<a/>").unwrap().text, vec![Vec::<u8>::new()]);
    }

    #[test]
    fn malformed_is_an_error() {
        assert_eq!(
            parse_xml(b"<a><b></a>"),
            Err(BodyError::Xml { line: 1, column: 7, reason: "mismatched closing tag" })
        );
        assert!(matches!(parse_xml(b"<a>"), Err(BodyError::Xml { reason: "unclosed root element", .. })));
        assert!(matches!(parse_xml(b"not xml"), Err(BodyError::Xml { .. })));
        assert!(matches!(parse_xml(b"<a>&foo;</a>"), Err(BodyError::Xml { .. })));
        assert_eq!(parse_xml(b"<a>\xff</a>"), Err(BodyError::XmlNotUtf8 { offset: 3 }));
    }

    #[test]
    fn dtd_and_entities_are_refused() {
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
        assert!(matches!(parse_xml(xxe), Err(BodyError::Xml { reason: "DTD is not allowed", .. })));
        let laughs = br#"<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><l>&b;</l>"#;
        assert!(matches!(parse_xml(laughs), Err(BodyError::Xml { reason: "DTD is not allowed", .. })));
    }

    #[test]
    fn hostile_sizes_are_bounded() {
        let deep = format!("{}{}", "<a>".repeat(200_000), "</a>".repeat(200_000));
        assert!(matches!(parse_xml(deep.as_bytes()), Err(BodyError::Xml { reason: "too many nodes", .. })));
        let deep_ok = format!("{}x{}", "<a>".repeat(50_000), "</a>".repeat(50_000));
        assert_eq!(parse_xml(deep_ok.as_bytes()).unwrap().text, vec![b"x".to_vec()]);
    }
}
