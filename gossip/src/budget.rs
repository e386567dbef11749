//! The memory budget: what each kind of gossip state costs, and how
//! [`Config::max_state_bytes`] is split between them.
//!
//! Every byte a node keeps for gossip is bounded by `max_state_bytes`:
//!
//! - the member table, the probe order, the list of members that are up and the partial
//!   view: at most `max_members` records of at most `max_addrs` addresses of
//!   `max_addr_len` bytes ([`Config::member_bytes`]);
//! - hot rumors: at most `max_rumors`, each naming a key of at most `max_key_len` bytes;
//!   feedback records and probe relays: fixed counts ([`Config::buffer_bytes`]);
//! - stored data and versions pending activation: whatever is left
//!   ([`Config::data_budget`]), accounted entry by entry as it arrives.
//!
//! The first two are set aside at their worst case, so the total holds whatever peers send.
//! Stored data shares its budget fairly between origins (max-min): when an entry does not
//! fit, the origin holding the most bytes yields its newest entries, unless the entry's
//! own origin would then hold the most, in which case the entry is refused. One origin can
//! thus take at most what no other origin needs, and a flood of new origins (identities
//! are free) shrinks every origin towards an equal share instead of evicting the others.
//! This node's own data is never evicted (its versions must never be reused).
//!
//! The per-item costs below are estimates of the in-memory size (map nodes, headers and
//! indexes included), not encoded sizes; they err on the high side.

use crate::Config;
use crate::rumor::{IN_FLIGHT_TICKS, MAX_IN_FLIGHT};
use crate::swim::MAX_RELAYS;

/// Bytes one member costs beyond its address strings: its table entry (id, incarnation,
/// state, signature), its places in the list of members that are up, the probe order and
/// the partial view.
pub(crate) const MEMBER_OVERHEAD: usize = 320;
/// Bytes one address string costs beyond its text (header and allocator rounding).
pub(crate) const ADDR_OVERHEAD: usize = 32;
/// Bytes one hot rumor costs beyond its key's text.
pub(crate) const RUMOR_OVERHEAD: usize = 128;
/// Bytes one feedback record costs (its id list is shared by one push's targets and
/// counted separately).
const IN_FLIGHT_OVERHEAD: usize = 64;
/// Bytes one probe relay costs.
const RELAY_BYTES: usize = 128;
/// Bytes one stored origin costs beyond its entries (its state and its place in the
/// fairness index).
pub(crate) const ORIGIN_OVERHEAD: usize = 192;
/// Bytes one stored entry costs beyond its value and its key, which is held twice (by key
/// and in the version index).
pub(crate) const ENTRY_OVERHEAD: usize = 128;
/// Bytes a version pending activation costs beyond its encoded size.
pub(crate) const PENDING_OVERHEAD: usize = 64;
/// Stored data must have room for at least this many full messages (a few anti-entropy
/// deltas), or a node could not hold what one exchange brings.
pub(crate) const MIN_DATA_MESSAGES: usize = 4;

/// Bytes one stored entry costs.
pub(crate) fn entry_cost(key: &str, value: Option<&[u8]>) -> usize {
    ENTRY_OVERHEAD + 2 * key.len() + value.map_or(0, <[u8]>::len)
}

impl Config {
    /// Worst-case bytes of the member table: `max_members` records of `max_addrs` addresses
    /// of `max_addr_len` bytes.
    pub fn member_bytes(&self) -> usize {
        let record = MEMBER_OVERHEAD.saturating_add(
            self.max_addrs
                .saturating_mul(ADDR_OVERHEAD + self.max_addr_len),
        );
        self.max_members.saturating_mul(record)
    }

    /// Worst-case bytes of the rumor buffers: hot rumors, feedback records (the id lists of
    /// the pushes of the last `IN_FLIGHT_TICKS` rounds, each no longer than a message) and
    /// probe relays.
    pub fn buffer_bytes(&self) -> usize {
        let rumors = self
            .max_rumors
            .saturating_mul(RUMOR_OVERHEAD + self.max_key_len);
        let in_flight = (IN_FLIGHT_TICKS as usize + 1)
            .saturating_mul(self.max_message_bytes)
            .saturating_add(MAX_IN_FLIGHT * IN_FLIGHT_OVERHEAD);
        rumors
            .saturating_add(in_flight)
            .saturating_add(MAX_RELAYS * RELAY_BYTES)
    }

    /// Bytes set aside for the member table and the rumor buffers.
    pub fn reserved_bytes(&self) -> usize {
        self.member_bytes().saturating_add(self.buffer_bytes())
    }

    /// Bytes left for stored data and versions pending activation:
    /// `max_state_bytes − reserved_bytes`.
    pub fn data_budget(&self) -> usize {
        self.max_state_bytes.saturating_sub(self.reserved_bytes())
    }
}
