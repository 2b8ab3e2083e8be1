//! `direct` (hub only): pairs of users `lg<run>-<i>`. Even *i* is a [`RoundTrip`] requester whose
//! requests are `send`s to user *i+1*; odd *i* bounces every probe it receives back to the user
//! it came from (marked `"r":1`). The round trip goes through the server's user routing twice,
//! across shards when the pair landed on different ones, and across nodes when the pair's URLs
//! differ (user *i* connects to URL `i % n` of the `--url`s: with an even n, never the same).

use std::io::Write as _;

use crate::plan::{Plan, Share};

use super::echo::{Request, RoundTrip};
use super::probe::{write_probe, Probe};
use super::Ctx;

/// The `direct` workload of one thread's `share`: a [`RoundTrip`] whose even connections send
/// requests to their odd peers, which bounce them. A pair may straddle two threads or processes:
/// users are global. `origin` (the run's monotonic origin) names the run.
pub fn pairs(plan: &Plan, share: &Share, origin: u64) -> RoundTrip {
    let prefix = format!("lg{:x}", origin & 0xFF_FFFF);
    // Only the first of each pair sends requests.
    let rate = plan.rate / (plan.conns / 2).max(1) as f64;
    let request = Request::Send {
        prefix: prefix.clone(),
    };
    let bouncer = Bouncer {
        first: share.conns.start,
        prefix,
        payload: plan.payload,
        buf: Vec::with_capacity(256),
    };
    RoundTrip::new(plan, share, |i| i % 2 == 0, request, rate, Some(bouncer))
}

/// The odd half of the pairs, and the user ids of both halves.
pub struct Bouncer {
    /// Global index of tag 0.
    first: usize,
    /// User id prefix, unique per run so that runs do not cross.
    prefix: String,
    payload: usize,
    buf: Vec<u8>,
}

impl Bouncer {
    /// The user id of connection `tag`.
    pub fn user(&self, tag: usize) -> String {
        format!("{}-{}", self.prefix, self.first + tag)
    }

    /// Sends probe `p` back to the user that sent it, on `tag`.
    pub fn bounce(&mut self, ctx: &mut Ctx<'_>, tag: usize, p: Probe) {
        if !ctx.measuring() {
            return;
        }
        self.buf.clear();
        let _ = write!(
            self.buf,
            r#"{{"type":"send","to":"{}-{}","data":"#,
            self.prefix, p.p
        );
        write_probe(&mut self.buf, p, true, self.payload);
        self.buf.push(b'}');
        if ctx.send(tag, &self.buf) {
            ctx.tally.count("direct_bounced");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Scenario;
    use crate::scenario::runner::Stage;
    use crate::scenario::testbed::{plan, plan_over, Bed};
    use crate::scenario::{Frame, Workload};

    #[test]
    fn pairs_of_users_requesters_even_bouncers_odd() {
        let mut plan = plan(Scenario::Direct);
        plan.conns = 8;
        plan.threads = 2;
        let d = pairs(&plan, &plan.thread_share(1), 0xAB_CDEF_0123);
        assert_eq!(d.setup_conns(), 4);
        assert_eq!(d.user(0).as_deref(), Some("lgef0123-4"));
        assert_eq!(d.user(3).as_deref(), Some("lgef0123-7"));
        assert!(d.is_requester(0) && !d.is_requester(1) && d.is_requester(2));
        // Over two URLs, the two users of a pair are never on the same one.
        let mut plan = plan_over(Scenario::Direct, 2, None);
        plan.conns = 8;
        let d = pairs(&plan, &plan.thread_share(0), 1);
        let urls: Vec<usize> = (0..8).map(|tag| d.url(tag)).collect();
        assert_eq!(urls, [0, 1, 0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn bounces_only_while_measuring() {
        let plan = plan(Scenario::Direct);
        let mut d = pairs(&plan, &plan.thread_share(0), 1);
        let mut bed = Bed::new(2);
        bed.connect(0..2);
        let p = Probe { t: 5, s: 6, p: 0 };
        d.on_frame(&mut bed.ctx(0), 1, Frame::Direct(p));
        assert!(bed.wire.sent.is_empty(), "not measuring yet");
        bed.stage = Stage::Running;
        d.on_frame(&mut bed.ctx(0), 1, Frame::Direct(p));
        let back = r#"{"type":"send","to":"lg1-0","data":{"t":5,"s":6,"p":0,"r":1}}"#;
        assert_eq!(bed.wire.sent, [(1, back.to_string())]);
        assert_eq!(bed.tally.counters["direct_bounced"], 1);
        // A requester takes a direct message as the answer to its request (none outstanding).
        d.on_frame(&mut bed.ctx(0), 0, Frame::Direct(p));
        assert_eq!(bed.tally.counters["echo_unmatched"], 1);
    }

    #[test]
    fn requests_go_to_the_peer_user() {
        let mut plan = plan(Scenario::Direct);
        plan.conns = 2;
        plan.rate = 0.0;
        plan.payload = 2;
        let mut d = pairs(&plan, &plan.thread_share(0), 1);
        let mut bed = Bed::new(2);
        bed.connect(0..2);
        bed.stage = Stage::Running;
        // Closed loop: the requester's first request at the start, the next at the answer.
        d.begin(&mut bed.ctx(7), 7, 1_000);
        let req = r#"{"type":"send","to":"lg1-1","data":{"t":7,"s":0,"p":0,"x":"aa"}}"#;
        assert_eq!(bed.wire.sent, [(0, req.to_string())]);
        assert!(!d.all_answered());
        d.on_frame(
            &mut bed.ctx(9),
            0,
            Frame::Direct(Probe { t: 7, s: 0, p: 0 }),
        );
        assert_eq!(bed.wire.sent.len(), 2);
        assert_eq!(bed.tally.received_total(), 1);
        assert_eq!(bed.tally.sent_total(), 2);
        assert_eq!(bed.tally.lag.len(), 0, "closed-loop sends have no lag");
    }
}
