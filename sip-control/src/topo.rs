//! Topology hiding (threat model item 4), per side: what the other side's
//! elements wrote into Via, Record-Route and Contact never reaches a hidden
//! side. The core keeps what it removed in the transaction and dialog state
//! and puts it back on the way back, so the other side sees the message it
//! would have seen without hiding (the approach of Kamailio's `topos`
//! module, kept in the core's own replayable state instead of a database):
//!
//! - a request towards the hidden side carries only our Via; the Vias below
//!   it are kept in the server transaction and restored on its responses;
//! - a dialog-creating request towards the hidden side carries only our own
//!   Record-Route entry of that side; the full list is kept in the session
//!   and restored in the responses that come back, before the route sets
//!   are computed from them;
//! - a response towards the hidden side keeps the Record-Route entries from
//!   ours on that side down (those of the hidden side's own proxies);
//! - the Contact of a request or response towards the hidden side is ours
//!   (the real remote target is in the session; in-dialog requests from the
//!   hidden side are routed by it, `routing.rs`);
//! - `Service-Route` in a registration's 2xx becomes our own address, and
//!   `Path`, `P-Charging-Vector` and `P-Charging-Function-Addresses` are
//!   removed (3GPP TS 24.229 has the P-CSCF remove the latter towards UEs).
//!
//! Pure functions on messages; the core decides when they apply.

use crate::msg::{Header, Message};

/// Headers removed from every message towards a hidden side.
const STRIPPED: &[&str] = &["Path", "P-Charging-Vector", "P-Charging-Function-Addresses"];

/// What [`hide_request`] removed from a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hidden {
    /// The Vias below ours, in order.
    pub vias: Vec<String>,
    /// The full Record-Route list, when one was reduced.
    pub record_route: Vec<String>,
}

fn values(m: &Message, name: &str) -> Vec<String> {
    m.headers_named(name).map(str::to_string).collect()
}

/// Replace every `name` header of `m` by `vals`, at the position of the
/// first one (or, when there was none, where `after` would put them).
fn replace_all(m: &mut Message, name: &str, vals: &[String]) {
    let pos = m
        .headers
        .iter()
        .position(|h| h.name.eq_ignore_ascii_case(name));
    m.remove(name);
    let pos = pos.unwrap_or_else(|| {
        m.headers
            .iter()
            .rposition(|h| h.name.eq_ignore_ascii_case("Via"))
            .map(|p| p + 1)
            .unwrap_or(0)
    });
    for (i, v) in vals.iter().enumerate() {
        m.headers.insert(
            pos.min(m.headers.len()) + i,
            Header {
                name: name.to_string(),
                value: v.clone(),
            },
        );
    }
}

/// Hide a request going to a hidden side: keep only our (top) Via, only
/// `our_rr` of its Record-Route list, `our_contact` as its Contact, and none
/// of the [`STRIPPED`] headers. Returns what was removed.
pub fn hide_request(m: &mut Message, our_rr: &str, our_contact: &str) -> Hidden {
    let vias = values(m, "Via");
    let mut hidden = Hidden::default();
    if let Some((top, below)) = vias.split_first() {
        hidden.vias = below.to_vec();
        replace_all(m, "Via", std::slice::from_ref(top));
    }
    let rr = values(m, "Record-Route");
    if !rr.is_empty() {
        hidden.record_route = rr;
        replace_all(m, "Record-Route", &[our_rr.to_string()]);
    }
    hide_common(m, our_contact);
    hidden
}

/// Hide a response going to a hidden side: its Record-Route list from
/// `our_rr` (our entry of that side) down, `our_contact` as its Contact.
pub fn hide_response(
    m: &mut Message,
    is_our_rr: impl Fn(&str) -> bool,
    our_contact: &str,
    our_service_route: &str,
) {
    let rr = values(m, "Record-Route");
    if !rr.is_empty() {
        // Ours of this side is the last of our entries (the lower one).
        let keep = match rr.iter().rposition(|r| is_our_rr(r)) {
            Some(i) => rr[i..].to_vec(),
            None => Vec::new(),
        };
        replace_all(m, "Record-Route", &keep);
    }
    if m.count("Service-Route") > 0 {
        replace_all(m, "Service-Route", &[our_service_route.to_string()]);
    }
    let redirect = matches!(m.code(), Some(300..=399));
    if !redirect {
        hide_common(m, our_contact);
    } else {
        for n in STRIPPED {
            m.remove(n);
        }
    }
}

fn hide_common(m: &mut Message, our_contact: &str) {
    // A REGISTER's Contacts are the UE's own, rewritten by the registrar code.
    let register = m.method().as_str() == "REGISTER";
    if m.count("Contact") > 0 && !register {
        replace_all(m, "Contact", &[our_contact.to_string()]);
    }
    for n in STRIPPED {
        m.remove(n);
    }
}

/// Put back the Vias [`hide_request`] kept, below the message's own (a
/// response after our Via was popped).
pub fn restore_vias(m: &mut Message, vias: &[String]) {
    if vias.is_empty() {
        return;
    }
    let mut all = values(m, "Via");
    all.extend(vias.iter().cloned());
    replace_all(m, "Via", &all);
}

/// Put back the Record-Route list [`hide_request`] reduced to our entry
/// `our_rr`: entries the hidden side's proxies added above it stay on top.
pub fn restore_record_route(m: &mut Message, full: &[String], is_our_rr: impl Fn(&str) -> bool) {
    if full.is_empty() {
        return;
    }
    let rr = values(m, "Record-Route");
    let above: Vec<String> = match rr.iter().position(|r| is_our_rr(r)) {
        Some(i) => rr[..i].to_vec(),
        None => rr,
    };
    let mut all = above;
    all.extend(full.iter().cloned());
    replace_all(m, "Record-Route", &all);
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "INVITE sip:ue@198.18.0.200 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.11;branch=z9hG4bK-ours\r\nVia: SIP/2.0/UDP 198.18.1.20;branch=z9hG4bK-pcscf\r\nVia: SIP/2.0/UDP 198.18.1.30;branch=z9hG4bK-scscf\r\nRecord-Route: <sip:198.18.0.11;lr>\r\nRecord-Route: <sip:198.18.1.11;lr>\r\nRecord-Route: <sip:198.18.1.20;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:as@198.18.1.30>\r\nP-Charging-Vector: icid-value=1\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn requests_lose_and_responses_regain_the_other_sides_headers() {
        let mut m = Message::parse(INV.as_bytes(), 65535).unwrap();
        let h = hide_request(&mut m, "<sip:198.18.0.11;lr>", "<sip:198.18.0.11:5060>");
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(!text.contains("198.18.1."), "{text}");
        assert_eq!(h.vias.len(), 2);
        assert_eq!(h.record_route.len(), 3);
        // The UE answers with what it got; we pop our Via and restore.
        let mut r = crate::msg::make_response(&m, 200, "OK", Some("t"));
        for v in values(&m, "Record-Route") {
            r.headers.push(Header {
                name: "Record-Route".into(),
                value: v,
            });
        }
        r.headers.insert(
            1,
            Header {
                name: "Record-Route".into(),
                value: "<sip:ue-proxy.access;lr>".into(),
            },
        );
        r.pop_front("Via");
        restore_vias(&mut r, &h.vias);
        restore_record_route(&mut r, &h.record_route, |x| x.contains("198.18.0.11"));
        assert_eq!(values(&r, "Via"), h.vias);
        assert_eq!(
            values(&r, "Record-Route"),
            vec![
                "<sip:ue-proxy.access;lr>",
                "<sip:198.18.0.11;lr>",
                "<sip:198.18.1.11;lr>",
                "<sip:198.18.1.20;lr>"
            ]
        );
    }

    #[test]
    fn responses_towards_the_hidden_side_keep_only_its_part() {
        let text = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.200;branch=z9hG4bK-ue\r\nRecord-Route: <sip:198.18.1.20;lr>\r\nRecord-Route: <sip:198.18.1.11;lr>\r\nRecord-Route: <sip:198.18.0.11;lr>\r\nRecord-Route: <sip:ue-side;lr>\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:callee@198.18.1.40>\r\nService-Route: <sip:orig@198.18.1.30;lr>\r\nPath: <sip:198.18.1.20;lr>\r\nContent-Length: 0\r\n\r\n";
        let mut m = Message::parse(text.as_bytes(), 65535).unwrap();
        let ours = |r: &str| r.contains("198.18.0.11") || r.contains("198.18.1.11");
        hide_response(
            &mut m,
            ours,
            "<sip:198.18.0.11:5060>",
            "<sip:198.18.0.11:5060;lr>",
        );
        let out = String::from_utf8(m.to_bytes()).unwrap();
        assert!(!out.contains("198.18.1."), "{out}");
        assert_eq!(
            values(&m, "Record-Route"),
            vec!["<sip:198.18.0.11;lr>", "<sip:ue-side;lr>"]
        );
        assert_eq!(m.header("Contact"), Some("<sip:198.18.0.11:5060>"));
    }
}
