//! Configuration: periods, fan-out, the rumor variant, anti-entropy mode, budgets and caps.

use std::num::NonZeroU32;
use std::time::Duration;

use peerlab_overlay::ConfigError;

use crate::budget::MIN_DATA_MESSAGES;
use serde::{Deserialize, Serialize};

/// Which spreading mechanisms run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Rumor mongering only: fast, but a residue of nodes may never hear an update.
    Rumor,
    /// Anti-entropy only: slow but complete.
    AntiEntropy,
    /// Both (the default): rumors for speed, anti-entropy for completeness.
    Combined,
}

/// Direction of an anti-entropy exchange, seen from the node that starts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exchange {
    /// The initiator's newer versions flow to the partner.
    Push,
    /// The partner's newer versions flow to the initiator.
    Pull,
    /// Both directions in one exchange.
    PushPull,
}

/// How an infective node loses interest in a rumor (Demers et al., §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Variant {
    /// Lose interest after `k` *consecutive* contacts that already knew the rumor; a contact
    /// that did not know it resets the count.
    FeedbackCounter,
    /// Lose interest with probability 1/k at each contact that already knew the rumor.
    FeedbackCoin,
    /// Lose interest after pushing the rumor in `k` periods, whatever the recipients knew.
    BlindCounter,
    /// Lose interest with probability 1/k after each period in which the rumor was pushed.
    BlindCoin,
}

impl Variant {
    /// Whether recipients must report which rumors they already knew.
    pub fn needs_feedback(self) -> bool {
        matches!(self, Variant::FeedbackCounter | Variant::FeedbackCoin)
    }
}

/// When received versions become active (visible to digests, feedback and forwarding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// At once, on receipt (what a real node does).
    Immediate,
    /// At the node's next gossip tick: the synchronous-cycle model of Demers et al. and Karp
    /// et al., in which what a site learns during a cycle takes effect at the cycle's end.
    /// Only meaningful with [`Config::synchronous_ticks`] and latencies well below the period.
    CycleEnd,
}

/// Gossip configuration. [`Config::default`] equals [`Config::lan`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Gossip period (one *round*): every period an infective node pushes its hot rumors.
    /// Default 200 ms, memberlist's LAN gossip interval.
    pub period: Duration,
    /// Partial view: rumor pushes and anti-entropy exchanges go to partners drawn from a
    /// random sample of this many members (kept uniform as the group grows by
    /// reservoir-style replacement, refilled when a partner goes down) instead of from all
    /// members. 0 (default): all members, as in the papers. With uniform partners every
    /// node ends up connected to every other (a full mesh: ~N²/2 transport connections,
    /// 45 000 at 300 nodes); a view of `k` bounds that to about `2k` per node while a
    /// rumor still spreads over a random graph of out-degree `k`, whose diameter is
    /// `O(log N / log k)` (cf. HyParView, Leitão et al., DSN 2007, whose active view plays
    /// this role). Probes, indirect probes and the member sync still pick from all members.
    pub partner_view: usize,
    /// Members each rumor push goes to per period. Default 3 (memberlist's LAN fan-out; with
    /// fan-out 3 a push reaches 99.99 % of 1000 nodes in about 11 periods).
    pub fanout: usize,
    /// Rumor mongering, anti-entropy, or both. Default [`Mode::Combined`].
    pub mode: Mode,
    /// How a node loses interest in a data rumor. Default [`Variant::FeedbackCounter`], the
    /// variant with the smallest residue for a given traffic in Demers et al.'s table.
    pub variant: Variant,
    /// The variant's k (counter limit, or 1/k coin probability). Default 3: with fan-out 3
    /// the residue is far below 10^-3, and anti-entropy repairs the rest.
    pub k: NonZeroU32,
    /// Transmissions a data rumor gets before its [`Variant`] may drop it:
    /// `data_retransmit_mult · ⌈log10(N + 1)⌉`, memberlist's budget for every broadcast
    /// (12 at N = 100). Demers' variants alone leave a residue (with feedback and k = 3 a
    /// node of a hundred is missed now and then) that only anti-entropy reaches — slowly
    /// in a group at rest, whose push-pulls have backed off; with every node sending each
    /// rumor 12 times the chance that a node is missed is about `e^(−12)`. It costs only
    /// when there is news. Default 4; 0: the variant alone (the papers' model).
    pub data_retransmit_mult: u32,
    /// Push a data rumor this node has just learned (published or received in a push) at
    /// once, to `fanout` partners, instead of at the next round — at most once per round
    /// (`rumor.rs`). Each hop of a fresh rumor then costs a message's latency instead of
    /// up to a period. Default `true`; [`Config::synchronous_rounds`] turns it off (the
    /// papers' rounds).
    pub eager_push: bool,
    /// Rounds after which a data rumor is dropped whatever its variant says, so that a
    /// feedback rumor whose replies are all lost cannot stay hot for ever. Default 64.
    pub max_rumor_rounds: u32,
    /// Anti-entropy period: every period the node reconciles with one random member.
    /// Default 1 s (five rounds): anti-entropy is the slow, complete backstop.
    pub anti_entropy_period: Duration,
    /// Anti-entropy direction. Default [`Exchange::PushPull`] (log3 N rounds, Karp et al.).
    pub exchange: Exchange,
    /// Byte budget of one message (digests, deltas, rumor batches, member lists), measured
    /// with `overlay::codec::encoded_len`. Default 64 KiB: gossip travels on QUIC/TCP streams,
    /// not raw datagrams, so an MTU does not apply; 64 KiB holds a full Scuttlebutt digest
    /// of about 1400 origins or the member list of about 1000 members, yet costs a receiver
    /// little to refuse (the codec's frame limit is 1 MiB).
    pub max_message_bytes: usize,
    /// When received versions become active. Default [`Activation::Immediate`].
    pub activation: Activation,
    /// Tick at exact multiples of the period from the epoch instead of at a random phase.
    /// Default `false` (random phases avoid synchronised bursts); experiments that model
    /// synchronous rounds set it.
    pub synchronous_ticks: bool,
    /// SWIM probe period: every period a node probes one member. Default 1 s (memberlist).
    pub probe_period: Duration,
    /// Wait for a direct ack before asking others to probe indirectly. Default 500 ms
    /// (memberlist's LAN timeout); must be below `probe_period`.
    pub probe_timeout: Duration,
    /// Members asked to probe indirectly after a direct probe times out. Default 3.
    pub indirect_probes: usize,
    /// Largest local health multiplier (Lifeguard; `health.rs`): a node whose probes fail
    /// without its helpers' nacks, or that has to refute suspicions of itself, stretches its
    /// probe period and probe timeout up to this many times, so that an overloaded node stops
    /// suspecting healthy members. Default 8 (memberlist's `AwarenessMaxMultiplier`); 1 turns
    /// it off (the papers' SWIM).
    pub max_health_multiplier: u32,
    /// Time a member stays suspect before it is declared dead, giving it the chance to
    /// refute. Default 5 s (25 rounds): a suspicion reaches the suspect and the refutation
    /// returns within a few rounds (see the crate docs).
    pub suspicion_timeout: Duration,
    /// Transmissions of a membership update = `member_retransmit_mult · ⌈log10(n + 1)⌉`
    /// (memberlist's rule). Default 4.
    pub member_retransmit_mult: u32,
    /// Period of the membership anti-entropy (a push-pull of the member table with one
    /// random member) while the member table changes. Default 10 s.
    pub member_sync_period: Duration,
    /// Longest period of the push-pulls (data anti-entropy, member sync) of a group at rest,
    /// before the size scale (`cadence.rs`): each push-pull runs at its period while news
    /// arrives and stretches, doubling after each run that saw nothing new, up to this
    /// period scaled by group size as memberlist scales its push-pull
    /// (`rest · (⌈log2 N − log2 32⌉ + 1)` beyond 32 members: 90 s at N = 100). Rumors still
    /// carry anything new at once; the push-pulls are the backstop. Default 30 s
    /// (memberlist's LAN `PushPullInterval`); `None`: fixed periods, as in the papers. A
    /// push-pull whose own period is longer never backs off.
    pub push_pull_rest: Option<Duration>,
    /// Time a dead or departed member is kept as a tombstone (so that stale "alive"
    /// updates are refused) before it is forgotten. Default 60 s.
    pub tombstone_expiry: Duration,
    /// Time a member declared dead (not one that left) is kept, and now and then sent a
    /// member sync, before it is forgotten: a member that was only cut off (a partition, a
    /// frozen process) is found again when it comes back within this long, and the two
    /// sides of a healed partition meet again. Serf keeps failed members 24 h for the same
    /// reason (`reconnect_timeout`). Default 1 h; at least `tombstone_expiry`.
    pub dead_expiry: Duration,
    /// Most members dead for longer than `tombstone_expiry` kept for `dead_expiry` (the
    /// oldest go first). Identities are free: without a cap, members made up by a hostile
    /// peer (signed by keys it generated) and then declared dead would hold slots of the
    /// member table for `dead_expiry` instead of `tombstone_expiry`. Default 1000, a tenth
    /// of `max_members`: a partition rarely cuts off more.
    pub max_dead_kept: usize,
    /// Time to wait for a seed's answer before trying the next one. Default 1 s.
    pub join_timeout: Duration,
    /// Cap on the member table. Default 10 000; updates beyond it are refused and counted.
    pub max_members: usize,
    /// Cap on origins whose data is stored. Default 10 000.
    pub max_origins: usize,
    /// Cap on keys (live or deleted) stored per origin. Default 1024.
    pub max_entries_per_origin: usize,
    /// Cap on hot rumors (data and membership). Default 4096; older rumors are dropped first
    /// and anti-entropy delivers what they would have.
    pub max_rumors: usize,
    /// Longest key in bytes. Default 256.
    pub max_key_len: usize,
    /// Longest value in bytes. Default 16 KiB, so that an entry always fits the budget.
    pub max_value_len: usize,
    /// Addresses kept per member. Default 8.
    pub max_addrs: usize,
    /// Longest address string. Default 256 bytes.
    pub max_addr_len: usize,
    /// Largest version step accepted above what is known of an origin. Default 2^32;
    /// a claim beyond it is absurd (no origin publishes four billion updates between two
    /// exchanges) and is refused rather than allowed to block newer versions for ever.
    pub max_version_jump: u64,
    /// Bytes of gossip state one node keeps, all of it: the member table, stored entries
    /// and values, versions pending activation, hot rumors, feedback records and probe
    /// relays. Default 64 MiB (the DHT's store budget). The member table and the rumor
    /// buffers are bounded by their counts, and their worst case is set aside (see
    /// [`Config::data_budget`]); stored data gets the rest, enforced on receipt: when it is
    /// full, the origin holding the most data yields its newest entries to a smaller one, and
    /// an origin that would become the largest is refused, so one origin (or a sybil
    /// flooding with many) cannot push out everyone else's data. Without it the caps would
    /// multiply out to `max_origins · max_entries_per_origin · max_value_len` ≈ 170 GB.
    pub max_state_bytes: usize,
    /// Member records must be signed by their members (see the crate docs, "Trust").
    /// Default `true`; `false` skips every signature check — the behaviour without these
    /// rules, for experiments that measure what the checks prevent (`peerlab sim attack
    /// --no-defenses`). Never turn it off in a real node.
    pub defenses: bool,
}

/// Largest [`Config::partner_view`]: beyond it the view is no longer partial for any group
/// this crate is meant for, and it bounds the per-node partner list.
pub const MAX_PARTNER_VIEW: usize = 1024;

/// Largest [`Config::max_health_multiplier`]: a probe period stretched further than this
/// many times would leave members unprobed for minutes.
pub const MAX_HEALTH_MULTIPLIER: u32 = 64;

/// Highest version accepted at all: 2^53, exact in every JSON and f64 consumer.
pub const MAX_VERSION: u64 = 1 << 53;

impl Default for Config {
    fn default() -> Self {
        Config::lan()
    }
}

impl Config {
    /// Defaults for a local network (memberlist's LAN profile).
    pub fn lan() -> Config {
        Config {
            period: Duration::from_millis(200),
            fanout: 3,
            mode: Mode::Combined,
            variant: Variant::FeedbackCounter,
            k: NonZeroU32::new(3).expect("non-zero"),
            max_rumor_rounds: 64,
            eager_push: true,
            data_retransmit_mult: 4,
            anti_entropy_period: Duration::from_secs(1),
            exchange: Exchange::PushPull,
            max_message_bytes: 64 * 1024,
            activation: Activation::Immediate,
            synchronous_ticks: false,
            probe_period: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            max_health_multiplier: 8,
            suspicion_timeout: Duration::from_secs(5),
            member_retransmit_mult: 4,
            member_sync_period: Duration::from_secs(10),
            push_pull_rest: Some(Duration::from_secs(30)),
            tombstone_expiry: Duration::from_secs(60),
            dead_expiry: Duration::from_secs(3600),
            max_dead_kept: 1000,
            join_timeout: Duration::from_secs(1),
            max_members: 10_000,
            max_origins: 10_000,
            max_entries_per_origin: 1024,
            max_rumors: 4096,
            max_key_len: 256,
            max_value_len: 16 * 1024,
            max_addrs: 8,
            max_addr_len: 256,
            max_version_jump: 1 << 32,
            partner_view: 0,
            max_state_bytes: 64 << 20,
            defenses: true,
        }
    }

    /// Defaults for a wide-area network: slower periods, longer timeouts (memberlist's WAN
    /// profile), smaller messages (16 KiB, values up to 8 KiB).
    pub fn wan() -> Config {
        Config {
            period: Duration::from_millis(500),
            fanout: 4,
            anti_entropy_period: Duration::from_secs(5),
            probe_period: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            suspicion_timeout: Duration::from_secs(30),
            member_sync_period: Duration::from_secs(30),
            push_pull_rest: Some(Duration::from_secs(60)),
            tombstone_expiry: Duration::from_secs(300),
            join_timeout: Duration::from_secs(5),
            max_message_bytes: 16 * 1024,
            max_value_len: 8 * 1024,
            ..Config::lan()
        }
    }

    /// The synchronous-round model of the epidemic-algorithm papers: ticks at multiples of
    /// `period`, anti-entropy every round whatever it brings, learning takes effect at the
    /// cycle's end. Drive it with latencies much smaller than the period.
    pub fn synchronous_rounds(mode: Mode) -> Config {
        Config {
            mode,
            anti_entropy_period: Config::lan().period,
            push_pull_rest: None,
            eager_push: false,
            data_retransmit_mult: 0,
            activation: Activation::CycleEnd,
            synchronous_ticks: true,
            ..Config::lan()
        }
    }

    /// Checks that the configuration is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.period.is_zero() {
            return ConfigError::err("period", "must be positive");
        }
        if self.anti_entropy_period.is_zero() {
            return ConfigError::err("anti_entropy_period", "must be positive");
        }
        if self.probe_period.is_zero() || self.probe_timeout >= self.probe_period {
            return ConfigError::err("probe_timeout", "must be positive and below probe_period");
        }
        if !(1..=MAX_HEALTH_MULTIPLIER).contains(&self.max_health_multiplier) {
            return ConfigError::err(
                "max_health_multiplier",
                format!("must be 1 (off) to {MAX_HEALTH_MULTIPLIER}"),
            );
        }
        if self.fanout == 0 {
            return ConfigError::err("fanout", "must be at least 1");
        }
        if self.dead_expiry < self.tombstone_expiry {
            return ConfigError::err("dead_expiry", "must be at least tombstone_expiry");
        }
        if self.partner_view > MAX_PARTNER_VIEW {
            return ConfigError::err(
                "partner_view",
                format!("must be at most {MAX_PARTNER_VIEW} (0 = all members)"),
            );
        }
        if self.partner_view != 0 && self.partner_view < self.fanout {
            return ConfigError::err("partner_view", "must be 0 or at least fanout");
        }
        if self.max_message_bytes < 1024 {
            return ConfigError::err("max_message_bytes", "must be at least 1024");
        }
        if self.data_budget() < MIN_DATA_MESSAGES * self.max_message_bytes {
            return ConfigError::err(
                "max_state_bytes",
                format!(
                    "must leave room for {MIN_DATA_MESSAGES} messages of data beside the \
                     member table and rumor buffers ({} bytes set aside)",
                    self.reserved_bytes()
                ),
            );
        }
        if self.max_value_len + self.max_key_len + 128 > self.max_message_bytes {
            return ConfigError::err(
                "max_value_len",
                "an entry of max_key_len + max_value_len must fit max_message_bytes",
            );
        }
        Ok(())
    }

    /// Transmissions of one membership update in a group of `n` members.
    pub fn member_retransmits(&self, n: usize) -> u32 {
        self.member_retransmit_mult.max(1) * log10_digits(n)
    }

    /// Transmissions a data rumor gets before its variant may drop it, in a group of `n`
    /// members ([`Config::data_retransmit_mult`]).
    pub fn data_retransmits(&self, n: usize) -> u32 {
        self.data_retransmit_mult * log10_digits(n)
    }
}

/// `⌈log10(n + 1)⌉`, at least 1 (memberlist's retransmit scale).
fn log10_digits(n: usize) -> u32 {
    ((n as f64) + 1.0).log10().ceil().max(1.0) as u32
}
