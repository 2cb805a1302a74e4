//! A blocking client for the daemon's admin HTTP API (`/health`, `/v1/stats`,
//! `/v1/sessions`), plain HTTP/1.0 over a `TcpStream`.

use serde::Deserialize;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Admin API client.
#[derive(Clone, Debug)]
pub struct AdminClient {
    addr: SocketAddr,
    token: String,
}

/// One side of a pinhole as `/v1/sessions` shows it.
#[derive(Clone, Debug, Deserialize)]
pub struct LegView {
    /// The BGF's own media address on this side.
    pub local: SocketAddr,
    /// Where RTP is sent on this side (from SDP or latched).
    #[serde(default)]
    pub remote_rtp: Option<SocketAddr>,
    /// Where RTCP is sent on this side.
    #[serde(default)]
    pub remote_rtcp: Option<SocketAddr>,
    /// Source IP expected for latching.
    #[serde(default)]
    pub latch_ip: Option<Value>,
}

/// One pinhole (media stream) of a session.
#[derive(Clone, Debug, Deserialize)]
pub struct PinholeView {
    /// `{session, stream}`.
    pub id: Value,
    /// The access-side leg.
    pub access: LegView,
    /// The core-side leg.
    pub core: LegView,
}

/// One session as `/v1/sessions` shows it.
#[derive(Clone, Debug, Deserialize)]
pub struct SessionView {
    /// Session id.
    pub id: Value,
    /// SIP Call-ID.
    pub call_id: String,
    /// State (free form).
    #[serde(default)]
    pub state: Value,
    /// Which side set it up.
    #[serde(default)]
    pub origin: Value,
    /// Its pinholes.
    #[serde(default)]
    pub pinholes: Vec<PinholeView>,
}

impl AdminClient {
    /// A client for the API at `addr` with bearer `token`.
    pub fn new(addr: SocketAddr, token: &str) -> AdminClient {
        AdminClient {
            addr,
            token: token.to_string(),
        }
    }

    /// `GET path` → (status, body).
    pub fn get(&self, path: &str, auth: bool) -> Result<(u16, String), String> {
        self.request("GET", path, None, auth)
    }

    /// `POST path` with a JSON body → (status, body).
    pub fn post(&self, path: &str, body: &str, auth: bool) -> Result<(u16, String), String> {
        self.request("POST", path, Some(body), auth)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: bool,
    ) -> Result<(u16, String), String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {}\r\n", self.addr);
        if auth {
            req += &format!("Authorization: Bearer {}\r\n", self.token);
        }
        if let Some(b) = body {
            req += &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            );
        }
        req += "Connection: close\r\n\r\n";
        req += body.unwrap_or("");
        s.write_all(req.as_bytes())
            .map_err(|e| format!("send to {}: {e}", self.addr))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .map_err(|e| format!("read from {}: {e}", self.addr))?;
        parse_response(&buf)
    }

    fn get_json(&self, path: &str, auth: bool) -> Result<Value, String> {
        let (status, body) = self.get(path, auth)?;
        if status != 200 {
            return Err(format!("GET {path}: HTTP {status}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET {path}: bad JSON ({e}): {body}"))
    }

    /// `GET /health` (no auth).
    pub fn health(&self) -> Result<Value, String> {
        self.get_json("/health", false)
    }

    /// `GET /v1/stats`.
    pub fn stats(&self) -> Result<Value, String> {
        self.get_json("/v1/stats", true)
    }

    /// `GET /v1/sessions`.
    pub fn sessions(&self) -> Result<Vec<SessionView>, String> {
        let v = self.get_json("/v1/sessions", true)?;
        // Accept a bare array or `{ "sessions": [...] }`.
        let arr = match v {
            Value::Object(mut o) if o.contains_key("sessions") => {
                o.remove("sessions").unwrap_or(Value::Null)
            }
            other => other,
        };
        serde_json::from_value(arr.clone())
            .map_err(|e| format!("GET /v1/sessions: unexpected shape ({e}): {arr}"))
    }

    /// A counter from `/v1/stats` by dotted path, e.g. `"media.drops.wrong_source"`.
    pub fn stat(&self, path: &str) -> Result<u64, String> {
        let v = self.stats()?;
        stat_of(&v, path)
    }
}

/// A counter from a stats document by dotted path.
pub fn stat_of(v: &Value, path: &str) -> Result<u64, String> {
    let mut cur = v;
    for part in path.split('.') {
        cur = cur
            .get(part)
            .ok_or_else(|| format!("stats have no `{path}`: {v}"))?;
    }
    cur.as_u64()
        .ok_or_else(|| format!("stats `{path}` is not a number: {v}"))
}

fn parse_response(buf: &[u8]) -> Result<(u16, String), String> {
    let text_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header end in {:?}", String::from_utf8_lossy(buf)))?;
    let head = String::from_utf8_lossy(&buf[..text_end]).into_owned();
    let body = &buf[text_end + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad HTTP status line: {head}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size_txt = String::from_utf8_lossy(&b[..eol]);
        let size_txt = size_txt.split(';').next().unwrap_or("").trim().to_string();
        let Ok(size) = usize::from_str_radix(&size_txt, 16) else {
            break;
        };
        b = &b[eol + 2..];
        if size == 0 || b.len() < size {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_str()), (200, "{}"));
        let (s, b) = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_str()), (404, "abcde"));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn reads_nested_counters() {
        let v: Value =
            serde_json::from_str(r#"{"sessions":3,"media":{"drops":{"wrong_source":7}}}"#).unwrap();
        assert_eq!(stat_of(&v, "sessions").unwrap(), 3);
        assert_eq!(stat_of(&v, "media.drops.wrong_source").unwrap(), 7);
        assert!(stat_of(&v, "media.nope").is_err());
    }

    #[test]
    fn session_view_parses_the_documented_shape() {
        let j = r#"[{"id":1,"call_id":"abc","state":"Confirmed","origin":"Access","created_at":5,
          "pinholes":[{"id":{"session":1,"stream":0},
            "access":{"local":"127.0.1.1:20000","remote_rtp":"[::1]:41000","remote_rtcp":null,"latch_ip":null},
            "core":{"local":"127.0.2.1:30000","remote_rtp":null,"remote_rtcp":null,"latch_ip":null}}]}]"#;
        let v: Vec<SessionView> = serde_json::from_str(j).unwrap();
        assert_eq!(v[0].pinholes[0].access.local.port(), 20000);
        assert_eq!(v[0].pinholes[0].access.remote_rtp.unwrap().port(), 41000);
        assert!(v[0].pinholes[0].core.remote_rtp.is_none());
    }
}
