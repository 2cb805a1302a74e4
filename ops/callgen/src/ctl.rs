//! Coordination between the UAC and the UAS across network namespaces (a
//! filesystem Unix socket: abstract ones are per-namespace) or hosts (TCP).
//!
//! Newline-delimited JSON, UAC → UAS: `hello`, `marker` (wall-clock time of
//! the marker), `finish`; UAS → UAC: one `report` line (its per-call receive
//! records, i.e. the access → core direction) in answer to `finish`.

use crate::report::SideReport;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One control message.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CtlMsg {
    /// First line from the UAC.
    Hello {
        /// The UAC's version.
        version: String,
    },
    /// The marker happened at this wall-clock time.
    Marker {
        /// ms since the Unix epoch.
        unix_ms: f64,
    },
    /// End of run: send the report and exit.
    Finish,
    /// The UAS's report (answer to `finish`).
    Report(Box<SideReport>),
}

/// A control endpoint: `unix:/path` or `tcp:ip:port`.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// Filesystem Unix socket.
    Unix(String),
    /// TCP.
    Tcp(String),
}

impl std::str::FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Endpoint, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.starts_with('@') || p.is_empty() {
                return Err(format!(
                    "{s:?}: use a filesystem path (abstract Unix sockets do not cross network namespaces)"
                ));
            }
            Ok(Endpoint::Unix(p.to_string()))
        } else if let Some(a) = s.strip_prefix("tcp:") {
            Ok(Endpoint::Tcp(a.to_string()))
        } else {
            Err(format!("{s:?}: expected unix:/path or tcp:ip:port"))
        }
    }
}

trait Conn: std::io::Read + Write + Send {
    fn clone_box(&self) -> std::io::Result<Box<dyn Conn>>;
    fn set_timeout(&self, d: Option<Duration>);
}
impl Conn for UnixStream {
    fn clone_box(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn set_timeout(&self, d: Option<Duration>) {
        let _ = self.set_read_timeout(d);
    }
}
impl Conn for TcpStream {
    fn clone_box(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn set_timeout(&self, d: Option<Duration>) {
        let _ = self.set_read_timeout(d);
    }
}

fn write_line(w: &mut dyn Write, m: &CtlMsg) -> std::io::Result<()> {
    let mut s = serde_json::to_string(m).map_err(std::io::Error::other)?;
    s.push('\n');
    w.write_all(s.as_bytes())?;
    w.flush()
}

/// The UAS end: accepts connections on a thread and passes their messages on.
pub struct CtlServer {
    /// Messages from the UAC.
    pub rx: Receiver<CtlMsg>,
    writer: Arc<Mutex<Option<Box<dyn Conn>>>>,
    path: Option<String>,
}

impl CtlServer {
    /// Listens on `ep`.
    pub fn listen(ep: &Endpoint) -> std::io::Result<CtlServer> {
        let (tx, rx) = std::sync::mpsc::channel();
        let writer: Arc<Mutex<Option<Box<dyn Conn>>>> = Arc::new(Mutex::new(None));
        let w2 = writer.clone();
        let path = match ep {
            Endpoint::Unix(p) => {
                let _ = std::fs::remove_file(p);
                let l = UnixListener::bind(p)?;
                std::thread::Builder::new()
                    .name("ctl".into())
                    .spawn(move || {
                        for c in l.incoming().flatten() {
                            serve(Box::new(c), &tx, &w2);
                        }
                    })?;
                Some(p.clone())
            }
            Endpoint::Tcp(a) => {
                let l = TcpListener::bind(a.as_str())?;
                std::thread::Builder::new()
                    .name("ctl".into())
                    .spawn(move || {
                        for c in l.incoming().flatten() {
                            serve(Box::new(c), &tx, &w2);
                        }
                    })?;
                None
            }
        };
        Ok(CtlServer { rx, writer, path })
    }

    /// Sends a message to the connected UAC (if any).
    pub fn send(&self, m: &CtlMsg) -> bool {
        let Ok(mut g) = self.writer.lock() else {
            return false;
        };
        match g.as_mut() {
            Some(w) => write_line(w.as_mut(), m).is_ok(),
            None => false,
        }
    }
}

impl Drop for CtlServer {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn serve(c: Box<dyn Conn>, tx: &Sender<CtlMsg>, writer: &Arc<Mutex<Option<Box<dyn Conn>>>>) {
    if let (Ok(w), Ok(mut g)) = (c.clone_box(), writer.lock()) {
        *g = Some(w);
    }
    let reader = BufReader::new(c);
    for line in reader.lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<CtlMsg>(&line) {
            Ok(m) => {
                if tx.send(m).is_err() {
                    return;
                }
            }
            Err(e) => crate::sip::tracing_like(&format!("control: ignoring bad line ({e})")),
        }
    }
    // The UAC went away without `finish` (killed, host gone): end the run
    // too, rather than answering calls nobody measures until --max-run-s.
    crate::sip::tracing_like("control connection closed by the UAC: finishing");
    let _ = tx.send(CtlMsg::Finish);
}

/// The UAC end.
pub struct CtlClient {
    conn: Box<dyn Conn>,
    reader: BufReader<Box<dyn Conn>>,
}

impl CtlClient {
    /// Connects to `ep`, retrying for up to `wait` (the UAS may still be starting).
    pub fn connect(ep: &Endpoint, wait: Duration) -> std::io::Result<CtlClient> {
        let deadline = Instant::now() + wait;
        loop {
            let r: std::io::Result<Box<dyn Conn>> = match ep {
                Endpoint::Unix(p) => UnixStream::connect(p).map(|c| Box::new(c) as Box<dyn Conn>),
                Endpoint::Tcp(a) => {
                    TcpStream::connect(a.as_str()).map(|c| Box::new(c) as Box<dyn Conn>)
                }
            };
            match r {
                Ok(conn) => {
                    let reader = BufReader::new(conn.clone_box()?);
                    let mut c = CtlClient { conn, reader };
                    c.send(&CtlMsg::Hello {
                        version: env!("CARGO_PKG_VERSION").into(),
                    })?;
                    return Ok(c);
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(std::io::Error::other(format!(
                        "cannot reach the UAS control endpoint {ep:?}: {e} (start `bgf-callgen uas --ctl-listen …` first)"
                    )))
                }
                Err(_) => crate::engine::nap(100),
            }
        }
    }

    /// Sends one message.
    pub fn send(&mut self, m: &CtlMsg) -> std::io::Result<()> {
        write_line(self.conn.as_mut(), m)
    }

    /// Sends `finish` and waits up to `wait` for the UAS's report.
    pub fn finish(&mut self, wait: Duration) -> Result<SideReport, String> {
        self.send(&CtlMsg::Finish)
            .map_err(|e| format!("control connection: {e}"))?;
        self.reader.get_ref().set_timeout(Some(wait));
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err("the UAS closed the control connection".into()),
                Ok(_) => {
                    if let Ok(CtlMsg::Report(r)) = serde_json::from_str::<CtlMsg>(&line) {
                        return Ok(*r);
                    }
                }
                Err(e) => return Err(format!("no report from the UAS: {e}")),
            }
        }
    }
}
