//! mDNS: advertise `_nvstream._tcp` on the HTTP port so Moonlight finds the host on the LAN.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::error::{ErrorKind, Result, ResultExt};

pub const SERVICE_TYPE: &str = "_nvstream._tcp.local.";

/// Keeps the advertisement up until dropped.
pub struct Advertiser {
    daemon: mdns_sd::ServiceDaemon,
}

/// Start advertising. The daemon runs on its own thread (mdns-sd's), never on the runtime.
pub fn advertise(hostname: &str, ip: IpAddr, http_port: u16) -> Result<Advertiser> {
    let daemon = mdns_sd::ServiceDaemon::new().or_err(ErrorKind::Bind, || "starting the mDNS daemon")?;
    let host = format!("{}.local.", sanitize(hostname));
    let info =
        mdns_sd::ServiceInfo::new(SERVICE_TYPE, hostname, &host, ip, http_port, HashMap::<String, String>::new())
            .or_err(ErrorKind::Bind, || "building the mDNS record")?;
    daemon.register(info).or_err(ErrorKind::Bind, || "registering the mDNS service")?;
    tracing::info!(service = SERVICE_TYPE, %ip, port = http_port, "mDNS advertisement started");
    Ok(Advertiser { daemon })
}

/// A DNS label: letters, digits and '-'.
fn sanitize(name: &str) -> String {
    let s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    if s.trim_matches('-').is_empty() { "wolf-rs".into() } else { s }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        let _ = self.daemon.shutdown();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels() {
        assert_eq!(super::sanitize("My PC_1"), "My-PC-1");
        assert_eq!(super::sanitize("__"), "wolf-rs");
    }
}
