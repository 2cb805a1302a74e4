//! The `[media.xdp]` section (backend `xdp`, see docs/CONFIG.md): parsing,
//! checks, and starting an XDP plane with the interfaces resolved — from
//! the section, else the interface carrying the media address (or, on a
//! standby that does not hold it yet, its subnet). The fallback to kernel
//! sockets when XDP cannot start is in `media::start_plane`.

use crate::ifaddrs;
use media_plane::xdp::{XdpAddr, XdpMode, XdpSettings};
use media_plane::{MediaConfig, MediaEvent, MediaPlane, Side};
use serde::Deserialize;
use std::net::IpAddr;

/// `[media.xdp]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdpSection {
    pub access_interface: Option<String>,
    pub core_interface: Option<String>,
    pub mode: Option<String>,
    pub max_pinholes: Option<u32>,
    pub upcall_ring_kib: Option<u32>,
}

/// The XDP backend's validated settings: interfaces (empty = find them at
/// start) and the plane's media addresses with their port ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpMedia {
    pub settings: XdpSettings,
    pub addrs: Vec<XdpAddr>,
}

/// One side's media address and RTP port range, for [`xdp_settings`].
pub struct SideMedia {
    pub side: Side,
    pub ip: IpAddr,
    pub ports: (u16, u16),
}

/// Check `[media.xdp]` (optional: every key has a default).
pub fn xdp_settings(
    sec: Option<&XdpSection>,
    media: [SideMedia; 2],
    errs: &mut Vec<String>,
) -> Option<XdpMedia> {
    let d = XdpSettings::default();
    let empty = XdpSection::default();
    let sec = sec.unwrap_or(&empty);
    let mode = match sec.mode.as_deref().map(str::trim) {
        None => XdpMode::Auto,
        Some(m) => match XdpMode::parse(m) {
            Some(m) => m,
            None => {
                errs.push(format!(
                    "media.xdp.mode: \"{m}\" is not a mode — use \"auto\" (native where the driver supports it, else generic), \"native\" or \"generic\""
                ));
                return None;
            }
        },
    };
    let iface = |v: &Option<String>| v.as_deref().map(str::trim).unwrap_or("").to_string();
    let settings = XdpSettings {
        access_interface: iface(&sec.access_interface),
        core_interface: iface(&sec.core_interface),
        mode,
        max_pinholes: sec.max_pinholes.unwrap_or(d.max_pinholes),
        upcall_ring_kib: sec.upcall_ring_kib.unwrap_or(d.upcall_ring_kib),
    };
    // Interfaces may be left out (found at start); check the rest.
    let mut probe = settings.clone();
    for s in [Side::Access, Side::Core] {
        if probe.interface(s).is_empty() {
            match s {
                Side::Access => probe.access_interface = "-".into(),
                Side::Core => probe.core_interface = "-".into(),
            }
        }
    }
    let problems = probe.problems();
    let ok = problems.is_empty();
    errs.extend(problems);
    let mut addrs: Vec<XdpAddr> = Vec::new();
    for m in media {
        if m.ip.is_unspecified() {
            return None;
        }
        addrs.push(XdpAddr {
            side: m.side,
            ip: m.ip,
            port_min: m.ports.0,
            port_max: m.ports.1,
        });
    }
    ok.then_some(XdpMedia { settings, addrs })
}

/// `x`'s settings with missing interfaces found on this host.
pub fn resolve_interfaces(x: &XdpMedia) -> Result<XdpSettings, String> {
    let mut s = x.settings.clone();
    let list = ifaddrs::list().unwrap_or_default();
    for side in [Side::Access, Side::Core] {
        if !s.interface(side).is_empty() {
            continue;
        }
        let ip = x
            .addrs
            .iter()
            .find(|a| a.side == side)
            .map(|a| a.ip)
            .ok_or_else(|| format!("no {side} media address"))?;
        let name = ifaddrs::interface_for(&list, ip).ok_or_else(|| {
            format!("no interface carries the {side} media address {ip} or its subnet — set media.xdp.{side}_interface")
        })?;
        match side {
            Side::Access => s.access_interface = name,
            Side::Core => s.core_interface = name,
        }
    }
    Ok(s)
}

/// Start an XDP plane (see `MediaPlane::start_xdp`); `serve`: forward at
/// once (an active) or only after `announce` (a standby's idle plane).
pub fn start(
    cfg: MediaConfig,
    x: &XdpMedia,
    serve: bool,
    sink: impl Fn(MediaEvent) + Send + Sync + 'static,
) -> Result<MediaPlane, String> {
    let settings = resolve_interfaces(x)?;
    MediaPlane::start_xdp(cfg, &settings, x.addrs.clone(), serve, Box::new(sink))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media() -> [SideMedia; 2] {
        [
            SideMedia {
                side: Side::Access,
                ip: "fd00:a::41".parse().unwrap(),
                ports: (20000, 29999),
            },
            SideMedia {
                side: Side::Core,
                ip: "198.18.1.41".parse().unwrap(),
                ports: (30000, 39999),
            },
        ]
    }

    #[test]
    fn section_defaults_and_errors_name_the_key() {
        let mut errs = Vec::new();
        let x = xdp_settings(None, media(), &mut errs).unwrap();
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(x.settings.max_pinholes, 131_072);
        assert_eq!(x.settings.mode, XdpMode::Auto);
        assert_eq!(x.addrs[1].port_max, 39999);
        let sec: XdpSection = toml::from_str(
            "access_interface = \"eth1\"\nmode = \"generic\"\nmax_pinholes = 200000\n",
        )
        .unwrap();
        let x = xdp_settings(Some(&sec), media(), &mut errs).unwrap();
        assert_eq!(x.settings.access_interface, "eth1");
        assert_eq!(x.settings.mode, XdpMode::Generic);
        let sec: XdpSection = toml::from_str("mode = \"fast\"\n").unwrap();
        assert!(xdp_settings(Some(&sec), media(), &mut errs).is_none());
        let sec: XdpSection = toml::from_str("max_pinholes = 0\nupcall_ring_kib = 3\n").unwrap();
        assert!(xdp_settings(Some(&sec), media(), &mut errs).is_none());
        let all = errs.join("\n");
        for k in [
            "media.xdp.mode",
            "media.xdp.max_pinholes",
            "media.xdp.upcall_ring_kib",
        ] {
            assert!(all.contains(k), "{k} in {all}");
        }
        assert!(toml::from_str::<XdpSection>("queues = 2\n").is_err());
    }

    #[test]
    fn interfaces_are_found_by_address_or_named() {
        let mut errs = Vec::new();
        let mut m = media();
        m[0].ip = "127.0.0.1".parse().unwrap();
        m[1].ip = "198.19.254.77".parse().unwrap();
        let x = xdp_settings(None, m, &mut errs).unwrap();
        let e = resolve_interfaces(&x).unwrap_err();
        assert!(e.contains("media.xdp.core_interface"), "{e}");
        let mut named = x.clone();
        named.settings.core_interface = "eth9".into();
        let s = resolve_interfaces(&named).unwrap();
        assert_eq!(
            (s.access_interface.as_str(), s.core_interface.as_str()),
            ("lo", "eth9")
        );
    }
}
