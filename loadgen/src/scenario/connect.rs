//! `connect`: ramp to `--conns` connections and hold them for `--hold`. The runner does all of
//! it (ramp, greetings, handshake latency, failures); this workload only says that its
//! connections exist, and where (connection *i* to URL `i % n` of the `--url`s).

use crate::plan::{Plan, Share};

use super::{Ctx, Frame, Workload};

/// Connections with no role but to exist: the URL of each, by tag.
pub struct Connect {
    urls: Vec<usize>,
}

impl Connect {
    /// This thread's `share.conns` connections of `plan`.
    pub fn new(plan: &Plan, share: &Share) -> Self {
        Self {
            urls: share.conns.clone().map(|i| plan.targets.conn(i)).collect(),
        }
    }
}

impl Workload for Connect {
    fn setup_conns(&self) -> usize {
        self.urls.len()
    }

    fn url(&self, tag: usize) -> usize {
        self.urls.get(tag).copied().unwrap_or(0)
    }

    fn on_frame(&mut self, _ctx: &mut Ctx<'_>, _tag: usize, _frame: Frame) {
        // Nothing is expected, and a connect run reports no traffic.
    }

    fn has_traffic(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Scenario;
    use crate::scenario::testbed::plan_over;

    #[test]
    fn connections_round_robin_by_global_index() {
        let mut plan = plan_over(Scenario::Connect, 3, None);
        plan.conns = 10;
        plan.threads = 2;
        let c = Connect::new(&plan, &plan.thread_share(1));
        let urls: Vec<usize> = (0..c.setup_conns()).map(|tag| c.url(tag)).collect();
        assert_eq!(urls, [2, 0, 1, 2, 0], "connections 5..10");
    }
}
