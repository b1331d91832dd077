//! The HTTP filter (`envoy.filters.http.wasm`): decides once per connection and refuses
//! requests of denied connections with a generic 403. The reason stays in the audit
//! record and the Envoy log; the client only gets a decision id to quote.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::audit;
use crate::host::Host;
use crate::shared::Shared;

/// Header carrying the decision id on a refused request.
pub const DECISION_ID_HEADER: &str = "x-certgate-decision-id";
/// The body of every refusal; deliberately the same whatever the reason.
pub const FORBIDDEN_BODY: &[u8] = b"access denied\n";

/// Per-request state of the HTTP filter.
pub struct HttpFilter {
    host: Rc<dyn Host>,
    shared: Option<Rc<Shared>>,
}

impl std::fmt::Debug for HttpFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFilter").finish_non_exhaustive()
    }
}

impl HttpFilter {
    pub fn new(host: Rc<dyn Host>, shared: Option<Rc<Shared>>) -> Self {
        HttpFilter { host, shared }
    }

    /// Request headers: the connection's decision, made now or remembered.
    pub fn request_headers(&mut self) -> Action {
        let host = &*self.host;
        let Some(shared) = &self.shared else {
            // Unconfigured (Envoy normally never gets here): fail closed.
            forbid(host, "unconfigured");
            return Action::Pause;
        };
        let (verdict, fresh) = shared.http_verdict(host);
        if !fresh {
            // Filter state is per request: repeat the connection's record for this one.
            if let Some(record) = &verdict.record {
                host.set_property(&[audit::FILTER_STATE_KEY], record.as_bytes());
            }
        }
        if verdict.admit {
            Action::Continue
        } else if verdict.close {
            // A newer table (live feed) denies what an older one admitted: reset the
            // stream, which closes an HTTP/1.1 connection. Envoy 1.40 strips
            // `connection: close` from a local reply and sends a wasm local reply only
            // after this callback returns, so a 403 would never reach the client before
            // the reset (verified); the decision id is in the audit record.
            host.reset_http_stream();
            Action::Pause
        } else {
            forbid(host, &verdict.decision_id);
            Action::Pause
        }
    }
}

fn forbid(host: &dyn Host, decision_id: &str) {
    host.send_http_response(
        403,
        &[
            (DECISION_ID_HEADER, decision_id),
            ("content-type", "text/plain"),
        ],
        FORBIDDEN_BODY,
    );
}

impl Context for HttpFilter {}

impl HttpContext for HttpFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.request_headers()
    }
}
