//! Member records signed by their members: membership that cannot be forged.
//!
//! In an open overlay anyone who can dial a node is a peer, so a member's addresses and
//! incarnation must not be whatever a third party says they are: a peer that could announce
//! another member's addresses would make every node dial hosts of its choosing, and one that
//! could raise another member's incarnation could outbid every refutation (an incarnation of
//! 2^53 can never be refuted, since a higher one is refused as absurd).
//!
//! A member therefore signs its own record with its node key (the Ed25519 key its
//! [`PeerId`] names; [`peerlab_overlay::identity`]), under the domain [`MEMBER_DOMAIN`]:
//!
//! - its **alive** statement: "I am alive at incarnation `i`, at these addresses", signed at
//!   start and again each time it refutes a suspicion by raising its incarnation;
//! - its **left** statement: "I leave at incarnation `i`", signed when it leaves.
//!
//! The signed bytes are `kind ‖ peer ‖ incarnation ‖ addresses` ([`MemberUpdate::signed_bytes`]);
//! the state is not part of an alive statement, so that others can make claims about it.
//! Every [`MemberUpdate`] carries the signature of the record it is about:
//!
//! - `Alive` and `Left` updates are the member's statements themselves;
//! - `Suspect` and `Dead` updates are claims by other nodes. SWIM needs them (a crashed
//!   member cannot sign its own death), so anyone may make one; it refutes itself by raising
//!   its incarnation (Das et al., DSN 2002, §4.2). A claim carries the member's alive
//!   statement *of the incarnation it is about*: so a claim can neither invent an
//!   incarnation the member never announced, nor change the member's addresses — those
//!   come only from the member's signature. A claim at the incarnation already held here
//!   changes only the state.
//!
//! A received update whose signature does not verify is dropped, counted
//! ([`Rejected::forged`](crate::Rejected)) and reported as [`Offence::Forged`] against the
//! peer that sent it (the authenticated sender, never the member it names). Verification
//! costs about 50 µs, so it runs only for an update that would change this node's table and
//! whose signed part differs from the record already held (a record verified once is not
//! verified again when it comes back, as it does many times in a rumor's life).
//! [`Config::defenses`](crate::Config) = `false` turns the checks off, for experiments that
//! measure what they prevent.
//!
//! Still, a group of `N` verifies every refutation `N` times, and a simulator running the
//! whole group in one process pays for all of them. Verification is a pure function of
//! the key, the signed bytes and the signature, so cores may share a memo of the triples
//! that verified ([`VerifiedRecords`], [`Gossip::share_verified`](crate::Gossip)): a hit
//! gives the answer verification would have given, so sharing it cannot change any result.
//!
//! [`Offence::Forged`]: peerlab_overlay::Offence::Forged

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use peerlab_overlay::{Keypair, PeerId, Signature};

use crate::members::MemberState;
use crate::message::MemberUpdate;

/// Domain of a member's signature over its own record ([`peerlab_overlay::identity`]).
pub const MEMBER_DOMAIN: &str = "peerlab/gossip/member/1";

/// Kind byte of an alive statement in the signed bytes.
const ALIVE: u8 = 0;
/// Kind byte of a left statement.
const LEFT: u8 = 1;

/// A placeholder for a record that is never sent: a node with a static view does not sign
/// its record until it first needs to send it (leaving, refuting).
pub(crate) const UNSIGNED: Signature = Signature([0; 64]);

impl MemberUpdate {
    /// `key`'s alive statement: alive at `incarnation` at `addrs`, signed.
    pub fn alive(key: &Keypair, incarnation: u64, addrs: Vec<String>) -> MemberUpdate {
        MemberUpdate::signed(key, incarnation, MemberState::Alive, addrs)
    }

    /// `key`'s left statement: it leaves at `incarnation`, signed.
    pub fn left(key: &Keypair, incarnation: u64, addrs: Vec<String>) -> MemberUpdate {
        MemberUpdate::signed(key, incarnation, MemberState::Left, addrs)
    }

    fn signed(key: &Keypair, incarnation: u64, state: MemberState, addrs: Vec<String>) -> Self {
        let mut u = MemberUpdate {
            peer: key.peer_id(),
            incarnation,
            state,
            addrs,
            signature: UNSIGNED,
        };
        u.signature = key.sign(MEMBER_DOMAIN, &u.signed_bytes());
        u
    }

    /// The bytes the member signs: the statement's kind (left for `Left`, alive for every
    /// other state), the member, the incarnation and the addresses, each length-prefixed.
    pub fn signed_bytes(&self) -> Vec<u8> {
        statement(&self.peer, self.incarnation, self.state, &self.addrs)
    }

    /// Whether the signature is the member's, for this incarnation and these addresses.
    pub fn verify(&self) -> bool {
        self.peer
            .verify(MEMBER_DOMAIN, &self.signed_bytes(), &self.signature)
    }

    /// The same record with `state` claimed about it (a suspicion or a death).
    pub(crate) fn claim(&self, state: MemberState) -> MemberUpdate {
        debug_assert!(matches!(state, MemberState::Suspect | MemberState::Dead));
        MemberUpdate {
            state,
            ..self.clone()
        }
    }
}

/// The signed bytes of `peer`'s statement at `incarnation` (see [`MemberUpdate::signed_bytes`]).
pub(crate) fn statement(
    peer: &PeerId,
    incarnation: u64,
    state: MemberState,
    addrs: &[String],
) -> Vec<u8> {
    let kind = if state == MemberState::Left {
        LEFT
    } else {
        ALIVE
    };
    let len: usize = addrs.iter().map(|a| 4 + a.len()).sum();
    let mut b = Vec::with_capacity(1 + 32 + 8 + 4 + len);
    b.push(kind);
    b.extend_from_slice(peer.public_key());
    b.extend_from_slice(&incarnation.to_be_bytes());
    b.extend_from_slice(&(addrs.len() as u32).to_be_bytes());
    for a in addrs {
        b.extend_from_slice(&(a.len() as u32).to_be_bytes());
        b.extend_from_slice(a.as_bytes());
    }
    b
}

/// A bounded memo of member records whose signature verified, shared by cores that run in
/// one process (a simulated group): each record is verified once instead of once per core.
///
/// It holds whole triples — key, signed bytes, signature — and answers only for an exact
/// match, so a hit is exactly what verification would answer. When full, the oldest entry
/// is forgotten (it will be verified again if it comes back). Cheap to clone: clones share
/// the memo.
#[derive(Clone, Debug)]
pub struct VerifiedRecords(Arc<Mutex<Memo>>);

#[derive(Debug)]
struct Memo {
    /// Signature → (member, signed bytes) of a record that verified.
    records: BTreeMap<[u8; 64], (PeerId, Vec<u8>)>,
    /// Insertion order, for forgetting the oldest.
    order: VecDeque<[u8; 64]>,
    capacity: usize,
}

impl VerifiedRecords {
    /// A memo of at most `capacity` records (each about 200 bytes).
    pub fn new(capacity: usize) -> VerifiedRecords {
        VerifiedRecords(Arc::new(Mutex::new(Memo {
            records: BTreeMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        })))
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memo> {
        // A panic elsewhere cannot leave the memo inconsistent (each operation is one
        // insertion or look-up), so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`MemberUpdate::verify`], answered from the memo when it holds the triple.
    pub(crate) fn verify(&self, u: &MemberUpdate) -> bool {
        let bytes = u.signed_bytes();
        if self
            .lock()
            .records
            .get(&u.signature.0)
            .is_some_and(|(peer, b)| *peer == u.peer && *b == bytes)
        {
            return true;
        }
        if !u.peer.verify(MEMBER_DOMAIN, &bytes, &u.signature) {
            return false;
        }
        let mut m = self.lock();
        if m.records.len() >= m.capacity
            && let Some(old) = m.order.pop_front()
        {
            m.records.remove(&old);
        }
        if m.records.insert(u.signature.0, (u.peer, bytes)).is_none() {
            m.order.push_back(u.signature.0);
        }
        true
    }
}
