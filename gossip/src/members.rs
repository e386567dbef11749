//! The member table and SWIM's precedence rules, and the ideal [`StaticView`] that replaces
//! them in data experiments.
//!
//! A member's record is `(incarnation, state)`. Only the member itself raises its
//! incarnation, which it does to refute a suspicion. An update replaces the record when it
//! is newer by these rules (Das et al., SWIM §4.2, with memberlist's `left` state):
//!
//! | update \ held | alive j | suspect j | dead / left j |
//! |---|---|---|---|
//! | alive i   | i > j  | i > j | i > j (rejoin) |
//! | suspect i | i ≥ j  | i > j | never |
//! | dead i    | i ≥ j  | i ≥ j | never |
//! | left i    | i ≥ j  | i ≥ j | dead → left if i ≥ j |

use std::collections::BTreeMap;
use std::sync::Arc;

use peerlab_overlay::{Instant, PeerId, Signature};
use serde::{Deserialize, Serialize};

use crate::message::MemberUpdate;

/// A member's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MemberState {
    /// Answering probes (as far as this node knows).
    Alive,
    /// A probe failed; it is dead unless it refutes within the suspicion timeout.
    Suspect,
    /// Declared dead.
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberState {
    /// Alive or suspect: still counted as a member, probed and gossiped to.
    pub fn is_up(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }
}

/// What this node knows of one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Addresses (opaque strings, bounded by `max_addrs` and `max_addr_len`).
    pub addrs: Vec<String>,
    /// The member's incarnation.
    pub incarnation: u64,
    /// Its state.
    pub state: MemberState,
    /// When the state last changed.
    pub since: Instant,
    /// The member's signature of `(incarnation, addrs)` (see [`MemberUpdate`]).
    pub signature: Signature,
}

/// How an update changed the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Not newer: ignored.
    None,
    /// Newer, but the member stays in the same up/down class with the same state.
    Refreshed,
    /// The member became alive (newly known or back from having left).
    Up,
    /// The member became alive again after it was held dead: it was only cut off.
    Back,
    /// An alive member's suspicion was refuted.
    Refuted,
    /// The member became suspect.
    Suspected,
    /// The member was declared dead.
    Down,
    /// The member left.
    Left,
    /// A down member's tombstone changed (dead → left); no event.
    Tombstone,
}

/// The member table.
#[derive(Clone, Debug, Default)]
pub(crate) struct Table {
    pub(crate) members: BTreeMap<PeerId, Member>,
    /// Up members, for uniform random choice; rebuilt lazily.
    up: Vec<PeerId>,
    dirty: bool,
    /// How many members are up (counted every round; a walk of the table would cost
    /// `O(N)` each time).
    up_count: usize,
}

/// Whether an update `(i, s)` overrides a record `(j, t)`.
pub(crate) fn overrides(i: u64, s: MemberState, j: u64, t: MemberState) -> bool {
    use MemberState::*;
    match (s, t) {
        (Alive, _) => i > j,
        (Suspect, Alive) => i >= j,
        (Suspect, Suspect) => i > j,
        (Suspect, Dead | Left) => false,
        (Dead, Alive | Suspect) => i >= j,
        (Dead, Dead | Left) => false,
        (Left, Alive | Suspect | Dead) => i >= j,
        (Left, Left) => false,
    }
}

impl Table {
    pub(crate) fn get(&self, p: &PeerId) -> Option<&Member> {
        self.members.get(p)
    }

    /// Whether `u` needs its signature checked before it is applied: it would change the
    /// table (a new member with room for it, or newer than the record held) and its signed
    /// part (incarnation, addresses, signature) is not the record held, which was checked
    /// when it arrived.
    pub(crate) fn needs_proof(&self, u: &MemberUpdate, cap: usize) -> bool {
        match self.members.get(&u.peer) {
            None => self.members.len() < cap,
            Some(m) => {
                overrides(u.incarnation, u.state, m.incarnation, m.state)
                    && !(m.incarnation == u.incarnation
                        && m.signature == u.signature
                        && (m.state == MemberState::Left) == (u.state == MemberState::Left)
                        && m.addrs == u.addrs)
            }
        }
    }

    /// Applies an update (already validated and not about this node), and tells whether it
    /// gave a known member other addresses. `Err(())` when the table is full and the member
    /// is new.
    ///
    /// The member's signed record (addresses, signature) is taken from the member's own
    /// statements and from claims that raise the incarnation; a claim at the incarnation
    /// held changes only the state, so the record held stays the member's own.
    pub(crate) fn apply(
        &mut self,
        u: &MemberUpdate,
        now: Instant,
        cap: usize,
    ) -> Result<(Change, bool), ()> {
        match self.members.get_mut(&u.peer) {
            None => {
                if self.members.len() >= cap {
                    return Err(());
                }
                self.members.insert(
                    u.peer,
                    Member {
                        addrs: u.addrs.clone(),
                        incarnation: u.incarnation,
                        state: u.state,
                        since: now,
                        signature: u.signature,
                    },
                );
                self.dirty = true;
                self.up_count += usize::from(u.state.is_up());
                let change = match u.state {
                    MemberState::Alive => Change::Up,
                    MemberState::Suspect => Change::Suspected,
                    // A tombstone of a member never seen up: remembered, no event.
                    MemberState::Dead | MemberState::Left => Change::Tombstone,
                };
                Ok((change, false))
            }
            Some(m) => {
                if !overrides(u.incarnation, u.state, m.incarnation, m.state) {
                    return Ok((Change::None, false));
                }
                let was = m.state;
                let own = matches!(u.state, MemberState::Alive | MemberState::Left);
                let mut moved = false;
                if own || u.incarnation > m.incarnation {
                    moved = !u.addrs.is_empty() && m.addrs != u.addrs;
                    if m.addrs != u.addrs {
                        m.addrs = u.addrs.clone();
                    }
                    m.signature = u.signature;
                }
                m.incarnation = u.incarnation;
                if was != u.state {
                    m.since = now;
                }
                m.state = u.state;
                if was.is_up() != u.state.is_up() {
                    self.dirty = true;
                    if u.state.is_up() {
                        self.up_count += 1;
                    } else {
                        self.up_count -= 1;
                    }
                }
                use MemberState::*;
                let change = match (was, u.state) {
                    (Dead, Alive) => Change::Back,
                    (Left, Alive) => Change::Up,
                    (Suspect, Alive) => Change::Refuted,
                    (Alive, Alive) | (Suspect, Suspect) => Change::Refreshed,
                    (_, Suspect) => Change::Suspected,
                    (Dead, Left) => Change::Tombstone,
                    (_, Dead) => Change::Down,
                    (_, Left) => Change::Left,
                };
                Ok((change, moved))
            }
        }
    }

    /// Members that are up, in a stable order.
    pub(crate) fn up(&mut self) -> &[PeerId] {
        if self.dirty {
            self.up = self
                .members
                .iter()
                .filter(|(_, m)| m.state.is_up())
                .map(|(p, _)| *p)
                .collect();
            self.dirty = false;
        }
        &self.up
    }

    /// How many members are up.
    pub(crate) fn up_count(&self) -> usize {
        self.up_count
    }

    /// Forgets members that left more than `left` ago and members declared dead more than
    /// `dead` ago, and keeps at most `max_old_dead` of those dead for longer than `left`
    /// (the most recently dead); members that are up are never forgotten.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        left: std::time::Duration,
        dead: std::time::Duration,
        max_old_dead: usize,
    ) {
        if self.members.len() == self.up_count {
            return;
        }
        self.members.retain(|_, m| {
            let age = now.saturating_since(m.since);
            match m.state {
                MemberState::Alive | MemberState::Suspect => true,
                MemberState::Dead => age < dead,
                MemberState::Left => age < left,
            }
        });
        let mut old_dead: Vec<(Instant, PeerId)> = self
            .members
            .iter()
            .filter(|(_, m)| m.state == MemberState::Dead && now.saturating_since(m.since) >= left)
            .map(|(p, m)| (m.since, *p))
            .collect();
        if old_dead.len() > max_old_dead {
            old_dead.sort_unstable();
            for (_, p) in &old_dead[..old_dead.len() - max_old_dead] {
                self.members.remove(p);
            }
        }
    }

    pub(crate) fn update_of(&self, p: &PeerId) -> Option<MemberUpdate> {
        self.members.get(p).map(|m| MemberUpdate {
            peer: *p,
            incarnation: m.incarnation,
            state: m.state,
            addrs: m.addrs.clone(),
            signature: m.signature,
        })
    }
}

/// A fixed, shared membership for data experiments (sorted, deduplicated).
#[derive(Clone, Debug)]
pub struct StaticView(Arc<[PeerId]>);

impl StaticView {
    /// A view of `peers`.
    pub fn new(mut peers: Vec<PeerId>) -> StaticView {
        peers.sort();
        peers.dedup();
        StaticView(peers.into())
    }

    /// The peers.
    pub fn peers(&self) -> &[PeerId] {
        &self.0
    }

    pub(crate) fn contains(&self, p: &PeerId) -> bool {
        self.0.binary_search(p).is_ok()
    }

    /// The number of peers other than `me`.
    pub(crate) fn len_without(&self, me: &PeerId) -> usize {
        self.0.len().saturating_sub(usize::from(self.contains(me)))
    }
}

/// Whom a node knows: a SWIM-managed member table, or the ideal static view.
pub(crate) enum View {
    Swim(Table),
    Static(StaticView),
}
