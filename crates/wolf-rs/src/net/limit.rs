//! Connection limits: per-IP slots, so one address (or one IPv6 /64) cannot fill a port's global
//! cap (refusing, or evicting that address's oldest connection), and the process's open-file limit,
//! raised so those caps (not the fd limit) decide.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

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

/// At most `max` connections per client key. At the cap a newcomer is refused, or, for ports whose
/// connections are short and carry one request (RTSP), the oldest connection of that key is told to
/// close instead: idle sockets from a NAT neighbour then cannot lock a real client out.
pub struct PerIpLimit {
    max: usize,
    evict_oldest: bool,
    held: Mutex<HashMap<IpAddr, VecDeque<(u64, CancellationToken)>>>,
    next_id: AtomicU64,
}

/// A held slot; released on drop.
pub struct IpSlot {
    limit: Arc<PerIpLimit>,
    key: IpAddr,
    id: u64,
    evicted: CancellationToken,
}

impl IpSlot {
    /// Cancelled when a newer connection from the same key took this slot: close the connection.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }
}

impl PerIpLimit {
    /// Refuses newcomers at the cap.
    pub fn new(max: usize) -> Arc<PerIpLimit> {
        Self::build(max, false)
    }

    /// Evicts the key's oldest connection at the cap, so newcomers are always served.
    pub fn evicting_oldest(max: usize) -> Arc<PerIpLimit> {
        Self::build(max, true)
    }

    fn build(max: usize, evict_oldest: bool) -> Arc<PerIpLimit> {
        Arc::new(PerIpLimit { max: max.max(1), evict_oldest, held: Mutex::default(), next_id: AtomicU64::new(0) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, VecDeque<(u64, CancellationToken)>>> {
        match self.held.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A slot for `ip`, or `None` when it already holds `max` and this limit refuses newcomers.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let key = ip_key(ip);
        let mut held = self.lock();
        let q = held.entry(key).or_default();
        if q.len() >= self.max {
            if !self.evict_oldest {
                return None;
            }
            if let Some((_, oldest)) = q.pop_front() {
                oldest.cancel();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        q.push_back((id, evicted.clone()));
        Some(IpSlot { limit: self.clone(), key, id, evicted })
    }

    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip_key(ip)).map_or(0, VecDeque::len)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut held = self.limit.lock();
        if let Some(q) = held.get_mut(&self.key) {
            q.retain(|(id, _)| *id != self.id);
            if q.is_empty() {
                held.remove(&self.key);
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

    #[test]
    fn an_evicting_limit_serves_the_newcomer_and_closes_the_oldest() {
        let l = PerIpLimit::evicting_oldest(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let s1 = l.try_take(a).unwrap();
        let s2 = l.try_take(a).unwrap();
        let s3 = l.try_take(a).expect("the newcomer is served");
        assert!(s1.evicted().is_cancelled(), "the oldest is told to close");
        assert!(!s2.evicted().is_cancelled() && !s3.evicted().is_cancelled());
        assert_eq!(l.held_by(a), 2);
        drop(s1);
        assert_eq!(l.held_by(a), 2, "an evicted slot no longer counts");
        drop(s2);
        assert_eq!(l.held_by(a), 1);
        assert!(!l.try_take(a).unwrap().evicted().is_cancelled());
    }
}
