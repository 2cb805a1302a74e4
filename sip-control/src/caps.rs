//! Capacity caps the session core enforces (threat model item 5): per
//! access source, the dialogs it holds (calls and subscriptions), its
//! unanswered INVITEs and its registrations; in all, the port pairs that
//! unanswered access INVITEs hold, and a share of each port pool kept for
//! emergency calls. Also which access flows are *verified* (a registration
//! was accepted from exactly that address), the only ones a final error
//! response is retransmitted to (no reflection towards spoofed sources).
//!
//! [`Caps`] is an index derived from the replayable state, not part of it:
//! the core updates it as sessions and bindings change ([`Caps::sync`],
//! [`Caps::sync_binding`]) and rebuilds it on restore; a test checks it
//! always equals a rebuild ([`Caps::rebuild`]). Decisions taken from it are
//! therefore as deterministic as the state itself.

use crate::config::Limits;
use crate::policy::source_key;
use crate::registrar::Binding;
use crate::session::{Pools, Session, SessionState, Usage};
use media_plane::Side;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// What one access-originated session counts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    key: IpAddr,
    early: bool,
    ports: u32,
}

/// Dialogs one source holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Count {
    sessions: u32,
    early: u32,
}

/// The derived index behind the caps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    v6_prefix: u8,
    held: HashMap<u64, Held>,
    by_source: HashMap<IpAddr, Count>,
    early_ports: u32,
    regs: HashMap<String, (IpAddr, SocketAddr)>,
    regs_by_source: HashMap<IpAddr, u32>,
    verified: HashMap<SocketAddr, u32>,
}

fn held_of(s: &Session, v6_prefix: u8) -> Option<Held> {
    if s.origin != Side::Access {
        return None;
    }
    let early = s.state == SessionState::Early && s.usage == Usage::Invite;
    Some(Held {
        key: source_key(s.ue_flow.addr.ip(), v6_prefix),
        early,
        ports: if early {
            s.streams.iter().flatten().count() as u32
        } else {
            0
        },
    })
}

impl Caps {
    /// An empty index counting IPv6 sources by `v6_prefix`.
    pub fn new(v6_prefix: u8) -> Caps {
        Caps {
            v6_prefix,
            ..Caps::default()
        }
    }

    /// The index of a whole state.
    pub fn rebuild<'a>(
        v6_prefix: u8,
        sessions: impl Iterator<Item = &'a Session>,
        bindings: impl Iterator<Item = (&'a String, &'a Binding)>,
    ) -> Caps {
        let mut c = Caps::new(v6_prefix);
        for s in sessions {
            c.sync(s.id, Some(s));
        }
        for (t, b) in bindings {
            c.sync_binding(t, Some(b));
        }
        c
    }

    /// Session `id` is now `s` (`None`: gone).
    pub fn sync(&mut self, id: u64, s: Option<&Session>) {
        if let Some(old) = self.held.remove(&id) {
            if let Some(c) = self.by_source.get_mut(&old.key) {
                c.sessions -= 1;
                c.early -= u32::from(old.early);
                if c.sessions == 0 {
                    self.by_source.remove(&old.key);
                }
            }
            self.early_ports -= old.ports;
        }
        if let Some(new) = s.and_then(|s| held_of(s, self.v6_prefix)) {
            let c = self.by_source.entry(new.key).or_default();
            c.sessions += 1;
            c.early += u32::from(new.early);
            self.early_ports += new.ports;
            self.held.insert(id, new);
        }
    }

    /// Binding `token` is now `b` (`None`: gone).
    pub fn sync_binding(&mut self, token: &str, b: Option<&Binding>) {
        if let Some((key, addr)) = self.regs.remove(token) {
            dec(&mut self.regs_by_source, &key);
            dec(&mut self.verified, &addr);
        }
        if let Some(b) = b {
            let key = source_key(b.flow.addr.ip(), self.v6_prefix);
            *self.regs_by_source.entry(key).or_default() += 1;
            *self.verified.entry(b.flow.addr).or_default() += 1;
            self.regs.insert(token.to_string(), (key, b.flow.addr));
        }
    }

    /// Whether access source `ip` (its source key) holds a registration.
    pub fn has_registration(&self, ip: IpAddr) -> bool {
        self.regs_by_source.contains_key(&self.key(ip))
    }

    /// Whether a registration was accepted from exactly `addr`.
    pub fn is_verified(&self, addr: SocketAddr) -> bool {
        self.verified.contains_key(&addr)
    }

    /// The source key of `ip`.
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        source_key(ip, self.v6_prefix)
    }

    /// Why a new dialog from access source `ip` (an INVITE when `invite`,
    /// bringing `ports` port pairs) is over a cap, if it is.
    pub fn dialog_refusal(
        &self,
        ip: IpAddr,
        invite: bool,
        ports: u32,
        l: &Limits,
    ) -> Option<&'static str> {
        let c = self
            .by_source
            .get(&self.key(ip))
            .copied()
            .unwrap_or_default();
        if c.sessions >= l.sessions_per_source {
            return Some("too many dialogs from this source");
        }
        if invite && c.early >= l.early_dialogs_per_source {
            return Some("too many unanswered calls from this source");
        }
        if invite && self.early_ports.saturating_add(ports) > l.unanswered_invite_ports {
            return Some("too many media ports held by unanswered calls");
        }
        None
    }

    /// Why `new` more registrations from access source `ip` are over the cap.
    pub fn registration_refusal(&self, ip: IpAddr, new: u32, l: &Limits) -> Option<&'static str> {
        let have = self.regs_by_source.get(&self.key(ip)).copied().unwrap_or(0);
        (have.saturating_add(new) > l.registrations_per_source)
            .then_some("too many registrations from this source")
    }
}

/// Why `ports` more port pairs for a non-emergency call would eat into the
/// share of each pool kept for emergency calls, if they would.
pub fn reserve_refusal(pools: &Pools, ports: u32, l: &Limits) -> Option<&'static str> {
    let reserve = u32::from(l.emergency_reserve_percent);
    [&pools.access, &pools.core]
        .into_iter()
        .any(|p| {
            let kept = p.capacity() * reserve / 100;
            p.in_use().saturating_add(ports).saturating_add(kept) > p.capacity()
        })
        .then_some("media ports left are kept for emergency calls")
}

fn dec<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: &K) {
    if let Some(n) = m.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            m.remove(k);
        }
    }
}

/// Whether a request (as received) is an emergency request: its
/// Request-URI is a `urn:service:sos` service URN (RFC 5031), or it is a
/// REGISTER whose Contact carries the `sos` parameter (3GPP TS 24.229
/// emergency registration). Byte-level, so the daemon can tell before
/// parsing.
pub fn is_emergency_request(data: &[u8]) -> bool {
    let mut lines = data.split(|b| *b == b'\n');
    let Some(first) = lines.next() else {
        return false;
    };
    let lower = |l: &[u8]| l.to_ascii_lowercase();
    let first = lower(first);
    if contains(&first, b"urn:service:sos") {
        return true;
    }
    if !first.starts_with(b"register ") {
        return false;
    }
    for line in lines {
        let line = lower(line.strip_suffix(b"\r").unwrap_or(line));
        if line.is_empty() {
            break;
        }
        let is_contact = line.starts_with(b"contact:")
            || line.starts_with(b"contact ")
            || line.starts_with(b"m:")
            || line.starts_with(b"m ");
        if is_contact {
            let mut at = 0;
            while let Some(p) = find_from(&line, b";sos", at) {
                let next = line.get(p + 4).copied();
                if matches!(next, None | Some(b';' | b'>' | b',' | b' ' | b'=' | b'\t')) {
                    return true;
                }
                at = p + 4;
            }
        }
    }
    false
}

fn find_from(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find_from(hay, needle, 0).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emergency_requests_are_recognised() {
        assert!(is_emergency_request(
            b"INVITE urn:service:sos SIP/2.0\r\nVia: x\r\n\r\n"
        ));
        assert!(is_emergency_request(
            b"INVITE URN:Service:SOS.police SIP/2.0\r\n\r\n"
        ));
        assert!(is_emergency_request(
            b"REGISTER sip:ims SIP/2.0\r\nContact: <sip:ue@198.18.0.200;sos>;expires=60\r\n\r\n"
        ));
        assert!(is_emergency_request(
            b"REGISTER sip:ims SIP/2.0\r\nm: <sip:ue@198.18.0.200>;sos\r\n\r\n"
        ));
        assert!(!is_emergency_request(
            b"REGISTER sip:ims SIP/2.0\r\nContact: <sip:ue@198.18.0.200;sosx>\r\n\r\n"
        ));
        assert!(!is_emergency_request(b"INVITE sip:sos@ims SIP/2.0\r\n\r\n"));
        assert!(!is_emergency_request(
            b"MESSAGE sip:a@b SIP/2.0\r\nContact: <sip:x;sos>\r\n\r\n"
        ));
        assert!(!is_emergency_request(b""));
    }
}
