//! SIP messages as a proxy needs them: framing and header splitting are ours
//! (strict, lossless: every header we do not rewrite passes through with its
//! original name and value), typed parsing only where we read or rewrite —
//! URIs through rsipstack's `sip` module, Via/name-addr/CSeq here.
//!
//! Why not rsipstack's whole-message parser: it refuses extension methods
//! (a proxy must forward them, RFC 3261 §16.6), reads a garbage
//! Content-Length as 0, and re-serialises every reason phrase as the standard
//! one. See docs/DEPENDENCIES.md.

use rsipstack::sip::{Host, Uri};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No blank line ends the header section.
    #[error("no CRLFCRLF after the headers")]
    NoHeaderEnd,
    /// The start line is neither a Request-Line nor a Status-Line.
    #[error("bad start line: {0}")]
    StartLine(String),
    /// A header line without a colon or with an invalid name.
    #[error("bad header line: {0}")]
    HeaderLine(String),
    /// A mandatory header is missing or appears more than once.
    #[error("header {0}: {1}")]
    Header(&'static str, String),
    /// The body does not match Content-Length.
    #[error("Content-Length {declared} but {actual} body bytes")]
    ContentLength {
        /// Declared length.
        declared: usize,
        /// Bytes present.
        actual: usize,
    },
    /// The message is not UTF-8 in its header section.
    #[error("header section is not UTF-8")]
    NotUtf8,
    /// The message exceeds the configured maximum size.
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// A SIP method; extension methods are kept by name.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// PRACK
    Prack,
    /// UPDATE
    Update,
    /// Any other method (INFO, MESSAGE, SUBSCRIBE, ... or an extension).
    Other(String),
}

impl Method {
    /// Parse a method token (case-sensitive, RFC 3261 §7.1).
    pub fn parse(s: &str) -> Option<Method> {
        if s.is_empty() || !s.bytes().all(is_token_char) {
            return None;
        }
        // rsipstack's Method covers the well-known ones; it is case-insensitive,
        // SIP is not, so only accept the exact upper-case spelling as typed.
        let typed = s.parse::<rsipstack::sip::Method>().ok();
        Some(match (typed, s) {
            (Some(rsipstack::sip::Method::Invite), "INVITE") => Method::Invite,
            (Some(rsipstack::sip::Method::Ack), "ACK") => Method::Ack,
            (Some(rsipstack::sip::Method::Bye), "BYE") => Method::Bye,
            (Some(rsipstack::sip::Method::Cancel), "CANCEL") => Method::Cancel,
            (Some(rsipstack::sip::Method::Options), "OPTIONS") => Method::Options,
            (Some(rsipstack::sip::Method::Register), "REGISTER") => Method::Register,
            (Some(rsipstack::sip::Method::PRack), "PRACK") => Method::Prack,
            (Some(rsipstack::sip::Method::Update), "UPDATE") => Method::Update,
            _ => Method::Other(s.to_string()),
        })
    }

    /// The method token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`
    Request {
        /// Method.
        method: Method,
        /// Request-URI, as it appeared.
        uri: String,
    },
    /// `SIP/2.0 code reason`
    Response {
        /// Status code 100–699.
        code: u16,
        /// Reason phrase as received (kept verbatim).
        reason: String,
    },
}

/// A header: its name as received (compact forms expanded) and its raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Name (canonical for the headers we know, as received otherwise).
    pub name: String,
    /// Value, trimmed, unfolded.
    pub value: String,
}

/// A parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request- or Status-Line.
    pub start: StartLine,
    /// Headers in order. Via, Route, Record-Route and Contact values that
    /// carried comma-separated lists are split into one entry per element.
    pub headers: Vec<Header>,
    /// Body (exactly Content-Length bytes).
    pub body: Vec<u8>,
}

const COMPACT: &[(&str, &str)] = &[
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("e", "Content-Encoding"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("f", "From"),
    ("s", "Subject"),
    ("k", "Supported"),
    ("t", "To"),
    ("v", "Via"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("x", "Session-Expires"),
];

const CANONICAL: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Max-Forwards",
    "Route",
    "Record-Route",
    "Content-Length",
    "Content-Type",
    "Expires",
    "Require",
    "Supported",
    "RSeq",
    "RAck",
    "Session-Expires",
    "Min-SE",
    "Allow",
    "Accept",
    "Path",
    "Event",
    "Subject",
    "Content-Encoding",
    "Refer-To",
];

fn canonical_name(raw: &str) -> String {
    for (c, full) in COMPACT {
        if raw.eq_ignore_ascii_case(c) {
            return (*full).to_string();
        }
    }
    for full in CANONICAL {
        if raw.eq_ignore_ascii_case(full) {
            return (*full).to_string();
        }
    }
    raw.to_string()
}

/// Headers whose comma-separated values are split into one entry per element.
const LIST_HEADERS: &[&str] = &["Via", "Route", "Record-Route", "Contact", "Path"];

/// Split a header value on commas that are outside quotes and angle brackets.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut escape) = (false, false, false);
    let mut start = 0;
    for (i, ch) in value.char_indices() {
        if escape {
            escape = false;
            continue;
        }
        match ch {
            '\\' if quoted => escape = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

fn find_header_end(data: &[u8]) -> Option<usize> {
    data.windows(4).position(|w| w == b"\r\n\r\n")
}

impl Message {
    /// Parse one complete message (UDP datagram or a TCP-framed message).
    /// `max` bounds the total size. Over UDP a body without Content-Length is
    /// the rest of the datagram; extra bytes beyond Content-Length are dropped
    /// (RFC 3261 §18.3); fewer bytes than declared is an error.
    pub fn parse(data: &[u8], max: usize) -> Result<Message, ParseError> {
        if data.len() > max {
            return Err(ParseError::TooLarge(data.len()));
        }
        // Tolerate leading CRLFs (keep-alives glued in front, RFC 3261 §7.5).
        let mut skip = 0;
        while data[skip..].starts_with(b"\r\n") {
            skip += 2;
        }
        let data = &data[skip..];
        let end = find_header_end(data).ok_or(ParseError::NoHeaderEnd)?;
        let head = std::str::from_utf8(&data[..end]).map_err(|_| ParseError::NotUtf8)?;
        let body_bytes = &data[end + 4..];
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let start = parse_start_line(first)?;

        let mut headers: Vec<Header> = Vec::new();
        let mut current: Option<(String, String)> = None;
        for line in lines {
            if line.starts_with(' ') || line.starts_with('\t') {
                match current.as_mut() {
                    Some((_, v)) => {
                        v.push(' ');
                        v.push_str(line.trim());
                    }
                    None => return Err(ParseError::HeaderLine(line.chars().take(60).collect())),
                }
                continue;
            }
            if let Some((n, v)) = current.take() {
                push_header(&mut headers, n, v);
            }
            let colon = line
                .find(':')
                .ok_or_else(|| ParseError::HeaderLine(line.chars().take(60).collect()))?;
            let name = line[..colon].trim_end();
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err(ParseError::HeaderLine(line.chars().take(60).collect()));
            }
            current = Some((canonical_name(name), line[colon + 1..].trim().to_string()));
        }
        if let Some((n, v)) = current.take() {
            push_header(&mut headers, n, v);
        }

        let mut msg = Message {
            start,
            headers,
            body: Vec::new(),
        };
        let declared = match msg.header("Content-Length") {
            Some(v) => Some(v.trim().parse::<usize>().map_err(|_| {
                ParseError::Header("Content-Length", format!("{v:?} is not a number"))
            })?),
            None => None,
        };
        if msg.count("Content-Length") > 1 {
            return Err(ParseError::Header(
                "Content-Length",
                "appears more than once".into(),
            ));
        }
        let body_len = match declared {
            Some(n) if n > body_bytes.len() => {
                return Err(ParseError::ContentLength {
                    declared: n,
                    actual: body_bytes.len(),
                })
            }
            Some(n) => n,
            None => body_bytes.len(),
        };
        msg.body = body_bytes[..body_len].to_vec();
        msg.validate()?;
        Ok(msg)
    }

    fn validate(&self) -> Result<(), ParseError> {
        for name in ["Call-ID", "From", "To", "CSeq"] {
            match self.count(name) {
                1 => {}
                0 => return Err(ParseError::Header(static_name(name), "missing".into())),
                _ => {
                    return Err(ParseError::Header(
                        static_name(name),
                        "appears more than once".into(),
                    ))
                }
            }
        }
        if self.count("Via") == 0 {
            return Err(ParseError::Header("Via", "missing".into()));
        }
        // Every Via, not only the top one: a proxy forwards the others, and
        // responses are routed by them (RFC 4475 badinv01: `Via: h;;,;,,`).
        for v in self.headers_named("Via") {
            Via::parse(v).map_err(|e| ParseError::Header("Via", e))?;
        }
        let cseq = self.cseq().map_err(|e| ParseError::Header("CSeq", e))?;
        if let StartLine::Request { method, uri } = &self.start {
            if &cseq.1 != method {
                return Err(ParseError::Header(
                    "CSeq",
                    format!("method {} does not match request method {}", cseq.1, method),
                ));
            }
            parse_uri(uri).map_err(|e| ParseError::StartLine(format!("Request-URI: {e}")))?;
            if sip_uri_has_headers(uri) {
                // Headers are not allowed in a Request-URI (RFC 3261 §19.1.1;
                // RFC 4475 escruri) and a proxy must not forward them.
                return Err(ParseError::StartLine(format!(
                    "Request-URI {uri:?} carries headers"
                )));
            }
            if let Some(mf) = self.header("Max-Forwards") {
                mf.trim().parse::<u8>().map_err(|_| {
                    ParseError::Header("Max-Forwards", format!("{mf:?} is not 0-255"))
                })?;
            }
        }
        NameAddr::parse(self.header("From").unwrap_or_default())
            .map_err(|e| ParseError::Header("From", e))?;
        NameAddr::parse(self.header("To").unwrap_or_default())
            .map_err(|e| ParseError::Header("To", e))?;
        Ok(())
    }

    /// First value of a header (by canonical name, case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// All values of a header.
    pub fn headers_named<'a>(
        &'a self,
        name: &'a str,
    ) -> impl DoubleEndedIterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Number of entries of a header.
    pub fn count(&self, name: &str) -> usize {
        self.headers_named(name).count()
    }

    /// Remove every entry of a header.
    pub fn remove(&mut self, name: &str) {
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    /// Replace the first entry of a header (or append it).
    pub fn set(&mut self, name: &str, value: String) {
        match self
            .headers
            .iter_mut()
            .find(|h| h.name.eq_ignore_ascii_case(name))
        {
            Some(h) => h.value = value,
            None => self.headers.push(Header {
                name: name.to_string(),
                value,
            }),
        }
    }

    /// Insert a header before the first entry of the same name (or at the
    /// position of the first Via-ish header when none exists yet).
    pub fn push_front(&mut self, name: &str, value: String) {
        let pos = self
            .headers
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(name))
            .unwrap_or(0);
        self.headers.insert(
            pos,
            Header {
                name: name.to_string(),
                value,
            },
        );
    }

    /// Remove and return the first entry of a header.
    pub fn pop_front(&mut self, name: &str) -> Option<String> {
        let pos = self
            .headers
            .iter()
            .position(|h| h.name.eq_ignore_ascii_case(name))?;
        Some(self.headers.remove(pos).value)
    }

    /// The top Via value.
    pub fn top_via(&self) -> Option<&str> {
        self.header("Via")
    }

    /// Call-ID.
    pub fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or_default()
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Result<(u32, Method), String> {
        let v = self.header("CSeq").ok_or("missing")?;
        let mut it = v.split_whitespace();
        let n = it
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| format!("{v:?}: sequence number is not a 32-bit number"))?;
        let m = it
            .next()
            .and_then(Method::parse)
            .ok_or_else(|| format!("{v:?}: no method"))?;
        if it.next().is_some() {
            return Err(format!("{v:?}: trailing data"));
        }
        Ok((n, m))
    }

    /// `tag` parameter of From.
    pub fn from_tag(&self) -> Option<String> {
        NameAddr::parse(self.header("From")?).ok()?.param("tag")
    }

    /// `tag` parameter of To.
    pub fn to_tag(&self) -> Option<String> {
        NameAddr::parse(self.header("To")?).ok()?.param("tag")
    }

    /// Method of a request, or the CSeq method of a response.
    pub fn method(&self) -> Method {
        match &self.start {
            StartLine::Request { method, .. } => method.clone(),
            StartLine::Response { .. } => self
                .cseq()
                .map(|c| c.1)
                .unwrap_or(Method::Other(String::new())),
        }
    }

    /// Status code of a response.
    pub fn code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Where the session description is in the body, if there is one:
    /// the whole body (`application/sdp`, or no Content-Type and a body that
    /// starts like SDP), or the `application/sdp` part of a `multipart/*` body
    /// (IMS emergency calls carry SDP beside a PIDF-LO location). A BGF must
    /// find every SDP: one it missed would let media bypass the pinholes.
    pub fn sdp_range(&self) -> Option<std::ops::Range<usize>> {
        if self.body.is_empty() {
            return None;
        }
        let Some(ct) = self.header("Content-Type") else {
            return self.body.starts_with(b"v=").then_some(0..self.body.len());
        };
        let mut parts = ct.split(';');
        let mime = parts.next().unwrap_or_default().trim();
        if mime.eq_ignore_ascii_case("application/sdp") {
            return Some(0..self.body.len());
        }
        if !mime.to_ascii_lowercase().starts_with("multipart/") {
            return None;
        }
        let boundary = parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_string())
        })?;
        multipart_sdp(&self.body, boundary.as_bytes())
    }

    /// Whether the message carries a session description (see [`Message::sdp_range`]).
    pub fn has_sdp(&self) -> bool {
        self.sdp_range().is_some()
    }

    /// The session description bytes, if any.
    pub fn sdp(&self) -> Option<&[u8]> {
        self.sdp_range().map(|r| &self.body[r])
    }

    /// Replace the session description (whole body or multipart part).
    pub fn set_sdp(&mut self, sdp: Vec<u8>) {
        match self.sdp_range() {
            Some(r) if r.start == 0 && r.end == self.body.len() => self.body = sdp,
            Some(r) => {
                let mut body = Vec::with_capacity(self.body.len() + sdp.len());
                body.extend_from_slice(&self.body[..r.start]);
                body.extend_from_slice(&sdp);
                body.extend_from_slice(&self.body[r.end..]);
                self.body = body;
            }
            None => {}
        }
    }

    /// Remove the body (used when an SDP cannot be relayed safely).
    pub fn clear_body(&mut self) {
        self.body.clear();
        self.remove("Content-Type");
    }

    /// Serialise, with Content-Length set to the body length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::with_capacity(512 + self.headers.len() * 48);
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(s, "{method} {uri} SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                let _ = write!(s, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for h in &self.headers {
            if h.name.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            s.push_str(&h.name);
            s.push_str(": ");
            s.push_str(&h.value);
            s.push_str("\r\n");
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

fn static_name(name: &str) -> &'static str {
    match name {
        "Call-ID" => "Call-ID",
        "From" => "From",
        "To" => "To",
        _ => "CSeq",
    }
}

fn push_header(headers: &mut Vec<Header>, name: String, value: String) {
    if LIST_HEADERS.iter().any(|l| l.eq_ignore_ascii_case(&name)) && value.contains(',') {
        for part in split_list(&value) {
            headers.push(Header {
                name: name.clone(),
                value: part.to_string(),
            });
        }
    } else {
        headers.push(Header { name, value });
    }
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    let bad = || ParseError::StartLine(line.chars().take(80).collect());
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = match rest.split_once(' ') {
            Some((c, r)) => (c, r),
            None => (rest, ""),
        };
        let code: u16 = code.parse().map_err(|_| bad())?;
        if !(100..=699).contains(&code) || reason.contains(['\r', '\n']) {
            return Err(bad());
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_string(),
        });
    }
    let mut parts = line.split(' ');
    let (m, uri, ver) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(u), Some(v), None) => (m, u, v),
        _ => return Err(bad()),
    };
    if ver != "SIP/2.0" {
        return Err(ParseError::StartLine(format!(
            "unsupported version {ver:?}"
        )));
    }
    let method = Method::parse(m).ok_or_else(bad)?;
    // A bare URI: `<sip:..>` is not a Request-URI (RFC 4475 ltgtruri), even
    // though rsipstack's URI parser accepts it.
    if uri.is_empty() || uri.contains(['<', '>', '"']) {
        return Err(bad());
    }
    Ok(StartLine::Request {
        method,
        uri: uri.to_string(),
    })
}

/// Whether a sip:/sips: URI has a headers component (`?h=v` after the host;
/// a `?` in the user part is allowed).
fn sip_uri_has_headers(uri: &str) -> bool {
    let scheme = uri.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("sip" | "sips")) {
        return false;
    }
    let hostpart = uri.split_once('@').map(|(_, h)| h).unwrap_or(uri);
    hostpart.contains('?')
}

/// Parse a URI with rsipstack (sip:, sips:, tel:; IPv6 hosts).
pub fn parse_uri(s: &str) -> Result<Uri, String> {
    rsipstack::sip::parse_uri(s).map_err(|e| e.to_string())
}

/// A SIP URI's host as an IP address, when it is one.
pub fn uri_ip(uri: &Uri) -> Option<IpAddr> {
    match &uri.host_with_port.host {
        Host::IpAddr(ip) => Some(*ip),
        Host::Domain(d) => d.to_string().trim_matches(['[', ']']).parse().ok(),
    }
}

/// The socket address a URI designates when its host is an IP literal.
pub fn uri_socket(uri: &Uri) -> Option<SocketAddr> {
    let ip = uri_ip(uri)?;
    let port = uri
        .host_with_port
        .port
        .as_ref()
        .map(|p| p.value().to_owned())
        .unwrap_or(5060);
    Some(SocketAddr::new(ip, port))
}

/// The user part of a URI.
pub fn uri_user(uri: &Uri) -> Option<&str> {
    uri.auth.as_ref().map(|a| a.user.as_str())
}

/// Whether a URI carries the `lr` parameter.
pub fn uri_has_lr(raw: &str) -> bool {
    let inner = raw
        .split_once('<')
        .map(|(_, r)| r.split('>').next().unwrap_or(r))
        .unwrap_or(raw);
    inner.split(';').skip(1).any(|p| {
        p.trim().eq_ignore_ascii_case("lr") || p.trim().to_ascii_lowercase().starts_with("lr=")
    })
}

/// One Via header value: `SIP/2.0/UDP host:port;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport token (UDP, TCP, ...).
    pub transport: String,
    /// sent-by host (IPv6 without brackets).
    pub host: String,
    /// sent-by port, if present.
    pub port: Option<u16>,
    /// Parameters in order (`name`, optional value).
    pub params: Params,
}

impl Via {
    /// Parse one Via element.
    pub fn parse(v: &str) -> Result<Via, String> {
        let v = v.trim();
        // sent-protocol = name SLASH version SLASH transport, where SLASH
        // allows whitespace on both sides (RFC 3261 §25.1; RFC 4475 wsinv).
        let mut rest = v;
        let mut proto = [""; 3];
        for (i, field) in proto.iter_mut().enumerate() {
            if i > 0 {
                rest = rest
                    .trim_start()
                    .strip_prefix('/')
                    .ok_or_else(|| format!("{v:?}: protocol is not SIP/2.0/transport"))?
                    .trim_start();
            }
            let end = rest
                .find(|c: char| c == '/' || c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            *field = &rest[..end];
            rest = &rest[end..];
        }
        let [name, ver, transport] = proto;
        if name != "SIP" || ver != "2.0" {
            return Err(format!("{v:?}: protocol is not SIP/2.0"));
        }
        if transport.is_empty() {
            return Err(format!("{v:?}: no transport"));
        }
        let transport = transport.to_ascii_uppercase();
        if !rest.starts_with(|c: char| c.is_ascii_whitespace()) {
            return Err(format!("{v:?}: no sent-by"));
        }
        let rest = rest.trim();
        let mut parts = rest.split(';');
        let sent_by = parts.next().unwrap_or_default().trim();
        let (host, port) = split_host_port(sent_by).ok_or_else(|| format!("{v:?}: bad sent-by"))?;
        let params = parse_params(parts);
        Ok(Via {
            transport,
            host,
            port,
            params,
        })
    }

    /// A parameter's value (`Some(None)` for a flag parameter).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// Set (or add) a parameter.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        set_param(&mut self.params, name, value);
    }

    /// `host:port` identifying the sender (for transaction matching).
    pub fn sent_by(&self) -> String {
        format!("{}:{}", self.host, self.port.unwrap_or(5060))
    }

    /// Where responses go (RFC 3261 §18.2.2, RFC 3581): `received`/`rport`
    /// if present, else sent-by.
    pub fn response_target(&self) -> Option<SocketAddr> {
        let host = match self.param("received") {
            Some(Some(r)) => r.trim_matches(['[', ']']).to_string(),
            _ => self.host.clone(),
        };
        let ip: IpAddr = host.parse().ok()?;
        let port = match self.param("rport") {
            Some(Some(p)) => p.parse().ok()?,
            _ => self.port.unwrap_or(5060),
        };
        Some(SocketAddr::new(ip, port))
    }
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SIP/2.0/{} ", self.transport)?;
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for (k, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        Ok(())
    }
}

/// The content range of the first `application/sdp` part of a multipart
/// body (RFC 2046): parts are delimited by `--boundary` lines; each part has
/// headers, a blank line, then content up to the CRLF before the next
/// delimiter.
fn multipart_sdp(body: &[u8], boundary: &[u8]) -> Option<std::ops::Range<usize>> {
    if boundary.is_empty() {
        return None;
    }
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    let find = |from: usize| -> Option<usize> {
        body.get(from..)?
            .windows(delim.len())
            .position(|w| w == delim.as_slice())
            .map(|p| p + from)
    };
    let mut at = find(0)?;
    loop {
        let after = at + delim.len();
        if body.get(after..after + 2) == Some(b"--") {
            return None; // closing delimiter
        }
        let part_start = after + body.get(after..)?.windows(2).position(|w| w == b"\r\n")? + 2;
        let next = find(part_start)?;
        let part_end = if next >= 2 && &body[next - 2..next] == b"\r\n" {
            next - 2
        } else {
            next
        };
        let part = body.get(part_start..part_end)?;
        let (headers, content_off) = match part.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(p) => (&part[..p], p + 4),
            None if part.starts_with(b"\r\n") => (&part[..0], 2),
            None => (part, part.len()),
        };
        let is_sdp = String::from_utf8_lossy(headers).split("\r\n").any(|h| {
            h.split_once(':').is_some_and(|(n, v)| {
                n.trim().eq_ignore_ascii_case("Content-Type")
                    && v.split(';')
                        .next()
                        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
            })
        });
        if is_sdp && content_off <= part.len() {
            return Some(part_start + content_off..part_end);
        }
        at = next;
    }
}

/// Header or Via parameters (`name[=value]`), in order, empties skipped.
pub type Params = Vec<(String, Option<String>)>;

fn parse_params<'a>(parts: impl Iterator<Item = &'a str>) -> Params {
    parts
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
            None => (p.to_string(), None),
        })
        .collect()
}

fn set_param(params: &mut Params, name: &str, value: Option<String>) {
    match params
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
    {
        Some(p) => p.1 = value,
        None => params.push((name.to_string(), value)),
    }
}

/// Split `host[:port]` / `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        h.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((h.to_string(), port));
    }
    if s.matches(':').count() > 1 {
        // bare IPv6 without brackets (tolerated in sent-by of some UAs)
        s.parse::<std::net::Ipv6Addr>().ok()?;
        return Some((s.to_string(), None));
    }
    match s.split_once(':') {
        Some((h, p)) => Some((h.to_string(), Some(p.parse().ok()?))),
        None => Some((s.to_string(), None)),
    }
}

/// A name-addr or addr-spec header value (From, To, Contact, Route,
/// Record-Route): optional display name, the URI, header parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Everything before `<` (display name with quotes), trimmed; empty if none.
    pub display: String,
    /// The URI text.
    pub uri: String,
    /// Whether the URI was in angle brackets.
    pub angle: bool,
    /// Header parameters after the URI (`;tag=..;expires=..`), raw, without leading `;`.
    pub params: Params,
}

impl NameAddr {
    /// Parse; `*` (Contact wildcard) is refused here — callers check it first.
    pub fn parse(v: &str) -> Result<NameAddr, String> {
        let v = v.trim();
        if v.is_empty() {
            return Err("empty".into());
        }
        let (display, uri, rest, angle) = if let Some(lt) = find_unquoted(v, '<') {
            let gt = v[lt..]
                .find('>')
                .ok_or_else(|| format!("{v:?}: unclosed '<'"))?
                + lt;
            (
                v[..lt].trim().to_string(),
                v[lt + 1..gt].trim().to_string(),
                &v[gt + 1..],
                true,
            )
        } else {
            // addr-spec: parameters after the URI belong to the header.
            match v.split_once(';') {
                Some((u, r)) => (
                    String::new(),
                    u.trim().to_string(),
                    &v[v.len() - r.len() - 1..],
                    false,
                ),
                None => (String::new(), v.to_string(), "", false),
            }
        };
        if uri.is_empty() || !uri.contains(':') {
            return Err(format!("{v:?}: no URI"));
        }
        if !angle && uri.contains(['"', '<', '>', '?', ' ', '\t']) {
            // An unterminated quote lands here (RFC 4475 quotbal), and a URI
            // with headers must be in <> (RFC 3261 §20; RFC 4475 regbadct).
            return Err(format!("{v:?}: not a name-addr or addr-spec"));
        }
        if !valid_display(&display) {
            // RFC 4475 baddn: `Bell, Alexander <sip:..>` must be quoted.
            return Err(format!(
                "{v:?}: display name must be a token list or quoted"
            ));
        }
        let params = parse_params(rest.split(';'));
        Ok(NameAddr {
            display,
            uri,
            angle,
            params,
        })
    }

    /// A header parameter's value.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.clone())
    }

    /// Set or add a header parameter.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        set_param(&mut self.params, name, value);
    }
}

impl std::fmt::Display for NameAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.display.is_empty() {
            write!(f, "{} ", self.display)?;
        }
        // Always write angle brackets: required when the URI has parameters.
        write!(f, "<{}>", self.uri)?;
        for (k, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        Ok(())
    }
}

/// A display name: empty, one complete quoted string, or words of token
/// characters (RFC 3261 §25.1). Non-ASCII octets are tolerated in unquoted
/// words (UTF-8 names seen in the wild); ASCII separators are not.
fn valid_display(d: &str) -> bool {
    let d = d.trim();
    if let Some(inner) = d.strip_prefix('"') {
        let mut escape = false;
        for (i, c) in inner.char_indices() {
            if escape {
                escape = false;
                continue;
            }
            match c {
                '\\' => escape = true,
                '"' => return i + 1 == inner.len(),
                _ => {}
            }
        }
        return false;
    }
    d.bytes()
        .all(|b| !b.is_ascii() || is_token_char(b) || b == b' ' || b == b'\t')
}

fn find_unquoted(s: &str, needle: char) -> Option<usize> {
    let mut quoted = false;
    let mut escape = false;
    for (i, c) in s.char_indices() {
        if escape {
            escape = false;
            continue;
        }
        match c {
            '\\' if quoted => escape = true,
            '"' => quoted = !quoted,
            c if c == needle && !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Build a response to `req` (copies Via, From, To, Call-ID, CSeq; adds a
/// To-tag when given and absent).
pub fn make_response(req: &Message, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
    let mut headers = Vec::new();
    for h in &req.headers {
        let keep = ["Via", "From", "Call-ID", "CSeq"]
            .iter()
            .any(|n| h.name.eq_ignore_ascii_case(n))
            || (h.name.eq_ignore_ascii_case("Record-Route")
                && (100..300).contains(&code)
                && code > 100);
        if h.name.eq_ignore_ascii_case("To") {
            let mut value = h.value.clone();
            if let Some(tag) = to_tag {
                if code > 100 {
                    if let Ok(mut na) = NameAddr::parse(&h.value) {
                        if na.param("tag").is_none() {
                            na.set_param("tag", Some(tag.to_string()));
                            value = na.to_string();
                        }
                    }
                }
            }
            headers.push(Header {
                name: "To".into(),
                value,
            });
        } else if keep {
            headers.push(h.clone());
        }
    }
    Message {
        start: StartLine::Response {
            code,
            reason: reason.to_string(),
        },
        headers,
        body: Vec::new(),
    }
}

/// Best-effort response to a request that failed validation: needs at least
/// one parseable Via. Returns `None` when no response can be addressed.
pub fn make_error_response_raw(data: &[u8], code: u16, reason: &str) -> Option<Vec<u8>> {
    let end = find_header_end(data).unwrap_or(data.len());
    let head = String::from_utf8_lossy(&data[..end]);
    let mut lines = head.split("\r\n");
    let first = lines.next()?;
    if first.starts_with("SIP/") {
        return None;
    }
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    let mut have_via = false;
    for line in lines {
        let Some((n, v)) = line.split_once(':') else {
            continue;
        };
        let name = canonical_name(n.trim());
        if ["Via", "From", "To", "Call-ID", "CSeq"].contains(&name.as_str()) {
            if name == "Via" {
                if Via::parse(v.trim()).is_err() {
                    continue;
                }
                have_via = true;
            }
            let _ = write!(out, "{name}: {}\r\n", v.trim());
        }
    }
    if !have_via {
        return None;
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP_INVITE: &str = "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.1.1:5061;branch=z9hG4bK-12345-1-0\r\n\
From: sipp <sip:sipp@127.0.1.1:5061>;tag=12345SIPpTag001\r\n\
To: service <sip:service@127.0.0.1:5060>\r\n\
Call-ID: 1-12345@127.0.1.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@127.0.1.1:5061\r\n\
Max-Forwards: 70\r\n\
Subject: Performance Test\r\n\
Content-Type: application/sdp\r\n\
Content-Length:   129\r\n\r\n\
v=0\r\n\
o=user1 53655765 2353687637 IN IP4 127.0.1.1\r\n\
s=-\r\n\
c=IN IP4 127.0.1.1\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

    #[test]
    fn parses_sipp_invite() {
        let m = Message::parse(SIPP_INVITE.as_bytes(), 65535).unwrap();
        assert_eq!(m.method(), Method::Invite);
        assert_eq!(m.call_id(), "1-12345@127.0.1.1");
        assert_eq!(m.cseq().unwrap(), (1, Method::Invite));
        assert_eq!(m.from_tag().as_deref(), Some("12345SIPpTag001"));
        assert_eq!(m.to_tag(), None);
        assert!(m.has_sdp());
        assert_eq!(m.body.len(), 129);
        let via = Via::parse(m.top_via().unwrap()).unwrap();
        assert_eq!(via.branch(), Some("z9hG4bK-12345-1-0"));
        assert_eq!(via.sent_by(), "127.0.1.1:5061");
        // round trip keeps every header and the body
        let again = Message::parse(&m.to_bytes(), 65535).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn compact_headers_and_multi_via_lines() {
        let raw = "OPTIONS sip:a@[2001:db8::1]:5060 SIP/2.0\r\n\
v: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKa;received=2001:db8::99, SIP/2.0/TCP 198.18.0.1;branch=z9hG4bKb\r\n\
f: <sip:x@example.com>;tag=1\r\nt: <tel:+15551234>\r\ni: abc\r\nCSeq: 2 OPTIONS\r\nl: 0\r\n\r\n";
        let m = Message::parse(raw.as_bytes(), 65535).unwrap();
        let vias: Vec<_> = m.headers_named("Via").collect();
        assert_eq!(vias.len(), 2, "two Vias on one line are split");
        let v0 = Via::parse(vias[0]).unwrap();
        assert_eq!(v0.host, "2001:db8::9");
        assert_eq!(v0.param("received"), Some(Some("2001:db8::99")));
        assert_eq!(
            v0.to_string(),
            "SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKa;received=2001:db8::99"
        );
        assert_eq!(m.call_id(), "abc");
        let uri = parse_uri("sip:a@[2001:db8::1]:5060").unwrap();
        assert_eq!(
            uri_socket(&uri),
            Some("[2001:db8::1]:5060".parse().unwrap())
        );
        assert!(parse_uri("tel:+15551234").is_ok());
    }

    #[test]
    fn extension_method_and_reason_phrase_survive() {
        let raw = "FOOBAR sip:x@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.2;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@198.18.0.1>\r\nCall-ID: c\r\nCSeq: 1 FOOBAR\r\n\r\n";
        let m = Message::parse(raw.as_bytes(), 65535).unwrap();
        assert_eq!(m.method(), Method::Other("FOOBAR".into()));
        let resp = "SIP/2.0 403 Caller Origination Number is Invalid\r\nVia: SIP/2.0/UDP 198.18.0.2;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@198.18.0.1>;tag=2\r\nCall-ID: c\r\nCSeq: 1 FOOBAR\r\nContent-Length: 0\r\n\r\n";
        let r = Message::parse(resp.as_bytes(), 65535).unwrap();
        assert!(String::from_utf8(r.to_bytes())
            .unwrap()
            .starts_with("SIP/2.0 403 Caller Origination Number is Invalid\r\n"));
    }

    #[test]
    fn content_length_rules() {
        let base = "MESSAGE sip:x@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.2;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@198.18.0.1>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n";
        // declared larger than present: error
        let m = format!("{base}Content-Length: 10\r\n\r\nabc");
        assert!(matches!(
            Message::parse(m.as_bytes(), 65535),
            Err(ParseError::ContentLength { .. })
        ));
        // garbage value: error (rsipstack would read 0)
        let m = format!("{base}Content-Length: x1\r\n\r\n");
        assert!(Message::parse(m.as_bytes(), 65535).is_err());
        // extra bytes beyond Content-Length dropped
        let m = format!("{base}Content-Length: 2\r\n\r\nabcdef");
        assert_eq!(Message::parse(m.as_bytes(), 65535).unwrap().body, b"ab");
        // no Content-Length over UDP: rest of datagram
        let m = format!("{base}\r\nhello");
        assert_eq!(Message::parse(m.as_bytes(), 65535).unwrap().body, b"hello");
    }

    #[test]
    fn refuses_broken_messages() {
        let cases: &[&str] = &[
            "",
            "garbage\r\n\r\n",
            "INVITE sip:x SIP/3.0\r\n\r\n",
            "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCSeq: 1 INVITE\r\n\r\n", // no Call-ID
            "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: a\r\nCSeq: 1 BYE\r\n\r\n", // CSeq method mismatch
            "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: a\r\nCSeq: -1 INVITE\r\n\r\n",
            "INVITE sip:x@y SIP/2.0\r\nVia: nonsense\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: a\r\nCSeq: 1 INVITE\r\n\r\n",
            "INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: a\r\nCSeq: 1 INVITE\r\nMax-Forwards: 300\r\n\r\n",
            "SIP/2.0 99 Too Low\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n",
            "INVITE sip:x@y SIP/2.0\r\n bad fold\r\n\r\n",
        ];
        for c in cases {
            assert!(
                Message::parse(c.as_bytes(), 65535).is_err(),
                "accepted: {c:?}"
            );
        }
        assert!(matches!(
            Message::parse(&[b'a'; 100], 50),
            Err(ParseError::TooLarge(100))
        ));
    }

    #[test]
    fn name_addr_forms() {
        let na = NameAddr::parse("\"A, B <x>\" <sip:a@b;transport=tcp>;tag=9;expires=60").unwrap();
        assert_eq!(na.uri, "sip:a@b;transport=tcp");
        assert_eq!(na.param("tag").as_deref(), Some("9"));
        assert_eq!(na.param("expires").as_deref(), Some("60"));
        let na = NameAddr::parse("sip:a@b;tag=1").unwrap();
        assert_eq!(na.uri, "sip:a@b");
        assert_eq!(na.param("tag").as_deref(), Some("1"));
        // list splitting honours quotes and brackets
        let l = split_list("\"a,b\" <sip:x@y;p=1,2>, <sip:z@w>");
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn error_response_from_raw() {
        let raw = b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCSeq: 1 INVITE\r\n\r\n";
        let r = make_error_response_raw(raw, 400, "Bad Request").unwrap();
        let r = String::from_utf8(r).unwrap();
        assert!(r.starts_with("SIP/2.0 400 Bad Request\r\n"));
        assert!(r.contains("Via: SIP/2.0/UDP 198.18.0.2:5060;branch=z9hG4bK1"));
        assert!(make_error_response_raw(b"SIP/2.0 200 OK\r\n\r\n", 400, "x").is_none());
        assert!(make_error_response_raw(b"garbage", 400, "x").is_none());
    }

    #[test]
    fn finds_sdp_in_multipart_and_without_content_type() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 198.18.1.5\r\ns=-\r\nc=IN IP4 198.18.1.5\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
        let pidf = "<?xml version=\"1.0\"?><presence/>";
        let body = format!(
            "--b1\r\nContent-Type: application/pidf+xml\r\n\r\n{pidf}\r\n--b1\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--b1--\r\n"
        );
        let raw = format!(
            "INVITE urn:service:sos SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.5;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <urn:service:sos>\r\nCall-ID: e1\r\nCSeq: 1 INVITE\r\nContent-Type: multipart/mixed;boundary=\"b1\"\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut m = Message::parse(raw.as_bytes(), 65535).unwrap();
        assert_eq!(m.sdp(), Some(sdp.as_bytes()));
        m.set_sdp(b"v=0\r\nNEW\r\n".to_vec());
        let b = String::from_utf8(m.body.clone()).unwrap();
        assert!(b.contains(pidf), "other parts untouched");
        assert!(
            b.contains("application/sdp\r\n\r\nv=0\r\nNEW\r\n\r\n--b1--"),
            "{b}"
        );
        // No Content-Type but an SDP-looking body: still found.
        let raw = raw.replace("Content-Type: multipart/mixed;boundary=\"b1\"\r\n", "");
        let raw = raw.replace(
            &format!("Content-Length: {}\r\n\r\n{body}", body.len()),
            &format!("Content-Length: {}\r\n\r\n{sdp}", sdp.len()),
        );
        let m = Message::parse(raw.as_bytes(), 65535).unwrap();
        assert_eq!(m.sdp(), Some(sdp.as_bytes()));
        // Garbage multipart never panics.
        for junk in [
            "--b1",
            "--b1\r\n",
            "--b1\r\nContent-Type: application/sdp",
            "x--b1--",
        ] {
            let _ = multipart_sdp(junk.as_bytes(), b"b1");
        }
    }
}
