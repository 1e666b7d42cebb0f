//! Node selection with failover, as GOST's selector does it: a strategy picks among the
//! nodes that are alive, a node that fails `max_fails` times within `fail_timeout` is skipped
//! until the timeout passes, backup nodes serve only when no primary is alive, and when every
//! candidate is marked dead the remaining ones are tried anyway.
//!
//! State is per executor: every core has its own copy of the routes, so there are no locks,
//! and a node one core marked dead is still tried by the others until they see it fail too.

use std::cell::Cell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How a selector chooses among the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Weighted round robin: each node in turn, `weight` times per round.
    #[default]
    Round,
    /// Weighted random.
    Random,
    /// The first candidate in configuration order: primary and standbys.
    Fifo,
    /// By a hash of the client's IP address: one client sticks to one node while it lives.
    Hash,
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "round" => Ok(Strategy::Round),
            "rand" | "random" => Ok(Strategy::Random),
            "fifo" => Ok(Strategy::Fifo),
            "hash" => Ok(Strategy::Hash),
            other => Err(format!(
                "\"{other}\" is not a strategy; valid: round, random (or rand), fifo, hash"
            )),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Round => "round",
            Strategy::Random => "random",
            Strategy::Fifo => "fifo",
            Strategy::Hash => "hash",
        })
    }
}

/// A selector's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selector {
    /// How candidates are chosen.
    pub strategy: Strategy,
    /// Failures within `fail_timeout` after which a node is skipped.
    pub max_fails: u32,
    /// How long a node that reached `max_fails` is skipped.
    pub fail_timeout: Duration,
}

impl Default for Selector {
    fn default() -> Self {
        Selector {
            strategy: Strategy::Round,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
        }
    }
}

/// How a node takes part in selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weight {
    /// Relative share of connections (at least 1).
    pub weight: u32,
    /// Used only when no primary node is alive.
    pub backup: bool,
}

impl Default for Weight {
    fn default() -> Self {
        Weight {
            weight: 1,
            backup: false,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "strategy {}, maxFails {}, failTimeout {:?}",
            self.strategy, self.max_fails, self.fail_timeout
        )
    }
}

/// Printed after a node's description: nothing for the default.
impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weight != 1 {
            write!(f, ", weight {}", self.weight)?;
        }
        if self.backup {
            write!(f, ", backup")?;
        }
        Ok(())
    }
}

/// A node group with its selector and this core's view of the nodes' health.
#[derive(Debug, Clone)]
pub struct Group<T> {
    /// The nodes, in configuration order.
    pub nodes: Vec<T>,
    /// Their weights, index for index.
    pub weights: Vec<Weight>,
    /// The selector.
    pub selector: Selector,
    health: Vec<Health>,
    turn: Cell<u64>,
}

#[derive(Debug, Clone, Default)]
struct Health {
    fails: Cell<u32>,
    last_fail: Cell<Option<Instant>>,
}

/// Nodes already tried by one connection, so a retry goes elsewhere while it can.
#[derive(Debug, Clone, Default)]
pub struct Tried(u128);

impl Tried {
    fn has(&self, index: usize) -> bool {
        index < 128 && self.0 & (1 << index) != 0
    }

    /// Records that `index` was tried.
    pub fn add(&mut self, index: usize) {
        if index < 128 {
            self.0 |= 1 << index;
        }
    }
}

impl<T> Group<T> {
    /// A group of `nodes` with `weights` (index for index) chosen by `selector`.
    pub fn new(nodes: Vec<T>, weights: Vec<Weight>, selector: Selector) -> Group<T> {
        assert_eq!(nodes.len(), weights.len(), "one weight per node");
        let health = nodes.iter().map(|_| Health::default()).collect();
        Group {
            nodes,
            weights,
            selector,
            health,
            turn: Cell::new(0),
        }
    }

    /// Picks a node for a connection from `client`, avoiding those in `tried` while others
    /// remain. Returns the node's index; `None` only for an empty group.
    pub fn pick(&self, client: IpAddr, tried: &Tried, now: Instant) -> Option<usize> {
        let untried: Vec<usize> = (0..self.nodes.len()).filter(|&i| !tried.has(i)).collect();
        let candidates = if untried.is_empty() {
            (0..self.nodes.len()).collect()
        } else {
            untried
        };
        let alive: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| self.alive(i, now))
            .collect();
        let primary: Vec<usize> = alive
            .iter()
            .copied()
            .filter(|&i| !self.weights[i].backup)
            .collect();
        let pool = if !primary.is_empty() {
            primary
        } else if !alive.is_empty() {
            alive
        } else {
            // Every candidate is marked dead: the last ones are tried anyway, primaries first.
            let primary: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| !self.weights[i].backup)
                .collect();
            if primary.is_empty() {
                candidates
            } else {
                primary
            }
        };
        if pool.is_empty() {
            return None;
        }
        let total: u64 = pool
            .iter()
            .map(|&i| u64::from(self.weights[i].weight.max(1)))
            .sum();
        let ticket = match self.selector.strategy {
            Strategy::Fifo => return Some(pool[0]),
            Strategy::Round => {
                let turn = self.turn.get();
                self.turn.set(turn.wrapping_add(1));
                turn % total
            }
            Strategy::Random => fastrand::u64(0..total),
            Strategy::Hash => {
                // SipHash with fixed keys: the same client maps to the same node on every core
                // and across restarts.
                let mut hasher = std::hash::DefaultHasher::new();
                client.hash(&mut hasher);
                hasher.finish() % total
            }
        };
        let mut left = ticket;
        for &index in &pool {
            let weight = u64::from(self.weights[index].weight.max(1));
            if left < weight {
                return Some(index);
            }
            left -= weight;
        }
        pool.last().copied()
    }

    /// Whether node `index` may be chosen at `now`.
    pub fn alive(&self, index: usize, now: Instant) -> bool {
        let health = &self.health[index];
        match health.last_fail.get() {
            Some(at) if now.duration_since(at) < self.selector.fail_timeout => {
                health.fails.get() < self.selector.max_fails
            }
            _ => true,
        }
    }

    /// Records a failure of node `index`.
    pub fn failed(&self, index: usize, now: Instant) {
        let health = &self.health[index];
        let recent = health
            .last_fail
            .get()
            .is_some_and(|at| now.duration_since(at) < self.selector.fail_timeout);
        health.fails.set(if recent {
            health.fails.get().saturating_add(1)
        } else {
            1
        });
        health.last_fail.set(Some(now));
    }

    /// Records a success of node `index`: its failures are forgotten.
    pub fn succeeded(&self, index: usize) {
        let health = &self.health[index];
        if health.fails.get() != 0 {
            health.fails.set(0);
            health.last_fail.set(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(strategy: Strategy, weights: &[(u32, bool)]) -> Group<usize> {
        let weights: Vec<Weight> = weights
            .iter()
            .map(|&(weight, backup)| Weight { weight, backup })
            .collect();
        let selector = Selector {
            strategy,
            ..Selector::default()
        };
        Group::new((0..weights.len()).collect(), weights, selector)
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn round_robin_spreads_by_weight() {
        let group = group(Strategy::Round, &[(1, false), (2, false), (1, false)]);
        let now = Instant::now();
        let mut counts = [0; 3];
        for _ in 0..400 {
            counts[group.pick(CLIENT, &Tried::default(), now).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 200, 100]);
    }

    #[test]
    fn a_failed_node_is_skipped_until_fail_timeout_passes() {
        let group = group(Strategy::Round, &[(1, false), (1, false)]);
        let now = Instant::now();
        group.failed(0, now);
        for _ in 0..10 {
            assert_eq!(group.pick(CLIENT, &Tried::default(), now), Some(1));
        }
        let later = now + Duration::from_secs(11);
        let picks: Vec<_> = (0..4)
            .map(|_| group.pick(CLIENT, &Tried::default(), later).unwrap())
            .collect();
        assert!(picks.contains(&0), "{picks:?}");
    }

    #[test]
    fn backups_serve_only_when_no_primary_is_alive() {
        let group = group(Strategy::Round, &[(1, false), (1, true)]);
        let now = Instant::now();
        assert_eq!(group.pick(CLIENT, &Tried::default(), now), Some(0));
        assert_eq!(group.pick(CLIENT, &Tried::default(), now), Some(0));
        group.failed(0, now);
        assert_eq!(group.pick(CLIENT, &Tried::default(), now), Some(1));
    }

    #[test]
    fn the_last_candidate_is_tried_even_when_dead() {
        let group = group(Strategy::Fifo, &[(1, false), (1, false)]);
        let now = Instant::now();
        group.failed(0, now);
        group.failed(1, now);
        let mut tried = Tried::default();
        tried.add(0);
        assert_eq!(group.pick(CLIENT, &tried, now), Some(1));
    }

    #[test]
    fn hash_keeps_a_client_on_one_node() {
        let group = group(Strategy::Hash, &[(1, false), (1, false), (1, false)]);
        let now = Instant::now();
        let first = group.pick(CLIENT, &Tried::default(), now);
        for _ in 0..20 {
            assert_eq!(group.pick(CLIENT, &Tried::default(), now), first);
        }
    }
}
