//! The memory budget: bounded on receipt, fair between origins.

use super::*;

/// A configuration whose data budget is about `data` bytes.
fn small(data: usize) -> Config {
    let mut c = cfg(Mode::Combined, Variant::BlindCounter, 1);
    c.max_members = 16;
    c.max_rumors = 64;
    c.max_message_bytes = 16 * 1024;
    c.max_value_len = 8 * 1024;
    c.max_entries_per_origin = 1024;
    c.max_state_bytes = c.reserved_bytes() + data;
    c
}

fn within_budget(g: &Gossip) {
    assert!(
        g.data_bytes() <= g.config().data_budget(),
        "{} bytes of data against a budget of {}",
        g.data_bytes(),
        g.config().data_budget()
    );
}

/// Everything of `origin` up to its watermark is held (the watermark's meaning survives
/// eviction).
fn watermark_is_honest(g: &Gossip, origin: u64) {
    let w = watermark(g, origin);
    let held = g
        .entries(&p(origin))
        .filter(|(_, e)| e.version <= w)
        .count() as u64;
    // Keys are written once each in these tests, so versions 1..=w are w distinct keys.
    assert_eq!(held, w, "origin {origin}: watermark {w}, held {held}");
}

#[test]
fn the_configured_total_bounds_every_part() {
    let c = Config::lan();
    assert_eq!(c.reserved_bytes() + c.data_budget(), c.max_state_bytes);
    assert!(c.member_bytes() >= c.max_members * c.max_addrs * c.max_addr_len);
    assert!(c.buffer_bytes() >= c.max_rumors * c.max_key_len);
    assert!(c.data_budget() >= 16 * c.max_message_bytes);
    // A total too small for the member table and buffers is refused.
    let tight = Config {
        max_state_bytes: c.reserved_bytes(),
        ..Config::lan()
    };
    assert!(matches!(
        tight.validate(),
        Err(ConfigError {
            field: "max_state_bytes",
            ..
        })
    ));
}

/// Many origins flooding one entry each: the data never exceeds the budget, and what was
/// stored first is not pushed out by newcomers of the same size.
#[test]
fn the_budget_holds_under_a_flood_of_origins() {
    let mut g = static_node(3000, 0, small(64 * 1024));
    run(&mut g, 1, |g, cx| {
        g.handle_message(cx, p(2), gossip_msg(vec![entry(2, "honest", 1, b"v")]))
    });
    for o in 3..2000 {
        run(&mut g, 2, |g, cx| {
            g.handle_message(cx, p(o), gossip_msg(vec![entry(o, "k", 1, &[0; 200])]))
        });
        within_budget(&g);
    }
    assert!(g.rejected().over_capacity > 0, "the flood did not fit");
    assert!(g.entry(&p(2), "honest").is_some());
}

/// One origin writing as much as it may cannot push out the others' data: it yields to
/// them, and gets only what they leave.
#[test]
fn one_origin_cannot_push_out_everyone_elses_data() {
    let mut g = static_node(100, 0, small(64 * 1024));
    for o in 2..12 {
        for i in 0..3 {
            let e = entry(o, &format!("k{i}"), i + 1, &[1; 300]);
            run(&mut g, 1, |g, cx| {
                g.handle_message(cx, p(o), gossip_msg(vec![e]))
            });
        }
    }
    for v in 1..=1000 {
        let e = entry(50, &format!("flood{v}"), v, &[2; 500]);
        run(&mut g, 2, |g, cx| {
            g.handle_message(cx, p(50), gossip_msg(vec![e]))
        });
        within_budget(&g);
    }
    for o in 2..12 {
        assert_eq!(g.entries(&p(o)).count(), 3, "origin {o} kept its data");
    }
    let flood = g.entries(&p(50)).count();
    assert!(
        (50..1000).contains(&flood),
        "the flooder holds {flood} entries"
    );
    watermark_is_honest(&g, 50);
    // A newcomer that needs room takes it from the largest origin, newest entries first.
    let before = watermark(&g, 50);
    let e = entry(60, "new", 1, &[3; 2000]);
    run(&mut g, 3, |g, cx| {
        g.handle_message(cx, p(60), gossip_msg(vec![e]))
    });
    assert!(g.entry(&p(60), "new").is_some());
    assert!(watermark(&g, 50) < before);
    assert!(g.entry(&p(50), "flood1").is_some(), "the oldest stay");
    watermark_is_honest(&g, 50);
    within_budget(&g);
}

/// This node's own data is never evicted (its versions must never be reused); when it is
/// the largest, others' entries are refused instead.
#[test]
fn own_data_is_never_evicted() {
    let mut g = static_node(100, 0, small(64 * 1024));
    let mut mine = 0;
    for i in 0..20 {
        let out = run(&mut g, 1, |g, cx| {
            g.handle_command(
                cx,
                Command::Publish {
                    req: i,
                    key: format!("mine{i}"),
                    value: vec![0; 2000],
                },
            )
        });
        if events(&out)
            .iter()
            .any(|e| matches!(e, Event::Published { .. }))
        {
            mine += 1;
        }
    }
    assert!(mine > 10);
    for o in 2..60 {
        let e = entry(o, "k", 1, &[1; 2000]);
        run(&mut g, 2, |g, cx| {
            g.handle_message(cx, p(o), gossip_msg(vec![e]))
        });
        within_budget(&g);
    }
    assert_eq!(g.entries(&p(0)).count(), mine);
    watermark_is_honest(&g, 0);
}

/// Versions waiting for the cycle's end count too: a flood of deltas between two ticks
/// cannot grow the pending list past the budget.
#[test]
fn pending_versions_are_bounded_by_the_budget() {
    let mut c = small(64 * 1024);
    c.activation = Activation::CycleEnd;
    c.synchronous_ticks = true;
    let mut g = static_node(3000, 0, c);
    for o in 2..500 {
        let d = OriginDelta {
            origin: p(o),
            from: 0,
            to: 2,
            entries: vec![
                ("a".into(), 1, Some(ByteBuf::from(vec![0; 400]))),
                ("b".into(), 2, Some(ByteBuf::from(vec![0; 400]))),
            ],
        };
        run(&mut g, 1, |g, cx| {
            g.handle_message(cx, p(o), Message::Delta { deltas: vec![d] })
        });
        within_budget(&g);
    }
    assert!(g.rejected().over_capacity > 0);
    tick(&mut g, 200);
    within_budget(&g);
    assert_eq!(g.pending(), 0);
}
