//! Exact replay through the real log (issue 3, item 4): random workloads of
//! real SIP call flows drive a live session core; every input it reports as
//! state-changing is appended to an [`EmbeddedStore`] as it would be by the
//! daemon, with checkpoints and compaction (`truncate_before`) in between.
//! At random points and at the end the core is rebuilt from the store alone
//! — last checkpoint via `Core::restore`, then the inputs after it — and must
//! equal the live core exactly: sessions, dialogs, transactions, timers,
//! registrations, pinholes with the same ports, latched addresses.
//!
//! The harness (`sip-control/tests/common`) also proves every input reported
//! as *not* state-changing (retransmissions, absorbed ACKs, stray responses,
//! unknown sessions) left the state untouched, so logging only the others is
//! enough.

#[path = "../../sip-control/tests/common/mod.rs"]
mod common;

use common::*;
use media_plane::{MediaEvent, PinholeId, Side};
use proptest::prelude::*;
use sip_control::msg::{Message, NameAddr, StartLine};
use sip_control::{CoreState, Input};
use state_log::embedded::EmbeddedStore;
use state_log::{Body, LogStore, Record, Replayer, Seq};
use std::net::{IpAddr, SocketAddr};

const INSTANCE: &str = "replayprop";
/// Records per append (the daemon groups inputs the same way).
const BATCH: usize = 5;
const CORE_UA: &str = "198.18.2.20";

/// One step of a workload. `pick` selects among the calls, dialogs,
/// registrations or sessions live at that moment (modulo their number).
#[derive(Debug, Clone)]
enum Step {
    /// Originating call from UE `ue`: INVITE / 180 / 200 / ACK.
    Call { ue: u8 },
    /// Originating call left ringing (INVITE / 180): early, to be answered or cancelled.
    Ring { ue: u8 },
    /// Originating call with early media: 183 with SDP and 100rel, then PRACK / 200 if `prack`.
    EarlyMedia { ue: u8, prack: bool },
    /// An early call is answered: 200 (SDP) / ACK.
    Answer { pick: u8 },
    /// The caller cancels an early call: CANCEL / 200 / 487 / ACK (the ACK only if `ack`).
    Cancel { pick: u8, ack: bool },
    /// The UE re-INVITEs with a new media port; the far end answers 200 or 488.
    ReInvite { pick: u8, port: u16, accept: bool },
    /// Hold (sendonly) or resume (sendrecv) by re-INVITE from either side.
    Hold {
        pick: u8,
        from_ue: bool,
        resume: bool,
    },
    /// BYE from either side, answered 200.
    Bye { pick: u8, from_ue: bool },
    /// REGISTER from a UE behind a NAT (expires 0 deregisters).
    Register { ue: u8, expires: u32 },
    /// Terminating call from the core to a registered contact: INVITE / 180 (/ 200 / ACK).
    Terminating { pick: u8, answer: bool },
    /// Advance time until just after a registration's expiry.
    ExpireRegistration { pick: u8 },
    /// The media plane latched a leg of a live session.
    Latch {
        pick: u8,
        access: bool,
        rtcp: bool,
        port: u16,
    },
    /// The media plane reports a session inactive (or an unknown session).
    Inactive { pick: u8 },
    /// Time passes; due timers fire.
    Advance { ms: u32 },
    /// The last message sent arrives again (a retransmission).
    Retransmit,
    /// Checkpoint the core into the log and truncate everything before it.
    Compact,
    /// Rebuild from the store now and compare.
    Verify,
    /// A hostile access source replays a live dialog's identifiers in an
    /// UPDATE with SDP (or a BYE): it must get 481 and change nothing.
    Hijack { pick: u8, bye: bool },
}

fn step() -> impl Strategy<Value = Step> {
    let pick = any::<u8>;
    prop_oneof![
        4 => (0..3u8).prop_map(|ue| Step::Call { ue }),
        2 => (0..3u8).prop_map(|ue| Step::Ring { ue }),
        2 => (0..3u8, any::<bool>()).prop_map(|(ue, prack)| Step::EarlyMedia { ue, prack }),
        2 => pick().prop_map(|pick| Step::Answer { pick }),
        2 => (pick(), any::<bool>()).prop_map(|(pick, ack)| Step::Cancel { pick, ack }),
        3 => (pick(), 3000..3100u16, any::<bool>())
            .prop_map(|(pick, p, accept)| Step::ReInvite { pick, port: p * 2, accept }),
        2 => (pick(), any::<bool>(), any::<bool>())
            .prop_map(|(pick, from_ue, resume)| Step::Hold { pick, from_ue, resume }),
        3 => (pick(), any::<bool>()).prop_map(|(pick, from_ue)| Step::Bye { pick, from_ue }),
        2 => (0..3u8, prop_oneof![1 => Just(0u32), 6 => 30..600u32])
            .prop_map(|(ue, expires)| Step::Register { ue, expires }),
        3 => (pick(), any::<bool>()).prop_map(|(pick, answer)| Step::Terminating { pick, answer }),
        1 => pick().prop_map(|pick| Step::ExpireRegistration { pick }),
        3 => (pick(), any::<bool>(), any::<bool>(), 1024..65000u16)
            .prop_map(|(pick, access, rtcp, port)| Step::Latch { pick, access, rtcp, port }),
        1 => pick().prop_map(|pick| Step::Inactive { pick }),
        3 => prop_oneof![3 => 0..5_000u32, 2 => 5_000..40_000u32, 1 => 40_000..200_000u32]
            .prop_map(|ms| Step::Advance { ms }),
        2 => Just(Step::Retransmit),
        2 => Just(Step::Compact),
        1 => Just(Step::Verify),
        1 => (pick(), any::<bool>()).prop_map(|(pick, bye)| Step::Hijack { pick, bye }),
    ]
}

/// One end of a confirmed dialog, as that UA sees it.
#[derive(Clone)]
struct Party {
    side: Side,
    /// Where it sends from.
    addr: String,
    /// Its own Contact URI.
    contact: String,
    /// Its SDP address.
    media_ip: String,
    /// Remote target and route set.
    ruri: String,
    routes: Vec<String>,
    from: String,
    to: String,
    cseq: u32,
}

/// A call whose INVITE transaction is still pending (ringing or early media).
struct Early {
    call: String,
    caller: Side,
    caller_addr: String,
    caller_contact: String,
    caller_media_ip: String,
    /// The INVITE exactly as the caller sent it.
    caller_inv: Message,
    caller_cseq: u32,
    callee: Side,
    callee_addr: String,
    callee_contact: String,
    callee_media_ip: String,
    /// The INVITE as the BGF forwarded it to the callee.
    callee_inv: Message,
    to_tag: String,
}

struct Dialog {
    call: String,
    ue: Party,
    core: Party,
}

struct Registration {
    ue: u8,
    nat: String,
    contact_ip: String,
    /// The contact the BGF gave the registrar (a token at its core side).
    token_uri: String,
    expires_at: u64,
}

struct World {
    h: Harness,
    rt: tokio::runtime::Runtime,
    store: EmbeddedStore,
    _dir: tempfile::TempDir,
    next_seq: Seq,
    checkpoint: Option<Seq>,
    early: Vec<Early>,
    dialogs: Vec<Dialog>,
    regs: Vec<Registration>,
    n: u64,
    reg_cseq: u32,
    last: Option<(Side, String, String)>,
    /// Rebuilds compared so far (each case does at least one).
    rebuilds: usize,
    /// Flows that ran to their last message, by name.
    done: std::collections::BTreeMap<&'static str, usize>,
}

fn is_req(s: &Sent, method: &str) -> bool {
    s.msg.code().is_none() && s.msg.method().as_str() == method
}

fn hdr(m: &Message, name: &str) -> String {
    m.header(name).unwrap_or_default().to_string()
}

fn contact_uri(m: &Message) -> Option<String> {
    NameAddr::parse(m.header("Contact")?).ok().map(|n| n.uri)
}

fn req_uri(m: &Message) -> String {
    match &m.start {
        StartLine::Request { uri, .. } => uri.clone(),
        StartLine::Response { .. } => String::new(),
    }
}

fn ue_addr(ue: u8) -> String {
    format!("198.18.1.{}:5061", 100 + ue)
}

fn ue_ip(ue: u8) -> String {
    format!("198.18.1.{}", 100 + ue)
}

fn with_attr(sdp: String, attr: &str) -> String {
    format!("{sdp}a={attr}\r\n")
}

fn pick_index(len: usize, pick: u8) -> Option<usize> {
    (len > 0).then(|| pick as usize % len)
}

impl World {
    fn new(session_expires_s: u64) -> World {
        let mut cfg = config();
        cfg.session_expires_s = session_expires_s;
        let mut h = Harness::with(cfg);
        h.check_unchanged = true;
        // tmpfs when there is one: this test is about replay, not fsync cost.
        let dir = tempfile::Builder::new()
            .prefix("replayprop")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        World {
            h,
            rt,
            store,
            _dir: dir,
            next_seq: 1,
            checkpoint: None,
            early: Vec::new(),
            dialogs: Vec::new(),
            regs: Vec::new(),
            n: 0,
            reg_cseq: 0,
            last: None,
            rebuilds: 0,
            done: Default::default(),
        }
    }

    fn done(&mut self, flow: &'static str) {
        *self.done.entry(flow).or_default() += 1;
    }

    fn id(&mut self) -> u64 {
        self.n += 1;
        self.n
    }

    fn send(&mut self, side: Side, src: &str, text: &str) -> Vec<Sent> {
        self.last = Some((side, src.to_string(), text.to_string()));
        self.h.recv(side, src, text)
    }

    /// Forget calls the core has ended on its own (timeouts, inactivity,
    /// session expiry).
    fn sync(&mut self) {
        let core = &self.h.core;
        self.early
            .retain(|e| core.session_by_call_id(&e.call).is_some());
        self.dialogs
            .retain(|d| core.session_by_call_id(&d.call).is_some());
    }

    /// Append the inputs logged since the last flush, in small batches.
    fn flush(&mut self) {
        let pending: Vec<Input> = std::mem::take(&mut self.h.log);
        for chunk in pending.chunks(BATCH) {
            let recs: Vec<Record> = chunk
                .iter()
                .map(|i| {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    Record {
                        seq,
                        epoch: 0,
                        body: Body::Input(i.clone()),
                    }
                })
                .collect();
            self.rt
                .block_on(self.store.append(INSTANCE, 0, &recs))
                .unwrap();
        }
    }

    fn read_all(&self) -> Vec<Record> {
        self.rt
            .block_on(self.store.read(INSTANCE, 1, usize::MAX))
            .unwrap()
    }

    /// Checkpoint the live state as the next record, then compact.
    fn compact(&mut self) {
        self.flush();
        let seq = self.next_seq;
        self.next_seq += 1;
        let cp = Record {
            seq,
            epoch: 0,
            body: Body::Checkpoint(rmp_serde::to_vec(self.h.core.state()).unwrap()),
        };
        self.rt
            .block_on(self.store.append(INSTANCE, 0, &[cp]))
            .unwrap();
        self.rt
            .block_on(self.store.truncate_before(INSTANCE, seq))
            .unwrap();
        self.checkpoint = Some(seq);
        let recs = self.read_all();
        assert_eq!(
            recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![seq],
            "after compaction the store holds only the checkpoint"
        );
    }

    /// Rebuild a core from the store alone and compare with the live one.
    fn verify(&mut self) {
        self.flush();
        let recs = self.read_all();
        let last = self.rt.block_on(self.store.last_seq(INSTANCE)).unwrap();
        assert_eq!(last, self.next_seq - 1, "store's last seq");
        if let Some(first) = recs.first() {
            assert_eq!(
                first.seq,
                self.checkpoint.unwrap_or(1),
                "the log starts at the latest checkpoint (or at 1 if never compacted)"
            );
            assert_eq!(recs.last().map(|r| r.seq), Some(last));
        }
        for w in recs.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1, "contiguous seqs");
        }
        for r in recs.iter().skip(1) {
            assert!(
                matches!(r.body, Body::Input(_)),
                "record {} after the checkpoint is not an input: {:?}",
                r.seq,
                r.body
            );
        }
        let mut replayer = Replayer::new(self.h.cfg.clone()).unwrap();
        replayer.apply_all(&recs).unwrap();
        let core = replayer.core();
        assert_states_equal(core.state(), self.h.core.state());
        self.rebuilds += 1;
    }

    // ------------------------------------------------------------ call flows

    fn originate(&mut self, ue: u8, early_media: bool, prack: bool) -> Option<usize> {
        let n = self.id();
        let call = format!("o{n}");
        let addr = ue_addr(ue);
        let text = sipp_invite(
            &call,
            &format!("z9hG4bK-{n}"),
            &addr,
            6000 + 2 * (n % 500) as u16,
        );
        let caller_inv = Message::parse(text.as_bytes(), usize::MAX).unwrap();
        let out = self.send(Side::Access, &addr, &text);
        let fwd = out
            .iter()
            .find(|s| s.side == Side::Core && is_req(s, "INVITE"))?
            .msg
            .clone();
        let e = Early {
            call: call.clone(),
            caller: Side::Access,
            caller_addr: addr.clone(),
            caller_contact: format!("sip:sipp@{addr}"),
            caller_media_ip: ue_ip(ue),
            caller_inv,
            caller_cseq: 1,
            callee: Side::Core,
            callee_addr: NEXT_HOP.to_string(),
            callee_contact: format!("sip:svc@{NEXT_HOP}"),
            callee_media_ip: CORE_UA.to_string(),
            callee_inv: fwd.clone(),
            to_tag: format!("callee{n}"),
        };
        let mut caller_cseq = 1;
        if early_media {
            let r183 = respond(
                &fwd,
                183,
                "Session Progress",
                Some(&e.to_tag),
                Some(&e.callee_contact),
                Some(&sdp_of(CORE_UA, 7000 + 2 * (n % 500) as u16)),
            )
            .replace("Content-Type", "Require: 100rel\r\nRSeq: 1\r\nContent-Type");
            let out = self.send(Side::Core, NEXT_HOP, &r183);
            let got = out
                .iter()
                .find(|s| s.side == Side::Access && code(s) == Some(183));
            if let (true, Some(got)) = (prack, got) {
                let m = got.msg.clone();
                let routes: Vec<String> = m
                    .headers_named("Record-Route")
                    .map(str::to_string)
                    .rev()
                    .collect();
                caller_cseq = 2;
                let pr = in_dialog(
                    "PRACK",
                    &contact_uri(&m).unwrap_or_else(|| e.callee_contact.clone()),
                    &routes,
                    &format!("SIP/2.0/UDP {addr};branch=z9hG4bK-{n}-pr"),
                    &hdr(&m, "From"),
                    &hdr(&m, "To"),
                    &call,
                    2,
                    None,
                )
                .replace("Content-Length: 0", "RAck: 1 1 INVITE\r\nContent-Length: 0");
                let out = self.send(Side::Access, &addr, &pr);
                if let Some(f) = out
                    .iter()
                    .find(|s| s.side == Side::Core && is_req(s, "PRACK"))
                {
                    let ok = respond(&f.msg, 200, "OK", None, None, None);
                    if !self.send(Side::Core, NEXT_HOP, &ok).is_empty() {
                        self.done("prack");
                    }
                }
            }
        } else {
            let r180 = respond(
                &fwd,
                180,
                "Ringing",
                Some(&e.to_tag),
                Some(&e.callee_contact),
                None,
            );
            self.send(Side::Core, NEXT_HOP, &r180);
        }
        self.early.push(Early { caller_cseq, ..e });
        Some(self.early.len() - 1)
    }

    fn answer(&mut self, i: usize) {
        let e = self.early.remove(i);
        let n = self.id();
        let ok = respond(
            &e.callee_inv,
            200,
            "OK",
            Some(&e.to_tag),
            Some(&e.callee_contact),
            Some(&sdp_of(&e.callee_media_ip, 7000 + 2 * (n % 500) as u16)),
        );
        let out = self.send(e.callee, &e.callee_addr, &ok);
        let Some(okc) = out
            .iter()
            .find(|s| s.side == e.caller && code(s) == Some(200))
        else {
            return;
        };
        let okc = okc.msg.clone();
        let caller = Party {
            side: e.caller,
            addr: e.caller_addr.clone(),
            contact: e.caller_contact.clone(),
            media_ip: e.caller_media_ip.clone(),
            ruri: contact_uri(&okc).unwrap_or_else(|| e.callee_contact.clone()),
            routes: okc
                .headers_named("Record-Route")
                .map(str::to_string)
                .rev()
                .collect(),
            from: hdr(&okc, "From"),
            to: hdr(&okc, "To"),
            cseq: e.caller_cseq,
        };
        let inv_cseq = e.caller_inv.cseq().map(|c| c.0).unwrap_or(1);
        let callee = Party {
            side: e.callee,
            addr: e.callee_addr.clone(),
            contact: e.callee_contact.clone(),
            media_ip: e.callee_media_ip.clone(),
            ruri: contact_uri(&e.callee_inv).unwrap_or_else(|| e.caller_contact.clone()),
            routes: e
                .callee_inv
                .headers_named("Record-Route")
                .map(str::to_string)
                .collect(),
            from: format!("{};tag={}", hdr(&e.callee_inv, "To"), e.to_tag),
            to: hdr(&e.callee_inv, "From"),
            cseq: 100,
        };
        let ack = in_dialog(
            "ACK",
            &caller.ruri,
            &caller.routes,
            &format!("SIP/2.0/UDP {};branch=z9hG4bK-{n}-ack", caller.addr),
            &caller.from,
            &caller.to,
            &e.call,
            inv_cseq,
            None,
        );
        self.send(caller.side, &caller.addr, &ack);
        self.done(if e.caller == Side::Access {
            "answer originating"
        } else {
            "answer terminating"
        });
        let (ue, core) = if caller.side == Side::Access {
            (caller, callee)
        } else {
            (callee, caller)
        };
        self.dialogs.push(Dialog {
            call: e.call,
            ue,
            core,
        });
    }

    fn cancel(&mut self, i: usize, ack: bool) {
        let e = self.early.remove(i);
        let inv = &e.caller_inv;
        let cseq = inv.cseq().map(|c| c.0).unwrap_or(1);
        let head = |method: &str, to: &str| {
            format!(
                "{method} {} SIP/2.0\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                req_uri(inv),
                inv.top_via().unwrap_or_default(),
                hdr(inv, "From"),
                e.call
            )
        };
        let out = self.send(e.caller, &e.caller_addr, &head("CANCEL", &hdr(inv, "To")));
        if let Some(c) = out
            .iter()
            .find(|s| s.side == e.callee && is_req(s, "CANCEL"))
        {
            let ok = respond(&c.msg, 200, "OK", Some(&e.to_tag), None, None);
            self.send(e.callee, &e.callee_addr, &ok);
        }
        let r487 = respond(
            &e.callee_inv,
            487,
            "Request Terminated",
            Some(&e.to_tag),
            None,
            None,
        );
        let out = self.send(e.callee, &e.callee_addr, &r487);
        let got = out
            .iter()
            .find(|s| s.side == e.caller && code(s) == Some(487));
        if let (true, Some(r)) = (ack, got) {
            let to = hdr(&r.msg, "To");
            self.send(e.caller, &e.caller_addr, &head("ACK", &to));
            self.done("cancel");
        }
    }

    /// An offer/answer re-INVITE from one party; `code` is the answer.
    fn reinvite(&mut self, d: usize, from_ue: bool, offer: String, code_: u16, answer: String) {
        let n = self.id();
        let dl = &mut self.dialogs[d];
        let call = dl.call.clone();
        let (p, q) = if from_ue {
            (&mut dl.ue, dl.core.clone())
        } else {
            (&mut dl.core, dl.ue.clone())
        };
        p.cseq += 1;
        let p = p.clone();
        let via = format!("SIP/2.0/UDP {};branch=z9hG4bK-{n}-re", p.addr);
        let text = in_dialog(
            "INVITE",
            &p.ruri,
            &p.routes,
            &via,
            &p.from,
            &p.to,
            &call,
            p.cseq,
            Some(&offer),
        )
        .replace(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\nContact: <{}>\r\n", p.contact),
        );
        let out = self.send(p.side, &p.addr, &text);
        let Some(f) = out.iter().find(|s| s.side == q.side && is_req(s, "INVITE")) else {
            return;
        };
        let resp = if code_ == 200 {
            respond(&f.msg, 200, "OK", None, Some(&q.contact), Some(&answer))
        } else {
            respond(&f.msg, code_, "Not Acceptable Here", None, None, None)
        };
        let out = self.send(q.side, &q.addr, &resp);
        let Some(r) = out
            .iter()
            .find(|s| s.side == p.side && code(s) == Some(code_))
        else {
            return;
        };
        let ack = if code_ == 200 {
            in_dialog(
                "ACK",
                &p.ruri,
                &p.routes,
                &format!("SIP/2.0/UDP {};branch=z9hG4bK-{n}-reack", p.addr),
                &p.from,
                &p.to,
                &call,
                p.cseq,
                None,
            )
        } else {
            in_dialog(
                "ACK",
                &p.ruri,
                &p.routes,
                &via,
                &p.from,
                &hdr(&r.msg, "To"),
                &call,
                p.cseq,
                None,
            )
        };
        self.send(p.side, &p.addr, &ack);
        self.done(if code_ == 200 {
            "reinvite 200"
        } else {
            "reinvite 488"
        });
    }

    fn bye(&mut self, d: usize, from_ue: bool) {
        let n = self.id();
        let mut dl = self.dialogs.remove(d);
        let (p, q) = if from_ue {
            (&mut dl.ue, &dl.core)
        } else {
            (&mut dl.core, &dl.ue)
        };
        p.cseq += 1;
        let text = in_dialog(
            "BYE",
            &p.ruri,
            &p.routes,
            &format!("SIP/2.0/UDP {};branch=z9hG4bK-{n}-bye", p.addr),
            &p.from,
            &p.to,
            &dl.call,
            p.cseq,
            None,
        );
        let (pside, paddr, qside, qaddr) = (p.side, p.addr.clone(), q.side, q.addr.clone());
        let out = self.send(pside, &paddr, &text);
        if let Some(f) = out.iter().find(|s| s.side == qside && is_req(s, "BYE")) {
            let ok = respond(&f.msg, 200, "OK", None, None, None);
            if !self.send(qside, &qaddr, &ok).is_empty() {
                self.done(if from_ue {
                    "bye from ue"
                } else {
                    "bye from core"
                });
            }
        }
    }

    fn register(&mut self, ue: u8, expires: u32) {
        let n = self.id();
        self.reg_cseq += 1;
        let nat = format!("198.18.1.{}:40000", 200 + ue);
        let cip = format!("198.18.9.{}", 5 + ue);
        let text = format!(
            "REGISTER sip:ims.example SIP/2.0\r\nVia: SIP/2.0/UDP {cip}:5060;rport;branch=z9hG4bK-{n}-reg\r\nFrom: <sip:user{ue}@ims.example>;tag=r{n}\r\nTo: <sip:user{ue}@ims.example>\r\nCall-ID: reg{ue}\r\nCSeq: {} REGISTER\r\nContact: <sip:user{ue}@{cip}:5060;transport=udp>;expires={expires};+sip.instance=\"<urn:uuid:{ue}>\"\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            self.reg_cseq
        );
        let out = self.send(Side::Access, &nat, &text);
        let Some(f) = out
            .iter()
            .find(|s| s.side == Side::Core && is_req(s, "REGISTER"))
        else {
            return;
        };
        let fwd = f.msg.clone();
        let Some(token_uri) = contact_uri(&fwd) else {
            return;
        };
        let ok = respond(&fwd, 200, "OK", Some("reg"), None, None).replace(
            "Content-Length: 0",
            &format!("Contact: <{token_uri}>;expires={expires}\r\nContent-Length: 0"),
        );
        if self.send(Side::Core, NEXT_HOP, &ok).is_empty() {
            return;
        }
        self.done("register");
        self.regs.retain(|r| r.ue != ue);
        if expires > 0 {
            self.regs.push(Registration {
                ue,
                nat,
                contact_ip: cip,
                token_uri,
                expires_at: self.h.now + u64::from(expires) * 1000,
            });
        }
    }

    fn terminating(&mut self, r: usize, answer: bool) {
        let n = self.id();
        let reg = &self.regs[r];
        let (ue, nat, cip, token) = (
            reg.ue,
            reg.nat.clone(),
            reg.contact_ip.clone(),
            reg.token_uri.clone(),
        );
        let call = format!("t{n}");
        let body = sdp_of("198.18.2.30", 8000 + 2 * (n % 500) as u16);
        let text = format!(
            "INVITE {token} SIP/2.0\r\nVia: SIP/2.0/UDP {NEXT_HOP};branch=z9hG4bK-{n}-t\r\nRecord-Route: <sip:{CORE_UA};lr>\r\nFrom: <sip:bob@ims.example>;tag=b{n}\r\nTo: <sip:user{ue}@ims.example>\r\nCall-ID: {call}\r\nCSeq: 5 INVITE\r\nContact: <sip:bob@198.18.2.30>\r\nMax-Forwards: 60\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let caller_inv = Message::parse(text.as_bytes(), usize::MAX).unwrap();
        let out = self.send(Side::Core, NEXT_HOP, &text);
        let Some(f) = out
            .iter()
            .find(|s| s.side == Side::Access && is_req(s, "INVITE"))
        else {
            return; // e.g. 404 once the registration expired
        };
        let e = Early {
            call,
            caller: Side::Core,
            caller_addr: NEXT_HOP.to_string(),
            caller_contact: "sip:bob@198.18.2.30".to_string(),
            caller_media_ip: "198.18.2.30".to_string(),
            caller_inv,
            caller_cseq: 5,
            callee: Side::Access,
            callee_addr: nat.clone(),
            callee_contact: format!("sip:user{ue}@{cip}:5060"),
            callee_media_ip: cip,
            callee_inv: f.msg.clone(),
            to_tag: format!("ue{n}"),
        };
        let r180 = respond(
            &e.callee_inv,
            180,
            "Ringing",
            Some(&e.to_tag),
            Some(&e.callee_contact),
            None,
        );
        self.send(Side::Access, &nat, &r180);
        self.early.push(e);
        if answer {
            self.answer(self.early.len() - 1);
        }
    }

    /// A hostile access source tries to re-point or end dialog `d`.
    fn hijack(&mut self, d: usize, bye: bool) {
        let n = self.id();
        let dl = &self.dialogs[d];
        let p = dl.ue.clone();
        let rogue = "198.18.1.66:5099";
        let before = self.h.core.state().clone();
        let method = if bye { "BYE" } else { "UPDATE" };
        let text = in_dialog(
            method,
            &p.ruri,
            &p.routes,
            &format!("SIP/2.0/UDP {rogue};branch=z9hG4bK-{n}-hj"),
            &p.from,
            &p.to,
            &dl.call,
            p.cseq + 100,
            (!bye).then(|| sdp_of("198.18.1.66", 9000)).as_deref(),
        );
        let out = self.send(Side::Access, rogue, &text);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(code(&out[0]), Some(481));
        assert_eq!(out[0].dst, sa(rogue));
        assert_eq!(&before, self.h.core.state(), "a hijack changed state");
        self.done("hijack refused");
    }

    fn run(&mut self, step: &Step) {
        self.sync();
        match *step {
            Step::Hijack { pick, bye } => {
                if let Some(d) = pick_index(self.dialogs.len(), pick) {
                    self.hijack(d, bye);
                }
            }
            Step::Call { ue } => {
                if let Some(i) = self.originate(ue, false, false) {
                    self.answer(i);
                }
            }
            Step::Ring { ue } => {
                self.originate(ue, false, false);
            }
            Step::EarlyMedia { ue, prack } => {
                self.originate(ue, true, prack);
            }
            Step::Answer { pick } => {
                if let Some(i) = pick_index(self.early.len(), pick) {
                    self.answer(i);
                }
            }
            Step::Cancel { pick, ack } => {
                if let Some(i) = pick_index(self.early.len(), pick) {
                    self.cancel(i, ack);
                }
            }
            Step::ReInvite { pick, port, accept } => {
                if let Some(d) = pick_index(self.dialogs.len(), pick) {
                    let offer = sdp_of(&self.dialogs[d].ue.media_ip, port);
                    let answer = sdp_of(&self.dialogs[d].core.media_ip, 7000);
                    let c = if accept { 200 } else { 488 };
                    self.reinvite(d, true, offer, c, answer);
                }
            }
            Step::Hold {
                pick,
                from_ue,
                resume,
            } => {
                if let Some(d) = pick_index(self.dialogs.len(), pick) {
                    let (p, q) = if from_ue {
                        (&self.dialogs[d].ue, &self.dialogs[d].core)
                    } else {
                        (&self.dialogs[d].core, &self.dialogs[d].ue)
                    };
                    let (a, b) = if resume {
                        ("sendrecv", "sendrecv")
                    } else {
                        ("sendonly", "recvonly")
                    };
                    let offer = with_attr(sdp_of(&p.media_ip, 6500), a);
                    let answer = with_attr(sdp_of(&q.media_ip, 7500), b);
                    self.reinvite(d, from_ue, offer, 200, answer);
                }
            }
            Step::Bye { pick, from_ue } => {
                if let Some(d) = pick_index(self.dialogs.len(), pick) {
                    self.bye(d, from_ue);
                }
            }
            Step::Register { ue, expires } => self.register(ue, expires),
            Step::Terminating { pick, answer } => {
                if let Some(r) = pick_index(self.regs.len(), pick) {
                    self.terminating(r, answer);
                }
            }
            Step::ExpireRegistration { pick } => {
                if let Some(r) = pick_index(self.regs.len(), pick) {
                    let at = self.regs[r].expires_at;
                    let ms = at.saturating_sub(self.h.now) + 1000;
                    self.h.advance(ms);
                }
            }
            Step::Latch {
                pick,
                access,
                rtcp,
                port,
            } => {
                let sessions = self.h.core.sessions();
                let event = match pick_index(sessions.len(), pick) {
                    Some(i) => {
                        let s = &sessions[i];
                        let stream = pick_index(s.pinholes.len(), pick).unwrap_or(0);
                        let leg = s.pinholes.get(stream).map(|p| {
                            if access {
                                p.access.clone()
                            } else {
                                p.core.clone()
                            }
                        });
                        let ip: IpAddr = leg
                            .and_then(|l| l.latch_ip.or(l.remote_rtp.map(|a| a.ip())))
                            .unwrap_or_else(|| sa(UE).ip());
                        MediaEvent::Latched {
                            id: PinholeId {
                                session: s.id,
                                stream: stream as u16,
                            },
                            side: if access { Side::Access } else { Side::Core },
                            rtcp,
                            remote: SocketAddr::new(ip, port),
                        }
                    }
                    None => MediaEvent::Latched {
                        id: PinholeId {
                            session: 999,
                            stream: 0,
                        },
                        side: Side::Access,
                        rtcp,
                        remote: SocketAddr::new(sa(UE).ip(), port),
                    },
                };
                self.h.media(event);
            }
            Step::Inactive { pick } => {
                let sessions = self.h.core.sessions();
                let session = pick_index(sessions.len(), pick).map_or(999, |i| sessions[i].id);
                self.h.media(MediaEvent::Inactive { session });
            }
            Step::Advance { ms } => {
                self.h.advance(u64::from(ms));
            }
            Step::Retransmit => {
                if let Some((side, src, text)) = self.last.clone() {
                    self.h.recv(side, &src, &text);
                }
            }
            Step::Compact => self.compact(),
            Step::Verify => self.verify(),
        }
        self.flush();
    }
}

/// Compare field by field so a failure names what diverged.
fn assert_states_equal(replayed: &CoreState, live: &CoreState) {
    if replayed == live {
        return;
    }
    let mut diff = Vec::new();
    macro_rules! field {
        ($f:ident) => {
            if replayed.$f != live.$f {
                diff.push(format!(
                    "{}:\n  replayed: {:?}\n  live:     {:?}",
                    stringify!($f),
                    replayed.$f,
                    live.$f
                ));
            }
        };
    }
    field!(next_session);
    field!(next_timer);
    field!(sessions);
    field!(by_call_id);
    field!(bindings);
    field!(servers);
    field!(clients);
    field!(timers);
    field!(pools);
    panic!(
        "state rebuilt from the log differs from the live core in:\n{}",
        diff.join("\n")
    );
}

fn run_workload(session_expires_s: u64, steps: &[Step]) -> World {
    let mut w = World::new(session_expires_s);
    for s in steps {
        w.run(s);
    }
    // Let everything in flight finish or time out, then compare once more.
    w.verify();
    w.h.advance(700_000);
    w.verify();
    w
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn replay_from_the_log_equals_the_live_core(
        session_expires in prop_oneof![3 => Just(0u64), 1 => Just(90u64)],
        steps in proptest::collection::vec(step(), 10..40),
    ) {
        let w = run_workload(session_expires, &steps);
        prop_assert!(w.rebuilds >= 2);
    }
}

/// The generator really produces the flows it names: a fixed workload that
/// goes through every kind of step ends with sessions, a registration, a
/// latch and a compaction behind it, and still replays exactly.
#[test]
fn fixed_workload_covers_every_step() {
    let steps = [
        Step::Call { ue: 0 },
        Step::Register {
            ue: 1,
            expires: 300,
        },
        Step::Terminating {
            pick: 0,
            answer: true,
        },
        Step::EarlyMedia { ue: 2, prack: true },
        Step::Ring { ue: 1 },
        Step::Compact,
        Step::ReInvite {
            pick: 0,
            port: 6100,
            accept: true,
        },
        Step::Bye {
            pick: 1,
            from_ue: true,
        },
        Step::Register {
            ue: 1,
            expires: 300,
        },
        Step::Terminating {
            pick: 0,
            answer: true,
        },
        Step::ReInvite {
            pick: 1,
            port: 6102,
            accept: false,
        },
        Step::Hold {
            pick: 0,
            from_ue: false,
            resume: false,
        },
        Step::Latch {
            pick: 0,
            access: true,
            rtcp: false,
            port: 31000,
        },
        Step::Retransmit,
        Step::Hijack {
            pick: 0,
            bye: false,
        },
        Step::Hijack { pick: 1, bye: true },
        Step::Cancel { pick: 1, ack: true },
        Step::Verify,
        Step::Answer { pick: 0 },
        Step::Compact,
        Step::Bye {
            pick: 1,
            from_ue: false,
        },
    ];
    let mut w = World::new(0);
    for s in &steps[..5] {
        w.run(s);
    }
    assert_eq!(w.dialogs.len(), 2, "originating + terminating confirmed");
    assert_eq!(w.early.len(), 2, "early media + ringing");
    assert_eq!(w.h.core.session_count(), 4);
    assert_eq!(w.h.core.registration_count(), 1);
    for s in &steps[5..] {
        w.run(s);
    }
    assert_eq!(w.early.len(), 0, "one cancelled, one answered");
    assert_eq!(w.dialogs.len(), 2);
    assert_eq!(w.h.core.session_count(), 2);
    let latched = w.h.core.sessions().iter().any(|s| {
        s.pinholes
            .iter()
            .any(|p| p.access.remote_rtp == Some(sa("198.18.1.100:31000")))
    });
    assert!(latched, "the latch moved the access remote");
    assert!(w.checkpoint.is_some());
    for flow in [
        "answer originating",
        "answer terminating",
        "prack",
        "cancel",
        "reinvite 200",
        "reinvite 488",
        "bye from core",
        "bye from ue",
        "register",
        "hijack refused",
    ] {
        assert!(
            w.done.contains_key(flow),
            "{flow} ran to its end: {:?}",
            w.done
        );
    }
    assert_eq!(
        w.done["reinvite 200"], 2,
        "re-INVITE and hold: {:?}",
        w.done
    );
    w.verify();
    // Registration expiry is replayed too.
    w.run(&Step::ExpireRegistration { pick: 0 });
    assert_eq!(w.h.core.registration_count(), 0);
    w.verify();
}
