//! The session core: dispatches each input to the transaction, dialog and
//! registration logic and collects the effects.

use crate::api::{Applied, Input};
use crate::config::CoreConfig;
use serde::{Deserialize, Serialize};

/// Counters the core keeps (exported as metrics by the daemon).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreStats {
    /// Requests answered with 400 because they did not parse or lacked mandatory headers.
    pub malformed_requests: u64,
    /// Responses dropped because they did not parse or could not be routed.
    pub dropped_responses: u64,
    /// Messages dropped that were neither (garbage, wrong interface).
    pub dropped_other: u64,
    /// Requests forwarded.
    pub requests_forwarded: u64,
    /// Responses forwarded.
    pub responses_forwarded: u64,
    /// Retransmissions absorbed by the transaction layer.
    pub retransmissions_absorbed: u64,
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions ended.
    pub sessions_ended: u64,
    /// New sessions refused (no ports, SDP unusable, ...).
    pub sessions_refused: u64,
}

/// Why a core could not be built from a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A port pool range is unusable.
    #[error("{side}: rtp port range: {source}")]
    Ports {
        /// `access` or `core`.
        side: &'static str,
        /// The pool's complaint.
        source: media_plane::PortPoolError,
    },
}

/// The complete replayable state of one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreState {
    _todo: (),
}

/// A read-only view of one session, for the admin API and logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// Session number (deterministic).
    pub id: u64,
    /// SIP Call-ID.
    pub call_id: String,
    /// `early`, `confirmed` or `terminating`.
    pub state: String,
    /// Side the dialog-creating INVITE came from (`access`: originating, `core`: terminating).
    pub origin: media_plane::Side,
    /// When the session was created.
    pub created_at: crate::Millis,
    /// The session's pinholes, one per accepted media stream.
    pub pinholes: Vec<media_plane::PinholeSpec>,
}

/// One instance's session core.
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    state: CoreState,
    stats: CoreStats,
}

impl Core {
    /// A core with empty state.
    pub fn new(cfg: CoreConfig) -> Result<Core, CoreError> {
        Ok(Core {
            cfg,
            state: CoreState { _todo: () },
            stats: CoreStats::default(),
        })
    }

    /// Apply one input; returns the effects to carry out, in order.
    pub fn apply(&mut self, _input: &Input) -> Applied {
        Applied::default()
    }

    /// The replayable state (compare two cores with `==`).
    pub fn state(&self) -> &CoreState {
        &self.state
    }

    /// Counters.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        0
    }

    /// A view of every live session, ordered by session number.
    pub fn sessions(&self) -> Vec<SessionView> {
        Vec::new()
    }

    /// Number of live registrations (bindings).
    pub fn registration_count(&self) -> usize {
        0
    }
}
