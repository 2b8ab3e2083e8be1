//! `connect`: ramp to `--conns` connections and hold them for `--hold`. The runner does all of
//! it (ramp, greetings, handshake latency, failures); this workload only says that its
//! connections exist and nothing else.

use crate::plan::Share;

use super::{Ctx, Frame, Workload};

/// Connections with no role but to exist.
pub struct Connect {
    conns: usize,
}

impl Connect {
    /// This thread's `share.conns` connections.
    pub fn new(share: &Share) -> Self {
        Self {
            conns: share.conns.len(),
        }
    }
}

impl Workload for Connect {
    fn setup_conns(&self) -> usize {
        self.conns
    }

    fn on_frame(&mut self, _ctx: &mut Ctx<'_>, _tag: usize, _frame: Frame) {
        // Nothing is expected, and a connect run reports no traffic.
    }

    fn has_traffic(&self) -> bool {
        false
    }
}
