//! Facts about this host's network interfaces, read once at start-up (never on a request path).

use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetInfo {
    pub local_ip: Ipv4Addr,
    pub mac: String,
}

/// The configured values win; else the first non-loopback IPv4 interface and its MAC.
/// Blocking (reads /sys): call at start-up.
pub fn detect(local_ip: &str, mac: &str) -> NetInfo {
    let interfaces = if_addrs::get_if_addrs().unwrap_or_default();
    let configured_ip = local_ip.parse::<Ipv4Addr>().ok();
    let chosen = interfaces.iter().find(|i| match (configured_ip, i.ip()) {
        (Some(want), std::net::IpAddr::V4(v4)) => v4 == want,
        (None, std::net::IpAddr::V4(v4)) => !v4.is_loopback(),
        _ => false,
    });
    let ip = configured_ip
        .or_else(|| match chosen.map(|i| i.ip()) {
            Some(std::net::IpAddr::V4(v4)) => Some(v4),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::LOCALHOST);
    let mac = if !mac.is_empty() {
        mac.to_ascii_lowercase()
    } else {
        chosen
            .and_then(|i| std::fs::read_to_string(format!("/sys/class/net/{}/address", i.name)).ok())
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| crate::config::is_mac(s))
            .unwrap_or_else(|| "00:00:00:00:00:00".to_owned())
    };
    NetInfo { local_ip: ip, mac }
}
