//! Registrations: a UE registers through the BGF; the core learns a Contact
//! that points at the BGF's core address with a token as user part, and the
//! BGF remembers token → (the UE's own Contact, the address the REGISTER
//! really came from). Terminating requests from the core to that Contact are
//! sent to the UE at its NAT address.

use crate::api::{Millis, TimerId};
use crate::ids;
use crate::msg::NameAddr;
use crate::txn::Flow;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A live binding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Address-of-record (To URI of the REGISTER).
    pub aor: String,
    /// The UE's Contact URI as it sent it.
    pub contact: String,
    /// Where the UE's REGISTER came from (its NAT binding).
    pub flow: Flow,
    /// Expiry time.
    pub expires_at: Millis,
    /// Expiry timer.
    pub timer: TimerId,
}

/// A binding awaiting the registrar's 2xx.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingBinding {
    /// Token put in the Contact towards the core.
    pub token: String,
    /// AOR.
    pub aor: String,
    /// The UE's Contact URI.
    pub contact: String,
    /// The UE's original Contact header value (restored in the 2xx).
    pub original: String,
    /// UE flow.
    pub flow: Flow,
}

/// The token for a UE contact.
pub fn token_for(secret: &ids::Key, aor: &str, contact_uri: &str) -> String {
    ids::token(secret, &[aor.as_bytes(), contact_uri.as_bytes()])
}

/// Rewrite one Contact value from the UE into the BGF's core-side Contact.
/// Returns the rewritten value and the pending binding; `None` for values we
/// do not rewrite (`*`) or cannot parse.
pub fn rewrite_contact(
    secret: &ids::Key,
    aor: &str,
    value: &str,
    core_sip: SocketAddr,
    core_transport_tcp: bool,
    flow: Flow,
) -> Option<(String, PendingBinding)> {
    if value.trim() == "*" {
        return None;
    }
    let na = NameAddr::parse(value).ok()?;
    let token = token_for(secret, aor, &na.uri);
    let mut uri = format!("sip:{token}@{core_sip}");
    if core_transport_tcp {
        uri.push_str(";transport=tcp");
    }
    let rewritten = NameAddr {
        display: na.display.clone(),
        uri,
        angle: true,
        params: na.params.clone(),
    };
    Some((
        rewritten.to_string(),
        PendingBinding {
            token,
            aor: aor.to_string(),
            contact: na.uri.clone(),
            original: value.to_string(),
            flow,
        },
    ))
}

/// The token in a URI's user part, if the URI points at `core_sip`.
pub fn token_of(uri: &str, core_sip: SocketAddr) -> Option<String> {
    let parsed = crate::msg::parse_uri(uri).ok()?;
    let sock = crate::msg::uri_socket(&parsed)?;
    if sock.ip() != core_sip.ip() {
        return None;
    }
    let user = crate::msg::uri_user(&parsed)?;
    if user.starts_with('r') && user.len() == 17 {
        Some(user.to_string())
    } else {
        None
    }
}
