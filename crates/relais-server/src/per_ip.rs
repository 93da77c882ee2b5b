//! Per-address limits: open connections, handshakes in progress, and joins a
//! second, counted per IPv4 address and per IPv6 /64 (one subscriber's
//! usual allocation, so rotating through a /64 gains nothing). An
//! IPv4-mapped IPv6 address counts as its IPv4 address.
//!
//! A connection holds an [`IpGuard`] for its whole life; dropping it gives
//! its counts back. An address's entry outlives its last connection until
//! its join bucket has refilled, so closing and reconnecting does not reset
//! the join rate.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use relais_protocol::RefuseReason;
use tokio::time::Instant;

use crate::rate::TokenBucket;
use crate::Config;

/// The unit limits are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpKey {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// One IPv6 /64: the address's upper 64 bits.
    V6Net(u64),
}

impl IpKey {
    /// The key `ip` counts under.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => Self::V6Net((u128::from(a) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug)]
struct Entry {
    connections: usize,
    handshakes: usize,
    joins: TokenBucket,
}

/// The per-address counts of one server.
#[derive(Debug)]
pub struct PerIp {
    max_connections: usize,
    max_handshakes: usize,
    join_rate: u32,
    join_burst: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    entries: HashMap<IpKey, Entry>,
    /// Size at which idle entries are swept (amortised cleanup).
    sweep_at: usize,
}

const MIN_SWEEP: usize = 1024;

impl PerIp {
    /// Counts with the limits of `config` (a limit of 0 is no limit).
    pub fn new(config: &Config) -> Self {
        Self {
            max_connections: config.max_connections_per_ip,
            max_handshakes: config.max_handshakes_per_ip,
            join_rate: config.max_joins_per_ip,
            join_burst: config.join_burst_per_ip,
            state: Mutex::new(State {
                entries: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        }
    }

    /// Counts a new connection from `ip`, which is handshaking until
    /// [`IpGuard::handshake_done`]; refused with
    /// [`RefuseReason::TooManyConnections`] past either limit.
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> Result<IpGuard, RefuseReason> {
        let key = IpKey::of(ip);
        let now = Instant::now();
        let mut st = self.lock();
        if st.entries.len() >= st.sweep_at {
            st.entries
                .retain(|_, e| e.connections > 0 || !e.joins.is_full(now));
            st.sweep_at = (st.entries.len() * 2).max(MIN_SWEEP);
        }
        let entry = st.entries.entry(key).or_insert_with(|| Entry {
            connections: 0,
            handshakes: 0,
            joins: TokenBucket::new(self.join_rate, self.join_burst, now),
        });
        let over = |count: usize, max: usize| max > 0 && count >= max;
        if over(entry.connections, self.max_connections)
            || over(entry.handshakes, self.max_handshakes)
        {
            return Err(RefuseReason::TooManyConnections);
        }
        entry.connections += 1;
        entry.handshakes += 1;
        Ok(IpGuard {
            table: self.clone(),
            key,
            handshaking: true,
        })
    }

    /// How many connections `ip` has open now.
    #[cfg(test)]
    fn connections(&self, ip: IpAddr) -> usize {
        let st = self.lock();
        st.entries.get(&IpKey::of(ip)).map_or(0, |e| e.connections)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain counters: consistent after every step, safe after a panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection's place in its address's counts.
#[derive(Debug)]
pub struct IpGuard {
    table: Arc<PerIp>,
    key: IpKey,
    handshaking: bool,
}

impl IpGuard {
    /// The connection has finished its handshake (joined, or been answered).
    pub fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            if let Some(e) = self.table.lock().entries.get_mut(&self.key) {
                e.handshakes -= 1;
            }
        }
    }

    /// Takes one join from the address's join bucket, or refuses with
    /// [`RefuseReason::TooManyJoins`].
    pub fn try_join(&self) -> Result<(), RefuseReason> {
        if self.table.join_rate == 0 {
            return Ok(());
        }
        let mut st = self.table.lock();
        let allowed = match st.entries.get_mut(&self.key) {
            Some(e) => e.joins.try_take(Instant::now()),
            None => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(RefuseReason::TooManyJoins)
        }
    }
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        self.handshake_done();
        let now = Instant::now();
        let mut st = self.table.lock();
        if let Some(e) = st.entries.get_mut(&self.key) {
            e.connections -= 1;
            if e.connections == 0 && e.joins.is_full(now) {
                st.entries.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn table(conns: usize, handshakes: usize, joins: u32, burst: u32) -> Arc<PerIp> {
        Arc::new(PerIp::new(&Config {
            max_connections_per_ip: conns,
            max_handshakes_per_ip: handshakes,
            max_joins_per_ip: joins,
            join_burst_per_ip: burst,
            ..Config::default()
        }))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            IpKey::of(ip("2001:db8:1:2::1")),
            IpKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            IpKey::of(ip("2001:db8:1:2::1")),
            IpKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(IpKey::of(ip("::ffff:10.0.0.1")), IpKey::of(ip("10.0.0.1")));
    }

    #[test]
    fn connections_stop_at_the_limit_and_free_on_drop() {
        let t = table(3, 0, 0, 0);
        let a = ip("10.0.0.1");
        let held: Vec<_> = (0..3).map(|_| t.connect(a).unwrap()).collect();
        assert_eq!(t.connect(a).unwrap_err(), RefuseReason::TooManyConnections);
        // Another address, and another /64, are not affected.
        assert!(t.connect(ip("10.0.0.2")).is_ok());
        drop(held);
        assert_eq!(t.connections(a), 0);
        assert!(t.connect(a).is_ok());
    }

    #[test]
    fn handshakes_in_progress_stop_at_their_limit() {
        let t = table(0, 2, 0, 0);
        let a = ip("2001:db8::1");
        let mut first = t.connect(a).unwrap();
        let _second = t.connect(ip("2001:db8::2")).unwrap();
        assert_eq!(t.connect(a).unwrap_err(), RefuseReason::TooManyConnections);
        first.handshake_done();
        first.handshake_done(); // idempotent
        let _third = t.connect(a).unwrap();
        assert_eq!(t.connections(a), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn joins_follow_the_bucket_across_reconnects() {
        let t = table(0, 0, 2, 4);
        let a = ip("10.0.0.1");
        for _ in 0..4 {
            let g = t.connect(a).unwrap();
            assert!(g.try_join().is_ok());
        }
        // Reconnecting does not refill the bucket.
        let g = t.connect(a).unwrap();
        assert_eq!(g.try_join().unwrap_err(), RefuseReason::TooManyJoins);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(g.try_join().is_ok());
        assert!(g.try_join().is_err());
        drop(g);
        // Once the bucket is full and nobody is connected, the entry goes.
        tokio::time::advance(Duration::from_secs(2)).await;
        let g = t.connect(a).unwrap();
        drop(g);
        assert!(t.lock().entries.is_empty());
    }
}
