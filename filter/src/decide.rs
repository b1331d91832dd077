//! One decision for one connection: gather the peer, evaluate with the table in force
//! (or refuse while its revocation data is stale), count, record, log. Shared by the
//! network and the HTTP front ends so both act the same.

use std::cell::{Cell, RefCell};

use ruleset::{Decision, OnStale, Peer, PeerCert, Reason};

use crate::audit;
use crate::cache::CertCache;
use crate::host::Host;
use crate::json;
use crate::log::Logging;
use crate::memo::Memo;
use crate::metrics::Metrics;
use crate::peer;
use crate::table::{Clocks, Tables};
use crate::verdict::Verdict;

/// The decision pipeline of one VM: the certificates it has parsed (with the decisions
/// remembered for them), the decision sequence, and what it logs.
#[derive(Debug)]
pub struct Decider {
    pub certs: RefCell<CertCache>,
    pub log: Logging,
    decisions: Cell<u64>,
}

impl Decider {
    /// An empty pipeline caching up to `cert_cache_size` certificates.
    pub fn new(cert_cache_size: usize, log: Logging) -> Decider {
        Decider {
            certs: RefCell::new(CertCache::new(cert_cache_size)),
            log,
            decisions: Cell::new(0),
        }
    }

    /// Decides for the connection of the current (or entered) context with the table
    /// `tables` has in force; returns the verdict and the peer it decided for.
    pub fn decide_peer(
        &self,
        host: &dyn Host,
        tables: &Tables,
        metrics: &Metrics,
    ) -> (Verdict, Peer) {
        let active = tables.active();
        // With a feed, admitted connections are kept and re-decided by later tables,
        // which may look at other attributes: read them all then.
        let needs = match active.as_deref() {
            Some(a) if !tables.fed() && !self.log.log_all => a.needs,
            _ => peer::Needs::ALL,
        };
        let (peer, known) = peer::gather(host, &self.certs, needs);
        if matches!(peer.cert, PeerCert::Vouched(_)) {
            self.log.tell_no_pem_once(host, || {
                active
                    .as_deref()
                    .is_some_and(|a| a.engine.decides_without_certificate())
            });
        }
        // The clocks are host calls too: read them when staleness needs them.
        let clocks = tables
            .can_go_stale(active.as_deref())
            .then(|| Clocks::read(host));
        let in_force = active.as_deref().filter(|a| {
            !clocks.is_some_and(|now| tables.is_stale(Some(a), now))
                || a.engine.table().revocation.on_stale() == OnStale::Keep
        });
        let memo = match (in_force, &known) {
            (Some(a), Some(known)) if a.needs == peer::Needs::NONE => {
                let generation = tables.generation();
                Some(known.memo(generation, || {
                    Memo::new(generation, &a.engine.evaluate(&peer))
                }))
            }
            _ => None,
        };
        let decision = match (&memo, in_force) {
            (Some(memo), _) => memo.decision(),
            (None, Some(a)) => a.engine.evaluate(&peer),
            (None, None) => Decision::stale(
                active.as_deref().map(|a| a.engine.table()),
                tables.mode_override(),
            ),
        };
        let admit = decision.admits();
        metrics.count(host, &decision);

        let wanted = audit::wanted(tables.audit_log(active.as_deref()), &decision);
        // Deny records go to the Envoy log at warn; every other decision at info with
        // `logAllDecisions`, else at debug (built only when debug is on: it costs).
        let log_level = self.log.level(wanted, decision.action);
        // The decision id names a record and a refusal (the HTTP 403 carries it); an
        // admitted connection without a record needs none, so the connection id is not
        // read and nothing is formatted on that, the most common, path.
        let mut now = 0;
        let decision_id = if wanted || log_level.is_some() || !admit {
            let seq = self.decisions.get().wrapping_add(1);
            self.decisions.set(seq);
            let connection = peer::int_property(host, peer::CONNECTION_ID).unwrap_or(0);
            now = clocks.map_or_else(|| host.now_nanos(), |c| c.wall);
            // Time first so ids sort by time across workers; the connection id and a
            // per-VM sequence keep them unique within one Envoy process.
            decision_id(now, connection, seq)
        } else {
            String::new()
        };
        let text = (wanted || log_level.is_some()).then(|| {
            // The record shows every connection attribute, not only those decided with.
            let mut full = peer.clone();
            peer::complete(host, &mut full, peer::Needs::ALL);
            let ctx = audit::Context {
                policy_digest: active.as_deref().map_or("", |a| &a.policy_digest),
                decision_id: &decision_id,
                now_nanos: now,
                // Read for the record only: no decision looks at them.
                source_port: peer::int_property(host, peer::SOURCE_PORT)
                    .and_then(|p| u16::try_from(p).ok()),
                destination_ip: peer::string_property(host, peer::DESTINATION_ADDRESS)
                    .and_then(|a| peer::parse_ip(&a)),
            };
            let head = match &memo {
                Some(memo) => json::ObjectWriter::resume(
                    memo.record_head(|| audit::head(&decision, &peer.cert).unfinished()),
                ),
                None => audit::head(&decision, &peer.cert),
            };
            audit::finish(head, &full, decision.mode, ctx)
        });
        if let Some(text) = &text {
            if wanted {
                host.set_property(&[audit::FILTER_STATE_KEY], text.as_bytes());
            }
            if let Some(level) = log_level {
                host.log(level, text);
            }
        }
        let verdict = Verdict {
            admit,
            decision_id,
            record: text.filter(|_| wanted),
            close: false,
            stale: decision.reason == Reason::StaleRevocation,
        };
        (verdict, peer)
    }
}

/// `{now:x}-{connection:x}-{seq:x}`, without the formatting machinery (slow in wasm).
fn decision_id(now: u64, connection: u64, seq: u64) -> String {
    let mut id = String::with_capacity(50);
    for (i, n) in [now, connection, seq].into_iter().enumerate() {
        if i > 0 {
            id.push('-');
        }
        crate::json::push_hex(&mut id, n);
    }
    id
}

#[cfg(test)]
mod decision_id_tests {
    #[test]
    fn decision_ids_are_lowercase_hex_triples() {
        for (now, connection, seq) in [
            (0, 0, 0),
            (0x18bc_1d2e_3f4a_5b6c, 31, 42),
            (u64::MAX, 1, 0x10),
        ] {
            assert_eq!(
                super::decision_id(now, connection, seq),
                format!("{now:x}-{connection:x}-{seq:x}")
            );
        }
    }
}
