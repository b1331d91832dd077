//! The network filter (`envoy.filters.network.wasm`): one decision per connection, at
//! the first downstream data (the TLS attributes are complete by then) or, in
//! `serverFirst` mode, from the root context's tick before any upstream connection.
//! With a live feed, an admitted connection stays registered so that a newer table
//! that denies it closes it (see `Shared::install` and `connections.rs`).

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::Action;

use crate::connections::{Pending, Phase};
use crate::host::Host;
use crate::shared::Shared;

/// Per-connection state of the network filter.
pub struct NetworkFilter {
    host: Rc<dyn Host>,
    shared: Option<Rc<Shared>>,
    context_id: u32,
    // Shared with the root context's pending list in serverFirst mode.
    phase: Rc<Cell<Phase>>,
}

impl std::fmt::Debug for NetworkFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkFilter")
            .field("context_id", &self.context_id)
            .field("phase", &self.phase.get())
            .finish()
    }
}

impl NetworkFilter {
    pub fn new(host: Rc<dyn Host>, shared: Option<Rc<Shared>>, context_id: u32) -> Self {
        NetworkFilter {
            host,
            shared,
            context_id,
            phase: Rc::new(Cell::new(Phase::Waiting)),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase.get()
    }

    /// A new connection: its TLS attributes are not known yet.
    pub fn new_connection(&mut self) -> Action {
        match &self.shared {
            // Unconfigured (Envoy normally never gets here): fail closed.
            None => self.deny(),
            Some(shared) if shared.server_first => {
                shared.connections.add_pending(
                    self.context_id,
                    Pending {
                        phase: Rc::clone(&self.phase),
                        since_nanos: self.host.monotonic_nanos(),
                    },
                );
                Action::Pause
            }
            Some(_) => Action::Continue,
        }
    }

    /// Downstream bytes: decide on the first ones; nothing passes before a decision.
    pub fn downstream_data(&mut self) -> Action {
        match self.phase.get() {
            Phase::Admitted => Action::Continue,
            Phase::Denied => Action::Pause,
            Phase::Waiting => {
                let Some(shared) = &self.shared else {
                    return self.deny();
                };
                shared.connections.remove_pending(self.context_id);
                let (verdict, peer) = shared.decide_peer(&*self.host);
                if verdict.admit {
                    self.phase.set(Phase::Admitted);
                    shared
                        .connections
                        .add_live(self.context_id, Rc::clone(&self.phase), peer);
                    Action::Continue
                } else {
                    self.deny()
                }
            }
        }
    }

    fn deny(&mut self) -> Action {
        self.phase.set(Phase::Denied);
        self.host.close_downstream();
        Action::Pause
    }

    /// The connection is gone: forget it.
    pub fn done(&mut self) {
        if let Some(shared) = &self.shared {
            shared.connections.remove_pending(self.context_id);
            shared.connections.remove_live(self.context_id);
        }
    }
}

impl Context for NetworkFilter {
    fn on_done(&mut self) -> bool {
        self.done();
        true
    }
}

impl StreamContext for NetworkFilter {
    fn on_new_connection(&mut self) -> Action {
        self.new_connection()
    }

    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        self.downstream_data()
    }
}
