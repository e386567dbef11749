//! Membership that cannot be forged: signed member records, claims, offences.

use peerlab_overlay::{Offence, Signature};

use super::*;

pub(super) fn offences(out: &[Out]) -> Vec<(PeerId, Offence)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Offence { peer, offence } => Some((*peer, *offence)),
            _ => None,
        })
        .collect()
}

fn rumor(members: Vec<MemberUpdate>) -> Message {
    Message::Gossip {
        seq: 1,
        feedback: false,
        members,
        entries: vec![],
    }
}

/// Every address any event of `out` announces.
fn announced(out: &[Out]) -> Vec<(PeerId, Vec<String>)> {
    events(out)
        .into_iter()
        .filter_map(|e| match e {
            Event::MemberUp { peer, addrs } | Event::MemberAddrs { peer, addrs } => {
                Some((peer, addrs))
            }
            _ => None,
        })
        .collect()
}

/// `signer`'s signature over what `peer` would sign: a record in `peer`'s name that
/// `peer` never made.
fn forged_by(signer: u64, u: MemberUpdate) -> MemberUpdate {
    MemberUpdate {
        signature: k(signer).sign(MEMBER_DOMAIN, &u.signed_bytes()),
        ..u
    }
}

#[test]
fn member_records_verify_only_for_their_member_and_content() {
    let u = signed(2, 3, MemberState::Alive, &["/mem/2"]);
    assert!(u.verify());
    assert!(!forged_by(3, u.clone()).verify(), "someone else's key");
    let moved = MemberUpdate {
        addrs: vec!["/evil".into()],
        ..u.clone()
    };
    assert!(!moved.verify(), "other addresses");
    let later = MemberUpdate {
        incarnation: 4,
        ..u.clone()
    };
    assert!(!later.verify(), "another incarnation");
    let left = MemberUpdate {
        state: MemberState::Left,
        ..u.clone()
    };
    assert!(!left.verify(), "an alive statement is not a left statement");
    assert!(
        u.claim(MemberState::Dead).verify(),
        "a claim carries the record"
    );
    // Signed bytes are unambiguous: addresses cannot be re-split.
    let a = signed(2, 0, MemberState::Alive, &["ab", "c"]);
    let b = MemberUpdate {
        addrs: vec!["a".into(), "bc".into()],
        ..a.clone()
    };
    assert!(!b.verify());
}

/// A third party announces other addresses for a member (at a higher incarnation, so an
/// unsigned table would take them): dropped, counted, and charged to the sender.
#[test]
fn a_forged_record_from_a_third_party_is_dropped_and_struck() {
    let mut g = swim(1, &[2, 3]);
    let evil = forged_by(3, signed(2, 1, MemberState::Alive, &["/evil"]));
    let out = run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), rumor(vec![evil]))
    });
    assert!(announced(&out).is_empty(), "{:?}", events(&out));
    assert_eq!(g.member(&p(2)).unwrap().addrs, vec!["/mem/2".to_string()]);
    assert_eq!(g.member(&p(2)).unwrap().incarnation, 0);
    assert_eq!(g.rejected().forged, 1);
    assert_eq!(offences(&out), vec![(p(3), Offence::Forged)]);
    // A garbage signature, and a record of a member nobody knows: same fate.
    let junk = MemberUpdate {
        signature: Signature([7; 64]),
        ..signed(2, 2, MemberState::Alive, &["/evil"])
    };
    let stranger = forged_by(3, signed(7, 0, MemberState::Alive, &["/evil"]));
    let out = run(&mut g, 2, |g, cx| {
        g.handle_message(cx, p(3), rumor(vec![junk, stranger]))
    });
    assert!(announced(&out).is_empty());
    assert!(g.member(&p(7)).is_none());
    assert_eq!(g.rejected().forged, 3);
    assert_eq!(
        offences(&out),
        vec![(p(3), Offence::Forged)],
        "one report per message"
    );
    // The member's own record with new addresses is taken, from anyone who relays it.
    let real = signed(2, 1, MemberState::Alive, &["/mem/2-new"]);
    let out = run(&mut g, 3, |g, cx| {
        g.handle_message(cx, p(3), rumor(vec![real]))
    });
    assert_eq!(
        announced(&out),
        vec![(p(2), vec!["/mem/2-new".to_string()])]
    );
    assert!(offences(&out).is_empty());
}

/// Every path by which addresses could reach `MemberUp`/`MemberAddrs` without the
/// member's signature: a joiner's forged join, a forged record in a join reply or a member
/// delta, a claim carrying addresses.
#[test]
fn an_unsigned_address_change_never_reaches_events() {
    // A join whose record is signed by another key than the joiner's.
    let mut seed = swim(1, &[2, 3]);
    let fake = forged_by(9, signed(8, 0, MemberState::Alive, &["/evil"]));
    let join = Message::Join {
        incarnation: fake.incarnation,
        addrs: fake.addrs.clone(),
        signature: fake.signature,
    };
    let out = run(&mut seed, 1, |g, cx| g.handle_message(cx, p(8), join));
    assert!(announced(&out).is_empty());
    assert!(seed.member(&p(8)).is_none());
    assert_eq!(offences(&out), vec![(p(8), Offence::Forged)]);
    // The same joiner with its own signature is admitted.
    let real = signed(8, 0, MemberState::Alive, &["/mem/8"]);
    let join = Message::Join {
        incarnation: 0,
        addrs: real.addrs.clone(),
        signature: real.signature,
    };
    let out = run(&mut seed, 2, |g, cx| g.handle_message(cx, p(8), join));
    assert_eq!(announced(&out), vec![(p(8), vec!["/mem/8".to_string()])]);

    // A member list (join reply, member delta) with a forged newcomer and a forged move.
    let mut g = swim(1, &[2, 3]);
    let list = vec![
        forged_by(3, signed(5, 0, MemberState::Alive, &["/evil"])),
        forged_by(3, signed(2, 4, MemberState::Alive, &["/evil"])),
    ];
    for msg in [
        Message::JoinReply {
            members: list.clone(),
        },
        Message::MemberDelta {
            members: list.clone(),
            want: vec![],
        },
    ] {
        let out = run(&mut g, 3, |g, cx| g.handle_message(cx, p(3), msg));
        assert!(announced(&out).is_empty(), "{:?}", events(&out));
        assert_eq!(offences(&out), vec![(p(3), Offence::Forged)]);
    }
    assert!(g.member(&p(5)).is_none());
    assert_eq!(g.member(&p(2)).unwrap().addrs, vec!["/mem/2".to_string()]);

    // A suspicion that brings other addresses: at the incarnation held, a claim changes
    // only the state, whatever addresses it carries.
    let claim = forged_by(3, signed(2, 0, MemberState::Suspect, &["/evil"]));
    let out = run(&mut g, 4, |g, cx| {
        g.handle_message(cx, p(3), rumor(vec![claim]))
    });
    assert!(announced(&out).is_empty());
    assert_eq!(g.member(&p(2)).unwrap().addrs, vec!["/mem/2".to_string()]);
    assert_eq!(g.member(&p(2)).unwrap().state, MemberState::Alive);
}

/// SWIM's claims stay open to everyone: a death claim by a third party is applied, and
/// the member refutes it with a record only it can sign.
#[test]
fn a_death_claim_is_still_accepted_and_refuted() {
    let mut g = swim(1, &[2, 3]);
    let death = signed(2, 0, MemberState::Dead, &["/mem/2"]);
    let out = run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), rumor(vec![death.clone()]))
    });
    assert_eq!(events(&out), vec![Event::MemberDown { peer: p(2) }]);
    assert!(offences(&out).is_empty(), "a claim is no offence");
    // The claim reaches the member, which refutes it.
    let mut two = swim(2, &[1, 3]);
    let out = run(&mut two, 2, |g, cx| {
        g.handle_message(cx, p(1), rumor(vec![death]))
    });
    assert_eq!(two.incarnation(), 1);
    assert!(events(&out).contains(&Event::Refuted { incarnation: 1 }));
    let refutation = sends(&out)
        .into_iter()
        .find_map(|(to, m)| match m {
            Message::Gossip { members, .. } if to == p(1) => Some(members),
            _ => None,
        })
        .expect("the accuser is answered");
    assert!(refutation[0].verify(), "the refutation is signed");
    // The refutation brings the member back, with its addresses.
    let out = run(&mut g, 3, |g, cx| {
        g.handle_message(cx, p(2), rumor(refutation))
    });
    assert!(events(&out).contains(&Event::MemberUp {
        peer: p(2),
        addrs: vec!["/mem/2".into()]
    }));
    assert_eq!(g.member(&p(2)).unwrap().state, MemberState::Alive);
    assert!(offences(&out).is_empty());
}

/// A claim proves its incarnation with the member's signature: nobody can push a member
/// to an incarnation it never announced (2^53 could never be refuted).
#[test]
fn a_claim_cannot_raise_an_incarnation_the_member_never_signed() {
    let mut g = swim(1, &[2, 3]);
    let held = signed(2, 0, MemberState::Alive, &["/mem/2"]);
    let inflated = MemberUpdate {
        incarnation: MAX_VERSION,
        ..held.claim(MemberState::Suspect)
    };
    let out = run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), rumor(vec![inflated.clone()]))
    });
    assert_eq!(g.member(&p(2)).unwrap().incarnation, 0);
    assert_eq!(g.member(&p(2)).unwrap().state, MemberState::Alive);
    assert_eq!(offences(&out), vec![(p(3), Offence::Forged)]);
    // About this node itself: no refutation to an incarnation it never signed.
    let about_me = MemberUpdate {
        peer: p(1),
        ..inflated
    };
    let out = run(&mut g, 2, |g, cx| {
        g.handle_message(cx, p(3), rumor(vec![about_me]))
    });
    assert_eq!(g.incarnation(), 0);
    assert!(
        !events(&out)
            .iter()
            .any(|e| matches!(e, Event::Refuted { .. }))
    );
    assert_eq!(offences(&out), vec![(p(3), Offence::Forged)]);
    // A claim at the incarnation held, carrying the held record, is applied.
    let out = run(&mut g, 3, |g, cx| {
        g.handle_message(cx, p(3), rumor(vec![held.claim(MemberState::Suspect)]))
    });
    assert!(events(&out).contains(&Event::MemberSuspect { peer: p(2) }));
}

/// A record already verified is trusted again only with the very same signature.
#[test]
fn a_known_record_with_another_signature_is_verified_again() {
    let mut g = swim(1, &[2, 3]);
    let claim = MemberUpdate {
        signature: Signature([1; 64]),
        ..signed(2, 0, MemberState::Suspect, &["/mem/2"])
    };
    let out = run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), rumor(vec![claim]))
    });
    assert_eq!(g.member(&p(2)).unwrap().state, MemberState::Alive);
    assert_eq!(offences(&out), vec![(p(3), Offence::Forged)]);
}

/// A node restarted under the same key starts at incarnation 0 while others hold its
/// previous life's records: a bare digest row does not outbid it, its own old signed record
/// does.
#[test]
fn a_restarted_member_takes_its_incarnation_only_from_its_own_signature() {
    let mut g = swim(2, &[1, 3]);
    let row = digest(&[(1, 0, MemberState::Alive), (2, 5, MemberState::Alive)]);
    let out = run(&mut g, 1, |g, cx| g.handle_message(cx, p(1), row));
    assert_eq!(g.incarnation(), 0, "a row is no proof");
    let wanted = member_deltas(&out);
    assert!(wanted.iter().any(|(_, _, want)| want.contains(&p(2))));
    // A forged record of that life changes nothing; the real one is outbid.
    let forged = forged_by(1, signed(2, 5, MemberState::Alive, &["/mem/2-old"]));
    let delta = |u| Message::MemberDelta {
        members: vec![u],
        want: vec![],
    };
    let out = run(&mut g, 2, |g, cx| g.handle_message(cx, p(1), delta(forged)));
    assert_eq!(g.incarnation(), 0);
    assert_eq!(offences(&out), vec![(p(1), Offence::Forged)]);
    let old = signed(2, 5, MemberState::Alive, &["/mem/2-old"]);
    let out = run(&mut g, 3, |g, cx| g.handle_message(cx, p(1), delta(old)));
    assert_eq!(g.incarnation(), 6);
    assert!(events(&out).contains(&Event::Refuted { incarnation: 6 }));
}

/// With the defenses off (for experiments only), forged records go through: the switch
/// really turns the checks off, so an experiment measures what they prevent.
#[test]
fn without_defenses_forged_records_are_taken() {
    let config = Config {
        defenses: false,
        ..Config::lan()
    };
    let mut g = with_config(1, &[2, 3], config);
    let evil = forged_by(3, signed(2, 1, MemberState::Alive, &["/evil"]));
    let out = run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), rumor(vec![evil]))
    });
    assert_eq!(announced(&out), vec![(p(2), vec!["/evil".to_string()])]);
    assert!(offences(&out).is_empty());
}

/// Each kind of rejected input is charged to its sender, once per message; answers that
/// may merely be late are not.
#[test]
fn rejected_input_is_reported_against_its_sender() {
    let mut g = swim(1, &[2, 3, 4]);
    // Acks and feedback for sequence numbers never issued: unsolicited.
    for msg in [
        Message::Ack {
            seq: 99,
            members: 0,
        },
        Message::IndirectAck {
            seq: 99,
            target: p(2),
        },
        Message::GossipReply {
            seq: 99,
            known: vec![true],
        },
    ] {
        let out = run(&mut g, 1, |g, cx| g.handle_message(cx, p(3), msg));
        assert_eq!(offences(&out), vec![(p(3), Offence::Unsolicited)]);
    }
    // A late ack (its probe is over) is no offence.
    run(&mut g, 2, |g, cx| g.handle_timer(cx, Timer::Probe));
    run(&mut g, 1002, |g, cx| g.handle_timer(cx, Timer::Probe));
    let out = run(&mut g, 1003, |g, cx| {
        g.handle_message(cx, p(2), Message::Ack { seq: 1, members: 0 })
    });
    assert!(offences(&out).is_empty());
    // Asked to probe oneself: malformed.
    let out = run(&mut g, 3, |g, cx| {
        g.handle_message(
            cx,
            p(3),
            Message::PingReq {
                seq: 1,
                target: p(1),
            },
        )
    });
    assert_eq!(offences(&out), vec![(p(3), Offence::Malformed)]);
    // Oversized lists, and addresses over their limits: malformed.
    let rows = (0..MAX_ITEMS as u64 + 1)
        .map(|i| MemberRow(p(i), 0, MemberState::Alive))
        .collect();
    let out = run(&mut g, 4, |g, cx| {
        g.handle_message(
            cx,
            p(4),
            Message::MemberDigest {
                complete: true,
                rows,
            },
        )
    });
    assert_eq!(offences(&out), vec![(p(4), Offence::Malformed)]);
    let long = signed(2, 1, MemberState::Alive, &[&"x".repeat(300)]);
    let out = run(&mut g, 5, |g, cx| {
        g.handle_message(cx, p(4), rumor(vec![long]))
    });
    assert_eq!(offences(&out), vec![(p(4), Offence::Malformed)]);
}

#[test]
fn rejected_entries_are_reported_by_how_an_honest_peer_could_send_them() {
    let mut g = static_node(10, 1, cfg(Mode::Combined, Variant::BlindCounter, 1));
    // An origin this node does not know (yet): refused, the mildest offence.
    let out = run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(3), gossip_msg(vec![entry(99, "x", 1, b"v")]))
    });
    assert_eq!(offences(&out), vec![(p(3), Offence::Refused)]);
    // A version no origin could have written, beside the unknown origin: the worse one is
    // reported, once.
    let out = run(&mut g, 2, |g, cx| {
        g.handle_message(
            cx,
            p(3),
            gossip_msg(vec![entry(99, "x", 1, b"v"), entry(3, "x", 0, b"v")]),
        )
    });
    assert_eq!(offences(&out), vec![(p(3), Offence::Malformed)]);
    // Valid input: nothing.
    let out = run(&mut g, 3, |g, cx| {
        g.handle_message(cx, p(3), gossip_msg(vec![entry(3, "x", 1, b"v")]))
    });
    assert!(offences(&out).is_empty());
}

/// The shared memo answers exactly what verification answers: a hit needs the whole triple,
/// a forgery is never remembered, and it stays within its capacity.
#[test]
fn the_shared_memo_of_verified_records_changes_no_answer() {
    let memo = VerifiedRecords::new(2);
    let real = signed(2, 1, MemberState::Alive, &["/mem/2"]);
    assert!(memo.verify(&real));
    assert_eq!(memo.len(), 1);
    // The remembered signature on other content, or in another member's name: refused.
    let moved = MemberUpdate {
        addrs: vec!["/evil".into()],
        ..real.clone()
    };
    assert!(!memo.verify(&moved));
    let stolen = MemberUpdate {
        peer: p(3),
        ..real.clone()
    };
    assert!(!memo.verify(&stolen));
    assert!(!memo.verify(&forged_by(3, signed(2, 2, MemberState::Alive, &[]))));
    assert_eq!(memo.len(), 1, "failures are not remembered");
    for i in 3..10 {
        assert!(memo.verify(&signed(i, 0, MemberState::Alive, &[])));
    }
    assert_eq!(memo.len(), 2, "bounded");
    assert!(memo.verify(&real), "a forgotten record is verified again");
    // Cores sharing it decide as cores without it.
    let mut a = swim(1, &[2, 3]);
    let mut b = swim(1, &[2, 3]);
    a.share_verified(VerifiedRecords::new(16));
    let msgs = [
        rumor(vec![forged_by(
            3,
            signed(2, 1, MemberState::Alive, &["/evil"]),
        )]),
        rumor(vec![signed(2, 1, MemberState::Alive, &["/mem/2-new"])]),
        rumor(vec![signed(2, 1, MemberState::Alive, &["/mem/2-new"])]),
    ];
    for (i, m) in msgs.into_iter().enumerate() {
        let oa = run(&mut a, i as u64, |g, cx| {
            g.handle_message(cx, p(3), m.clone())
        });
        let ob = run(&mut b, i as u64, |g, cx| g.handle_message(cx, p(3), m));
        assert_eq!(oa, ob);
    }
}
