//! Pending pairings (keyed by `uniqueid@client_ip`), the PIN hand-off from the PIN page or the
//! API to the waiting step 1, and the failure ban (per address, or per client certificate
//! behind a trusted proxy). Pairings under one key take
//! turns: every Moonlight client sends the same `uniqueid`, so a gateway pairing many identities
//! from one address would otherwise have them overwrite each other's steps.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedMutexGuard, oneshot};
use tokio::time::Instant;

use wolf_protocol::pairing::{PairingSession, Step};

/// Pairings in progress from one IP, and in all.
pub const MAX_PENDING_PER_IP: usize = 4;
pub const MAX_PENDING: usize = 64;
/// A pairing past step 1 that makes no progress for this long is dropped (and counted as failed).
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// Failure records kept at most; expired ones are pruned first.
const MAX_FAILURE_RECORDS: usize = 4096;
/// How often a step 1 waiting for its turn sweeps stale pairings (one abandoned ahead of it).
const TURN_SWEEP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct PairingLimits {
    pub pin_timeout: Duration,
    pub max_failures: u32,
    pub failure_window: Duration,
    pub ban: Duration,
}

impl From<&crate::config::Pairing> for PairingLimits {
    fn from(p: &crate::config::Pairing) -> Self {
        PairingLimits {
            pin_timeout: Duration::from_secs(p.pin_timeout),
            max_failures: p.max_failures,
            failure_window: Duration::from_secs(p.failure_window_s),
            ban: Duration::from_secs(p.ban_s),
        }
    }
}

/// Whom failed pairings count against: an address (IPv4, or an IPv6 /64), or, behind a trusted
/// proxy whose one address carries many users, the client certificate (SHA-256 hex).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    Addr(IpAddr),
    Cert(String),
}

impl Source {
    pub fn addr(ip: IpAddr) -> Source {
        Source::Addr(crate::net::limit::ip_key(ip))
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Addr(ip) => write!(f, "address {ip}"),
            Source::Cert(fp) => write!(f, "certificate {}", fp.get(..16).unwrap_or(fp)),
        }
    }
}

struct Pending {
    /// Distinguishes a newer pairing under the same key from the one a guard was made for.
    generation: u64,
    secret: String,
    ip: IpAddr,
    source: Source,
    device_name: String,
    uniqueid: String,
    since: Instant,
    /// Last step taken; stale pairings are swept by this.
    touched: Instant,
    /// `Some` while step 1 waits for the PIN.
    pin_tx: Option<oneshot::Sender<String>>,
    session: Option<PairingSession>,
    /// This pairing's turn under its key: the next step 1 with the key waits until it is dropped
    /// with the pairing (finished, failed, discarded, swept or timed out).
    _turn: OwnedMutexGuard<()>,
}

/// What an operator sees of a pairing that waits for its PIN.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WaitingPairing {
    pub secret: String,
    pub device_name: String,
    pub uniqueid: String,
    pub ip: String,
    pub waiting_s: u64,
}

#[derive(Default)]
struct Failures {
    recent: VecDeque<Instant>,
    banned_until: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum BeginError {
    TooManyFromIp,
    TooMany,
    /// Another pairing under the same key did not end within the wait.
    Busy,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    UnknownSecret,
    NoneWaiting,
    Ambiguous(usize),
    NotFourDigits,
}

/// What an operator (the API, `wolf-rs pair`) is told.
impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::UnknownSecret => f.write_str("No pairing waits under that secret"),
            SubmitError::NoneWaiting => {
                f.write_str("No pairing is waiting for a PIN; start pairing on the client first")
            }
            SubmitError::Ambiguous(n) => {
                write!(f, "{n} pairings are waiting; pass --secret (see the log or `wolf-rs pair --list`)")
            }
            SubmitError::NotFourDigits => f.write_str("The PIN must be exactly 4 digits"),
        }
    }
}

pub struct PairingManager {
    pub limits: PairingLimits,
    pending: Mutex<HashMap<String, Pending>>,
    /// One lock per key with a pairing in progress or waiting for its turn.
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    failures: Mutex<HashMap<Source, Failures>>,
    generation: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A pairing's turn under its `uniqueid@ip` key, from `take_turn`; `begin` registers the pairing
/// with it, and the turn ends when the pairing does.
pub struct Turn {
    uniqueid: String,
    ip: IpAddr,
    guard: OwnedMutexGuard<()>,
}

/// Removes a still-waiting pairing when step 1's request goes away (client hung up or timed out).
pub struct WaitGuard<'a> {
    mgr: &'a PairingManager,
    key: String,
    generation: u64,
    armed: bool,
}

impl WaitGuard<'_> {
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut p = lock(&self.mgr.pending);
            if p.get(&self.key).is_some_and(|x| x.generation == self.generation) {
                p.remove(&self.key);
            }
        }
    }
}

impl PairingManager {
    pub fn new(limits: PairingLimits) -> PairingManager {
        PairingManager {
            limits,
            pending: Mutex::default(),
            turns: Mutex::default(),
            failures: Mutex::default(),
            generation: Mutex::new(0),
        }
    }

    pub fn key(uniqueid: &str, ip: IpAddr) -> String {
        format!("{uniqueid}@{ip}")
    }

    /// Seconds left on this source's ban, if it is banned.
    pub fn banned_for(&self, source: &Source) -> Option<u64> {
        let now = Instant::now();
        let f = lock(&self.failures);
        let until = f.get(source)?.banned_until?;
        (until > now).then(|| (until - now).as_secs().max(1))
    }

    /// Count a failed pairing; returns true when this one got the source banned.
    pub fn record_failure(&self, source: &Source) -> bool {
        let now = Instant::now();
        let mut all = lock(&self.failures);
        if all.len() >= MAX_FAILURE_RECORDS {
            let window = self.limits.failure_window;
            all.retain(|_, f| {
                f.banned_until.is_some_and(|u| u > now)
                    || f.recent.back().is_some_and(|t| now.duration_since(*t) <= window)
            });
        }
        if all.len() >= MAX_FAILURE_RECORDS && !all.contains_key(source) {
            // Still full of live records (a flood from many addresses): forget the unbanned source
            // with the fewest failures, oldest first. A ban is never forgotten early, and nobody
            // is banned for a flood they are not part of.
            let least = all
                .iter()
                .filter(|(_, f)| f.banned_until.is_none_or(|u| u <= now))
                .min_by_key(|(_, f)| (f.recent.len(), f.recent.back().copied()))
                .map(|(k, _)| k.clone());
            match least {
                Some(k) => {
                    all.remove(&k);
                }
                None => {
                    tracing::warn!(%source, "every failure record is a live ban; this failure is not recorded");
                    return false;
                }
            }
        }
        let f = all.entry(source.clone()).or_default();
        while f.recent.front().is_some_and(|t| now.duration_since(*t) > self.limits.failure_window) {
            f.recent.pop_front();
        }
        f.recent.push_back(now);
        if f.recent.len() >= self.limits.max_failures as usize {
            f.recent.clear();
            f.banned_until = Some(now + self.limits.ban);
            return true;
        }
        false
    }

    /// At the global cap (a flood of first steps from many addresses): the source with the most
    /// pairings in progress gives up its oldest, so a real client's pairing can always begin. Not
    /// counted as a failure: it was not allowed to finish.
    fn evict_from_largest(&self, pending: &mut HashMap<String, Pending>) -> bool {
        let mut per_source: HashMap<&Source, usize> = HashMap::new();
        for p in pending.values() {
            *per_source.entry(&p.source).or_default() += 1;
        }
        let Some((largest, _)) = per_source.into_iter().max_by_key(|(_, n)| *n) else { return false };
        let largest = largest.clone();
        let oldest =
            pending.iter().filter(|(_, p)| p.source == largest).min_by_key(|(_, p)| p.since).map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                tracing::info!(source = %largest, "pairings at their cap: the oldest of the busiest source is dropped");
                pending.remove(&k);
                true
            }
            None => false,
        }
    }

    /// Drop pairings that stopped making progress; one abandoned mid-way counts as a failure
    /// (moonlight-qt stops after step 3 on a wrong PIN).
    fn sweep(&self, pending: &mut HashMap<String, Pending>) {
        let now = Instant::now();
        let stale: Vec<String> = pending
            .iter()
            .filter(|(_, p)| p.pin_tx.is_none() && now.duration_since(p.touched) > STALE_AFTER)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(p) = pending.remove(&k) {
                self.note_abandoned(&p);
            }
        }
    }

    fn note_abandoned(&self, p: &Pending) {
        let midway = p
            .session
            .as_ref()
            .is_some_and(|s| matches!(s.step(), Step::AwaitingServerChallengeResp | Step::AwaitingClientPairingSecret));
        if midway {
            tracing::info!(source = %p.source, "pairing abandoned after the challenge: counted as failed");
            self.record_failure(&p.source);
        }
    }

    /// Wait (at most `limit`) until no other client's pairing under `uniqueid@ip` is in progress,
    /// then hold the turn: it goes to `begin` and ends with the pairing. While waiting, stale
    /// pairings are swept, so one abandoned ahead of this one does not hold it up for long.
    pub async fn take_turn(
        &self,
        uniqueid: &str,
        ip: IpAddr,
        client_der: &[u8],
        limit: Duration,
    ) -> Result<Turn, BeginError> {
        let key = Self::key(uniqueid, ip);
        let key = key.as_str();
        {
            // The same client starting over (same certificate): its earlier attempt ends here.
            let mut pending = lock(&self.pending);
            if pending.get(key).and_then(|p| p.session.as_ref()).is_some_and(|s| s.client.der == client_der) {
                pending.remove(key);
            }
        }
        let lane = lock(&self.turns).entry(key.to_owned()).or_default().clone();
        // One acquire future for the whole wait keeps this step 1's place in the (first come,
        // first served) queue.
        let acquire = lane.clone().lock_owned();
        let waited = tokio::time::timeout(limit, async {
            tokio::pin!(acquire);
            loop {
                tokio::select! {
                    turn = &mut acquire => return turn,
                    _ = tokio::time::sleep(TURN_SWEEP) => self.sweep(&mut lock(&self.pending)),
                }
            }
        })
        .await;
        drop(lane);
        // Lanes nobody holds or waits for are forgotten, so the map stays as small as the pending set.
        lock(&self.turns).retain(|_, l| Arc::strong_count(l) > 1);
        let guard = waited.map_err(|_| BeginError::Busy)?;
        Ok(Turn { uniqueid: uniqueid.to_owned(), ip, guard })
    }

    /// Step 1 begins: registers the pairing of `turn` (from `take_turn`), which it holds until it
    /// ends. With `wait`, returns the receiver the PIN arrives on. The guard discards the pairing
    /// when dropped armed.
    pub fn begin(
        &self,
        turn: Turn,
        source: Source,
        device_name: &str,
        session: PairingSession,
        secret: String,
        wait: bool,
    ) -> Result<(Option<oneshot::Receiver<String>>, WaitGuard<'_>), BeginError> {
        let Turn { uniqueid, ip, guard: turn } = turn;
        let uniqueid = uniqueid.as_str();
        let key = Self::key(uniqueid, ip);
        {
            let mut pending = lock(&self.pending);
            self.sweep(&mut pending);
            // Behind a trusted proxy the per-address cap would be everyone's: the turns and the
            // global cap bound it there.
            if !pending.contains_key(&key) && matches!(source, Source::Addr(_)) {
                let ipk = crate::net::limit::ip_key(ip);
                if pending.values().filter(|p| crate::net::limit::ip_key(p.ip) == ipk).count() >= MAX_PENDING_PER_IP {
                    return Err(BeginError::TooManyFromIp);
                }
            }
            if !pending.contains_key(&key) && pending.len() >= MAX_PENDING && !self.evict_from_largest(&mut pending) {
                return Err(BeginError::TooMany);
            }
        }
        let generation = {
            let mut g = lock(&self.generation);
            *g += 1;
            *g
        };
        let (tx, rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        lock(&self.pending).insert(
            key.clone(),
            Pending {
                generation,
                secret,
                ip,
                source,
                device_name: device_name.to_owned(),
                uniqueid: uniqueid.to_owned(),
                since: Instant::now(),
                touched: Instant::now(),
                pin_tx: tx,
                session: Some(session),
                _turn: turn,
            },
        );
        Ok((rx, WaitGuard { mgr: self, key, generation, armed: true }))
    }

    /// Hand a PIN to the pairing waiting under `secret` (or the only one waiting, if `None`).
    /// Hand `pin` to the pairing waiting under `secret`; without one, to the only pairing waiting.
    pub fn submit_pin(&self, secret: Option<&str>, pin: String) -> Result<(), SubmitError> {
        let mut pending = lock(&self.pending);
        let waiting: Vec<&mut Pending> = pending.values_mut().filter(|p| p.pin_tx.is_some()).collect();
        let target = match secret {
            Some(s) => waiting.into_iter().find(|p| p.secret == s).ok_or(SubmitError::UnknownSecret)?,
            None => {
                let n = waiting.len();
                let mut it = waiting.into_iter();
                match (it.next(), n) {
                    (None, _) => return Err(SubmitError::NoneWaiting),
                    (Some(p), 1) => p,
                    _ => return Err(SubmitError::Ambiguous(n)),
                }
            }
        };
        let tx = target.pin_tx.take().ok_or(SubmitError::UnknownSecret)?;
        tx.send(pin).map_err(|_| SubmitError::UnknownSecret)
    }

    /// `submit_pin` for an operator (the API, `wolf-rs pair`): the PIN checked first; no secret
    /// needed while exactly one pairing waits.
    pub fn submit_operator_pin(&self, secret: Option<&str>, pin: &str) -> Result<(), SubmitError> {
        if !wolf_protocol::pairing::is_valid_pin(pin) {
            return Err(SubmitError::NotFourDigits);
        }
        self.submit_pin(secret, pin.to_owned())
    }

    pub fn waiting(&self) -> Vec<WaitingPairing> {
        let now = Instant::now();
        lock(&self.pending)
            .values()
            .filter(|p| p.pin_tx.is_some())
            .map(|p| WaitingPairing {
                secret: p.secret.clone(),
                device_name: p.device_name.clone(),
                uniqueid: p.uniqueid.clone(),
                ip: p.ip.to_string(),
                waiting_s: now.duration_since(p.since).as_secs(),
            })
            .collect()
    }

    /// Run `f` on the pairing session under `key`. `f` returns whether the pairing continues;
    /// when it does not, the pairing is discarded.
    pub fn with_session<R>(&self, key: &str, f: impl FnOnce(&mut PairingSession) -> (R, bool)) -> Option<R> {
        // Take the pairing out so the RSA work in `f` runs without holding the lock.
        let mut entry = {
            let mut pending = lock(&self.pending);
            self.sweep(&mut pending);
            pending.get(key)?.session.as_ref()?;
            pending.remove(key)?
        };
        let session = entry.session.as_mut()?;
        let (r, keep) = f(session);
        if keep {
            entry.touched = Instant::now();
            // A newer pairing under the same key, begun meanwhile, wins.
            lock(&self.pending).entry(key.to_owned()).or_insert(entry);
        }
        Some(r)
    }

    /// Run one pairing step; the pairing continues only if the step succeeded.
    pub fn step<R, E>(&self, key: &str, f: impl FnOnce(&mut PairingSession) -> Result<R, E>) -> Option<Result<R, E>> {
        self.with_session(key, |s| {
            let r = f(s);
            let keep = r.is_ok();
            (r, keep)
        })
    }

    /// Whom the pairing under `key` counts failures against.
    pub fn source_of(&self, key: &str) -> Option<Source> {
        lock(&self.pending).get(key).map(|p| p.source.clone())
    }

    /// Is a pairing under `key` still waiting for its PIN?
    pub fn is_waiting(&self, key: &str) -> bool {
        lock(&self.pending).get(key).is_some_and(|p| p.pin_tx.is_some())
    }

    /// End a pairing (`/unpair`); one abandoned mid-way counts as a failure.
    pub fn discard(&self, key: &str) -> bool {
        let removed = lock(&self.pending).remove(key);
        if let Some(p) = &removed {
            self.note_abandoned(p);
        }
        removed.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PairingLimits {
        PairingLimits {
            pin_timeout: Duration::from_secs(120),
            max_failures: 5,
            failure_window: Duration::from_secs(600),
            ban: Duration::from_secs(600),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn five_failures_in_the_window_ban_for_ban_time() {
        let m = PairingManager::new(limits());
        let ip = Source::addr("10.1.2.3".parse().unwrap());
        for _ in 0..4 {
            assert!(!m.record_failure(&ip));
        }
        assert_eq!(m.banned_for(&ip), None);
        assert!(m.record_failure(&ip));
        assert!(m.banned_for(&ip).is_some());
        assert_eq!(m.banned_for(&Source::addr("10.1.2.4".parse().unwrap())), None);
        tokio::time::advance(Duration::from_secs(601)).await;
        assert_eq!(m.banned_for(&ip), None);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_outside_the_window_do_not_add_up() {
        let m = PairingManager::new(limits());
        let ip = Source::addr("10.1.2.3".parse().unwrap());
        for _ in 0..4 {
            m.record_failure(&ip);
        }
        tokio::time::advance(Duration::from_secs(601)).await;
        assert!(!m.record_failure(&ip));
        assert_eq!(m.banned_for(&ip), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_failure_records_bans_no_bystander_and_frees_no_ban() {
        let m = PairingManager::new(limits());
        let banned = Source::addr("10.9.9.9".parse().unwrap());
        for _ in 0..5 {
            m.record_failure(&banned);
        }
        for i in 0..MAX_FAILURE_RECORDS as u32 + 10 {
            m.record_failure(&Source::addr(std::net::Ipv4Addr::from(0x0A01_0000 + i).into()));
        }
        let real = Source::addr("192.168.1.20".parse().unwrap());
        assert!(!m.record_failure(&real), "one mistyped PIN is not a ban");
        assert_eq!(m.banned_for(&real), None);
        assert!(m.banned_for(&banned).is_some(), "the ban outlives the flood");
        assert!(lock(&m.failures).len() <= MAX_FAILURE_RECORDS);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv6_ban_covers_its_64_and_a_certificates_ban_only_itself() {
        let m = PairingManager::new(limits());
        for _ in 0..5 {
            m.record_failure(&Source::addr("fd00:1::1".parse().unwrap()));
        }
        assert!(m.banned_for(&Source::addr("fd00:1::2".parse().unwrap())).is_some());
        assert!(m.banned_for(&Source::addr("fd00:1:0:1::1".parse().unwrap())).is_none());
        for _ in 0..5 {
            m.record_failure(&Source::Cert("aa".into()));
        }
        assert!(m.banned_for(&Source::Cert("aa".into())).is_some());
        assert!(m.banned_for(&Source::Cert("bb".into())).is_none());
    }
}
