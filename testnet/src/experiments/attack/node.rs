//! A simulated peer that is either honest or hostile: the real core, optionally driven by an
//! [`Attack`] that speaks the same wire messages.
//!
//! A hostile peer runs the honest core underneath (it is a ring member, a group member, a
//! swarm participant like any other, so it sits where the attack needs it) and adds what
//! the attack does: messages it sends on a timer of its own ([`Attack::act`]) and requests
//! it answers itself instead of letting the core answer ([`Attack::intercept`]). An honest
//! peer is the same type with no attack, so honest and hostile peers share one simulator.

use std::time::Duration;

use peerlab_overlay::{Context, Cx, Instant, Outbox, Output, PeerId, Protocol};

/// What a hostile peer does on top of the honest core `H`.
pub(crate) trait Attack<H: Protocol> {
    /// When the attack starts, and how often [`Attack::act`] runs from then on.
    fn schedule(&self) -> (Instant, Duration);

    /// One round of the attack: sends through `cx` (which speaks `H`'s messages); `core` is
    /// the hostile peer's own honest core, for what it knows of the network.
    fn act(&mut self, core: &mut H, cx: &mut Cx<'_, H>);

    /// A message arrived: `true` hands it to the honest core, `false` means the attack
    /// answered (or swallowed) it.
    fn intercept(
        &mut self,
        _core: &mut H,
        _cx: &mut Cx<'_, H>,
        _from: PeerId,
        _msg: &H::Message,
    ) -> bool {
        true
    }
}

/// An honest core, and the attack that drives it if the peer is hostile.
pub(crate) struct Node<H, A> {
    core: H,
    attack: Option<A>,
}

impl<H, A> Node<H, A> {
    /// An honest peer.
    pub(crate) fn honest(core: H) -> Self {
        Node { core, attack: None }
    }

    /// A hostile peer (`attack` may be `None`: the same peer, behaving, for the baseline).
    pub(crate) fn hostile(core: H, attack: Option<A>) -> Self {
        Node { core, attack }
    }

    /// The honest core underneath.
    pub(crate) fn core(&self) -> &H {
        &self.core
    }
}

/// The peer's timers: the core's, and the attack's round.
#[derive(Clone, Debug)]
pub(crate) enum NodeTimer<T> {
    /// A timer of the honest core.
    Core(T),
    /// The attack's next round.
    Attack,
}

/// Runs `f` with a context of the core's own types and forwards what it produced.
fn nested<H: Protocol>(
    cx: &mut Context<'_, H::Message, NodeTimer<H::Timer>, H::Event>,
    f: impl FnOnce(&mut Cx<'_, H>),
) {
    let mut sub: Outbox<H::Message, H::Timer, H::Event> = Outbox::new();
    cx.nested(&mut sub, f);
    for out in sub.drain() {
        match out {
            Output::Send { to, msg } => cx.send(to, msg),
            Output::Timer { at, timer } => cx.set_timer_at(at, NodeTimer::Core(timer)),
            Output::Event(e) => cx.emit(e),
            Output::Offence { peer, offence } => cx.penalize(peer, offence),
        }
    }
}

impl<H: Protocol, A: Attack<H>> Protocol for Node<H, A> {
    type Message = H::Message;
    type Timer = NodeTimer<H::Timer>;
    type Command = H::Command;
    type Event = H::Event;

    fn handle_start(&mut self, cx: &mut Cx<'_, Self>) {
        if let Some(a) = &self.attack {
            let (at, _) = a.schedule();
            cx.set_timer_at(at.max(cx.now()), NodeTimer::Attack);
        }
        let core = &mut self.core;
        nested::<H>(cx, |c| core.handle_start(c));
    }

    fn handle_message(&mut self, cx: &mut Cx<'_, Self>, from: PeerId, msg: H::Message) {
        let (core, attack) = (&mut self.core, &mut self.attack);
        nested::<H>(cx, |c| {
            if attack
                .as_mut()
                .is_none_or(|a| a.intercept(core, c, from, &msg))
            {
                core.handle_message(c, from, msg);
            }
        });
    }

    fn handle_timer(&mut self, cx: &mut Cx<'_, Self>, timer: NodeTimer<H::Timer>) {
        let (core, attack) = (&mut self.core, &mut self.attack);
        match timer {
            NodeTimer::Core(t) => nested::<H>(cx, |c| core.handle_timer(c, t)),
            NodeTimer::Attack => {
                let Some(a) = attack.as_mut() else {
                    return;
                };
                let (_, period) = a.schedule();
                nested::<H>(cx, |c| a.act(core, c));
                cx.set_timer(period, NodeTimer::Attack);
            }
        }
    }

    fn handle_command(&mut self, cx: &mut Cx<'_, Self>, cmd: H::Command) {
        let core = &mut self.core;
        nested::<H>(cx, |c| core.handle_command(c, cmd));
    }

    fn handle_peer_down(&mut self, cx: &mut Cx<'_, Self>, peer: PeerId) {
        let core = &mut self.core;
        nested::<H>(cx, |c| core.handle_peer_down(c, peer));
    }
}
