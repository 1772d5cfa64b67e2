//! Connection limits: per-source budgets (an IPv4 address or an IPv6 /64; gateways listed as
//! trusted proxies get a larger one) under a port-wide cap, and the newcomer is always served while
//! anything can make room. At a source's budget its oldest connection that has been doing nothing
//! (silent, or idle after its handshake) for longer than a real client would is closed; connections
//! at work (mid-handshake, mid-request, or only just accepted) are not held to the budget, only to
//! the port's cap, where the source holding the most gives up its least
//! advanced, oldest connection that is not answering a request. So neither idle sockets nor a storm
//! of handshakes from a NAT neighbour (or a stranger) can lock a real client out. Also the process's
//! open-file limit, raised so those caps (not the fd limit) decide.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
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

/// Gateways (e.g. moonlight-web) whose one address carries many users: bigger connection budgets,
/// and pairing failures counted per client certificate behind them instead of per address.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// Where a connection is in its life, in the order it is evicted at a cap (lowest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Stage {
    /// Accepted; nothing received yet.
    Fresh = 0,
    /// Handshake done, no request yet: real clients send theirs at once.
    Idle = 1,
    /// Bytes are arriving (a TLS handshake, a request's head).
    Started = 2,
    /// A request is being answered (it may wait for a PIN or an app): never evicted.
    Busy = 3,
}

impl Stage {
    fn from_u8(v: u8) -> Stage {
        match v {
            0 => Stage::Fresh,
            1 => Stage::Idle,
            2 => Stage::Started,
            _ => Stage::Busy,
        }
    }
}

/// How long a real client leaves a connection silent, or idle after its handshake: about one round
/// trip. Longer than that, it counts as doing nothing.
pub const IDLE_GRACE: Duration = Duration::from_secs(1);

/// Budgets for one port.
#[derive(Debug, Clone)]
pub struct Budgets {
    pub per_source: usize,
    pub per_trusted_proxy: usize,
    pub total: usize,
    pub trusted: TrustedProxies,
    /// Younger connections are never closed for a source's budget (only at the port's cap).
    pub idle_grace: Duration,
}

struct Entry {
    id: u64,
    since: Instant,
    stage: Arc<AtomicU8>,
    evict: CancellationToken,
}

impl Entry {
    fn stage(&self) -> Stage {
        Stage::from_u8(self.stage.load(Ordering::Relaxed))
    }
}

#[derive(Default)]
struct Held {
    by_key: HashMap<IpAddr, VecDeque<Entry>>,
    total: usize,
}

impl Held {
    /// Close `key`'s connection that is least worth keeping (lowest stage, then oldest) among those
    /// below `below` and accepted before `before`; false when there is none.
    fn evict_from(&mut self, key: IpAddr, below: Stage, before: Option<Instant>) -> bool {
        let Some(q) = self.by_key.get_mut(&key) else { return false };
        let victim = q
            .iter()
            .enumerate()
            .filter(|(_, e)| e.stage() < below && before.is_none_or(|b| e.since <= b))
            .min_by_key(|(_, e)| (e.stage(), e.id))
            .map(|(i, _)| i);
        let Some(e) = victim.and_then(|i| q.remove(i)) else { return false };
        e.evict.cancel();
        if q.is_empty() {
            self.by_key.remove(&key);
        }
        self.total -= 1;
        true
    }

    /// At the port-wide cap: the source holding the most connections gives one up.
    fn evict_from_largest(&mut self) -> bool {
        let mut keys: Vec<(usize, IpAddr)> = self.by_key.iter().map(|(k, q)| (q.len(), *k)).collect();
        keys.sort_unstable_by_key(|k| std::cmp::Reverse(k.0));
        keys.into_iter().any(|(_, k)| self.evict_from(k, Stage::Busy, None))
    }
}

/// The connections held on one port, by source.
pub struct ConnLimit {
    budgets: Budgets,
    held: Mutex<Held>,
    next_id: AtomicU64,
}

/// A held connection slot; released on drop.
pub struct ConnSlot {
    limit: Arc<ConnLimit>,
    key: IpAddr,
    id: u64,
    stage: Arc<AtomicU8>,
    evicted: CancellationToken,
}

impl ConnSlot {
    /// Cancelled when a newcomer needed this slot more: close the connection.
    pub fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }

    /// Record progress; a connection never moves back towards eviction except from `Started` to
    /// `Idle` (its handshake finished).
    pub fn set(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Relaxed);
    }
}

impl ConnLimit {
    pub fn new(budgets: Budgets) -> Arc<ConnLimit> {
        Arc::new(ConnLimit { budgets, held: Mutex::default(), next_id: AtomicU64::new(0) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        match self.held.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// This source's budget.
    pub fn budget_of(&self, ip: IpAddr) -> usize {
        let b = &self.budgets;
        if b.trusted.contains(ip) { b.per_trusted_proxy } else { b.per_source }.max(1)
    }

    /// A slot for a connection from `ip`, making room by eviction at a cap; `None` only at the
    /// port's cap when every connection there is busy answering a request.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnSlot> {
        let key = ip_key(ip);
        let budget = self.budget_of(ip);
        let mut held = self.lock();
        if held.by_key.get(&key).is_some_and(|q| q.len() >= budget) {
            // Only connections doing nothing are held to the budget; if there is none, the
            // newcomer joins the ones at work, bounded by the port's cap.
            let before = Instant::now().checked_sub(self.budgets.idle_grace);
            held.evict_from(key, Stage::Started, before);
        }
        if held.total >= self.budgets.total.max(1) && !held.evict_from_largest() {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stage = Arc::new(AtomicU8::new(Stage::Fresh as u8));
        let evicted = CancellationToken::new();
        let entry = Entry { id, since: Instant::now(), stage: stage.clone(), evict: evicted.clone() };
        held.by_key.entry(key).or_default().push_back(entry);
        held.total += 1;
        Some(ConnSlot { limit: self.clone(), key, id, stage, evicted })
    }

    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.lock().by_key.get(&ip_key(ip)).map_or(0, VecDeque::len)
    }

    pub fn held(&self) -> usize {
        self.lock().total
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut held = self.limit.lock();
        let Some(q) = held.by_key.get_mut(&self.key) else { return };
        let before = q.len();
        q.retain(|e| e.id != self.id);
        let removed = before - q.len();
        if q.is_empty() {
            held.by_key.remove(&self.key);
        }
        held.total -= removed;
    }
}
/// Wait until the peer sends its first byte (bounded by `limit`): until then the connection is the
/// first to go at a cap. False when it closed or sent nothing in time.
pub async fn first_bytes(stream: &tokio::net::TcpStream, slot: &ConnSlot, limit: Duration) -> bool {
    // `peek`, not `readable`: readiness may be reported before any byte has arrived.
    let mut one = [0u8; 1];
    let ok = matches!(tokio::time::timeout(limit, stream.peek(&mut one)).await, Ok(Ok(n)) if n > 0);
    slot.set(Stage::Started);
    ok
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

    fn limit(per_source: usize, total: usize) -> Arc<ConnLimit> {
        ConnLimit::new(Budgets {
            per_source,
            per_trusted_proxy: 4 * per_source,
            total,
            trusted: TrustedProxies::new(vec!["10.9.0.0/16".parse().unwrap()]),
            idle_grace: Duration::ZERO,
        })
    }

    const A: &str = "10.0.0.1";
    const B: &str = "10.0.0.2";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn at_a_sources_budget_its_oldest_idle_connection_makes_room() {
        let l = limit(2, 100);
        let s1 = l.admit(ip(A)).unwrap();
        let s2 = l.admit(ip(A)).unwrap();
        let s3 = l.admit(ip(A)).expect("the newcomer is served");
        assert!(s1.evicted().is_cancelled(), "the oldest is told to close");
        assert!(!s2.evicted().is_cancelled() && !s3.evicted().is_cancelled());
        assert_eq!((l.held_by(ip(A)), l.held()), (2, 2));
        let other = l.admit(ip(B)).unwrap();
        assert!(!other.evicted().is_cancelled() && !s2.evicted().is_cancelled(), "other sources are untouched");
        drop(s1);
        assert_eq!(l.held_by(ip(A)), 2, "an evicted slot no longer counts");
        drop(s2);
        assert_eq!((l.held_by(ip(A)), l.held()), (1, 2));
    }

    #[test]
    fn at_a_sources_budget_silent_ones_go_before_idle_ones_and_working_ones_stay() {
        let l = limit(3, 100);
        let handshaking = l.admit(ip(A)).unwrap();
        handshaking.set(Stage::Started);
        let idle_after_tls = l.admit(ip(A)).unwrap();
        idle_after_tls.set(Stage::Idle);
        let silent = l.admit(ip(A)).unwrap();
        let n1 = l.admit(ip(A)).unwrap();
        assert!(silent.evicted().is_cancelled(), "the newest but silent one goes first");
        assert!(!idle_after_tls.evicted().is_cancelled());
        n1.set(Stage::Busy);
        let _n2 = l.admit(ip(A)).unwrap();
        assert!(idle_after_tls.evicted().is_cancelled(), "then the one idle after its handshake");
        assert!(!handshaking.evicted().is_cancelled());
    }

    #[test]
    fn connections_younger_than_the_grace_are_not_closed_for_the_budget() {
        let l = ConnLimit::new(Budgets {
            per_source: 1,
            per_trusted_proxy: 1,
            total: 100,
            trusted: TrustedProxies::default(),
            idle_grace: Duration::from_secs(3600),
        });
        let first = l.admit(ip(A)).unwrap();
        let second = l.admit(ip(A)).expect("served over the budget");
        assert!(!first.evicted().is_cancelled() && !second.evicted().is_cancelled());
        assert_eq!(l.held_by(ip(A)), 2);
    }

    #[test]
    fn connections_at_work_exceed_a_sources_budget_up_to_the_port_cap() {
        let l = limit(2, 5);
        let working: Vec<_> = (0..5)
            .map(|_| {
                let s = l.admit(ip(A)).expect("served beyond the budget while all are at work");
                s.set(Stage::Started);
                s
            })
            .collect();
        assert!(working.iter().all(|s| !s.evicted().is_cancelled()));
        assert_eq!(l.held_by(ip(A)), 5);
        // At the port cap another source is still served: the oldest handshake gives way.
        let b = l.admit(ip(B)).expect("another source is served at the port cap");
        assert!(working[0].evicted().is_cancelled() && !b.evicted().is_cancelled());
        // Only when every connection is answering a request is a newcomer refused.
        working.iter().for_each(|s| s.set(Stage::Busy));
        b.set(Stage::Busy);
        assert!(l.admit(ip("10.0.0.3")).is_none());
    }

    #[test]
    fn at_the_port_cap_the_largest_source_gives_way() {
        let l = limit(10, 4);
        let a: Vec<_> = (0..3).map(|_| l.admit(ip(A)).unwrap()).collect();
        let b = l.admit(ip(B)).unwrap();
        let c = l.admit(ip("10.0.0.3")).expect("served at the port cap");
        assert!(a[0].evicted().is_cancelled(), "the biggest source's oldest went");
        assert!(!b.evicted().is_cancelled() && !c.evicted().is_cancelled());
        assert_eq!(l.held(), 4);
    }

    #[test]
    fn ipv6_counts_per_64_mapped_v4_as_v4_and_proxies_get_their_budget() {
        let l = limit(1, 100);
        let x = l.admit(ip("2001:db8::1")).unwrap();
        let _y = l.admit(ip("2001:db8::2")).unwrap();
        assert!(x.evicted().is_cancelled());
        let z = l.admit(ip("2001:db8:0:1::1")).unwrap();
        assert!(!z.evicted().is_cancelled());
        let v4 = l.admit(ip("10.0.0.9")).unwrap();
        let _m = l.admit(ip("::ffff:10.0.0.9")).unwrap();
        assert!(v4.evicted().is_cancelled());
        let proxy: Vec<_> = (0..4).map(|_| l.admit(ip("10.9.1.1")).unwrap()).collect();
        assert!(proxy.iter().all(|s| !s.evicted().is_cancelled()), "a trusted proxy holds four");
        assert_eq!(l.budget_of(ip("::ffff:10.9.1.1")), 4);
    }
}
