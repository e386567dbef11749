//! Metric names and the per-node Prometheus recorder.
//!
//! Every node owns a [`PrometheusRecorder`]; the driver installs it around each input with
//! `metrics::with_local_recorder`, so several nodes in one process (tests, in-process
//! testnets) keep separate figures. `/metrics` renders it in the Prometheus text format.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

/// Gauge: peers with at least one open connection.
pub(crate) const CONNECTED_PEERS: &str = "peerlab_connected_peers";
/// Gauge: established connections, both directions (a peer may hold two briefly).
pub(crate) const CONNECTIONS: &str = "peerlab_connections";
/// Gauge: peers the node's protocols rely on (DHT neighbours and fingers, gossip partners,
/// flooding neighbours), connected or not: the connections the manager keeps.
pub(crate) const NEEDED_PEERS: &str = "peerlab_needed_peers";
/// Counter: connections the connection manager closed (idle and not needed, or beyond the
/// bound; see `driver::OUTBOUND_IDLE`): with `peerlab_dials_total`, how much re-dialling
/// the bound costs.
pub(crate) const CONNECTIONS_TRIMMED: &str = "peerlab_connections_trimmed_total";
/// Counter: dials of peers without a connection, by the kind of message that needed one
/// (which protocol steps make a node meet new peers; what a large testnet's connection
/// count is made of).
pub(crate) const DIALS: &str = "peerlab_dials_total";
/// Counter: rejoin rounds run while the node was alone (no connection, or no other live
/// member in its ring or membership).
pub(crate) const REJOIN_ROUNDS: &str = "peerlab_rejoin_rounds_total";
/// Counter: database commits that failed (the writes of that turn were not acknowledged).
pub(crate) const PERSIST_FAILED: &str = "peerlab_persist_failed_total";
/// Gauge: protocol timers pending in the driver.
pub(crate) const PENDING_TIMERS: &str = "peerlab_pending_timers";
/// Counter (label `protocol`): frame bytes received.
pub(crate) const BYTES_IN: &str = "peerlab_bytes_in_total";
/// Counter (label `protocol`): frame bytes sent.
pub(crate) const BYTES_OUT: &str = "peerlab_bytes_out_total";
/// Counter (label `protocol`): frames received.
pub(crate) const MESSAGES_IN: &str = "peerlab_messages_in_total";
/// Counter (label `protocol`): frames sent.
pub(crate) const MESSAGES_OUT: &str = "peerlab_messages_out_total";
/// Counter (label `protocol`): frames dropped because too many were in flight to a peer.
pub(crate) const SEND_DROPPED: &str = "peerlab_send_dropped_total";
/// Counter (label `protocol`): frames whose delivery failed.
pub(crate) const SEND_FAILED: &str = "peerlab_send_failed_total";
/// Counter (label `reason`): inbound streams refused at accept — `queue`: the driver was
/// `driver::INBOUND_QUEUE` streams behind; `per_peer`: the peer already held
/// `driver::MAX_INBOUND_STREAMS_PER_PEER` streams on the channel.
pub(crate) const STREAMS_REFUSED: &str = "peerlab_streams_refused_total";
/// Counter (label `reason`): connections refused by the driver's gate — `per_ip`: the
/// remote address already held `driver::MAX_CONNECTIONS_PER_IP` (or the configured cap).
pub(crate) const CONNECTIONS_DENIED: &str = "peerlab_connections_denied_total";
/// Counter (label `protocol`): frames dropped because their sender was over its rate
/// (`driver::rate_of`).
pub(crate) const RATE_LIMITED: &str = "peerlab_frames_rate_limited_total";
/// Counter (label `protocol`): undecodable, oversized or unattributable frames received.
pub(crate) const BAD_FRAMES: &str = "peerlab_bad_frames_total";
/// Counter (label `offence`): peer input a core rejected (`Offence::name`).
pub(crate) const OFFENCES: &str = "peerlab_offences_total";
/// Counter (label `offence`): offences a core found in a probe datagram, not charged to
/// its claimed sender (a datagram's sender is unproven; see `driver::probe`).
pub(crate) const OFFENCES_UNPROVEN: &str = "peerlab_offences_unproven_total";
/// Counter (label `outcome`): probe datagrams sent (`sent`, `send_failed`) and received
/// (`received`, `receive_failed`, or why one was dropped: `short`, `long`, `version`, `channel`,
/// `not_for_me`, `unknown_peer`, `banned`, `rate`, `malformed`, `not_a_probe`, `nonce`).
pub(crate) const PROBE_DATAGRAMS: &str = "peerlab_probe_datagrams_total";
/// Counter: peers banned for bad frames or offences.
pub(crate) const PEERS_BANNED: &str = "peerlab_peers_banned_total";
/// Counter: peers seen to restart with the same identity (a new boot nonce in identify).
pub(crate) const PEER_RESTARTS: &str = "peerlab_peer_restarts_total";
/// Counter: DHT lookups completed (label `result`: ok / failed).
pub(crate) const LOOKUPS: &str = "peerlab_dht_lookups_total";
/// Counter: DHT requests that went unanswered within their peer's timeout (each evicts the
/// peer: Chord's failure detector; `dht::MAX_RTO_FACTOR`).
pub(crate) const DHT_TIMEOUTS: &str = "peerlab_dht_request_timeouts_total";
/// Counter: peers the DHT dropped from its tables after a timeout.
pub(crate) const DHT_EVICTIONS: &str = "peerlab_dht_evictions_total";
/// Counter: DHT answers that came after their request timed out (round-trip samples that
/// lengthen that peer's timeout): how often live peers were taken for dead.
pub(crate) const DHT_LATE_REPLIES: &str = "peerlab_dht_late_replies_total";
/// Histogram: hops of completed DHT lookups.
pub(crate) const LOOKUP_HOPS: &str = "peerlab_dht_lookup_hops";
/// Histogram: latency of API-issued DHT lookups, seconds.
pub(crate) const LOOKUP_LATENCY: &str = "peerlab_dht_lookup_latency_seconds";
/// Counter (label `kind`): gossip messages sent, by message kind.
pub(crate) const GOSSIP_MESSAGES: &str = "peerlab_gossip_messages_total";
/// Gauge (label `state`): gossip members by state.
pub(crate) const MEMBERS: &str = "peerlab_gossip_members";
/// Gauge: Lifeguard's local health score (0 healthy; the node stretches its probe period and
/// timeout `score + 1` times while its own probes fail for reasons of its own).
pub(crate) const LOCAL_HEALTH: &str = "peerlab_gossip_local_health";
/// Counter: gossip entries updated locally (new versions learned).
pub(crate) const GOSSIP_UPDATES: &str = "peerlab_gossip_entry_updates_total";
/// Counter: flooding searches issued by this node.
pub(crate) const FLOOD_QUERIES: &str = "peerlab_flood_queries_total";
/// Counter: flooding search hits received.
pub(crate) const FLOOD_HITS: &str = "peerlab_flood_hits_total";
/// Counter: chunks that verified against their manifest hash.
pub(crate) const CHUNKS_VERIFIED: &str = "peerlab_chunks_verified_total";
/// Counter: chunks rejected (hash mismatch).
pub(crate) const CHUNKS_REJECTED: &str = "peerlab_chunks_rejected_total";

/// A fresh recorder with histogram buckets suited to hop counts and latencies.
pub(crate) fn recorder() -> PrometheusRecorder {
    let builder = PrometheusBuilder::new();
    let builder = builder
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(LOOKUP_HOPS.into()),
            &[
                0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 24.0, 32.0,
            ],
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(LOOKUP_LATENCY.into()),
                &[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
                ],
            )
        });
    match builder {
        Ok(b) => b.build_recorder(),
        // Bucket lists above are non-empty constants; fall back to summaries regardless.
        Err(_) => PrometheusBuilder::new().build_recorder(),
    }
}
