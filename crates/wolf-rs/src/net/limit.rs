//! Connection limits: per-IP slots, so one address (or one IPv6 /64) cannot fill a port's global
//! cap, and the process's open-file limit, raised so those caps (not the fd limit) decide.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The key a client is counted under: its IPv4 address, or its IPv6 /64.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

pub struct PerIpLimit {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// A held slot; released on drop.
pub struct IpSlot {
    limit: Arc<PerIpLimit>,
    key: IpAddr,
}

impl PerIpLimit {
    pub fn new(max: usize) -> Arc<PerIpLimit> {
        Arc::new(PerIpLimit { max: max.max(1), counts: Mutex::default() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        match self.counts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A slot for `ip`, or `None` when it already holds `max`.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let key = ip_key(ip);
        let mut counts = self.lock();
        let n = counts.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot { limit: self.clone(), key })
    }

    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.limit.lock();
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Raise the open-file soft limit to the hard limit, so the pending cap, not the fd limit, decides.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard)?;
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_ip_and_freed_on_drop() {
        let l = PerIpLimit::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = l.try_take(a).unwrap();
        let _s2 = l.try_take(a).unwrap();
        assert!(l.try_take(a).is_none());
        assert!(l.try_take(b).is_some());
        drop(s1);
        assert!(l.try_take(a).is_some());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let l = PerIpLimit::new(1);
        let _x = l.try_take("2001:db8::1".parse().unwrap()).unwrap();
        assert!(l.try_take("2001:db8::2".parse().unwrap()).is_none());
        assert!(l.try_take("2001:db8:0:1::1".parse().unwrap()).is_some());
        let _y = l.try_take("10.0.0.9".parse().unwrap()).unwrap();
        assert!(l.try_take("::ffff:10.0.0.9".parse().unwrap()).is_none());
    }
}
