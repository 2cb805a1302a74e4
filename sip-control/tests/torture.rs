//! RFC 4475 (SIP Torture Test Messages) through the core, as a proxy sees
//! them: valid messages are forwarded with what they must keep; invalid
//! ones get a 400 (or are dropped when there is no Via to answer to); the
//! core keeps serving afterwards and its log still replays. Also covers the
//! rsipstack parser defects listed in docs (several Vias on one line, Contact
//! `;transport=`, Record-Route lists, compact forms, IPv6 `received=`, `tel:`
//! and IPv6 Request-URIs, binary bodies) and a property test that random
//! mutations of an INVITE never panic the core.
//!
//! The messages are the RFC's, with IPv4 addresses moved into 198.18.0.0/15
//! and Content-Length recomputed where an address changed a body's length.

mod common;

use common::*;
use media_plane::Side;
use sip_control::msg::{Message, NameAddr, StartLine, Via};
use sip_control::{Input, SipIn, Transport};

// ------------------------------------------------------------------ helpers

/// `\n` → CRLF (lines written in the source with plain newlines).
fn crlf(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// A message from its header section (each line ending in a newline; `$CL`
/// replaced by the body length) and its body.
fn build(head: &str, body: &[u8]) -> Vec<u8> {
    let head = crlf(head.trim_start_matches('\n')).replace("$CL", &body.len().to_string());
    let mut v = head.into_bytes();
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(body);
    v
}

/// Feed raw bytes (not necessarily UTF-8) to the core.
fn recv_bytes(
    h: &mut Harness,
    side: Side,
    transport: Transport,
    src: &str,
    data: Vec<u8>,
) -> Vec<Sent> {
    h.now += 10;
    let dst = match side {
        Side::Access => sa(BGF_ACCESS),
        Side::Core => sa(BGF_CORE),
    };
    let out = h.apply(Input::Sip(SipIn {
        side,
        transport,
        src: sa(src),
        dst,
        at: h.now,
        data,
    }));
    sent(&out)
}

fn from_ue(h: &mut Harness, data: Vec<u8>) -> Vec<Sent> {
    recv_bytes(h, Side::Access, Transport::Udp, UE, data)
}

/// The one request the core forwarded towards the core side.
fn forwarded(out: &[Sent]) -> &Sent {
    let fwd: Vec<&Sent> = out
        .iter()
        .filter(|s| s.side == Side::Core && code(s).is_none())
        .collect();
    assert_eq!(fwd.len(), 1, "exactly one forwarded request: {out:#?}");
    fwd[0]
}

/// Our Via is on top of a request forwarded to the core side, and the next
/// Via is the sender's.
fn assert_our_via_on_top(s: &Sent) {
    let top = Via::parse(s.msg.top_via().unwrap()).unwrap();
    assert_eq!(top.sent_by(), BGF_CORE, "our Via on top: {}", s.raw);
    assert!(top.branch().unwrap().starts_with("z9hG4bK"));
}

fn ruri(m: &Message) -> &str {
    match &m.start {
        StartLine::Request { uri, .. } => uri,
        StartLine::Response { .. } => panic!("not a request"),
    }
}

fn method(m: &Message) -> String {
    m.method().as_str().to_string()
}

/// The body of the RFC's INVITEs (150 octets there), on our addresses.
fn rfc_sdp(ip: &str) -> Vec<u8> {
    crlf(&format!(
        "v=0\no=mhandley 29739 7272939 IN IP4 {ip}\ns=-\nc=IN IP4 {ip}\nt=0 0\nm=audio 49217 RTP/AVP 0 12\nm=video 3227 RTP/AVP 31\na=rtpmap:31 LPC\n"
    ))
    .into_bytes()
}

/// Answer a forwarded request from the core side and return what the UE got.
fn answer(h: &mut Harness, fwd: &Message, code: u16, reason: &str) -> Vec<Sent> {
    h.recv(
        Side::Core,
        NEXT_HOP,
        &respond(fwd, code, reason, Some("uas1"), None, None),
    )
}

// ------------------------------------------------- 3.1.1 valid messages

/// 3.1.1.1 wsinv with the To-tag removed (so it is an initial INVITE we can
/// anchor): whitespace everywhere, line folding, compact and odd-case header
/// names, unknown headers with unusual values. Forwarded with every unknown
/// header kept (folded values unfolded), both lower Vias from the `v:` line,
/// the Route and the Contact kept, Max-Forwards 0068 decremented.
fn wsinv(to_tag: bool) -> Vec<u8> {
    let to = if to_tag {
        "TO :\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\n"
    } else {
        "TO :\n sip:vivekg@chair-dnrc.example.com\n"
    };
    let head = format!(
        r#"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
{to}from   : "J Rosenberg \\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@198.18.1.100
Content-Length   : $CL
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    198.18.1.100;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  198.18.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \"\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33
"#
    );
    build(&head, &rfc_sdp("198.18.1.100"))
}

#[test]
fn rfc4475_3_1_1_1_wsinv_initial_is_forwarded_with_everything_it_must_keep() {
    let mut h = Harness::new();
    let out = from_ue(&mut h, wsinv(false));
    let f = forwarded(&out);
    assert_eq!(f.dst, sa(NEXT_HOP));
    assert_our_via_on_top(f);
    let m = &f.msg;
    assert_eq!(ruri(m), "sip:vivekg@chair-dnrc.example.com;unknownparam");
    let vias: Vec<&str> = m.headers_named("Via").collect();
    assert_eq!(
        vias.len(),
        4,
        "ours, the sender's, and the two on the v: line: {vias:#?}"
    );
    let sender = Via::parse(vias[1]).unwrap();
    assert_eq!(sender.host, "198.18.1.100");
    assert_eq!(sender.branch(), Some("390skdjuw"));
    assert_eq!(Via::parse(vias[2]).unwrap().host, "spindle.example.com");
    assert_eq!(Via::parse(vias[2]).unwrap().branch(), Some("z9hG4bK9ikj8"));
    assert_eq!(Via::parse(vias[3]).unwrap().host, "198.18.255.111");
    assert_eq!(Via::parse(vias[3]).unwrap().branch(), Some("z9hG4bK30239"));
    assert_eq!(m.header("Max-Forwards"), Some("67"));
    assert_eq!(m.cseq().unwrap().0, 9);
    assert_eq!(
        m.header("NewFangledHeader"),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(m.header("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
    // Route headers of initial requests from the access side are removed
    // (kept, but still unused for routing, with keep_access_route_headers).
    assert_eq!(m.header("Route"), None);
    let from = NameAddr::parse(m.header("From").unwrap()).unwrap();
    assert_eq!(from.display, r#""J Rosenberg \\\"""#);
    assert_eq!(from.param("tag").as_deref(), Some("98asjd8"));
    let contact = NameAddr::parse(m.header("Contact").unwrap()).unwrap();
    assert_eq!(contact.display, r#""Quoted string \"\"""#);
    assert_eq!(contact.param("q").as_deref(), Some("0.33"));
    assert!(m.has_sdp(), "SDP offer forwarded (rewritten)");
    assert_eq!(m.call_id(), "wsinv.ndaksdj@198.18.1.100");
    assert_eq!(code(&out[0]), Some(100), "100 Trying to the sender");
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_1_1_1_wsinv_verbatim_parses_and_gets_481_for_the_unknown_dialog() {
    // As in the RFC the To has a tag: a re-INVITE with SDP for a dialog the
    // BGF does not anchor. That it answers 481 to the right place with the
    // request's own identifiers shows the header section parsed.
    let mut h = Harness::new();
    let out = from_ue(&mut h, wsinv(true));
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(code(&out[0]), Some(481));
    assert_eq!(out[0].dst, sa("198.18.1.100:5060"), "top Via, no rport");
    assert_eq!(out[0].msg.call_id(), "wsinv.ndaksdj@198.18.1.100");
    assert_eq!(
        out[0].msg.to_tag().as_deref(),
        Some("1918181833n"),
        "To with tag copied"
    );
    assert_eq!(h.core.session_count(), 0);
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_1_1_2_intmeth_extension_method_and_wide_character_range() {
    let mut h = Harness::new();
    let meth = "!interesting-Method0123456789_*+`.%indeed'~";
    let uri = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com";
    let head = format!(
        "{meth} {uri} SIP/2.0\n\
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~\n\
To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>\n\
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\";tag=_token~1'+`*%!-.\n\
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}}{{\n\
CSeq: 139122385 {meth}\n\
Max-Forwards: 255\n\
extensionHeader-!.%*+_`'~: \u{5927}\u{505c}\u{96fb}\n\
Content-Length: $CL\n"
    );
    let data = build(&head, b"");
    let out = recv_bytes(&mut h, Side::Access, Transport::Tcp, UE, data);
    let f = forwarded(&out);
    assert_our_via_on_top(f);
    let m = &f.msg;
    assert_eq!(method(m), meth);
    assert_eq!(ruri(m), uri, "Request-URI forwarded byte for byte");
    assert_eq!(m.cseq().unwrap().1.as_str(), meth);
    assert_eq!(m.header("Max-Forwards"), Some("254"));
    assert_eq!(m.call_id(), "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{");
    assert_eq!(
        m.header("extensionHeader-!.%*+_`'~"),
        Some("\u{5927}\u{505c}\u{96fb}")
    );
    assert!(f
        .raw
        .contains("To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f\" <sip:1_unusual"));
    assert_eq!(m.from_tag().as_deref(), Some("_token~1'+`*%!-."));
    // The UAS's answer comes back over the connection it came in on.
    let back = answer(&mut h, &f.msg.clone(), 200, "OK");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].transport, Transport::Tcp);
    assert_eq!(back[0].dst, sa(UE));
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_1_1_3_esc01_escaped_uris_forwarded_unchanged() {
    let mut h = Harness::new();
    let head = r#"INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: $CL
"#;
    let out = from_ue(&mut h, build(head, &rfc_sdp("198.18.1.100")));
    let f = forwarded(&out);
    assert_our_via_on_top(f);
    assert_eq!(ruri(&f.msg), "sip:sips%3Auser%40example.com@example.net");
    assert_eq!(f.msg.header("To"), Some("sip:%75se%72@example.com"));
    assert_eq!(
        f.msg.header("From"),
        Some("<sip:I%20have%20spaces@example.net>;tag=938")
    );
    assert_eq!(
        f.msg.header("Contact"),
        Some("<sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>")
    );
    assert_eq!(f.msg.call_id(), "esc01.239409asdfakjkn23onasd0-3234");
    assert!(f.msg.has_sdp(), "C: is Content-Type");
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_1_1_4_escnull_register_with_escaped_nulls() {
    let mut h = Harness::new();
    let head = r#"REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0
"#;
    let out = from_ue(&mut h, build(head, b""));
    let f = forwarded(&out).clone();
    assert_our_via_on_top(&f);
    assert_eq!(f.msg.header("To"), Some("sip:null-%00-null@example.com"));
    let contacts: Vec<String> = f
        .msg
        .headers_named("Contact")
        .map(|c| NameAddr::parse(c).unwrap().uri)
        .collect();
    assert_eq!(contacts.len(), 2);
    assert_ne!(
        contacts[0], contacts[1],
        "distinct contacts, distinct tokens"
    );
    assert!(contacts.iter().all(|c| c.ends_with("@198.18.2.10:5060")));
    // The registrar's 200 lists the stored (rewritten) contacts; the UE gets its own back.
    let ok = respond(&f.msg, 200, "OK", Some("reg"), None, None).replace(
        "Content-Length: 0",
        &format!(
            "Contact: <{}>;expires=3600\r\nContact: <{}>;expires=3600\r\nContent-Length: 0",
            contacts[0], contacts[1]
        ),
    );
    let back = h.recv(Side::Core, NEXT_HOP, &ok);
    assert_eq!(back.len(), 1);
    let got: Vec<String> = back[0]
        .msg
        .headers_named("Contact")
        .map(|c| NameAddr::parse(c).unwrap().uri)
        .collect();
    assert_eq!(
        got,
        vec!["sip:%00@host5.example.com", "sip:%00%00@host5.example.com"]
    );
    assert_eq!(h.core.registration_count(), 2);
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_1_1_5_esc02_percent_that_is_not_an_escape() {
    // RE%47IST%45R is an extension method (not REGISTER), C%6Fntact an
    // unknown header (not Contact): forwarded as such, nothing rewritten.
    let mut h = Harness::new();
    let head = r#"RE%47IST%45R sip:registrar.example.com SIP/2.0
To: "%Z%45" <sip:resource@example.com>
From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP 198.18.1.100:5061;branch=z9hG4bK209%fzsnel234
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0
"#;
    let out = recv_bytes(&mut h, Side::Access, Transport::Tcp, UE, build(head, b""));
    let f = forwarded(&out);
    assert_our_via_on_top(f);
    assert_eq!(method(&f.msg), "RE%47IST%45R");
    assert_eq!(
        f.msg.headers_named("Contact").collect::<Vec<_>>(),
        vec![
            "<sip:alias1@host1.example.com>",
            "<sip:alias3@host3.example.com>"
        ],
        "not a REGISTER: contacts untouched"
    );
    assert_eq!(
        f.msg.header("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
    assert_eq!(
        f.msg.header("To"),
        Some("\"%Z%45\" <sip:resource@example.com>")
    );
    let ue_via = Via::parse(f.msg.headers_named("Via").nth(1).unwrap()).unwrap();
    assert_eq!(ue_via.branch(), Some("z9hG4bK209%fzsnel234"));
    assert_eq!(h.core.registration_count(), 0);
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_1_1_6_lwsdisp_no_space_before_angle() {
    let mut h = Harness::new();
    let head = r#"OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
l: 0
"#;
    let out = from_ue(&mut h, build(head, b""));
    let f = forwarded(&out);
    assert_our_via_on_top(f);
    assert_eq!(
        f.msg.header("From"),
        Some("caller<sip:caller@example.com>;tag=323")
    );
    assert_eq!(f.msg.from_tag().as_deref(), Some("323"));
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_1_1_7_longreq_long_values_and_many_vias() {
    let mut h = Harness::new();
    let long = "extreme".repeat(60);
    let mut head = format!(
        "INVITE sip:user@example.com SIP/2.0\n\
To: \"I have a user name of {long} proportion\"<sip:user@example.com:6000;unknownparam1=very{long}longvalue;longparam{long}name=shortvalue;very{long}longParameterNameWithNoValue>\n\
F: sip:amazinglylongcallername{long}@example.net;tag=12{long}982;unknownheaderparam{long}name=unknowheaderparam{long}value;unknownValueless{long}paramname\n\
Call-ID: longreq.one{long}really{long}longcallid\n\
CSeq: 3882340 INVITE\n\
Unknown-{long}-Header-Name: unknown-{long}-value; unknown-{long}-parameter-name = unknown-{long}-parameter-value\n\
Via: SIP/2.0/TCP 198.18.1.100:5061;branch=z9hG4bK{long}\n\
Via: SIP/2.0/TCP sip33.example.com\n"
    );
    for i in (1..=32).rev() {
        head.push_str(&format!("Via: SIP/2.0/TCP sip{i}.example.com\n"));
    }
    head.push_str(&format!(
        "Max-Forwards: 68\n\
Record-Route: <sip:198.18.1.120;lr>, <sip:198.18.1.121;lr>, <sip:{long}@198.18.1.122;lr>\n\
Contact: <sip:amazinglylongcallername{long}@host5.example.net>\n\
Content-Type: application/sdp\n\
l: $CL\n"
    ));
    let data = build(&head, &rfc_sdp("198.18.1.100"));
    assert!(data.len() > 5000, "a long request: {}", data.len());
    let out = recv_bytes(&mut h, Side::Access, Transport::Tcp, UE, data);
    let f = forwarded(&out);
    assert_our_via_on_top(f);
    let m = &f.msg;
    assert_eq!(m.headers_named("Via").count(), 1 + 1 + 33, "every Via kept");
    assert_eq!(
        Via::parse(m.headers_named("Via").last().unwrap())
            .unwrap()
            .host,
        "sip1.example.com"
    );
    assert!(m
        .header("To")
        .unwrap()
        .contains(&format!("of {long} proportion")));
    assert_eq!(
        m.header(&format!("Unknown-{long}-Header-Name")).map(str::len),
        Some(
            format!("unknown-{long}-value; unknown-{long}-parameter-name = unknown-{long}-parameter-value")
                .len()
        )
    );
    // The Record-Route list on one line: ours in front, the three kept, split cleanly.
    let rr: Vec<&str> = m.headers_named("Record-Route").collect();
    assert_eq!(rr.len(), 5);
    assert_eq!(rr[2], "<sip:198.18.1.120;lr>");
    assert_eq!(rr[4], format!("<sip:{long}@198.18.1.122;lr>"));
    assert!(!f.raw.contains(";,"), "no stray ';,'");
    assert_eq!(
        m.call_id(),
        format!("longreq.one{long}really{long}longcallid")
    );
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_1_1_8_dblreq_only_the_first_message_of_a_datagram_counts() {
    let mut h = Harness::new();
    let register = r#"REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw23492
Content-Length: 0
"#;
    let invite_head = r#"INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@198.18.1.100
CSeq: 8 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: $CL
"#;
    let mut data = build(register, b"");
    data.extend_from_slice(b"\r\n");
    data.extend(build(invite_head, &rfc_sdp("198.18.1.100")));
    let out = from_ue(&mut h, data);
    assert_eq!(out.len(), 1, "no 100 Trying, no INVITE: {out:#?}");
    let f = forwarded(&out);
    assert_eq!(method(&f.msg), "REGISTER");
    assert!(f.msg.body.is_empty());
    assert_eq!(f.msg.header("Content-Length"), Some("0"));
    assert!(
        !f.raw.contains("INVITE"),
        "the trailing octets are not forwarded"
    );
    assert_eq!(h.core.session_count(), 0);
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_1_1_9_semiuri_semicolons_in_user_part() {
    let mut h = Harness::new();
    let head = r#"OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
l: 0
"#;
    let out = from_ue(&mut h, build(head, b""));
    let f = forwarded(&out);
    assert_our_via_on_top(f);
    assert_eq!(ruri(&f.msg), "sip:user;par=u%40example.net@example.com");
    assert_eq!(f.msg.header("Max-Forwards"), Some("2"));
    assert_eq!(
        f.msg.header("Accept"),
        Some("application/sdp, application/pkcs7-mime, multipart/mixed, multipart/signed, message/sip, message/sipfrag")
    );
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_1_1_10_transports_unknown_transports_in_lower_vias() {
    let mut h = Harness::new();
    let head = r#"OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0
"#;
    let out = from_ue(&mut h, build(head, b""));
    let f = forwarded(&out).clone();
    assert_our_via_on_top(&f);
    let vias: Vec<&str> = f.msg.headers_named("Via").collect();
    assert_eq!(
        &vias[2..],
        &[
            "SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf",
            "SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj",
            "SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en",
            "SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee",
        ]
    );
    assert_eq!(f.msg.call_id(), "transports.kijh4akdnaqjkwendsasfdj");
    // The answer goes back to the sender (the top Via), keeping the rest.
    let back = answer(&mut h, &f.msg, 200, "OK");
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].dst, sa(UE));
    assert_eq!(back[0].msg.headers_named("Via").count(), 5);
    h.assert_replay_equal();
}

/// The multipart body of mpart01: a text part and a binary (PKCS#7-like) part.
fn mpart_body() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(
        b"--7a9cbec02ceef655\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\nHello\r\n--7a9cbec02ceef655\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n",
    );
    b.extend_from_slice(&[
        0x30, 0x82, 0x01, 0x52, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
        0xa0, 0x82, 0x01, 0x43, 0x30, 0x82, 0x01, 0x3f, 0x02, 0x01, 0x01, 0x31, 0x09, 0x30, 0x07,
        0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x00, 0xff, 0xfe, 0x0d, 0x0a, 0x0d, 0x0a, 0xc3,
        0x28, 0x80, 0x81,
    ]);
    b.extend_from_slice(b"\r\n--7a9cbec02ceef655--\r\n");
    b
}

#[test]
fn rfc4475_3_1_1_11_mpart01_multipart_body_forwarded_byte_exact() {
    let mut h = Harness::new();
    let head = r#"MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport
Max-Forwards: 70
Route: <sip:198.18.2.20:5080;lr>
Identity: r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2WxhgTV1PF7hHuLIK0YWVKZhKv9Mj8UeXqkMVbnVq37CD+813gvYjcBUaZngQmXc9WNZSGY5W2a9HV02eI8Z6EfP6QJ5SldJbJ8yGfJ3ftNZcJWdYwmz9zo8r10RiIo8ANsyZ2TfHc1ABM=
Identity-Info: <https://example.com/cert>;alg=rsa-sha1
To: <sip:kumiko@example.org>
From: <sip:fluffy@example.com>;tag=2fb0dcc9
Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..
CSeq: 1 MESSAGE
Content-Transfer-Encoding: binary
Content-Type: multipart/mixed;boundary=7a9cbec02ceef655
Date: Sat, 15 Oct 2005 04:44:56 GMT
User-Agent: SIPimp.org/0.2.5 (curses)
Content-Length: $CL
"#;
    let body = mpart_body();
    let out = from_ue(&mut h, build(head, &body));
    let f = forwarded(&out);
    assert_our_via_on_top(f);
    // Routing policy: an initial request from the access side goes to the
    // next hop whatever its Route says, and the Route is removed.
    assert_eq!(
        f.dst,
        sa(NEXT_HOP),
        "the access side's Route is not followed"
    );
    assert_eq!(f.msg.body, body, "body byte for byte");
    assert_eq!(
        f.msg.header("Content-Type"),
        Some("multipart/mixed;boundary=7a9cbec02ceef655")
    );
    assert!(f.msg.header("Identity").unwrap().ends_with("c1ABM="));
    assert_eq!(f.msg.header("Route"), None);
    let ue_via = Via::parse(f.msg.headers_named("Via").nth(1).unwrap()).unwrap();
    assert_eq!(ue_via.param("rport"), Some(Some("5061")));
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_1_1_12_unreason_and_3_1_1_13_noreason_reason_phrases_relayed_verbatim() {
    let mut h = Harness::new();
    let out = h.recv(
        Side::Access,
        UE,
        &sipp_invite("unr", "z9hG4bK-unr", UE, 6000),
    );
    let inv = forwarded(&out).msg.clone();
    // 3.1.1.13: an empty reason phrase (the status line ends in "100 ").
    let trying = respond(&inv, 100, "", None, None, None);
    assert!(trying.starts_with("SIP/2.0 100 \r\n"));
    assert!(
        h.recv(Side::Core, NEXT_HOP, &trying).is_empty(),
        "100 is hop by hop"
    );
    let ringing = respond(
        &inv,
        180,
        "",
        Some("2229"),
        Some("sip:user@198.18.2.20"),
        None,
    );
    let out = h.recv(Side::Core, NEXT_HOP, &ringing);
    assert_eq!(out.len(), 1);
    assert!(out[0].raw.starts_with("SIP/2.0 180 \r\n"), "{}", out[0].raw);
    // 3.1.1.12: a reason phrase with non-ASCII UTF-8 and odd punctuation.
    let reason = "= 2**3 * 5**2 но сто девяносто девять - простое";
    let ok = respond(
        &inv,
        200,
        reason,
        Some("2229"),
        Some("sip:user@198.18.2.20"),
        Some(&sdp_of("198.18.2.20", 7000)),
    );
    let out = h.recv(Side::Core, NEXT_HOP, &ok);
    assert_eq!(out.len(), 1);
    assert!(
        out[0].raw.starts_with(&format!("SIP/2.0 200 {reason}\r\n")),
        "{}",
        out[0].raw
    );
    assert_eq!(out[0].dst, sa(UE));
    assert_eq!(h.core.sessions()[0].state, "confirmed");
    h.assert_replay_equal();
}

// ------------------------------------------- 3.1.2 / 3.3 invalid messages

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Answered with this code to the sender, nothing forwarded.
    Reject(u16),
    /// Nothing sent at all (no Via to answer to, or a response).
    Drop,
}

/// The RFC's invalid messages (sent by the UE) and what the BGF does with
/// each. Where RFC 4475 allows a choice, the comment says which and why.
fn invalid_cases() -> Vec<(&'static str, Vec<u8>, Verdict)> {
    let sdp = rfc_sdp("198.18.1.100");
    vec![
        // 3.1.2.1 badinv01: header field separators with nothing between
        // them (an empty Via after the commas, `;;` params). RFC: should 400.
        (
            "3.1.2.1 badinv01",
            build(
                r#"INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061;;,;,,
Contact: "Joe" <sip:joe@example.org>;;;;
Content-Length: $CL
Content-Type: application/sdp
"#,
                &sdp,
            ),
            Verdict::Reject(400),
        ),
        // 3.1.2.2 clerr: Content-Length larger than the message. Over UDP
        // the datagram is all there is: 400.
        (
            "3.1.2.2 clerr",
            build(
                r#"INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999
"#,
                &sdp,
            ),
            Verdict::Reject(400),
        ),
        // 3.1.2.3 ncl: negative Content-Length.
        (
            "3.1.2.3 ncl",
            build(
                r#"INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999
"#,
                &sdp,
            ),
            Verdict::Reject(400),
        ),
        // 3.1.2.4 scalar02: CSeq beyond 2**32-1, Max-Forwards 300, huge Expires.
        (
            "3.1.2.4 scalar02",
            build(
                &format!(
                    "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP 198.18.1.100:5061;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1{}
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Content-Length: 0
",
                    "0".repeat(100)
                ),
                b"",
            ),
            Verdict::Reject(400),
        ),
        // 3.1.2.6 quotbal: unterminated quoted string in the To display name.
        (
            "3.1.2.6 quotbal",
            build(
                r#"INVITE sip:user@example.com SIP/2.0
To: "Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw39234
Content-Type: application/sdp
Content-Length: $CL
"#,
                &sdp,
            ),
            Verdict::Reject(400),
        ),
        // 3.1.2.7 ltgtruri: Request-URI in <> (and a Via without branch).
        (
            "3.1.2.7 ltgtruri",
            build(
                r#"INVITE <sip:user@example.com> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@198.18.1.100
CSeq: 1 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: $CL
"#,
                &sdp,
            ),
            Verdict::Reject(400),
        ),
        // 3.1.2.8 lwsruri: LWS inside the Request-URI.
        (
            "3.1.2.8 lwsruri",
            build(
                r#"INVITE sip:user@example.com; lr SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423
CSeq: 2130706432 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw2395
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: $CL
"#,
                &sdp,
            ),
            Verdict::Reject(400),
        ),
        // 3.1.2.9 lwsstart: several SP between Request-Line elements. The
        // RFC lets an element be liberal; we are strict (400): a proxy that
        // accepted it would have to re-write the Request-Line anyway.
        (
            "3.1.2.9 lwsstart",
            build(
                r#"INVITE  sip:user@example.com  SIP/2.0
Max-Forwards: 8
To: sip:user@example.com
From: sip:caller@example.net;tag=8814
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com
CSeq: 1893884 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw3923
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: $CL
"#,
                &sdp,
            ),
            Verdict::Reject(400),
        ),
        // 3.1.2.10 trws: SP at the end of the Request-Line. Strict, as above.
        (
            "3.1.2.10 trws",
            build(
                "OPTIONS sip:remote-target@example.com SIP/2.0  
Via: SIP/2.0/TCP 198.18.1.100:5061;branch=z9hG4bK299342093
To: <sip:remote-target@example.com>
From: <sip:local-resource@example.com>;tag=329429089
Call-ID: trws.oicu34958239neffasdhr2345r
Accept: application/sdp
CSeq: 238923 OPTIONS
Max-Forwards: 70
Content-Length: 0
",
                b"",
            ),
            Verdict::Reject(400),
        ),
        // 3.1.2.11 escruri: escaped headers in the Request-URI. The RFC
        // allows 400 or stripping them; a proxy must never forward them.
        (
            "3.1.2.11 escruri",
            build(
                r#"INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=341518
Max-Forwards: 7
Contact: <sip:caller@host39923.example.net>
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5
CSeq: 149209342 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
Content-Type: application/sdp
Content-Length: $CL
"#,
                &sdp,
            ),
            Verdict::Reject(400),
        ),
        // 3.1.2.13 regbadct: an addr-spec Contact with an escaped header
        // (must have been in <>). The RFC allows 400 or inferring the <>;
        // we refuse: binding such a contact would make us send a
        // Request-URI with headers later (see escruri).
        (
            "3.1.2.13 regbadct",
            build(
                r#"REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@198.18.1.100
CSeq: 1 REGISTER
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E
l: 0
"#,
                b"",
            ),
            Verdict::Reject(400),
        ),
        // 3.1.2.15 baddn: unquoted display names with non-token characters.
        // The RFC: reject, or infer the quotes -- but a proxy must not
        // propagate the error, and we do not rewrite From/To: 400.
        (
            "3.1.2.15 baddn",
            build(
                r#"OPTIONS sip:t.watson@example.org SIP/2.0
Via:     SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
Max-Forwards:      70
From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43
To:      Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.31415@c.example.com
Accept: application/sdp
CSeq:    3923239 OPTIONS
l: 0
"#,
                b"",
            ),
            Verdict::Reject(400),
        ),
        // 3.1.2.16 badvers: SIP/7.0. The RFC wants 505, but the only Via is
        // SIP/7.0 too, so there is nothing we can address an answer to: drop.
        (
            "3.1.2.16 badvers",
            build(
                r#"OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
l: 0
"#,
                b"",
            ),
            Verdict::Drop,
        ),
        // 3.1.2.17 mismatch01: CSeq method differs from the Request-Line.
        (
            "3.1.2.17 mismatch01",
            build(
                r#"OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
l: 0
"#,
                b"",
            ),
            Verdict::Reject(400),
        ),
        // 3.1.2.18 mismatch02: unknown method and CSeq mismatch. The RFC
        // prefers 501 at proxies but accepts 400; the mismatch is a syntax
        // error for us before the method is looked at: 400.
        (
            "3.1.2.18 mismatch02",
            build(
                r#"NEWMETHOD sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3
CSeq: 8 INVITE
Contact: <sip:caller@host.example.net>
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
Content-Type: application/sdp
l: $CL
"#,
                &sdp,
            ),
            Verdict::Reject(400),
        ),
        // 3.3.1 insuf: no Call-ID, From or To.
        (
            "3.3.1 insuf",
            build(
                r#"INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: $CL
"#,
                &sdp,
            ),
            Verdict::Reject(400),
        ),
        // 3.3.2 unkscm: a Request-URI scheme nobody knows: 416 (RFC 3261
        // §16.3 item 2). We route sip, sips and tel only.
        (
            "3.3.2 unkscm",
            build(
                r#"OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP 198.18.1.100:5061;branch=z9hG4bKkdjuw39234
Content-Length: 0
"#,
                b"",
            ),
            Verdict::Reject(416),
        ),
        // 3.3.3 novelsc: a known but atypical scheme (soap.beep): 416, as
        // unkscm -- the BGF has no way to route it.
        (
            "3.3.3 novelsc",
            build(
                r#"OPTIONS soap.beep://198.18.2.103:3002 SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: novelsc.asdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP 198.18.1.100:5061;branch=z9hG4bKkdjuw39234
Content-Length: 0
"#,
                b"",
            ),
            Verdict::Reject(416),
        ),
        // 3.3.5 bext01: Proxy-Require with option tags no proxy supports.
        // RFC 3261 §16.3 item 5: a proxy MUST answer 420 with Unsupported.
        (
            "3.3.5 bext01",
            build(
                r#"OPTIONS sip:user@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.net;tag=242etr
Max-Forwards: 6
Call-ID: bext01.0ha0isndaksdj
Require: nothingSupportsThis, nothingSupportsThisEither
Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis
CSeq: 8 OPTIONS
Via: SIP/2.0/TLS 198.18.1.100:5061;branch=z9hG4bKkdjuw
Contact: <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
l: 0
"#,
                b"",
            ),
            Verdict::Reject(420),
        ),
        // 3.3.8 multi01: two Call-IDs, CSeqs, Froms, Tos, Max-Forwards.
        (
            "3.3.8 multi01",
            build(
                r#"INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@198.18.1.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@198.18.1.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
Content-Type: application/sdp
l: $CL
Contact: <sip:caller@host36.example.net>
Max-Forwards: 5
"#,
                &sdp,
            ),
            Verdict::Reject(400),
        ),
        // 3.3.9 mcl01: two Content-Length values.
        (
            "3.3.9 mcl01",
            build(
                r#"OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bK293423
To: sip:user@example.com
From: sip:other@example.net;tag=3923942
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain
"#,
                b"There's no way to know how many octets are supposed to be here.\r\n",
            ),
            Verdict::Reject(400),
        ),
    ]
}

/// Invalid responses from the core side (nothing to answer: dropped).
fn invalid_responses() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // 3.1.2.5 scalarlg: response with overlarge CSeq and Retry-After,
        // addressed to us so it is the parser, not the Via check, that drops it.
        (
            "3.1.2.5 scalarlg",
            build(
                r#"SIP/2.0 503 Service Unavailable
Via: SIP/2.0/UDP 198.18.2.10:5060;branch=z9hG4bKzzxdiwo34sw;received=198.18.2.20
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture "In Progress"
Content-Length: 0
"#,
                b"",
            ),
        ),
        // 3.1.2.19 bigcode: status code 4294967301.
        (
            "3.1.2.19 bigcode",
            build(
                r#"SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP 198.18.2.10:5060;branch=z9hG4bK2398ndaoe
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>
"#,
                b"",
            ),
        ),
    ]
}

#[test]
fn rfc4475_invalid_messages_are_refused_and_the_core_keeps_serving() {
    let mut h = Harness::new();
    let mut answered = 0;
    for (name, data, verdict) in invalid_cases() {
        let out = from_ue(&mut h, data);
        match verdict {
            Verdict::Reject(c) => {
                assert_eq!(
                    out.len(),
                    1,
                    "{name}: one answer, nothing forwarded: {out:#?}"
                );
                assert_eq!(code(&out[0]), Some(c), "{name}: {}", out[0].raw);
                assert_eq!(out[0].side, Side::Access, "{name}");
                assert_eq!(
                    out[0].dst.ip(),
                    sa(UE).ip(),
                    "{name}: answered to the sender"
                );
                // The request's Via is copied as received (even when, as in
                // badinv01, it is the reason for the 400).
                assert!(
                    out[0]
                        .raw
                        .lines()
                        .any(|l| l.starts_with("Via: SIP/2.0/") && l.contains("198.18.1.100")),
                    "{name}: the answer carries the request's Via: {}",
                    out[0].raw
                );
                answered += 1;
            }
            Verdict::Drop => assert!(out.is_empty(), "{name}: dropped: {out:#?}"),
        }
    }
    for (name, data) in invalid_responses() {
        let before = h.core.stats().dropped_responses;
        let out = recv_bytes(&mut h, Side::Core, Transport::Udp, NEXT_HOP, data);
        assert!(out.is_empty(), "{name}: dropped: {out:#?}");
        assert_eq!(
            h.core.stats().dropped_responses,
            before + 1,
            "{name}: counted"
        );
    }
    assert!(answered > 15);
    assert_eq!(h.core.session_count(), 0, "no session left behind");
    assert_eq!(h.core.registration_count(), 0);
    assert_eq!(h.core.state().pools.access.in_use(), 0);
    // Still serving: a whole call goes through.
    establish(&mut h, "after-torture");
    h.assert_replay_equal();
}

/// Set up a call UE → BGF → core (INVITE, 180, 200, ACK) and check it is confirmed.
fn establish(h: &mut Harness, call: &str) {
    let out = h.recv(
        Side::Access,
        UE,
        &sipp_invite(call, &format!("z9hG4bK-{call}-1"), UE, 6000),
    );
    let inv = forwarded(&out).msg.clone();
    let ok = respond(
        &inv,
        200,
        "OK",
        Some("callee1"),
        Some("sip:svc@198.18.2.20:5060"),
        Some(&sdp_of("198.18.2.20", 7000)),
    );
    let out = h.recv(Side::Core, NEXT_HOP, &ok);
    assert_eq!(out.len(), 1);
    assert_eq!(code(&out[0]), Some(200));
    assert_eq!(out[0].dst, sa(UE));
    let ok = out[0].msg.clone();
    let routes: Vec<String> = ok
        .headers_named("Record-Route")
        .map(str::to_string)
        .rev()
        .collect();
    let ack = in_dialog(
        "ACK",
        "sip:svc@198.18.2.20:5060",
        &routes,
        &format!("SIP/2.0/UDP {UE};branch=z9hG4bK-{call}-ack"),
        ok.header("From").unwrap(),
        ok.header("To").unwrap(),
        call,
        1,
        None,
    );
    let out = h.recv(Side::Access, UE, &ack);
    assert_eq!(out.len(), 1, "ACK forwarded");
    assert_eq!(out[0].dst, sa("198.18.2.20:5060"));
    let s = h.core.session_by_call_id(call).expect("session");
    assert_eq!(s.state, "confirmed");
}

// ------------------------- valid-but-odd messages a proxy must forward

/// Messages RFC 4475 says a proxy forwards (a UAS or registrar may refuse them).
fn forwarded_cases() -> Vec<(&'static str, Vec<u8>)> {
    let sdp = rfc_sdp("198.18.1.100");
    vec![
        // 3.1.2.12 baddate: a Date with a non-GMT zone; a proxy does not care.
        (
            "3.1.2.12 baddate",
            build(
                r#"INVITE sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=2234923
Max-Forwards: 70
Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234
CSeq: 1392934 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
Date: Fri, 01 Jan 2010 16:00:00 EST
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: $CL
"#,
                &sdp,
            ),
        ),
        // 3.1.2.14 badaspec: spaces inside <> around the addr-spec. The RFC
        // allows being liberal; we do not rewrite To, so we pass it on as is.
        (
            "3.1.2.14 badaspec",
            build(
                r#"OPTIONS sip:user@example.org SIP/2.0
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdju43234
Max-Forwards: 70
From: "Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423
To: "Watson, Thomas" < sip:t.watson@example.org >
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0
"#,
                b"",
            ),
        ),
        // 3.2.1 badbranch: the magic cookie and nothing else.
        (
            "3.2.1 badbranch",
            build(
                r#"OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bK
Accept: application/sdp
Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n
CSeq: 8 OPTIONS
l: 0
"#,
                b"",
            ),
        ),
        // 3.3.4 unksm2: unknown schemes in To/From/Contact (the registrar's
        // business, not the proxy's).
        (
            "3.3.4 unksm2",
            build(
                r#"REGISTER sip:example.com SIP/2.0
To: isbn:2983792873
From: <http://www.example.com>;tag=3234233
Call-ID: unksm2.daksdj@hyphenated-host.example.com
CSeq: 234902 REGISTER
Max-Forwards: 70
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
Contact: <name:John_Smith>
l: 0
"#,
                b"",
            ),
        ),
        // 3.3.6 invut: an INVITE whose body is not SDP. A proxy forwards it;
        // the UAS answers 415. No media is anchored (no SDP to anchor).
        (
            "3.3.6 invut",
            build(
                r#"INVITE sip:user@example.com SIP/2.0
Contact: <sip:caller@host5.example.net>
To: sip:j.user@example.com
From: sip:caller@example.net;tag=8392034
Max-Forwards: 70
Call-ID: invut.0ha0isndaksdjadsfij34n23d
CSeq: 235448 INVITE
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
Content-Type: application/unknownformat
Content-Length: $CL
"#,
                b"<audio>\r\n <pcmu port=\"443\"/>\r\n</audio>\r\n",
            ),
        ),
        // 3.3.7 regaut01: an Authorization scheme nobody knows.
        (
            "3.3.7 regaut01",
            build(
                r#"REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=87321hj23128
Max-Forwards: 8
Call-ID: regaut01.0ha0isndaksdj
CSeq: 9338 REGISTER
Via: SIP/2.0/TCP 198.18.1.100:5061;branch=z9hG4bKkdjuw
Authorization: NoOneKnowsThisScheme opaque-data=here
Content-Length:0
"#,
                b"",
            ),
        ),
        // 3.3.14 regescrt: a Contact URI with an escaped header, in <>: valid.
        (
            "3.3.14 regescrt",
            build(
                r#"REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=8
Max-Forwards: 70
Call-ID: regescrt.k345asrl3fdbv@198.18.1.100
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bKkdjuw
M: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>
L:0
"#,
                b"",
            ),
        ),
        // 3.4.1 inv2543: RFC 2543 syntax -- no branch, no From tag, no
        // Max-Forwards, no Content-Length. Accepted; we add Max-Forwards.
        (
            "3.4.1 inv2543",
            build(
                r#"INVITE sip:UserB@example.com SIP/2.0
Via: SIP/2.0/UDP 198.18.1.100:5061
From: <sip:+13035551111@ift.client.example.net;user=phone>
Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>
To: sip:+16505552222@ss1.example.net;user=phone
Call-ID: inv2543.1717@ift.client.example.com
CSeq: 56 INVITE
Content-Type: application/sdp
"#,
                &crlf("v=0\no=mhandley 29739 7272939 IN IP4 198.18.1.100\ns=-\nc=IN IP4 198.18.1.100\nt=0 0\nm=audio 49217 RTP/AVP 0\n")
                    .into_bytes(),
            ),
        ),
    ]
}

#[test]
fn rfc4475_odd_but_valid_requests_are_forwarded() {
    let mut h = Harness::new();
    for (i, (name, data)) in forwarded_cases().into_iter().enumerate() {
        // The RFC reuses one branch; from one sender that would be a
        // retransmission of the previous request, so make each unique.
        let raw = String::from_utf8_lossy(&data)
            .replace("branch=z9hG4bKkdjuw", &format!("branch=z9hG4bKkdjuw-{i}"));
        let data = raw.clone().into_bytes();
        let transport = if raw.contains("SIP/2.0/TCP 198.18.1.100") {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let out = recv_bytes(&mut h, Side::Access, transport, UE, data);
        let fwd: Vec<&Sent> = out.iter().filter(|s| s.side == Side::Core).collect();
        assert_eq!(fwd.len(), 1, "{name}: forwarded: {out:#?}");
        let f = fwd[0];
        assert_our_via_on_top(f);
        assert!(
            out.iter()
                .filter(|s| s.side == Side::Access)
                .all(|s| code(s) == Some(100)),
            "{name}: no error to the sender: {out:#?}"
        );
        let m = &f.msg;
        match name {
            "3.1.2.12 baddate" => {
                assert_eq!(m.header("Date"), Some("Fri, 01 Jan 2010 16:00:00 EST"))
            }
            "3.1.2.14 badaspec" => {
                assert_eq!(
                    m.header("To"),
                    Some("\"Watson, Thomas\" < sip:t.watson@example.org >")
                )
            }
            "3.2.1 badbranch" => assert_eq!(
                Via::parse(m.headers_named("Via").nth(1).unwrap())
                    .unwrap()
                    .branch(),
                Some("z9hG4bK")
            ),
            "3.3.4 unksm2" => {
                assert_eq!(m.header("To"), Some("isbn:2983792873"));
                assert_eq!(
                    m.header("From"),
                    Some("<http://www.example.com>;tag=3234233")
                );
            }
            "3.3.6 invut" => {
                assert_eq!(m.body, b"<audio>\r\n <pcmu port=\"443\"/>\r\n</audio>\r\n");
                assert_eq!(m.header("Content-Type"), Some("application/unknownformat"));
            }
            "3.3.7 regaut01" => assert_eq!(
                m.header("Authorization"),
                Some("NoOneKnowsThisScheme opaque-data=here")
            ),
            "3.3.14 regescrt" => {
                let c = NameAddr::parse(m.header("Contact").unwrap()).unwrap();
                assert!(c.uri.ends_with("@198.18.2.10:5060"), "rewritten: {}", c.uri);
            }
            "3.4.1 inv2543" => {
                assert_eq!(
                    m.header("Max-Forwards"),
                    Some("69"),
                    "a proxy adds Max-Forwards"
                );
                assert_eq!(
                    m.headers_named("Record-Route").nth(2),
                    Some("<sip:UserB@example.com;maddr=ss1.example.com>")
                );
                assert!(m.has_sdp());
            }
            other => panic!("no check for {other}"),
        }
    }
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_3_5_bext01_proxy_require_gets_420_listing_the_tags() {
    let mut h = Harness::new();
    let (_, data, _) = invalid_cases()
        .into_iter()
        .find(|c| c.0 == "3.3.5 bext01")
        .unwrap();
    let out = recv_bytes(&mut h, Side::Access, Transport::Tcp, UE, data.clone());
    assert_eq!(out.len(), 1);
    assert_eq!(code(&out[0]), Some(420));
    assert_eq!(
        out[0].msg.header("Unsupported"),
        Some("noProxiesSupportThis, norDoAnyProxiesSupportThis")
    );
    // Require alone is the UAS's business: forwarded.
    let raw = String::from_utf8(data).unwrap().replace(
        "Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis\r\n",
        "",
    );
    let raw = raw.replace("branch=z9hG4bKkdjuw", "branch=z9hG4bKkdjuw2");
    let out = recv_bytes(&mut h, Side::Access, Transport::Tcp, UE, raw.into_bytes());
    let f = forwarded(&out);
    assert_eq!(
        f.msg.header("Require"),
        Some("nothingSupportsThis, nothingSupportsThisEither")
    );
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_3_12_cparam01_and_3_3_13_cparam02_contact_vs_uri_parameters() {
    let mut h = Harness::new();
    for (call, contact, stored) in [
        // addr-spec: `;unknownparam` is a Contact header parameter
        (
            "cparam01",
            "sip:+19725552222@gw1.example.net;unknownparam",
            "sip:+19725552222@gw1.example.net",
        ),
        // in <>: a URI parameter, part of the binding
        (
            "cparam02",
            "<sip:+19725552222@gw1.example.net;unknownparam>",
            "sip:+19725552222@gw1.example.net;unknownparam",
        ),
    ] {
        let head = format!(
            "REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bK{call}
Max-Forwards: 70
From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe
To: sip:watson@example.com
Call-ID: {call}.70710@saturn.example.com
CSeq: 2 REGISTER
Contact: {contact}
l: 0
"
        );
        let out = from_ue(&mut h, build(&head, b""));
        let f = forwarded(&out).msg.clone();
        let c = NameAddr::parse(f.header("Contact").unwrap()).unwrap();
        if call == "cparam01" {
            assert_eq!(c.params, vec![("unknownparam".to_string(), None)], "{call}");
        } else {
            assert!(c.params.is_empty(), "{call}: {:?}", c.params);
        }
        let ok = respond(&f, 200, "OK", Some("r"), None, None).replace(
            "Content-Length: 0",
            &format!("Contact: <{}>;expires=3600\r\nContent-Length: 0", c.uri),
        );
        let back = h.recv(Side::Core, NEXT_HOP, &ok);
        let got = NameAddr::parse(back[0].msg.header("Contact").unwrap()).unwrap();
        assert_eq!(got.uri, stored, "{call}: the UE sees its own contact");
    }
    assert_eq!(h.core.registration_count(), 2);
    h.assert_replay_equal();
}

#[test]
fn rfc4475_3_3_10_bcast_2xx_is_never_sent_to_a_broadcast_via() {
    // A 2xx to INVITE that matches no client transaction of ours is dropped
    // (responses are never routed by Via), so a Via naming a broadcast,
    // multicast, unspecified — or any other — address is never followed.
    let mut h = Harness::new();
    let body = sdp_of("198.18.2.20", 7000);
    for addr in ["255.255.255.255", "224.0.0.1", "0.0.0.0", "198.18.255.255"] {
        let resp = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {BGF_CORE};branch=z9hG4bK-bgf-none;rport\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bK1saber23\r\nCall-ID: bcast.0384840201234ksdfak3j2erwedfsASdf\r\nCSeq: 35 INVITE\r\nFrom: sip:user@example.com;tag=11141343\r\nTo: sip:user@example.edu;tag=2229\r\nContent-Type: application/sdp\r\nContact: <sip:user@198.18.2.28>\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let out = h.recv(Side::Core, NEXT_HOP, &resp);
        assert!(out.is_empty(), "{addr}: not followed: {out:#?}");
    }
    assert_eq!(h.core.stats().responses_unmatched, 4);
    h.assert_replay_equal();
}

// ------------------------------- rsipstack defects, checked through the core

#[test]
fn several_vias_on_one_line_are_split_and_responses_follow_the_right_one() {
    let mut h = Harness::new();
    let inv = sipp_invite("mv", "z9hG4bK-mv1", UE, 6000).replace(
        "Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bK-mv1\r\n",
        "Via: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bK-mv1;rport, SIP/2.0/UDP [2001:db8::9]:5062;branch=z9hG4bK-mv0;received=2001:db8::99, SIP/2.0/TCP 198.18.1.150;branch=z9hG4bK-mvx\r\n",
    );
    let out = h.recv(Side::Access, UE, &inv);
    let f = forwarded(&out).clone();
    let vias: Vec<&str> = f.msg.headers_named("Via").collect();
    assert_eq!(vias.len(), 4, "{}", f.raw);
    assert_our_via_on_top(&f);
    assert_eq!(
        vias[1],
        "SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bK-mv1;rport=5061"
    );
    assert_eq!(
        vias[2], "SIP/2.0/UDP [2001:db8::9]:5062;branch=z9hG4bK-mv0;received=2001:db8::99",
        "IPv6 received= kept whole"
    );
    assert_eq!(vias[3], "SIP/2.0/TCP 198.18.1.150;branch=z9hG4bK-mvx");
    assert_eq!(
        f.raw.matches("\r\nVia: ").count(),
        4,
        "one Via per line on the wire"
    );
    let ok = respond(
        &f.msg,
        200,
        "OK",
        Some("t"),
        Some("sip:svc@198.18.2.20"),
        Some(&sdp_of("198.18.2.20", 7000)),
    );
    let out = h.recv(Side::Core, NEXT_HOP, &ok);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst, sa(UE), "to the first of the Vias on that line");
    let back: Vec<&str> = out[0].msg.headers_named("Via").collect();
    assert_eq!(back, &vias[1..], "the rest relayed unchanged");
    // A retransmitted 200 is relayed again to the server transaction's
    // upstream (never by Via).
    let out = h.recv(Side::Core, NEXT_HOP, &ok);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst, sa(UE));
    h.assert_replay_equal();
}

#[test]
fn register_contact_keeps_transport_tcp_in_binding_and_200() {
    let mut h = Harness::new();
    let reg = "REGISTER sip:ims.example SIP/2.0\r\nv: SIP/2.0/TCP 198.18.1.100:5061;branch=z9hG4bK-rt1\r\nf: <sip:alice@ims.example>;tag=r1\r\nt: <sip:alice@ims.example>\r\ni: regtcp\r\nCSeq: 1 REGISTER\r\nm: <sip:alice@198.18.1.100:5061;transport=tcp>;expires=600\r\nMax-Forwards: 70\r\nl: 0\r\n\r\n";
    let out = h.recv_t(Side::Access, Transport::Tcp, UE, reg);
    let f = forwarded(&out).msg.clone();
    let c = NameAddr::parse(f.header("Contact").unwrap()).unwrap();
    assert_eq!(c.param("expires").as_deref(), Some("600"));
    let ok = respond(&f, 200, "OK", Some("reg"), None, None).replace(
        "Content-Length: 0",
        &format!("Contact: <{}>;expires=600\r\nContent-Length: 0", c.uri),
    );
    let out = h.recv(Side::Core, NEXT_HOP, &ok);
    assert_eq!(out[0].transport, Transport::Tcp);
    assert_eq!(
        NameAddr::parse(out[0].msg.header("Contact").unwrap())
            .unwrap()
            .uri,
        "sip:alice@198.18.1.100:5061;transport=tcp",
        "the 200 gives the UE its contact with ;transport=tcp"
    );
    // A terminating INVITE reaches the UE over TCP with that URI.
    let body = sdp_of("198.18.2.30", 8000);
    let inv = format!(
        "INVITE {} SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.2.20:5060;branch=z9hG4bK-tt1\r\nFrom: <sip:bob@ims.example>;tag=b1\r\nTo: <sip:alice@ims.example>\r\nCall-ID: termtcp\r\nCSeq: 5 INVITE\r\nContact: <sip:bob@198.18.2.30>\r\nMax-Forwards: 60\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        c.uri,
        body.len()
    );
    let out = h.recv(Side::Core, NEXT_HOP, &inv);
    let to_ue = out.iter().find(|s| s.side == Side::Access).unwrap();
    assert_eq!(to_ue.transport, Transport::Tcp);
    assert_eq!(to_ue.dst, sa(UE));
    assert_eq!(
        ruri(&to_ue.msg),
        "sip:alice@198.18.1.100:5061;transport=tcp"
    );
    h.assert_replay_equal();
}

#[test]
fn record_route_list_on_one_line_is_relayed_without_stray_separators() {
    // What the UE sees of the core's Record-Route list (topology hiding off:
    // with it, the UE sees only our entry — tests/border.rs).
    let mut cfg = config();
    cfg.security.access.topology_hiding = false;
    let mut h = Harness::with(cfg);
    let out = h.recv(
        Side::Access,
        UE,
        &sipp_invite("rrl", "z9hG4bK-rrl", UE, 6000),
    );
    let f = forwarded(&out).msg.clone();
    let ours: Vec<&str> = f.headers_named("Record-Route").collect();
    let ok = respond(
        &f,
        200,
        "OK",
        Some("t"),
        Some("sip:svc@198.18.2.20"),
        Some(&sdp_of("198.18.2.20", 7000)),
    );
    // The core's proxies put theirs in front, all on one line with ours.
    let rr_line = format!(
        "Record-Route: <sip:198.18.2.30;lr>, <sip:p2@198.18.2.31;lr;ftag=x>, {}\r\n",
        ours.join(", ")
    );
    let mut ok = ok;
    for r in &ours {
        ok = ok.replace(&format!("Record-Route: {r}\r\n"), "");
    }
    let ok = ok.replacen("\r\n", &format!("\r\n{rr_line}"), 1);
    let out = h.recv(Side::Core, NEXT_HOP, &ok);
    assert_eq!(out.len(), 1);
    let rr: Vec<&str> = out[0].msg.headers_named("Record-Route").collect();
    assert_eq!(rr.len(), 4);
    assert_eq!(rr[0], "<sip:198.18.2.30;lr>");
    assert_eq!(rr[1], "<sip:p2@198.18.2.31;lr;ftag=x>");
    assert!(
        !out[0].raw.contains(";,") && !out[0].raw.contains(",;"),
        "{}",
        out[0].raw
    );
    h.assert_replay_equal();
}

#[test]
fn compact_forms_tel_and_ipv6_request_uris_and_binary_bodies() {
    let mut h = Harness::new();
    // Compact header names everywhere and a tel: Request-URI.
    let body = sdp_of("198.18.1.100", 6000);
    let inv = format!(
        "INVITE tel:+15551234567;phone-context=ims.example SIP/2.0\r\nv: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bK-cf1\r\nf: <sip:ue@ims.example>;tag=c1\r\nt: <tel:+15551234567>\r\ni: compact1\r\nCSeq: 1 INVITE\r\nm: <sip:ue@198.18.1.100:5061>\r\nk: 100rel\r\nMax-Forwards: 70\r\nc: application/sdp\r\nl: {}\r\n\r\n{body}",
        body.len()
    );
    let out = h.recv(Side::Access, UE, &inv);
    let f = forwarded(&out);
    assert_eq!(ruri(&f.msg), "tel:+15551234567;phone-context=ims.example");
    assert_eq!(f.msg.header("To"), Some("<tel:+15551234567>"));
    assert_eq!(f.msg.header("Supported"), Some("100rel"));
    assert!(f.msg.has_sdp(), "c: is Content-Type, the SDP was anchored");
    assert_eq!(h.core.session_count(), 1);
    // An IPv6 Request-URI.
    let v6 = sipp_invite("v6ruri", "z9hG4bK-v6r", UE, 6002).replace(
        "INVITE sip:service@198.18.2.20:5060",
        "INVITE sip:service@[fd00::20]:5060",
    );
    let out = h.recv(Side::Access, UE, &v6);
    assert_eq!(ruri(&forwarded(&out).msg), "sip:service@[fd00::20]:5060");
    // A body of every octet value, forwarded byte for byte.
    let bin: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
    let head = format!(
        "MESSAGE sip:bob@ims.example SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.100:5061;branch=z9hG4bK-bin\r\nFrom: <sip:ue@ims.example>;tag=b\r\nTo: <sip:bob@ims.example>\r\nCall-ID: bin1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        bin.len()
    );
    let mut data = head.into_bytes();
    data.extend_from_slice(&bin);
    let out = from_ue(&mut h, data);
    let f = forwarded(&out);
    assert_eq!(f.msg.body, bin);
    assert!(f
        .raw
        .contains(&format!("Content-Length: {}\r\n", bin.len())));
    h.assert_replay_equal();
}

#[test]
fn ipv6_received_added_by_us_is_written_whole_and_used() {
    let mut cfg = config();
    cfg.access.sip = sa("[fd00::10]:5060");
    cfg.access.media_ip = "fd00::10".parse().unwrap();
    let mut h = Harness::with(cfg);
    // The UE's Via names an address it is not sending from (NAT64/privacy).
    let req = "OPTIONS sip:bob@ims.example SIP/2.0\r\nVia: SIP/2.0/UDP [fd00::1]:5061;branch=z9hG4bK-v6rcv\r\nFrom: <sip:ue@ims.example>;tag=6\r\nTo: <sip:bob@ims.example>\r\nCall-ID: v6rcv\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nl: 0\r\n\r\n";
    h.now += 10;
    let out = sent(&h.apply(Input::Sip(SipIn {
        side: Side::Access,
        transport: Transport::Udp,
        src: sa("[fd00::100]:5061"),
        dst: sa("[fd00::10]:5060"),
        at: h.now,
        data: req.as_bytes().to_vec(),
    })));
    let f = forwarded(&out).clone();
    let ue_via = f.msg.headers_named("Via").nth(1).unwrap();
    assert_eq!(
        ue_via,
        "SIP/2.0/UDP [fd00::1]:5061;branch=z9hG4bK-v6rcv;received=fd00::100"
    );
    let back = answer(&mut h, &f.msg, 200, "OK");
    assert_eq!(back[0].dst, sa("[fd00::100]:5061"), "answered to received=");
    assert!(back[0].raw.contains(";received=fd00::100\r\n"));
    h.assert_replay_equal();
}

// ------------------------------------------------------- property: no panic

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(usize, u8),
        Truncate(usize),
        DupLine(usize),
        Delete(usize, usize),
        Insert(usize, Vec<u8>),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
            1 => any::<usize>().prop_map(Mutation::Truncate),
            2 => any::<usize>().prop_map(Mutation::DupLine),
            1 => (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
            2 => (
                any::<usize>(),
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 1..8),
                    Just(b",".to_vec()),
                    Just(b"\r\n".to_vec()),
                    Just(b"\r\n ".to_vec()),
                    Just(b";".to_vec()),
                    Just(b"\"".to_vec()),
                    Just(b"<".to_vec()),
                    Just(b"%00".to_vec()),
                ]
            )
                .prop_map(|(i, b)| Mutation::Insert(i, b)),
        ]
    }

    fn apply(data: &mut Vec<u8>, m: &Mutation) {
        let len = data.len().max(1);
        match m {
            Mutation::Flip(i, b) => {
                if !data.is_empty() {
                    data[i % len] = *b;
                }
            }
            Mutation::Truncate(n) => data.truncate(n % len),
            Mutation::DupLine(i) => {
                let lines: Vec<usize> = data
                    .windows(2)
                    .enumerate()
                    .filter(|(_, w)| *w == b"\r\n")
                    .map(|(p, _)| p + 2)
                    .collect();
                if lines.len() >= 2 {
                    let k = i % (lines.len() - 1);
                    let line = data[lines[k]..lines[k + 1]].to_vec();
                    let at = lines[k];
                    data.splice(at..at, line);
                }
            }
            Mutation::Delete(i, n) => {
                let s = i % len;
                let e = (s + n).min(data.len());
                if s < e {
                    data.drain(s..e);
                }
            }
            Mutation::Insert(i, b) => {
                let at = i % (data.len() + 1);
                data.splice(at..at, b.iter().copied());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn mutated_invites_never_panic_and_get_forwarded_or_4xx(
            muts in proptest::collection::vec(mutation(), 1..5),
            tcp in any::<bool>(),
        ) {
            let mut data = sipp_invite("prop", "z9hG4bK-prop", UE, 6000).into_bytes();
            for m in &muts {
                apply(&mut data, m);
            }
            let mut h = Harness::new();
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            let out = recv_bytes(&mut h, Side::Access, transport, UE, data);
            let forwarded = out.iter().filter(|s| s.side == Side::Core).count();
            prop_assert!(forwarded <= 1, "{out:#?}");
            for s in &out {
                match (s.side, code(s)) {
                    (Side::Core, None) => {
                        let top = Via::parse(s.msg.top_via().unwrap()).unwrap();
                        prop_assert_eq!(top.sent_by(), BGF_CORE);
                    }
                    (Side::Access, Some(100)) => prop_assert_eq!(forwarded, 1, "100 only with a forward"),
                    (Side::Access, Some(c)) => prop_assert!((400..500).contains(&c), "{}", s.raw),
                    _ => prop_assert!(false, "unexpected send: {s:#?}"),
                }
            }
            // Whatever happened, the core still serves a call and replays.
            establish(&mut h, "prop-after");
            h.assert_replay_equal();
        }
    }
}
