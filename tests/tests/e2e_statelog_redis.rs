//! Output commit end to end with the Redis Streams backend: `bgf active`
//! with `[statelog] backend = "redis"` against a real `redis-server`
//! (started by hand on the test's loopback /24). SIPp calls complete through
//! the commit and the log, read back with `RedisStore`, replays into a fresh
//! core equal to the live state; a redis crash (kill -9) degrades the
//! instance (503 for new INVITEs, the call in progress continues), its
//! restart on the same AOF clears it and no acknowledged record is lost;
//! with `redis_replicas = 1` a dead replica degrades the instance too.

use bgf_tests::logcheck::{self, degraded, num, rt, statelog};
use bgf_tests::net::host;
use bgf_tests::redisproc::{require_redis, Persistence, RedisProcess};
use bgf_tests::sipp::require_sipp;
use bgf_tests::sipraw::{status_code, RawSip};
use bgf_tests::util::TestDir;
use bgf_tests::{wait_until, Bed, Sipp};
use sip_control::{Core, CoreConfig};
use state_log::redis_store::{RedisConfig, RedisStore};
use state_log::LogStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const SIPP_T: Duration = Duration::from_secs(90);
const READY: Duration = Duration::from_secs(10);
/// Redis primary and replica: hosts .7 and .8 of the test's /24.
const REDIS_HOST: u8 = 7;
const REPLICA_HOST: u8 = 8;

fn require(test: &str) -> bool {
    require_sipp(test) && require_redis(test)
}

/// A bed whose bgf logs to a redis primary (AOF, fsync always) on .7, and
/// optionally to a replica of it on .8 (`redis_replicas = 1`).
struct RedisBed {
    bed: Bed,
    primary: RedisProcess,
    replica: Option<RedisProcess>,
    _data: TestDir,
}

fn bed_with_redis(name: &str, with_replica: bool, extra: &str) -> RedisBed {
    let data = TestDir::new(&format!("{name}-redis"));
    let mut primary = None;
    let mut replica = None;
    let bed = Bed::start_with(name, |net, cfg| {
        let p = RedisProcess::start(
            net.addr(REDIS_HOST, 6379),
            &data.join("primary"),
            Persistence::AofAlways,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut replicas = 0;
        if with_replica {
            let r = RedisProcess::start_replica(
                net.addr(REPLICA_HOST, 6379),
                &data.join("replica"),
                p.addr,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                p.wait_replicas_acking(1, Duration::from_secs(20)),
                "the replica never acknowledged a write\n{}\n{}",
                p.logs(),
                r.logs()
            );
            replica = Some(r);
            replicas = 1;
        }
        cfg.statelog = Some(format!(
            "backend = \"redis\"\nredis_url = \"{}\"\nredis_replicas = {replicas}\n{extra}",
            p.url()
        ));
        primary = Some(p);
    });
    RedisBed {
        bed,
        primary: primary.unwrap(),
        replica,
        _data: data,
    }
}

/// A reading client (its connections live on the caller's runtime).
async fn redis_store(url: &str) -> RedisStore {
    RedisStore::connect(RedisConfig {
        url: url.to_string(),
        command_timeout: Duration::from_secs(5),
        ..RedisConfig::default()
    })
    .await
    .unwrap()
}

/// The instance's last seq in redis.
fn redis_last_seq(url: &str, instance: &str) -> u64 {
    rt().block_on(async { redis_store(url).await.last_seq(instance).await.unwrap() })
}

/// Replay the instance's whole log (from its checkpoint if any) read from
/// redis into a fresh core; returns it and the records read.
fn replay(url: &str, cfg: &CoreConfig) -> (Core, u64) {
    rt().block_on(async { logcheck::replay(Arc::new(redis_store(url).await), cfg).await })
}

fn assert_replay_equals_live(bed: &Bed, url: &str) -> u64 {
    logcheck::assert_replay_equals_live(bed, |cfg| replay(url, cfg))
}

fn invite(call_id: &str, from: SocketAddr, to: SocketAddr) -> Vec<u8> {
    format!(
        "INVITE sip:svc@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:ue@{from}>;tag=t-{call_id}\r\n\
         To: <sip:svc@{to}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:ue@{from}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Sends a raw INVITE from the rogue host and asserts a 503 with
/// Retry-After comes back.
fn assert_invite_refused_503(bed: &Bed, call_id: &str) {
    let raw = RawSip::bind(bed.net.addr(host::ROGUE, 5060)).unwrap();
    raw.send(
        bed.access_sip(),
        &invite(call_id, raw.local(), bed.access_sip()),
    )
    .unwrap();
    let resp = raw
        .recv_response(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no answer to the INVITE: {}", bed.stats()));
    assert_eq!(status_code(&resp), Some(503), "{resp}\n{}", bed.stats());
    assert!(resp.contains("Retry-After:"), "{resp}");
}

/// Starts a 1-call UAS pool of `calls` and the long call from UE port 5070;
/// waits until the long call is answered through the BGF.
fn start_long_call(
    bed: &Bed,
    uas_calls: u32,
    pause_ms: u64,
) -> (bgf_tests::SippRun, bgf_tests::SippRun) {
    let uas = bed
        .core_sipp("uas", "uas_basic.xml")
        .key("rtp_port", 42000)
        .calls(uas_calls)
        .spawn_bound(bed.dir.path(), READY);
    let long = Sipp::new("long", "uac_basic.xml")
        .local(bed.net.addr(host::UE, 5070))
        .remote(bed.access_sip())
        .key("rtp_port", 41500)
        .calls(1)
        .pause_ms(pause_ms)
        .spawn(bed.dir.path());
    assert!(
        bed.wait_answered_pinhole(Duration::from_secs(10)).is_some(),
        "long call not answered: {}",
        bed.stats()
    );
    (uas, long)
}

#[test]
fn redis_sipp_calls_through_output_commit_and_the_log_replays_to_the_live_state() {
    if !require("redis_sipp_calls_through_output_commit_and_the_log_replays_to_the_live_state") {
        return;
    }
    let rb = bed_with_redis("redis-replay", false, "");
    let (bed, url) = (&rb.bed, rb.primary.url());
    assert_eq!(
        statelog(bed).get("backend").and_then(|b| b.as_str()),
        Some("redis"),
        "{}",
        bed.stats()
    );
    let (uas, long) = start_long_call(bed, 21, 12_000);
    let uac = bed
        .ue_sipp("uac", "uac_basic.xml")
        .key("rtp_port", 41000)
        .calls(20)
        .rate(10, 20)
        .pause_ms(300)
        .spawn(bed.dir.path())
        .wait(SIPP_T);
    uac.assert_all_succeeded(20);
    // The long call is still up: replay the log and compare.
    assert_eq!(bed.stat("sessions"), 1, "{}", bed.stats());
    assert_replay_equals_live(bed, &url);
    let long = long.wait(SIPP_T);
    assert!(long.ok(), "{}", long.describe());
    let uas = uas.wait(SIPP_T);
    assert!(uas.ok(), "{}", uas.describe());
    assert!(bed.wait_idle(Duration::from_secs(15)), "{}", bed.stats());
    let n = assert_replay_equals_live(bed, &url);
    let l = statelog(bed);
    assert_eq!(
        l.get("degraded"),
        Some(&serde_json::Value::Bool(false)),
        "{l}"
    );
    assert_eq!(num(&l, "held"), 0, "{l}");
    assert_eq!(num(&l, "append_failures"), 0, "{l}");
    assert!(num(&l, "appends") > 0, "{l}");
    // Everything assigned is in redis, nothing more.
    assert_eq!(n, num(&l, "durable_seq"), "{l}");
    assert_eq!(redis_last_seq(&url, &bed.bgf.config.name), n, "{l}");
}

#[test]
fn redis_crash_degrades_refuses_new_calls_with_503_and_restart_loses_nothing() {
    if !require("redis_crash_degrades_refuses_new_calls_with_503_and_restart_loses_nothing") {
        return;
    }
    let mut rb = bed_with_redis("redis-crash", false, "append_timeout_ms = 300\n");
    let url = rb.primary.url();
    let (uas, long) = start_long_call(&rb.bed, 2, 8_000);
    let bed = &rb.bed;
    // Everything so far is acknowledged: remember how far.
    let acked = wait_until(Duration::from_secs(10), || {
        let l = statelog(bed);
        (num(&l, "durable_seq") + 1 == num(&l, "next_seq")).then(|| num(&l, "durable_seq"))
    })
    .unwrap_or_else(|| panic!("records never became durable: {}", bed.stats()));
    assert!(acked > 0, "{}", bed.stats());

    rb.primary.kill();
    let bed = &rb.bed;
    assert!(
        wait_until(Duration::from_secs(10), || degraded(bed)?.then_some(())).is_some(),
        "never degraded: {}",
        bed.stats()
    );
    assert_invite_refused_503(bed, "refused-1");
    let l = statelog(bed);
    assert!(num(&l, "refused_503") >= 1, "{l}");
    assert!(num(&l, "append_failures") >= 1, "{l}");
    assert_eq!(
        bed.stat("sessions"),
        1,
        "the long call must continue: {}",
        bed.stats()
    );

    // Redis returns on the same AOF and port: degraded clears, and every
    // acknowledged record survived the crash.
    rb.primary.restart().unwrap_or_else(|e| panic!("{e}"));
    let bed = &rb.bed;
    assert!(
        wait_until(Duration::from_secs(15), || (!degraded(bed)?).then_some(())).is_some(),
        "degraded never cleared: {}",
        bed.stats()
    );
    let survived = redis_last_seq(&url, &bed.bgf.config.name);
    assert!(
        survived >= acked,
        "acknowledged seq {acked} but redis has {survived} after the restart"
    );
    let uac = bed
        .ue_sipp("uac", "uac_basic.xml")
        .key("rtp_port", 41000)
        .calls(1)
        .pause_ms(200)
        .spawn(bed.dir.path())
        .wait(SIPP_T);
    assert!(uac.ok(), "{}", uac.describe());
    let long = long.wait(SIPP_T);
    assert!(long.ok(), "the long call failed: {}", long.describe());
    let uas = uas.wait(SIPP_T);
    assert!(uas.ok(), "{}", uas.describe());
    assert!(bed.wait_idle(Duration::from_secs(15)), "{}", bed.stats());
    let n = assert_replay_equals_live(bed, &url);
    assert!(
        n > acked,
        "{n} records replayed, {acked} acknowledged before"
    );
    assert_eq!(num(&statelog(bed), "held"), 0, "{}", bed.stats());
}

#[test]
fn redis_dead_replica_degrades_holds_unreplicated_messages_and_its_return_recovers() {
    if !require("redis_dead_replica_degrades_holds_unreplicated_messages_and_its_return_recovers") {
        return;
    }
    // Default append_timeout (1 s): WAIT on a loaded machine can take more
    // than a few hundred ms even with a healthy replica.
    let mut rb = bed_with_redis("redis-replica", true, "");
    let url = rb.primary.url();
    // Warm-up: the instance's first append with WAIT can take over 500 ms
    // on a loaded machine, and the INVITE retransmissions held meanwhile
    // reach the UAS in a burst that SIPp rejects. Take it with a raw
    // INVITE before the SIPp peers start (nobody answers it; its session
    // stays and is part of the replayed state).
    let warm = RawSip::bind(rb.bed.net.addr(host::ROGUE, 5062)).unwrap();
    warm.send(
        rb.bed.access_sip(),
        &invite("warm-up-1", warm.local(), rb.bed.access_sip()),
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let l = statelog(&rb.bed);
            (num(&l, "durable_seq") >= 1 && num(&l, "held") == 0).then_some(())
        })
        .is_some(),
        "the first append never completed: {}",
        rb.bed.stats()
    );
    // UAS calls: the long one, uac, the held INVITE once released (an
    // SDP-less INVITE the UAS aborts), uac2; room to spare so that the UAS
    // is still there for the long call's BYE.
    let (uas, long) = start_long_call(&rb.bed, 20, 12_000);
    let bed = &rb.bed;
    let uac = bed
        .ue_sipp("uac", "uac_basic.xml")
        .key("rtp_port", 41000)
        .calls(1)
        .pause_ms(200)
        .spawn(bed.dir.path())
        .wait(SIPP_T);
    assert!(uac.ok(), "{}", uac.describe());
    assert_eq!(degraded(bed), Some(false), "{}", bed.stats());

    // The replica dies: appends land on the primary but are no longer
    // acknowledged by a replica. The idle probe reads the primary, which
    // still answers; the next append (a new INVITE) is what fails.
    rb.replica.as_mut().unwrap().kill();
    let bed = &rb.bed;
    let raw = RawSip::bind(bed.net.addr(host::ROGUE, 5061)).unwrap();
    raw.send(
        bed.access_sip(),
        &invite("unreplicated-1", raw.local(), bed.access_sip()),
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || degraded(bed)?.then_some(())).is_some(),
        "never degraded: {}",
        bed.stats()
    );
    // While the replica is away the instance stays degraded (retries of the
    // unreplicated record must not count as durable because it is on the
    // primary) and refuses new calls.
    assert_invite_refused_503(bed, "refused-1");
    assert_invite_refused_503(bed, "refused-2");
    // Several retries of the append happen meanwhile: none may count the
    // record as durable.
    let until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < until {
        let l = statelog(bed);
        assert_eq!(l.get("degraded"), Some(&true.into()), "{}", bed.stats());
        assert!(num(&l, "held") >= 1, "{l}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let l = statelog(bed);
    assert!(num(&l, "held") >= 1, "{l}");
    assert!(num(&l, "refused_503") >= 2, "{l}");
    // Nothing about the unreplicated INVITE went out: not forwarded (no
    // 180 back), not answered.
    assert!(
        raw.recv(Duration::from_millis(200)).is_none(),
        "a message whose record no replica acknowledged was released: {l}"
    );

    // The replica returns: the held INVITE goes out, degraded clears, new
    // calls complete.
    rb.replica
        .as_mut()
        .unwrap()
        .restart()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        rb.primary.wait_replicas_acking(1, Duration::from_secs(20)),
        "the replica never came back\n{}",
        rb.primary.logs()
    );
    let bed = &rb.bed;
    assert!(
        wait_until(Duration::from_secs(15), || (!degraded(bed)?).then_some(())).is_some(),
        "degraded never cleared: {}",
        bed.stats()
    );
    // The held INVITE was released and forwarded: the UAS rings back.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut rang = false;
    while !rang && std::time::Instant::now() < deadline {
        rang = raw
            .recv(Duration::from_millis(500))
            .is_some_and(|(m, _)| matches!(status_code(&m), Some(180) | Some(200)));
    }
    assert!(rang, "the held INVITE was never released: {}", bed.stats());
    let uac = bed
        .ue_sipp("uac2", "uac_basic.xml")
        .key("rtp_port", 41100)
        .calls(1)
        .pause_ms(200)
        .spawn(bed.dir.path())
        .wait(SIPP_T);
    assert!(uac.ok(), "{}", uac.describe());
    let long = long.wait(SIPP_T);
    assert!(long.ok(), "the long call failed: {}", long.describe());
    assert!(
        wait_until(Duration::from_secs(5), || (num(&statelog(bed), "held")
            == 0)
            .then_some(()))
        .is_some(),
        "{}",
        bed.stats()
    );
    // The raw calls are still up; the log still replays to the live state.
    assert_replay_equals_live(bed, &url);
    drop(uas);
}
