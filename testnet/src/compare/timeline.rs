//! What the nodes' logs say, as timed observations, and the figures computed from them.
//!
//! Both systems log each membership change as it happens on the node that learns of it:
//! Serf's `serf: EventMemberJoin: <name>` and `serf: EventMemberFailed: <name>` (written by
//! Serf itself on receipt, before the agent's 3 s member-event coalescer that delays event
//! handlers), peerlab's `peerlab::members` lines (`state=up`, `state=dead`;
//! [`peerlab_node::MEMBERS_LOG_TARGET`]). Serf stamps its lines with whole seconds
//! only, so the controller reads each agent's output through a pipe and stamps every line as
//! it arrives; peerlab's lines carry the node's own RFC 3339 time with microseconds. Both
//! clocks are this machine's wall clock.

use std::collections::{BTreeMap, BTreeSet};

/// What an observer saw about a subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The subject joined (or the observer learned that it is a member).
    Up,
    /// The subject was declared failed / dead.
    Failed,
    /// The user event reached the observer (the subject is the observer itself).
    Event,
}

/// One timed observation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// Unix time, seconds.
    pub at: f64,
    /// The node that logged it.
    pub observer: usize,
    /// The node it is about.
    pub subject: usize,
    /// What it saw.
    pub seen: Seen,
}

/// Seconds from `start` until every one of the `n` nodes had seen all the others up
/// (`None`: some node never did).
pub fn join_secs(obs: &[Observation], n: usize, start: f64) -> Option<f64> {
    let mut seen: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    let mut done: BTreeMap<usize, f64> = BTreeMap::new();
    let mut sorted: Vec<&Observation> = obs.iter().filter(|o| o.seen == Seen::Up).collect();
    sorted.sort_by(|a, b| a.at.total_cmp(&b.at));
    for o in sorted {
        if o.observer == o.subject || o.observer >= n || o.subject >= n {
            continue;
        }
        let s = seen.entry(o.observer).or_default();
        s.insert(o.subject);
        if s.len() == n - 1 {
            done.entry(o.observer).or_insert(o.at);
        }
    }
    if n == 1 {
        return Some(0.0);
    }
    if done.len() < n {
        return None;
    }
    done.values()
        .copied()
        .max_by(f64::total_cmp)
        .map(|t| (t - start).max(0.0))
}

/// Nodes that have seen every other node up, by observer (for progress and deadlines).
pub fn joined_count(obs: &[Observation], n: usize) -> usize {
    let mut seen: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for o in obs {
        if o.seen == Seen::Up && o.observer != o.subject && o.subject < n {
            seen.entry(o.observer).or_default().insert(o.subject);
        }
    }
    seen.values().filter(|s| s.len() + 1 >= n).count()
}

/// How long the failure of the killed nodes took to reach every live node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detection {
    /// Per victim: seconds from the kill until the last live node declared it failed;
    /// `None` when some live node never did.
    pub per_victim: Vec<Option<f64>>,
}

impl Detection {
    /// Whether every live node declared every victim failed.
    pub fn complete(&self) -> bool {
        !self.per_victim.is_empty() && self.per_victim.iter().all(Option::is_some)
    }

    /// Mean over victims (`None` unless complete).
    pub fn mean(&self) -> Option<f64> {
        if !self.complete() {
            return None;
        }
        let v: Vec<f64> = self.per_victim.iter().flatten().copied().collect();
        Some(v.iter().sum::<f64>() / v.len() as f64)
    }

    /// Maximum over victims (`None` unless complete).
    pub fn max(&self) -> Option<f64> {
        if !self.complete() {
            return None;
        }
        self.per_victim
            .iter()
            .flatten()
            .copied()
            .max_by(f64::total_cmp)
    }
}

/// Detection of `victims` killed at `killed_at` by the `live` nodes.
pub fn detection(
    obs: &[Observation],
    victims: &[usize],
    live: &[usize],
    killed_at: f64,
) -> Detection {
    let mut first: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    for o in obs {
        if o.seen == Seen::Failed && o.at >= killed_at && victims.contains(&o.subject) {
            let e = first.entry((o.observer, o.subject)).or_insert(o.at);
            if o.at < *e {
                *e = o.at;
            }
        }
    }
    let per_victim = victims
        .iter()
        .map(|&v| {
            let mut last: f64 = killed_at;
            for &o in live {
                match first.get(&(o, v)) {
                    Some(&t) => last = last.max(t),
                    None => return None,
                }
            }
            Some(last - killed_at)
        })
        .collect();
    Detection { per_victim }
}

/// Live nodes (not in `victims`) that some node declared failed at any time.
pub fn false_positives(obs: &[Observation], victims: &[usize]) -> usize {
    obs.iter()
        .filter(|o| o.seen == Seen::Failed && !victims.contains(&o.subject))
        .map(|o| o.subject)
        .collect::<BTreeSet<usize>>()
        .len()
}

/// Seconds from the origin's own event observation (or `fallback`, the controller's time
/// before it asked for the event) to each other node's first one, sorted.
pub fn event_arrivals(obs: &[Observation], origin: usize, fallback: f64) -> Vec<f64> {
    let mut first: BTreeMap<usize, f64> = BTreeMap::new();
    for o in obs.iter().filter(|o| o.seen == Seen::Event) {
        let e = first.entry(o.observer).or_insert(o.at);
        if o.at < *e {
            *e = o.at;
        }
    }
    let t0 = first.get(&origin).copied().unwrap_or(fallback);
    let mut v: Vec<f64> = first
        .iter()
        .filter(|(o, _)| **o != origin)
        .map(|(_, t)| (t - t0).max(0.0))
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// A Serf agent log line that matters here: what it says and the node name it is about
/// (for user events, the event's name).
pub fn parse_serf_line(line: &str) -> Option<(Seen, &str)> {
    const JOIN: &str = "serf: EventMemberJoin: ";
    const FAILED: &str = "serf: EventMemberFailed: ";
    const EVENT: &str = "agent: Received event: user-event: ";
    for (pat, seen) in [
        (JOIN, Seen::Up),
        (FAILED, Seen::Failed),
        (EVENT, Seen::Event),
    ] {
        if let Some(i) = line.find(pat) {
            let name = line[i + pat.len()..].split_whitespace().next()?;
            return Some((seen, name));
        }
    }
    None
}

/// A peerlab node log line of the `peerlab::members` target: its Unix time, what it says
/// (`up` → [`Seen::Up`], `dead` → [`Seen::Failed`]) and the member's peer id (hex).
pub fn parse_member_line(line: &str) -> Option<(f64, Seen, String)> {
    let line = strip_ansi(line);
    if !line.contains(peerlab_node::MEMBERS_LOG_TARGET) {
        return None;
    }
    let at = parse_rfc3339(line.split_whitespace().next()?)?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
    };
    let seen = match field("state")?.as_str() {
        "up" => Seen::Up,
        "dead" => Seen::Failed,
        _ => return None,
    };
    Some((at, seen, field("peer")?))
}

/// `line` without ANSI escape sequences (`ESC [ … letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z` (UTC, what `tracing-subscriber` writes) as Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let h: i64 = t.next()?.parse().ok()?;
    let min: i64 = t.next()?.parse().ok()?;
    let sec: f64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60) as f64 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(at: f64, observer: usize, subject: usize) -> Observation {
        Observation {
            at,
            observer,
            subject,
            seen: Seen::Up,
        }
    }

    fn failed(at: f64, observer: usize, subject: usize) -> Observation {
        Observation {
            at,
            observer,
            subject,
            seen: Seen::Failed,
        }
    }

    #[test]
    fn join_waits_for_the_last_node_to_see_everyone() {
        // Three nodes; node 2 sees node 0 last, at 107.
        let obs = vec![
            up(101.0, 0, 1),
            up(102.0, 0, 2),
            up(101.5, 1, 0),
            up(102.5, 1, 2),
            up(103.0, 2, 1),
            up(107.0, 2, 0),
            // Self-observations and repeats change nothing.
            up(100.0, 2, 2),
            up(108.0, 0, 1),
        ];
        assert_eq!(join_secs(&obs, 3, 100.0), Some(7.0));
        assert_eq!(joined_count(&obs, 3), 3);
        // Without node 2's sight of node 0 the join never completed.
        let partial: Vec<_> = obs.iter().copied().filter(|o| o.at != 107.0).collect();
        assert_eq!(join_secs(&partial, 3, 100.0), None);
        assert_eq!(joined_count(&partial, 3), 2);
    }

    #[test]
    fn detection_takes_the_last_live_observer_per_victim() {
        let victims = [3, 4];
        let live = [0, 1, 2];
        let killed = 50.0;
        let mut obs = vec![
            failed(52.0, 0, 3),
            failed(53.0, 1, 3),
            failed(56.0, 2, 3),
            failed(51.0, 0, 4),
            failed(51.5, 1, 4),
            failed(54.0, 2, 4),
            // A later repeat does not move the first sighting.
            failed(70.0, 2, 4),
            // A dead victim's own view does not count.
            failed(90.0, 4, 3),
        ];
        let d = detection(&obs, &victims, &live, killed);
        assert_eq!(d.per_victim, vec![Some(6.0), Some(4.0)]);
        assert_eq!(d.mean(), Some(5.0));
        assert_eq!(d.max(), Some(6.0));
        assert_eq!(false_positives(&obs, &victims), 0);
        // A live node that never declares a victim failed leaves detection incomplete.
        obs.retain(|o| !(o.observer == 2 && o.subject == 3));
        let d = detection(&obs, &victims, &live, killed);
        assert!(!d.complete());
        assert_eq!(d.mean(), None);
        // Declaring a live node failed is a false positive, counted once per node.
        obs.push(failed(60.0, 0, 1));
        obs.push(failed(61.0, 2, 1));
        assert_eq!(false_positives(&obs, &victims), 1);
    }

    #[test]
    fn event_arrivals_are_relative_to_the_origin_own_time() {
        let ev = |at, observer| Observation {
            at,
            observer,
            subject: observer,
            seen: Seen::Event,
        };
        let obs = vec![ev(10.0, 0), ev(10.5, 2), ev(10.25, 1), ev(11.0, 2)];
        assert_eq!(event_arrivals(&obs, 0, 9.0), vec![0.25, 0.5]);
        // Without the origin's own line the controller's time is the start.
        assert_eq!(event_arrivals(&obs[1..], 0, 9.0), vec![1.25, 1.5]);
    }

    #[test]
    fn serf_lines_parse() {
        let l = "    2026/12/06 06:11:30 [INFO] serf: EventMemberJoin: s12 127.0.0.1";
        assert_eq!(parse_serf_line(l), Some((Seen::Up, "s12")));
        let l = "    2026/12/06 06:11:40 [INFO] serf: EventMemberFailed: s7 127.0.0.1";
        assert_eq!(parse_serf_line(l), Some((Seen::Failed, "s7")));
        let l = "    2026/12/06 06:11:33 [INFO] agent: Received event: user-event: compare";
        assert_eq!(parse_serf_line(l), Some((Seen::Event, "compare")));
        // memberlist's own suspicion lines and the coalesced agent lines are not used.
        assert_eq!(
            parse_serf_line("[INFO] memberlist: Suspect s2 has failed, no acks received"),
            None
        );
        assert_eq!(
            parse_serf_line("[INFO] agent: Received event: member-failed"),
            None
        );
    }

    #[test]
    fn peerlab_member_lines_parse_with_or_without_colour() {
        let plain =
            "2026-12-06T06:11:30.250000Z  INFO peerlab::members: member peer=ab12 state=dead";
        assert_eq!(
            parse_member_line(plain),
            Some((
                parse_rfc3339("2026-12-06T06:11:30Z").unwrap() + 0.25,
                Seen::Failed,
                "ab12".to_string()
            ))
        );
        let coloured = "\u{1b}[2m2026-12-06T06:11:30.000001Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
                        \u{1b}[2mpeerlab::members\u{1b}[0m\u{1b}[2m:\u{1b}[0m member \
                        \u{1b}[3mpeer\u{1b}[0m\u{1b}[2m=\u{1b}[0mcd34 \u{1b}[3mstate\u{1b}[0m\u{1b}[2m=\u{1b}[0mup";
        let (_, seen, peer) = parse_member_line(coloured).unwrap();
        assert_eq!((seen, peer.as_str()), (Seen::Up, "cd34"));
        // Suspicion and other targets are not used.
        assert_eq!(
            parse_member_line(
                "2026-12-06T06:11:30Z  INFO peerlab::members: member peer=ab state=suspect"
            ),
            None
        );
        assert_eq!(
            parse_member_line("2026-12-06T06:11:30Z  WARN peerlab_node: member peer=ab state=dead"),
            None
        );
    }

    #[test]
    fn rfc3339_is_unix_time() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        assert_eq!(
            parse_rfc3339("2024-02-29T12:30:15.5Z"),
            Some(1_709_209_815.5)
        );
        assert_eq!(parse_rfc3339("2024-02-29 12:30:15Z"), None);
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
    }
}
