//! shardhub-loadgen: an open-loop WebSocket load generator for shardhub, usable as a library so
//! that tests can run scenarios in-process.
//!
//! Data flow: [`plan::Plan`] (validated request) → [`scenario::run`] spawns one thread per
//! `--threads`, each a [`net::Net`] (mio poller + slab of client connections, own RFC 6455 client
//! framing in [`ws`], Socket.IO packets in [`sio`]) driven by a [`scenario::Runner`] (the stages every scenario shares) and the
//! scenario's [`scenario::Workload`] (what its connections send and count) → per-thread
//! [`report::RunSummary`] parts → merged by adding raw counts and HdrHistograms ([`hist`]) →
//! printed, written as JSON or `.hgrm`, or rendered to HTML ([`html`], plots drawn by `chart`). [`procs`] runs the same
//! thing as several worker processes and merges their JSON. [`send_cost`] measures, with no
//! server in the way, what the kernel charges for the one write each delivery needs.
//!
//! Layering: `ws`, `schedule`, `seq`, `hist`, `target` are pure and unit-tested; `net` owns all
//! socket IO; `scenario` owns timing policy (one module per scenario, see its docs); `sys` owns
//! all `unsafe`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod chart;
pub mod error;
pub mod hist;
pub mod html;
pub mod net;
pub mod plan;
pub mod procs;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod send_cost;
pub mod seq;
pub mod sio;
pub mod sys;
pub mod target;
pub mod ws;

pub use error::{ConfigError, RunError};
pub use plan::{Adapter, Plan, Scenario};
pub use report::RunSummary;
pub use scenario::{run, Gate};
pub use target::Target;
