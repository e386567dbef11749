//! Whether a testnet has converged: every live node's ring view is the ideal ring of the
//! live peers, and every node's membership lists every other live node as alive.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Mode, Testnet, TestnetError, par_map, progress_bar, pss_kib, rss_kib, view_is_ideal};

/// Pause between two convergence checks, per node checked.
pub const CHECK_PERIOD_PER_NODE: Duration = Duration::from_millis(20);

/// What a health check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Health {
    /// Nodes that should be running.
    pub expected: usize,
    /// Nodes whose API answered.
    pub reachable: usize,
    /// Nodes whose ring view is the ideal ring of the live peers.
    pub ring_correct: usize,
    /// Nodes whose membership lists every other live node as alive.
    pub membership_complete: usize,
    /// Sum of resident memory of the node processes (or of this process in-process), KiB.
    pub rss_kib: u64,
    /// Sum of their proportional set sizes, KiB: resident memory with the pages processes
    /// share (the binary) counted once (see [`pss_kib`]).
    pub pss_kib: u64,
    /// Connected peers per reachable node (`/status`'s `connected_peers`): median, 99th
    /// percentile (nearest rank) and maximum.
    pub peers_p50: usize,
    /// See `peers_p50`.
    pub peers_p99: usize,
    /// See `peers_p50`.
    pub peers_max: usize,
}

/// The `q`-quantile of `sorted` by nearest rank (0 when empty).
fn quantile(sorted: &[usize], q: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Health {
    /// Ring correct and membership complete everywhere.
    pub fn converged(&self) -> bool {
        self.expected > 0
            && self.reachable == self.expected
            && self.ring_correct == self.expected
            && self.membership_complete == self.expected
    }
}

impl Testnet {
    /// Checks ring and membership on every live node.
    pub fn health(&self) -> Health {
        let alive = self.alive();
        let ring = self.ideal_ring();
        let want_members = alive.len().saturating_sub(1);
        let checks = par_map(&alive, |&i| {
            let c = self.client(i);
            let st = c.status().ok();
            let ring_ok = c.ring().is_ok_and(|v| view_is_ideal(&ring, &v));
            (
                st.is_some(),
                ring_ok,
                st.as_ref().is_some_and(|s| s.members_alive == want_members),
                st.map(|s| s.connected_peers),
            )
        });
        let pids: Vec<u32> = match self.manifest.mode {
            // The nodes live in the controller, which `testnet status` (another process)
            // is not.
            Mode::InProcess => vec![self.manifest.controller_pid],
            // Another host's processes: their memory is the orchestrator's to report.
            Mode::Remote => Vec::new(),
            Mode::Processes => alive
                .iter()
                .filter_map(|&i| self.manifest.nodes[i].pid)
                .collect(),
        };
        let mut peers: Vec<usize> = checks.iter().filter_map(|c| c.3).collect();
        peers.sort_unstable();
        Health {
            expected: alive.len(),
            reachable: checks.iter().filter(|c| c.0).count(),
            ring_correct: checks.iter().filter(|c| c.1).count(),
            membership_complete: checks.iter().filter(|c| c.2).count(),
            rss_kib: pids.iter().map(|&p| rss_kib(p)).sum(),
            pss_kib: pids.iter().map(|&p| pss_kib(p)).sum(),
            peers_p50: quantile(&peers, 0.5),
            peers_p99: quantile(&peers, 0.99),
            peers_max: peers.last().copied().unwrap_or(0),
        }
    }

    /// Waits until the ring is correct and membership complete on every live node.
    ///
    /// Checks are spaced by [`CHECK_PERIOD_PER_NODE`] per node (at least 250 ms) so that the
    /// controller's own API traffic does not starve the nodes it waits for on a small
    /// machine.
    pub fn wait_converged(&self, within: Duration, progress: bool) -> Result<Health, TestnetError> {
        let start = Instant::now();
        let n = self.alive().len() as u64;
        let pause = (CHECK_PERIOD_PER_NODE * n as u32).max(Duration::from_millis(250));
        let bar = progress_bar(progress, n, "converging");
        loop {
            let h = self.health();
            bar.set_position(h.ring_correct.min(h.membership_complete) as u64);
            bar.set_message(format!(
                "ring correct {}/{n}, membership complete {}/{n}",
                h.ring_correct, h.membership_complete
            ));
            if h.converged() {
                bar.finish_and_clear();
                return Ok(h);
            }
            if start.elapsed() > within {
                bar.finish_and_clear();
                return Err(TestnetError::Timeout {
                    what: format!(
                        "convergence (ring correct on {}/{n}, membership complete on {}/{n}, API up on {}/{n})",
                        h.ring_correct, h.membership_complete, h.reachable
                    ),
                    secs: within.as_secs_f64(),
                });
            }
            std::thread::sleep(pause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<usize> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&[7], 0.99), 7);
        assert_eq!(quantile(&[3, 9], 0.5), 3);
        assert_eq!(
            quantile(&[3, 9], 0.99),
            9,
            "p99 of few nodes is their maximum"
        );
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
