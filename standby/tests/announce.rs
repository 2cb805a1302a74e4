//! Address claim and announcement in network namespaces (root only): the
//! peer holds neighbour entries for the service addresses pointing at the
//! old owner's MAC; the standby adds the addresses (rtnetlink, IPv6 without
//! DAD, idempotent) and sends one round of gratuitous ARP / unsolicited NA;
//! the peer's entries move to the standby's MAC, and it reaches the standby.

mod netns;

use netns::*;
use standby::announce::Announcer;
use standby::netif::{self, AddrChange, IfAddr};
use std::net::IpAddr;
use std::time::{Duration, Instant};

fn wait_neigh(bed: &Bed, addr: &str, mac: &str, within: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        if bed.neigh(addr).is_some_and(|(ll, _)| ll == mac) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

#[test]
fn peer_neighbour_entries_move_to_the_standby_after_one_announcement() {
    if !root("peer_neighbour_entries_move_to_the_standby_after_one_announcement") {
        return;
    }
    let bed = Bed::new("sbA");
    let (peer, old) = (bed.ns("peer"), bed.ns("old"));
    // The peer talks to the old owner: entries for both addresses.
    assert!(sh(&peer, &format!("ping -c1 -W2 {SVC4}")).0);
    assert!(sh(&peer, &format!("ping -6 -c1 -W2 {SVC6}")).0);
    let old_mac = bed.mac("old");
    let sb_mac = bed.mac("sb");
    assert_eq!(bed.neigh(SVC4).unwrap().0, old_mac);
    assert_eq!(bed.neigh(SVC6).unwrap().0, old_mac);
    let before = (bed.neigh(SVC4).unwrap().1, bed.neigh(SVC6).unwrap().1);
    // The old owner dies (silently: link down on its side).
    ip(&format!("-n {old} link set eth0 down"));

    let addrs = [
        IfAddr {
            ifname: "eth0".into(),
            addr: SVC4.parse().unwrap(),
            prefix_len: 24,
        },
        IfAddr {
            ifname: "eth0".into(),
            addr: SVC6.parse().unwrap(),
            prefix_len: 64,
        },
    ];
    let (added, again, mac, sent_at, add_us) = in_ns(&bed.ns("sb"), move || {
        let ips: Vec<IpAddr> = addrs.iter().map(|a| a.addr).collect();
        let ann = Announcer::new("eth0", &ips).unwrap();
        let t = Instant::now();
        let added: Vec<AddrChange> = addrs
            .iter()
            .map(|a| netif::add_address(a).unwrap())
            .collect();
        let add_us = t.elapsed().as_micros();
        let again: Vec<AddrChange> = addrs
            .iter()
            .map(|a| netif::add_address(a).unwrap())
            .collect();
        let s = ann.send_once();
        assert_eq!((s.arp, s.na, s.errors), (2, 1, 0));
        (added, again, ann.mac(), Instant::now(), add_us)
    });
    assert_eq!(added, vec![AddrChange::Changed; 2]);
    assert_eq!(again, vec![AddrChange::Unchanged; 2], "idempotent");
    let mac_s = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(mac_s, sb_mac);
    // IPv6 usable at once (no DAD): not tentative.
    let a6 = ip(&format!("-n {} -6 addr show dev eth0", bed.ns("sb")));
    assert!(a6.contains(SVC6) && !a6.contains("tentative"), "{a6}");

    let v4 = wait_neigh(&bed, SVC4, &sb_mac, Duration::from_secs(3));
    let v6 = wait_neigh(&bed, SVC6, &sb_mac, Duration::from_secs(3));
    let seen = sent_at.elapsed();
    println!(
        "addresses added in {add_us} µs; peer entries (before: v4 {}, v6 {}) moved to the standby: v4 {v4:?}, v6 {v6:?} after polling began (sent {seen:?} ago, `ip neigh` polling resolution ~ms)",
        before.0, before.1
    );
    assert!(
        v4.is_some(),
        "IPv4 entry did not move: {:?}",
        bed.neigh(SVC4)
    );
    assert!(
        v6.is_some(),
        "IPv6 entry did not move: {:?}",
        bed.neigh(SVC6)
    );
    // And the peer now reaches the standby at the service addresses.
    assert!(sh(&peer, &format!("ping -c1 -W2 {SVC4}")).0);
    assert!(sh(&peer, &format!("ping -6 -c1 -W2 {SVC6}")).0);

    // Release is idempotent too.
    let rel = in_ns(&bed.ns("sb"), || {
        let a = IfAddr {
            ifname: "eth0".into(),
            addr: SVC4.parse().unwrap(),
            prefix_len: 24,
        };
        (
            netif::remove_address(&a).unwrap(),
            netif::remove_address(&a).unwrap(),
        )
    });
    assert_eq!(rel, (AddrChange::Changed, AddrChange::Unchanged));
}

#[test]
fn a_stale_entry_moves_too_and_errors_name_the_interface() {
    if !root("a_stale_entry_moves_too_and_errors_name_the_interface") {
        return;
    }
    let bed = Bed::new("sbB");
    let peer = bed.ns("peer");
    // A STALE entry pointing at the old MAC, as after a quiet period.
    let old_mac = bed.mac("old");
    ip(&format!(
        "-n {peer} neigh replace {SVC4} lladdr {old_mac} dev eth0 nud stale"
    ));
    ip(&format!(
        "-n {peer} neigh replace {SVC6} lladdr {old_mac} dev eth0 nud stale"
    ));
    ip(&format!("-n {} link set eth0 down", bed.ns("old")));
    let sb_mac = bed.mac("sb");
    let err = in_ns(&bed.ns("sb"), || {
        let ann = Announcer::new("eth0", &[SVC4.parse().unwrap(), SVC6.parse().unwrap()]).unwrap();
        ann.send_once();
        netif::add_address(&IfAddr {
            ifname: "nosuch0".into(),
            addr: SVC4.parse().unwrap(),
            prefix_len: 24,
        })
        .unwrap_err()
        .to_string()
    });
    assert!(err.contains("nosuch0"), "{err}");
    assert!(wait_neigh(&bed, SVC4, &sb_mac, Duration::from_secs(3)).is_some());
    assert!(wait_neigh(&bed, SVC6, &sb_mac, Duration::from_secs(3)).is_some());
}
