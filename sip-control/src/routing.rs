//! Routing policy at the trust boundary (threat model items 1–2): where a
//! request may go, decided from configuration and dialog state — never from
//! what an access peer wrote in a Route header, Request-URI or Via.
//!
//! - An initial request from the access side goes to `core.next_hop`, and
//!   nowhere else; its Route headers are removed (or kept but unused, with
//!   `keep_access_route_headers`).
//! - An initial request from the core reaches a UE only through a
//!   registered binding (the token in its Request-URI) or an IP inside the
//!   configured `access_routes`; anything else is 404.
//! - An in-dialog request (To-tag present) must match a live dialog by its
//!   full identifier — Call-ID and both tags, in the orientation of the side
//!   it came from — and, from the access side, come from the UE's flow
//!   ([`same_ue`]); anything else is 481. It then follows the dialog's
//!   recorded route set and remote target, whatever the message says.
//!
//! Responses are matched to client transactions in `core` (never routed by
//! Via). This module decides; it changes no state.

use crate::api::{SipIn, Transport};
use crate::core::Core;
use crate::msg::{self, Message, NameAddr};
use crate::policy::canonical;
use crate::registrar;
use crate::session::{Session, Usage};
use crate::txn::Flow;
use media_plane::Side;
use std::net::SocketAddr;

/// Where a request goes and what in it must change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Routed {
    /// The next hop.
    pub dest: Flow,
    /// A new Request-URI, if it changes.
    pub ruri: Option<String>,
    /// Route headers to send instead of the message's own, if they change.
    pub routes: Option<Vec<String>>,
}

/// How an in-dialog request relates to the dialogs the core holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DialogMatch {
    /// It belongs to session `sid`. `new_tag`: the other party's first tag
    /// (a NOTIFY that overtook its SUBSCRIBE's 2xx), to be recorded.
    Matched { sid: u64, new_tag: Option<String> },
    /// No dialog matches (unknown Call-ID, wrong tags, or — from the access
    /// side — not from the UE's flow). Answered 481 either way, so a prober
    /// learns nothing about which calls exist.
    None(&'static str),
}

/// Whether a message from (`transport`, `src`) comes from the UE whose flow
/// is `ue`: same IP always; same port too when both are UDP (a UE may send
/// a large request over TCP and a small one over UDP, and TCP reconnects
/// from a new port).
pub(crate) fn same_ue(ue: &Flow, transport: Transport, src: SocketAddr) -> bool {
    canonical(ue.addr.ip()) == canonical(src.ip())
        && (ue.transport != Transport::Udp
            || transport != Transport::Udp
            || ue.addr.port() == src.port())
}

/// The URI inside a Route / Record-Route / Contact value.
pub(crate) fn uri_of(value: &str) -> Option<String> {
    NameAddr::parse(value).ok().map(|n| n.uri)
}

/// The flow a URI designates on `side` when its host is an IP literal.
pub(crate) fn uri_flow(uri: &str, side: Side) -> Option<Flow> {
    let addr = msg::parse_uri(uri).ok().and_then(|u| msg::uri_socket(&u))?;
    let transport = if uri.to_ascii_lowercase().contains(";transport=tcp") {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    Some(Flow {
        side,
        transport,
        addr,
    })
}

impl Core {
    /// The configured core next hop.
    pub(crate) fn next_hop(&self) -> Flow {
        Flow {
            side: Side::Core,
            transport: self.cfg.core_transport,
            addr: self.cfg.core_next_hop,
        }
    }

    /// Match an in-dialog request (or ACK for a 2xx) to a live dialog.
    pub(crate) fn match_dialog(&self, inp: &SipIn, m: &Message) -> DialogMatch {
        let Some(&sid) = self.state.by_call_id.get(m.call_id()) else {
            return DialogMatch::None("unknown Call-ID");
        };
        let Some(s) = self.state.sessions.get(&sid) else {
            return DialogMatch::None("unknown Call-ID");
        };
        let (Some(from), Some(to)) = (m.from_tag(), m.to_tag()) else {
            return DialogMatch::None("no From-tag or To-tag");
        };
        if inp.side == Side::Access && !same_ue(&s.ue_flow, inp.transport, inp.src) {
            return DialogMatch::None("not from the UE's flow");
        }
        let (ours, theirs) = if inp.side == s.origin {
            (from, to)
        } else {
            (to, from)
        };
        if ours != s.from_tag {
            return DialogMatch::None("tags do not match the dialog");
        }
        if s.is_callee_tag(&theirs) {
            return DialogMatch::Matched { sid, new_tag: None };
        }
        // A subscription's notifier may NOTIFY before its 2xx arrives
        // (RFC 6665 §4.1.2.4): its tag is learnt from that request.
        if s.usage == Usage::Subscription && s.to_tag.is_none() && inp.side != s.origin {
            return DialogMatch::Matched {
                sid,
                new_tag: Some(theirs),
            };
        }
        DialogMatch::None("tags do not match the dialog")
    }

    /// Where an initial (out-of-dialog) request from `inp.side` goes, or the
    /// status to refuse it with.
    pub(crate) fn route_initial(
        &self,
        inp: &SipIn,
        m: &Message,
        ruri: &str,
    ) -> Result<Routed, (u16, &'static str)> {
        match inp.side {
            Side::Access => Ok(Routed {
                dest: self.next_hop(),
                ruri: None,
                routes: (!self.cfg.security.keep_access_route_headers).then(Vec::new),
            }),
            Side::Core => {
                if let Some(token) = registrar::token_of(ruri, self.cfg.core.sip) {
                    let b = self
                        .state
                        .bindings
                        .get(&token)
                        .ok_or((404, "Not Found (no registration for this contact)"))?;
                    return Ok(Routed {
                        dest: b.flow,
                        ruri: Some(b.contact.clone()),
                        routes: None,
                    });
                }
                let target = match m.header("Route") {
                    Some(r) => uri_of(r).unwrap_or_default(),
                    None => ruri.to_string(),
                };
                let allowed = uri_flow(&target, Side::Access).filter(|f| {
                    !self.is_own(f.addr)
                        && self
                            .cfg
                            .security
                            .access_routes
                            .iter()
                            .any(|p| p.contains(f.addr.ip()))
                });
                match allowed {
                    Some(dest) => Ok(Routed {
                        dest,
                        ruri: None,
                        routes: None,
                    }),
                    None => Err((404, "Not Found (no registration for this contact)")),
                }
            }
        }
    }

    /// Where an in-dialog request of session `s` leaving on `egress` goes:
    /// towards the access side, the UE's flow; towards the core, the
    /// dialog's route set and remote target (the next hop when the dialog
    /// has neither yet, e.g. an early dialog whose provisional had no Contact).
    pub(crate) fn route_in_dialog(
        &self,
        s: &Session,
        egress: Side,
        m: &Message,
        ruri: &str,
    ) -> Routed {
        match egress {
            Side::Access => {
                // A UA that ignores the route set addresses the BGF itself
                // (strict routing): the target is the UE's Contact.
                let ruri_is_us = self.uri_is_us(ruri) && m.count("Route") == 0;
                Routed {
                    dest: s.ue_flow,
                    ruri: if ruri_is_us {
                        s.access_contact.clone()
                    } else {
                        None
                    },
                    routes: None,
                }
            }
            Side::Core => {
                let routes = s.core_routes.clone();
                let target = s.core_contact.clone();
                let first = routes
                    .first()
                    .and_then(|r| uri_of(r))
                    .or_else(|| target.clone());
                let dest = first
                    .and_then(|u| uri_flow(&u, Side::Core))
                    .filter(|f| !self.is_own(f.addr))
                    .unwrap_or_else(|| self.next_hop());
                Routed {
                    dest,
                    ruri: target,
                    routes: Some(routes),
                }
            }
        }
    }

    /// Whether a URI designates one of the BGF's own SIP addresses.
    pub(crate) fn uri_is_us(&self, uri: &str) -> bool {
        msg::parse_uri(uri)
            .ok()
            .and_then(|u| msg::uri_socket(&u))
            .map(|a| self.is_own(a))
            .unwrap_or(false)
    }
}

/// Whether a request method creates a dialog the BGF tracks: INVITE (a
/// call), SUBSCRIBE and REFER (a subscription).
pub(crate) fn creates_dialog(method: &msg::Method) -> bool {
    matches!(method.as_str(), "INVITE" | "SUBSCRIBE" | "REFER")
}

/// Whether `m` is a NOTIFY that ends its subscription.
pub(crate) fn is_final_notify(m: &Message) -> bool {
    m.method().as_str() == "NOTIFY"
        && m.header("Subscription-State").is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("terminated")
        })
}

/// Replace `m`'s Route headers with `routes` (in order), right after the Vias.
pub(crate) fn set_routes(m: &mut Message, routes: &[String]) {
    m.remove("Route");
    let pos = m
        .headers
        .iter()
        .rposition(|h| h.name.eq_ignore_ascii_case("Via"))
        .map(|p| p + 1)
        .unwrap_or(0);
    for (i, r) in routes.iter().enumerate() {
        m.headers.insert(
            pos + i,
            msg::Header {
                name: "Route".into(),
                value: r.clone(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_ue_rules() {
        let ue = Flow {
            side: Side::Access,
            transport: Transport::Udp,
            addr: "198.18.0.200:5060".parse().unwrap(),
        };
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(same_ue(&ue, Transport::Udp, a("198.18.0.200:5060")));
        assert!(!same_ue(&ue, Transport::Udp, a("198.18.0.200:5070")));
        assert!(same_ue(&ue, Transport::Tcp, a("198.18.0.200:40123")));
        assert!(!same_ue(&ue, Transport::Tcp, a("198.18.0.201:5060")));
        assert!(same_ue(
            &ue,
            Transport::Udp,
            a("[::ffff:198.18.0.200]:5060")
        ));
    }
}
