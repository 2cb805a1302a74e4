//! One test's whole setup: its addresses, its scratch directory, one running
//! `bgf active`, and SIPp command builders preset for the access side (UE →
//! BGF access SIP address) and the core side (the next hop the BGF forwards to).

use crate::admin::{stat_of, PinholeView, SessionView};
use crate::bgfproc::{BgfConfig, BgfProcess};
use crate::net::{host, TestNet};
use crate::sipp::Sipp;
use crate::util::{wait_until, TestDir};
use std::net::SocketAddr;
use std::time::Duration;

/// A running test bed. Drop order: the BGF first, then the directory (kept if
/// the test panicked).
pub struct Bed {
    /// The BGF (dropped first: killed, logs printed if the test failed).
    pub bgf: BgfProcess,
    /// The test's addresses.
    pub net: TestNet,
    /// The scratch directory.
    pub dir: TestDir,
}

impl Bed {
    /// Starts a BGF with the standard config for a fresh [`TestNet`].
    pub fn start(name: &str) -> Bed {
        Bed::start_with(name, |_, _| {})
    }

    /// Like [`start`](Self::start), letting `f` adjust the config first.
    pub fn start_with(name: &str, f: impl FnOnce(&TestNet, &mut BgfConfig)) -> Bed {
        let net = TestNet::new();
        let dir = TestDir::new(name);
        let mut cfg = BgfConfig::for_net(&net);
        f(&net, &mut cfg);
        let bgf = match BgfProcess::start(cfg, dir.path()) {
            Ok(b) => b,
            Err(e) => {
                // Keep the dir: TestDir sees the panic.
                panic!("cannot start bgf for {name}: {e}");
            }
        };
        Bed { bgf, net, dir }
    }

    /// The BGF's access SIP address.
    pub fn access_sip(&self) -> SocketAddr {
        self.bgf.config.access_sip
    }

    /// The BGF's core SIP address.
    pub fn core_sip(&self) -> SocketAddr {
        self.bgf.config.core_sip
    }

    /// The core-side peer's SIP address (the BGF's next hop).
    pub fn core_peer(&self) -> SocketAddr {
        self.bgf.config.next_hop
    }

    /// The UE's SIP address.
    pub fn ue_sip(&self) -> SocketAddr {
        self.net.addr(host::UE, 5060)
    }

    /// A SIPp on the core side (local = the next hop), e.g. `uas_basic.xml`.
    pub fn core_sipp(&self, name: &str, scenario: &str) -> Sipp {
        Sipp::new(name, scenario).local(self.core_peer())
    }

    /// A SIPp on the UE side (local = UE address) sending to the BGF access SIP.
    pub fn ue_sipp(&self, name: &str, scenario: &str) -> Sipp {
        Sipp::new(name, scenario)
            .local(self.ue_sip())
            .remote(self.access_sip())
    }

    /// `/v1/stats`, panicking with the BGF's logs if unavailable.
    pub fn stats(&self) -> serde_json::Value {
        self.bgf
            .admin
            .stats()
            .unwrap_or_else(|e| panic!("GET /v1/stats failed: {e}"))
    }

    /// One counter from `/v1/stats` (dotted path).
    pub fn stat(&self, path: &str) -> u64 {
        stat_of(&self.stats(), path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `/v1/sessions`.
    pub fn sessions(&self) -> Vec<SessionView> {
        self.bgf
            .admin
            .sessions()
            .unwrap_or_else(|e| panic!("GET /v1/sessions failed: {e}"))
    }

    /// Waits until a session with at least one pinhole whose both sides have a
    /// remote RTP address exists (the offer and the answer were seen).
    pub fn wait_session_with_media(&self, timeout: Duration) -> Option<SessionView> {
        wait_until(timeout, || {
            self.bgf.admin.sessions().ok()?.into_iter().find(|s| {
                s.pinholes
                    .iter()
                    .any(|p| p.core.remote_rtp.is_some() && p.access.remote_rtp.is_some())
            })
        })
    }

    /// Waits until some session satisfies `pred`.
    pub fn wait_session(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&SessionView) -> bool,
    ) -> Option<SessionView> {
        wait_until(timeout, || {
            self.bgf
                .admin
                .sessions()
                .ok()?
                .into_iter()
                .find(|s| pred(s))
        })
    }

    /// Waits until a session has a pinhole whose core leg knows the core
    /// party's RTP address (the answer was seen): returns the first pinhole.
    pub fn wait_answered_pinhole(&self, timeout: Duration) -> Option<PinholeView> {
        self.wait_session(timeout, |s| {
            s.pinholes
                .first()
                .is_some_and(|p| p.core.remote_rtp.is_some())
        })
        .and_then(|s| s.pinholes.first().cloned())
    }

    /// Waits until a session with at least one pinhole exists.
    pub fn wait_session_with_pinhole(&self, timeout: Duration) -> Option<SessionView> {
        wait_until(timeout, || {
            self.bgf
                .admin
                .sessions()
                .ok()?
                .into_iter()
                .find(|s| !s.pinholes.is_empty())
        })
    }

    /// Waits until `/v1/stats` `sessions` and `pinholes` are both 0.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        wait_until(timeout, || {
            let s = self.bgf.admin.stats().ok()?;
            let sessions = stat_of(&s, "sessions").ok()?;
            let pinholes = stat_of(&s, "pinholes").unwrap_or(0);
            (sessions == 0 && pinholes == 0).then_some(())
        })
        .is_some()
    }
}
