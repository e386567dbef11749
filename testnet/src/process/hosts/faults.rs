//! Faults between emulated hosts: partitions and packet loss as an nftables table on the
//! bridge, bandwidth as a `tc` token bucket on each end of a host's link.
//!
//! Partitions and loss live in one table of the `bridge` family whose `forward` chain sees
//! every frame that crosses the bridge from one host's port to another's. Frames between a
//! host and the controller (the bridge's own address) take the bridge's `input`/`output`
//! path and are never filtered, so the controller keeps reaching every node's control API
//! while the hosts cannot reach each other. Drops are silent, as on a real partition: no
//! ICMP, no reset; a node learns of it only by timeouts.
//!
//! - A partition into groups drops every frame from a host of one group to a host of
//!   another (both directions); hosts in no group keep reaching everyone.
//! - Loss `P` of host `h` drops each frame `h` sends to another host with probability `P`
//!   (`numgen random`, nftables' per-packet random number).
//! - A rate of `M` Mbit/s puts a token bucket filter (`tc tbf`) on both ends of `h`'s link,
//!   so that what `h` sends and what it receives each pass at most `M` Mbit/s.
//!
//! The whole table is rendered from the current [`Faults`] and loaded in one `nft -f`
//! transaction, so a change never leaves half a rule set behind.
//!
//! Delay is not here: the kernel of the machines this was built on has no `netem`, so
//! latency comes from the nodes themselves (`peerlab node --delay-ms`).

use serde::{Deserialize, Serialize};

use crate::process::TestnetError;

/// Resolution of the loss probability: nftables draws a number below this per frame.
pub const LOSS_RESOLUTION: u32 = 1_000_000;
/// Lowest bandwidth accepted, Mbit/s: below it a token bucket's burst, which must hold a
/// full frame, dominates the rate.
pub const MIN_RATE_MBIT: f64 = 0.1;
/// Highest bandwidth accepted, Mbit/s (beyond what veth links carry anyway).
pub const MAX_RATE_MBIT: f64 = 100_000.0;
/// Queueing delay a token bucket allows before it drops, ms: a full queue is what a
/// saturated link's router would hold.
pub const TBF_LATENCY_MS: u32 = 200;

/// Loss and bandwidth of one host's link (`None`: unimpaired).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkFaults {
    /// Probability that a frame the host sends to another host is dropped.
    pub loss: Option<f64>,
    /// Bandwidth of the host's link in each direction, Mbit/s.
    pub rate_mbit: Option<f64>,
}

/// Every fault in force on a testnet's bridge.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Groups of host numbers (1-based) that cannot reach each other; empty: no partition.
    pub partition: Vec<Vec<usize>>,
    /// Per host (index `h - 1`).
    pub links: Vec<LinkFaults>,
}

/// Parses a host list like `1-3,5` into host numbers (1-based, each in `1..=hosts`).
pub fn parse_hosts(s: &str, hosts: usize) -> Result<Vec<usize>, TestnetError> {
    let bad = |why: String| TestnetError::Invalid(format!("host list {s:?}: {why}"));
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: usize = a
            .parse()
            .map_err(|_| bad(format!("{a:?} is not a host number")))?;
        let b: usize = b
            .parse()
            .map_err(|_| bad(format!("{b:?} is not a host number")))?;
        if a == 0 || b < a || b > hosts {
            return Err(bad(format!(
                "{part} is not a range within the testnet's hosts 1..={hosts}"
            )));
        }
        for h in a..=b {
            if out.contains(&h) {
                return Err(bad(format!("host {h} named twice")));
            }
            out.push(h);
        }
    }
    if out.is_empty() {
        return Err(bad("no host named".into()));
    }
    Ok(out)
}

/// Parses partition groups like `1-3/4-6` (groups separated by `/`): at least two, no host
/// in two groups.
pub fn parse_groups(s: &str, hosts: usize) -> Result<Vec<Vec<usize>>, TestnetError> {
    let groups = s
        .split('/')
        .map(|g| parse_hosts(g, hosts))
        .collect::<Result<Vec<_>, _>>()?;
    if groups.len() < 2 {
        return Err(TestnetError::Invalid(format!(
            "partition {s:?}: name at least two groups separated by '/', e.g. 1-3/4-6"
        )));
    }
    let mut seen = Vec::new();
    for h in groups.iter().flatten() {
        if seen.contains(h) {
            return Err(TestnetError::Invalid(format!(
                "partition {s:?}: host {h} is in two groups"
            )));
        }
        seen.push(*h);
    }
    Ok(groups)
}

/// Checks a loss probability and a rate.
pub fn validate_link(f: &LinkFaults) -> Result<(), TestnetError> {
    if let Some(p) = f.loss
        && !(0.0..=1.0).contains(&p)
    {
        return Err(TestnetError::Invalid(format!(
            "--loss {}: a percentage in 0..=100",
            p * 100.0
        )));
    }
    if let Some(r) = f.rate_mbit
        && !(MIN_RATE_MBIT..=MAX_RATE_MBIT).contains(&r)
    {
        return Err(TestnetError::Invalid(format!(
            "--rate {r}: Mbit/s in {MIN_RATE_MBIT}..={MAX_RATE_MBIT}"
        )));
    }
    Ok(())
}

/// The nftables script that replaces table `bridge <table>` with the rules for `faults`;
/// `port(h)` names host `h`'s port on the bridge. Loaded with `nft -f -`: the `add` makes
/// the `delete` succeed when the table is new, and all three lines are one transaction.
pub fn nft_script(table: &str, faults: &Faults, port: impl Fn(usize) -> String) -> String {
    let mut rules = Vec::new();
    for (i, a) in faults.partition.iter().enumerate() {
        for (j, b) in faults.partition.iter().enumerate() {
            if i == j {
                continue;
            }
            rules.push(format!(
                "iifname {{ {} }} oifname {{ {} }} drop",
                set(a, &port),
                set(b, &port)
            ));
        }
    }
    for (k, l) in faults.links.iter().enumerate() {
        if let Some(p) = l.loss
            && p > 0.0
        {
            let below = ((p * f64::from(LOSS_RESOLUTION)).round() as u32).min(LOSS_RESOLUTION);
            rules.push(format!(
                "iifname {} numgen random mod {LOSS_RESOLUTION} < {below} drop",
                quote(&port(k + 1))
            ));
        }
    }
    let mut s = format!("add table bridge {table}\ndelete table bridge {table}\n");
    s.push_str(&format!(
        "table bridge {table} {{\n  chain between_hosts {{\n    type filter hook forward priority 0; policy accept;\n"
    ));
    for r in rules {
        s.push_str("    ");
        s.push_str(&r);
        s.push('\n');
    }
    s.push_str("  }\n}\n");
    s
}

fn quote(name: &str) -> String {
    format!("\"{name}\"")
}

fn set(hosts: &[usize], port: &impl Fn(usize) -> String) -> String {
    hosts
        .iter()
        .map(|&h| quote(&port(h)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `tc` arguments (after `tc`) that shape `dev` to `mbit` Mbit/s with a token bucket.
pub fn tbf_args(dev: &str, mbit: f64) -> Vec<String> {
    let kbit = (mbit * 1000.0).round() as u64;
    // The bucket holds 10 ms of traffic at the rate, and never less than a few full
    // frames (a bucket below one frame would pass nothing).
    let burst_bytes = (kbit * 1000 / 8 / 100).max(16 * 1024);
    vec![
        "qdisc".into(),
        "replace".into(),
        "dev".into(),
        dev.into(),
        "root".into(),
        "tbf".into(),
        "rate".into(),
        format!("{kbit}kbit"),
        "burst".into(),
        format!("{burst_bytes}"),
        "latency".into(),
        format!("{TBF_LATENCY_MS}ms"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lists_and_groups_parse_and_reject_what_is_ambiguous() {
        assert_eq!(parse_hosts("1-3,5", 6).unwrap(), vec![1, 2, 3, 5]);
        assert_eq!(parse_hosts(" 4 ", 6).unwrap(), vec![4]);
        for bad in ["0", "7", "3-1", "1,1", "a", "", "2-9"] {
            assert!(parse_hosts(bad, 6).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_groups("1-3/4-6", 6).unwrap(),
            vec![vec![1, 2, 3], vec![4, 5, 6]]
        );
        assert_eq!(parse_groups("1/2/3", 3).unwrap().len(), 3);
        assert!(parse_groups("1-3", 6).is_err(), "one group is no partition");
        assert!(parse_groups("1-3/3-4", 6).is_err(), "host 3 in two groups");
    }

    #[test]
    fn the_rule_set_cuts_every_pair_across_groups_and_nothing_within() {
        let f = Faults {
            partition: vec![vec![1, 2], vec![3]],
            links: vec![
                LinkFaults::default(),
                LinkFaults {
                    loss: Some(0.05),
                    rate_mbit: None,
                },
                LinkFaults::default(),
            ],
        };
        let s = nft_script("peerlab_7", &f, |h| format!("plv7h{h}"));
        assert!(s.starts_with("add table bridge peerlab_7\ndelete table bridge peerlab_7\n"));
        assert!(s.contains(r#"iifname { "plv7h1", "plv7h2" } oifname { "plv7h3" } drop"#));
        assert!(s.contains(r#"iifname { "plv7h3" } oifname { "plv7h1", "plv7h2" } drop"#));
        assert_eq!(
            s.matches("oifname").count(),
            2,
            "no rule within a group:\n{s}"
        );
        assert!(s.contains(r#"iifname "plv7h2" numgen random mod 1000000 < 50000 drop"#));
        assert_eq!(s.matches("numgen").count(), 1, "loss only where set");
        // Healed and unimpaired: the table stays, empty.
        let empty = nft_script("peerlab_7", &Faults::default(), |h| format!("plv7h{h}"));
        assert!(!empty.contains("drop"));
        assert!(empty.contains("hook forward"));
    }

    #[test]
    fn link_faults_are_range_checked_and_the_bucket_holds_a_frame() {
        assert!(
            validate_link(&LinkFaults {
                loss: Some(1.5),
                rate_mbit: None
            })
            .is_err()
        );
        assert!(
            validate_link(&LinkFaults {
                loss: None,
                rate_mbit: Some(0.0)
            })
            .is_err()
        );
        assert!(
            validate_link(&LinkFaults {
                loss: Some(0.0),
                rate_mbit: Some(10.0)
            })
            .is_ok()
        );
        let a = tbf_args("eth0", 10.0);
        assert_eq!(a[7], "10000kbit");
        assert_eq!(a[9], "16384", "10 ms at 10 Mbit/s is below the floor");
        assert_eq!(tbf_args("eth0", 1000.0)[9], "1250000");
    }
}
