//! Churn schedules: when nodes join, leave gracefully and crash.
//!
//! A schedule is data — a time-ordered list of [`ChurnEvent`]s — so an experiment can print,
//! replay or edit it. Two generators cover the usual models:
//!
//! - [`poisson`]: joins and departures each a Poisson process (the Chord ToN churn setup:
//!   "joins and failures each at rate R per second"); departing nodes are picked at random
//!   among the live ones when the event fires.
//! - [`sessions`]: every node stays for an exponentially distributed session with a given
//!   median and is replaced by a newcomer when it departs, so the population is steady.
//!
//! [`parse_script`] reads an explicit script (`<seconds> join|leave|crash [ordinal]` per line).

use std::time::Duration;

use peerlab_overlay::{Instant, Rng};

/// What happens to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChurnAction {
    /// A new node joins; `ordinal` numbers newcomers (and initial nodes) from 0.
    Join {
        /// Which logical node joins.
        ordinal: u64,
    },
    /// A node leaves gracefully; `None` means a live node chosen at random when it fires.
    Leave {
        /// Which logical node leaves, if fixed by the schedule.
        ordinal: Option<u64>,
    },
    /// A node crashes without a word; `None` means a random live node.
    Crash {
        /// Which logical node crashes, if fixed by the schedule.
        ordinal: Option<u64>,
    },
}

/// One scheduled change of membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChurnEvent {
    /// When it happens.
    pub at: Instant,
    /// What happens.
    pub action: ChurnAction,
}

/// Joins at rate `join_rate` per second and departures at `depart_rate` per second between
/// `start` and `start + duration`. Each departure is a crash with probability
/// `crash_fraction`, a graceful leave otherwise. Newcomers are numbered from `first_ordinal`.
pub fn poisson(
    rng: &mut Rng,
    start: Instant,
    duration: Duration,
    join_rate: f64,
    depart_rate: f64,
    crash_fraction: f64,
    first_ordinal: u64,
) -> Vec<ChurnEvent> {
    let end = start + duration;
    let mut events = Vec::new();
    let mut next_ordinal = first_ordinal;
    if join_rate > 0.0 {
        let mut t = start;
        loop {
            t = t + Duration::from_secs_f64(rng.exp(1.0 / join_rate));
            if t >= end {
                break;
            }
            events.push(ChurnEvent {
                at: t,
                action: ChurnAction::Join {
                    ordinal: next_ordinal,
                },
            });
            next_ordinal += 1;
        }
    }
    if depart_rate > 0.0 {
        let mut t = start;
        loop {
            t = t + Duration::from_secs_f64(rng.exp(1.0 / depart_rate));
            if t >= end {
                break;
            }
            let action = if rng.chance(crash_fraction) {
                ChurnAction::Crash { ordinal: None }
            } else {
                ChurnAction::Leave { ordinal: None }
            };
            events.push(ChurnEvent { at: t, action });
        }
    }
    events.sort_by_key(|e| e.at);
    events
}

/// Steady-state churn: nodes `0..initial` are up at `start`; each stays for an exponential
/// session with median `median_session`, then departs (crash with probability
/// `crash_fraction`) and a newcomer with the next ordinal joins at that instant.
pub fn sessions(
    rng: &mut Rng,
    start: Instant,
    duration: Duration,
    initial: u64,
    median_session: Duration,
    crash_fraction: f64,
) -> Vec<ChurnEvent> {
    let mean = median_session.as_secs_f64() / std::f64::consts::LN_2;
    let end = start + duration;
    let mut events = Vec::new();
    // (departure time, ordinal) of every node alive, processed in time order.
    let mut pending: std::collections::BTreeSet<(Instant, u64)> = (0..initial)
        .map(|o| (start + Duration::from_secs_f64(rng.exp(mean)), o))
        .collect();
    let mut next_ordinal = initial;
    while let Some((at, ordinal)) = pending.pop_first() {
        if at >= end {
            break;
        }
        let action = if rng.chance(crash_fraction) {
            ChurnAction::Crash {
                ordinal: Some(ordinal),
            }
        } else {
            ChurnAction::Leave {
                ordinal: Some(ordinal),
            }
        };
        events.push(ChurnEvent { at, action });
        events.push(ChurnEvent {
            at,
            action: ChurnAction::Join {
                ordinal: next_ordinal,
            },
        });
        pending.insert((at + Duration::from_secs_f64(rng.exp(mean)), next_ordinal));
        next_ordinal += 1;
    }
    events
}

/// Why a churn script line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("churn script line {line}: {reason}")]
pub struct ScriptError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses an explicit script: one event per line, `<seconds> join <ordinal>`,
/// `<seconds> leave [ordinal]` or `<seconds> crash [ordinal]`; `#` starts a comment.
pub fn parse_script(text: &str) -> Result<Vec<ChurnEvent>, ScriptError> {
    let mut events = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let err = |reason: &str| ScriptError {
            line: i + 1,
            reason: reason.to_string(),
        };
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let secs: f64 = words
            .next()
            .and_then(|w| w.parse().ok())
            .filter(|s: &f64| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| err("expected a time in seconds (>= 0)"))?;
        let verb = words
            .next()
            .ok_or_else(|| err("expected join, leave or crash"))?;
        let ordinal = match words.next() {
            Some(w) => Some(
                w.parse::<u64>()
                    .map_err(|_| err("ordinal must be an integer"))?,
            ),
            None => None,
        };
        if words.next().is_some() {
            return Err(err("trailing words"));
        }
        let action = match verb {
            "join" => ChurnAction::Join {
                ordinal: ordinal.ok_or_else(|| err("join needs an ordinal"))?,
            },
            "leave" => ChurnAction::Leave { ordinal },
            "crash" => ChurnAction::Crash { ordinal },
            _ => return Err(err("expected join, leave or crash")),
        };
        events.push(ChurnEvent {
            at: Instant((secs * 1e6) as u64),
            action,
        });
    }
    events.sort_by_key(|e| e.at);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_rates_match() {
        let mut rng = Rng::seed(5);
        let ev = poisson(
            &mut rng,
            Instant::ZERO,
            Duration::from_secs(10_000),
            0.2,
            0.1,
            0.5,
            100,
        );
        let joins = ev
            .iter()
            .filter(|e| matches!(e.action, ChurnAction::Join { .. }))
            .count();
        let crashes = ev
            .iter()
            .filter(|e| matches!(e.action, ChurnAction::Crash { .. }))
            .count();
        let leaves = ev
            .iter()
            .filter(|e| matches!(e.action, ChurnAction::Leave { .. }))
            .count();
        assert!((1800..2200).contains(&joins), "{joins}");
        assert!(
            (850..1150).contains(&(crashes + leaves)),
            "{}",
            crashes + leaves
        );
        assert!((crashes as f64 / (crashes + leaves) as f64 - 0.5).abs() < 0.07);
        assert!(ev.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(matches!(
            ev.iter()
                .find(|e| matches!(e.action, ChurnAction::Join { .. }))
                .unwrap()
                .action,
            ChurnAction::Join { ordinal: 100 }
        ));
    }

    #[test]
    fn session_median_matches() {
        let mut rng = Rng::seed(9);
        let median = Duration::from_secs(600);
        let ev = sessions(
            &mut rng,
            Instant::ZERO,
            Duration::from_secs(36_000),
            200,
            median,
            0.0,
        );
        // Departures of the initial 200: the fraction gone by the median is about one half.
        let gone_by_median = ev
            .iter()
            .filter(|e| {
                matches!(e.action, ChurnAction::Leave { ordinal: Some(o) } if o < 200)
                    && e.at <= Instant(600_000_000)
            })
            .count();
        assert!((70..130).contains(&gone_by_median), "{gone_by_median}");
        // Steady population: every departure is paired with a join.
        let joins = ev
            .iter()
            .filter(|e| matches!(e.action, ChurnAction::Join { .. }))
            .count();
        assert_eq!(joins * 2, ev.len());
    }

    #[test]
    fn script_parses_and_rejects() {
        let ev = parse_script("# warm-up\n1.5 crash 3\n0.5 join 7\n2 leave\n").unwrap();
        assert_eq!(ev.len(), 3);
        assert_eq!(
            ev[0],
            ChurnEvent {
                at: Instant(500_000),
                action: ChurnAction::Join { ordinal: 7 }
            }
        );
        assert_eq!(ev[1].action, ChurnAction::Crash { ordinal: Some(3) });
        assert_eq!(ev[2].action, ChurnAction::Leave { ordinal: None });
        assert_eq!(parse_script("1 join").unwrap_err().line, 1);
        assert!(parse_script("x crash").is_err());
        assert!(parse_script("1 explode").is_err());
        assert!(parse_script("-1 crash").is_err());
        assert!(parse_script("1 crash 2 3").is_err());
    }
}
