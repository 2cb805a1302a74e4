//! A blocking client for the admin API (`ureq`, plain HTTP), whose errors
//! say what to do: unreachable (is bgf running, is the URL right), token
//! rejected (which token, where it must match), or what the server said.

use crate::cluster::Instance;
use serde_json::Value;
use std::time::Duration;

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// No answer (connection refused, timeout, DNS).
    Unreachable(String),
    /// HTTP 401: the token is wrong.
    Unauthorized(String),
    /// Another HTTP status, with the server's error text.
    Status(u16, String),
    /// A 200 that is not the JSON expected.
    BadBody(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unreachable(m)
            | ApiError::Unauthorized(m)
            | ApiError::BadBody(m)
            | ApiError::Status(_, m) => f.write_str(m),
        }
    }
}

/// An answer: status 200, body and headers of interest.
#[derive(Clone, Debug)]
pub struct Answer {
    pub body: String,
    /// `x-total-count` / `x-matched-count` (sessions).
    pub total: Option<usize>,
    pub matched: Option<usize>,
}

/// Percent-encode a path segment (RFC 3986 unreserved characters kept).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Client for one instance.
pub struct Client<'a> {
    pub instance: &'a Instance,
    agent: ureq::Agent,
}

impl<'a> Client<'a> {
    pub fn new(instance: &'a Instance, timeout: Duration) -> Client<'a> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout)
            .timeout(timeout)
            .redirects(0)
            .build();
        Client { instance, agent }
    }

    /// `GET path` (with the token unless `path` is `/health`).
    pub fn get(&self, path: &str) -> Result<Answer, ApiError> {
        let req = self.agent.get(&format!("{}{path}", self.instance.admin));
        self.call(path, req, None)
    }

    /// `POST path` with a JSON body, waiting up to `timeout` for the answer
    /// (a switchover answers when it is done); the answer as JSON.
    pub fn post(&self, path: &str, body: &Value, timeout: Duration) -> Result<Value, ApiError> {
        let req = self
            .agent
            .post(&format!("{}{path}", self.instance.admin))
            .timeout(timeout);
        let a = self.call(path, req, Some(body))?;
        self.parse(path, &a.body)
    }

    fn call(
        &self,
        path: &str,
        req: ureq::Request,
        body: Option<&Value>,
    ) -> Result<Answer, ApiError> {
        let i = self.instance;
        let url = format!("{}{path}", i.admin);
        let req = if path != "/health" {
            req.set("Authorization", &format!("Bearer {}", i.token.value))
        } else {
            req
        };
        let sent = match body {
            Some(b) => req
                .set("Content-Type", "application/json")
                .send_string(&b.to_string()),
            None => req.call(),
        };
        match sent {
            Ok(r) => {
                let num = |h: &str| r.header(h).and_then(|v| v.parse().ok());
                let (total, matched) = (num("x-total-count"), num("x-matched-count"));
                let body = r.into_string().map_err(|e| {
                    ApiError::Unreachable(format!("{} ({url}): reading the answer failed: {e}", i.name))
                })?;
                Ok(Answer {
                    body,
                    total,
                    matched,
                })
            }
            Err(ureq::Error::Status(401, _)) => Err(ApiError::Unauthorized(format!(
                "{} ({}) rejected the token (HTTP 401): the {} must equal `[admin] token` in {}'s config — fix it, or pass --token-file FILE",
                i.name, i.admin, i.token.source, i.name
            ))),
            Err(ureq::Error::Status(code, r)) => {
                let body = r.into_string().unwrap_or_default();
                let msg = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                    .unwrap_or(body);
                Err(ApiError::Status(
                    code,
                    format!("{} ({url}): HTTP {code}: {msg}", i.name),
                ))
            }
            Err(ureq::Error::Transport(t)) => Err(ApiError::Unreachable(format!(
                "{} unreachable at {}: {t} — is `bgf` running there with [admin] listen on that address? check the admin URL in the cluster file and the management network",
                i.name, i.admin
            ))),
        }
    }

    fn parse(&self, path: &str, body: &str) -> Result<Value, ApiError> {
        serde_json::from_str(body).map_err(|e| {
            ApiError::BadBody(format!(
                "{} ({}{path}): not the expected JSON ({e}) — is this a bgf admin API of the same version?",
                self.instance.name, self.instance.admin
            ))
        })
    }

    /// `GET path` as JSON.
    pub fn json(&self, path: &str) -> Result<Value, ApiError> {
        let a = self.get(path)?;
        self.parse(path, &a.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("abc-1.2_~"), "abc-1.2_~");
        assert_eq!(encode_segment("a@b/c d"), "a%40b%2Fc%20d");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
