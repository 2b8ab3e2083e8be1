//! The `shardhub-loadgen` command line. Every measuring command goes the same way: its arguments
//! become a [`Job`] (one [`Plan`], or a max-rate search over fanout plans), [`execute`] runs each
//! plan in this process or as `--procs` worker processes, and [`emit`] writes the outputs
//! (`--out`, `--hgrm`, the summary on stdout). `report` and `compare` render stored runs. All
//! the work is in the library.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shardhub_loadgen::plan::{Adapter, Plan, Scenario};
use shardhub_loadgen::report::{self, RunSummary};
use shardhub_loadgen::scenario::maxrate;
use shardhub_loadgen::target::{parse_sources, Targets};
use shardhub_loadgen::{hist, html, procs, run, send_cost, Gate, RunError};

#[derive(Parser)]
#[command(
    name = "shardhub-loadgen",
    version,
    about = "Open-loop WebSocket load generator for shardhub (loopback targets only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(flatten)]
    Measure(Box<Measure>),
    /// Render a run (from --out) as a self-contained HTML report.
    Report {
        /// Run JSON.
        run: PathBuf,
        /// Output HTML file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Compare runs: one HTML page and a markdown table on stdout (ratios to the first).
    Compare {
        /// Run JSON files; the first is the baseline.
        #[arg(required = true, num_args = 1..)]
        runs: Vec<PathBuf>,
        /// Output HTML file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// The kernel's charge for one small write over loopback, by system call, with no server in
    /// the way: the floor under any server's CPU per delivery.
    SendCost(SendCostArgs),
}

/// `send-cost` (see `shardhub_loadgen::send_cost`).
#[derive(Args)]
struct SendCostArgs {
    /// Connected loopback pairs.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Rounds per second; each writes once to every connection.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Seconds of rounds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Bytes per write (66: a 64-byte message with its WebSocket frame header).
    #[arg(long, default_value_t = 66)]
    bytes: usize,
    /// System calls, taking turns round by round.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "send,sendmsg,write,writev"
    )]
    calls: Vec<send_cost::Call>,
    /// Core for the writing thread.
    #[arg(long)]
    sender_core: Option<usize>,
    /// Core for the reading thread.
    #[arg(long)]
    reader_core: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The commands that measure: each becomes a [`Job`].
#[derive(Subcommand)]
enum Measure {
    /// Ramp to N connections at R/s, hold them, report handshake latency and failures.
    Connect {
        #[command(flatten)]
        common: Common,
        /// Connections.
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// New connections per second (0: all at once).
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Seconds to hold the connections once all are up.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
    },
    /// Subscribers in rooms, open-loop publishers; end-to-end delivery latency, losses.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        fan: FanoutArgs,
        /// Total publishes per second (open loop).
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Request/response round trips (hub: ping/pong; raw: text echo).
    Echo {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        rt: RoundTripArgs,
    },
    /// Pairs of users (lg..-2k sends, lg..-2k+1 bounces back) exchanging `send` messages; round-trip latency (hub only).
    Direct {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        rt: RoundTripArgs,
    },
    /// A fanout measured while extra connections connect, join and disconnect at --churn-rate.
    Churn {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        fan: FanoutArgs,
        /// Total publishes per second (open loop).
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Extra connections started per second during the measurement.
        #[arg(long, default_value_t = 100.0)]
        churn_rate: f64,
        /// Seconds each extra connection stays after its greeting.
        #[arg(long, default_value_t = 1.0)]
        churn_life: f64,
    },
    /// Recovery storm: members of a room with history leave, miss --missed publications, and
    /// reconnect at once joining with `recover`; time until each and all have recovered.
    Recover {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        storm: StormArgs,
    },
    /// Highest publish rate with p99 under --p99-ms and no loss, by doubling then bisecting short fanout runs.
    MaxRate {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        fan: FanoutArgs,
        /// p99 delivery latency bound (ms).
        #[arg(long, default_value_t = 50.0)]
        p99_ms: f64,
        /// First rate tried (publishes/s).
        #[arg(long, default_value_t = 100.0)]
        start_rate: f64,
        /// Seconds per step.
        #[arg(long, default_value_t = 5.0)]
        step_duration: f64,
        /// Most steps (runs) in total.
        #[arg(long, default_value_t = 12)]
        max_steps: usize,
    },
}

#[derive(Args, Clone)]
struct RoundTripArgs {
    /// Connections (direct: an even number, in pairs).
    #[arg(long, default_value_t = 10)]
    conns: usize,
    /// Total requests per second, open loop; 0 for closed loop (one outstanding per connection).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// New connections per second during setup (0: all at once).
    #[arg(long, default_value_t = 1000.0)]
    connect_rate: f64,
    /// Padding bytes per request (raw echo and direct).
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// Seconds to wait after the measurement for answers in flight.
    #[arg(long, default_value_t = 2.0)]
    grace: f64,
}

#[derive(Args, Clone)]
struct FanoutArgs {
    /// Subscriber connections.
    #[arg(long, default_value_t = 100)]
    conns: usize,
    /// Rooms (subscriber i joins room-(i % rooms)); ignored by the raw adapter.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Publisher connections (not subscribers: they publish with exclude_self).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Seconds to wait after the last publish for deliveries in flight.
    #[arg(long, default_value_t = 2.0)]
    grace: f64,
    /// New connections per second during setup (0: all at once).
    #[arg(long, default_value_t = 1000.0)]
    connect_rate: f64,
    /// Padding bytes per published payload.
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// URL every publisher connects to (loopback only; default: the first --url).
    #[arg(long)]
    publisher_url: Option<String>,
    /// Publishers send `broadcast` (to every session, exclude_self) instead of publishing to
    /// the room: measures a broadcast's delivery to every subscriber. Needs --rooms 1.
    #[arg(long)]
    broadcast: bool,
}

#[derive(Args, Clone)]
struct StormArgs {
    /// Subscribers (members of the one room, `storm`).
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Publications made while the members are away.
    #[arg(long, default_value_t = 100)]
    missed: u64,
    /// Seconds the members stay away (the missed publications go out halfway).
    #[arg(long, default_value_t = 2.0)]
    offline: f64,
    /// Reconnects per second (0: all at once).
    #[arg(long, default_value_t = 0.0)]
    reconnect_rate: f64,
    /// Rejoin with a plain join instead of `recover` (the baseline without replay).
    #[arg(long)]
    no_recover: bool,
    /// Reconnect to the URL a member left rather than the next one (several --url).
    #[arg(long)]
    same_node: bool,
    /// Live publishes per second during the whole measurement (0: only the missed ones).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Upper bound of the measurement in seconds, --offline included (it ends as soon as every
    /// member has recovered or failed, unless --rate > 0).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// New connections per second during setup (0: all at once).
    #[arg(long, default_value_t = 1000.0)]
    connect_rate: f64,
    /// URL the publisher connects to (loopback only; default: the first --url).
    #[arg(long)]
    publisher_url: Option<String>,
    /// Seconds to wait after the measurement for messages in flight.
    #[arg(long, default_value_t = 2.0)]
    grace: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum AdapterArg {
    Hub,
    Raw,
    /// Socket.IO over Engine.IO v4 WebSocket (URL path `/socket.io/?EIO=4&transport=websocket`).
    Socketio,
}

#[derive(Args, Clone)]
struct Common {
    /// Target URL (loopback only). Repeat it or give a comma list to spread connections (fanout:
    /// subscribers) round-robin: connection i goes to URL i mod n.
    #[arg(
        long = "url",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    urls: Vec<String>,
    /// Server protocol: shardhub's JSON hub protocol, a raw echo/broadcast server, or a Socket.IO
    /// broadcast server.
    #[arg(long, value_enum, default_value = "hub")]
    adapter: AdapterArg,
    /// Threads (each its own poller); one per core you can spare.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Worker processes (each with a share of connections and rate).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Loopback source addresses to spread connections over: A, A-B or a comma list.
    #[arg(long)]
    source: Option<String>,
    /// Seconds for connect + upgrade + greeting + joins of one connection.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Bound on the whole run in seconds (default: ramp + duration + grace + 30).
    #[arg(long)]
    timeout: Option<f64>,
    /// Print one JSON summary on stdout instead of the text summary.
    #[arg(long)]
    json: bool,
    /// Write the JSON summary (with serialized histograms) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the main latency distribution in HdrHistogram .hgrm format to this file.
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Label for reports and comparisons.
    #[arg(long)]
    label: Option<String>,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
    /// (internal) Run as worker process I of --procs.
    #[arg(long, hide = true)]
    worker_part: Option<usize>,
    /// (internal) Monotonic origin of the parent's timeline.
    #[arg(long, hide = true)]
    origin_ns: Option<u64>,
}

fn secs(v: f64, what: &str) -> Result<Duration, RunError> {
    Duration::try_from_secs_f64(v).map_err(|_| {
        RunError::Config(shardhub_loadgen::ConfigError::Invalid(format!(
            "{what}: {v} is not a duration"
        )))
    })
}

/// The plan's common part; `publisher_url` is fanout's `--publisher-url`.
fn base_plan(
    scenario: Scenario,
    c: &Common,
    publisher_url: Option<&str>,
) -> Result<Plan, RunError> {
    let targets = Targets::parse(&c.urls, publisher_url)?;
    let mut p = Plan::new(scenario, targets.first().clone());
    p.targets = targets;
    p.adapter = match c.adapter {
        AdapterArg::Hub => Adapter::Hub,
        AdapterArg::Raw => Adapter::Raw,
        AdapterArg::Socketio => Adapter::SocketIo,
    };
    p.threads = c.threads;
    if let Some(s) = &c.source {
        p.sources = parse_sources(s)?;
    }
    p.connect_timeout = secs(c.connect_timeout, "--connect-timeout")?;
    p.label = c.label.clone();
    p.progress = !c.quiet && !c.json && c.worker_part.is_none() && std::io::stderr().is_terminal();
    p.part = (c.worker_part.unwrap_or(0), c.procs.max(1));
    p.origin_ns = c.origin_ns;
    Ok(p)
}

fn finish_plan(p: &mut Plan, c: &Common) -> Result<(), RunError> {
    let ramp = if p.connect_rate > 0.0 {
        p.total_conns() as f64 / p.connect_rate
    } else {
        0.0
    };
    p.timeout = match c.timeout {
        Some(t) => secs(t, "--timeout")?,
        None => secs(
            ramp + p.connect_timeout.as_secs_f64()
                + p.duration.as_secs_f64()
                + p.grace.as_secs_f64()
                + 30.0,
            "timeout",
        )?,
    };
    p.validate()?;
    Ok(())
}

fn round_trip_plan(scenario: Scenario, c: &Common, rt: &RoundTripArgs) -> Result<Plan, RunError> {
    let mut p = base_plan(scenario, c, None)?;
    p.conns = rt.conns;
    p.rate = rt.rate;
    p.connect_rate = rt.connect_rate;
    p.payload = rt.payload;
    p.grace = secs(rt.grace, "--grace")?;
    p.duration = secs(rt.duration, "--duration")?;
    finish_plan(&mut p, c)?;
    Ok(p)
}

/// A fanout-shaped plan (fanout, churn, max-rate steps); `extra` sets what churn adds.
fn fanout_plan(
    scenario: Scenario,
    c: &Common,
    f: &FanoutArgs,
    rate: f64,
    duration: f64,
    extra: impl FnOnce(&mut Plan) -> Result<(), RunError>,
) -> Result<Plan, RunError> {
    let mut p = base_plan(scenario, c, f.publisher_url.as_deref())?;
    p.conns = f.conns;
    p.rooms = f.rooms;
    p.publishers = f.publishers;
    p.grace = secs(f.grace, "--grace")?;
    p.connect_rate = f.connect_rate;
    p.payload = f.payload;
    p.broadcast = f.broadcast;
    p.rate = rate;
    p.duration = secs(duration, "--duration")?;
    extra(&mut p)?;
    finish_plan(&mut p, c)?;
    Ok(p)
}

/// The command line that makes a worker process run `plan` (the parent's own arguments would
/// not do: `max-rate` runs a different fanout plan at every step).
fn worker_args(plan: &Plan, c: &Common) -> Vec<String> {
    let mut a: Vec<String> = vec![plan.scenario.name().into()];
    let mut push = |k: &str, v: String| {
        a.push(k.into());
        a.push(v);
    };
    for t in plan.targets.spread() {
        push("--url", t.url.clone());
    }
    push("--adapter", plan.adapter.name().into());
    push("--threads", plan.threads.to_string());
    push("--procs", plan.part.1.to_string());
    if let Some(src) = &c.source {
        push("--source", src.clone());
    }
    push(
        "--connect-timeout",
        plan.connect_timeout.as_secs_f64().to_string(),
    );
    push("--timeout", plan.timeout.as_secs_f64().to_string());
    if let Some(l) = &plan.label {
        push("--label", l.clone());
    }
    push("--conns", plan.conns.to_string());
    match plan.scenario {
        Scenario::Connect => {
            push("--rate", plan.connect_rate.to_string());
            push("--hold", plan.duration.as_secs_f64().to_string());
        }
        _ => {
            push("--connect-rate", plan.connect_rate.to_string());
            push("--rate", plan.rate.to_string());
            push("--duration", plan.duration.as_secs_f64().to_string());
            if plan.scenario != Scenario::Recover {
                push("--payload", plan.payload.to_string());
            }
            push("--grace", plan.grace.as_secs_f64().to_string());
        }
    }
    if plan.scenario.is_fanout() {
        push("--rooms", plan.rooms.to_string());
        push("--publishers", plan.publishers.to_string());
        push(
            "--publisher-url",
            plan.targets.publisher_target().url.clone(),
        );
    }
    if plan.scenario == Scenario::Churn {
        push("--churn-rate", plan.churn_rate.to_string());
        push("--churn-life", plan.churn_life.as_secs_f64().to_string());
    }
    if plan.scenario == Scenario::Recover {
        let st = &plan.storm;
        push("--missed", st.missed.to_string());
        push("--offline", st.offline.as_secs_f64().to_string());
        push("--reconnect-rate", st.reconnect_rate.to_string());
        push(
            "--publisher-url",
            plan.targets.publisher_target().url.clone(),
        );
        if !st.recover {
            a.push("--no-recover".into());
        }
        if !st.move_node {
            a.push("--same-node".into());
        }
    }
    if plan.broadcast {
        a.push("--broadcast".into());
    }
    a.push("--quiet".into());
    a
}

/// What a measuring command asks for: one run, or a search over fanout runs.
enum Job {
    /// Run this plan once.
    Run(Plan),
    /// `max-rate`: fanout runs from `base.rate` up, see [`maxrate::search`].
    MaxRate {
        base: Plan,
        p99_ms: f64,
        max_steps: usize,
    },
}

/// What a job produced.
enum Outcome {
    Run(RunSummary),
    MaxRate(maxrate::MaxRate),
}

impl Outcome {
    /// The run whose files `--out` and `--hgrm` write: the run, or the search's best step.
    fn run(&self) -> Option<&RunSummary> {
        match self {
            Self::Run(s) => Some(s),
            Self::MaxRate(m) => m.best_run.as_ref(),
        }
    }
}

/// The job of a measuring command, and its common options.
fn job(cmd: Measure) -> Result<(Job, Common), RunError> {
    let no_extra = |_: &mut Plan| Ok(());
    Ok(match cmd {
        Measure::Connect {
            common,
            conns,
            rate,
            hold,
        } => {
            let mut p = base_plan(Scenario::Connect, &common, None)?;
            p.conns = conns;
            p.connect_rate = rate;
            p.duration = secs(hold, "--hold")?;
            p.grace = Duration::ZERO;
            finish_plan(&mut p, &common)?;
            (Job::Run(p), common)
        }
        Measure::Fanout {
            common,
            fan,
            rate,
            duration,
        } => {
            let p = fanout_plan(Scenario::Fanout, &common, &fan, rate, duration, no_extra)?;
            (Job::Run(p), common)
        }
        Measure::Echo { common, rt } => {
            let p = round_trip_plan(Scenario::Echo, &common, &rt)?;
            (Job::Run(p), common)
        }
        Measure::Direct { common, rt } => {
            let p = round_trip_plan(Scenario::Direct, &common, &rt)?;
            (Job::Run(p), common)
        }
        Measure::Churn {
            common,
            fan,
            rate,
            duration,
            churn_rate,
            churn_life,
        } => {
            let p = fanout_plan(Scenario::Churn, &common, &fan, rate, duration, |p| {
                p.churn_rate = churn_rate;
                p.churn_life = secs(churn_life, "--churn-life")?;
                Ok(())
            })?;
            (Job::Run(p), common)
        }
        Measure::Recover { common, storm } => {
            let mut p = base_plan(Scenario::Recover, &common, storm.publisher_url.as_deref())?;
            p.conns = storm.conns;
            p.rate = storm.rate;
            p.connect_rate = storm.connect_rate;
            p.duration = secs(storm.duration, "--duration")?;
            p.grace = secs(storm.grace, "--grace")?;
            p.storm.missed = storm.missed;
            p.storm.offline = secs(storm.offline, "--offline")?;
            p.storm.reconnect_rate = storm.reconnect_rate;
            p.storm.recover = !storm.no_recover;
            p.storm.move_node = !storm.same_node;
            finish_plan(&mut p, &common)?;
            (Job::Run(p), common)
        }
        Measure::MaxRate {
            common,
            fan,
            p99_ms,
            start_rate,
            step_duration,
            max_steps,
        } => {
            let base = fanout_plan(
                Scenario::Fanout,
                &common,
                &fan,
                start_rate,
                step_duration,
                no_extra,
            )?;
            let job = Job::MaxRate {
                base,
                p99_ms,
                max_steps,
            };
            (job, common)
        }
    })
}

/// Runs a plan as asked: a worker part, K worker processes, or in this process. A worker part
/// hands its result to its parent on stdout and returns `None`.
fn execute(plan: &Plan, c: &Common) -> Result<Option<RunSummary>, RunError> {
    if c.worker_part.is_some() {
        let s = run(plan, Gate::Stdio)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}{}", procs::RESULT_PREFIX, to_json(&s, false)?)?;
        out.flush()?;
        return Ok(None);
    }
    if c.procs > 1 {
        let args = worker_args(plan, c);
        let mut s = procs::run_procs(c.procs, &args, plan.timeout)?;
        s.connections.target = plan.total_conns() as u64;
        s.params = plan.params();
        return Ok(Some(s));
    }
    run(plan, Gate::Local).map(Some)
}

/// Runs a job: its one plan, or every step of a search.
fn perform(job: &Job, c: &Common) -> Result<Option<Outcome>, RunError> {
    match job {
        Job::Run(plan) => Ok(execute(plan, c)?.map(Outcome::Run)),
        Job::MaxRate {
            base,
            p99_ms,
            max_steps,
        } => {
            let step =
                |plan: &Plan| execute(plan, c)?.ok_or_else(|| RunError::Worker("no result".into()));
            maxrate::search(base, *p99_ms, *max_steps, step).map(|m| Some(Outcome::MaxRate(m)))
        }
    }
}

/// Writes what a job produced: `--out` (the run's JSON), `--hgrm` (its main latency
/// distribution), then the summary on stdout, as text or (`--json`) as JSON.
fn emit(o: &Outcome, c: &Common) -> Result<(), RunError> {
    if let Some(s) = o.run() {
        if let Some(path) = &c.out {
            std::fs::write(path, to_json(s, true)?)?;
        }
        if let Some(path) = &c.hgrm {
            let l = s.latency.as_ref().unwrap_or(&s.handshake);
            std::fs::write(path, hist::hgrm(&l.hist()?))?;
        }
    }
    let text = match (o, c.json) {
        (Outcome::Run(s), true) => to_json(s, true)? + "\n",
        (Outcome::MaxRate(m), true) => to_json(m, true)? + "\n",
        (Outcome::Run(s), false) => s.text(),
        (Outcome::MaxRate(m), false) => m.text(),
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

fn to_json(v: &impl serde::Serialize, pretty: bool) -> Result<String, RunError> {
    let json = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    };
    json.map_err(|e| RunError::Worker(e.to_string()))
}

/// Writes a rendered page and says where.
fn write_page(path: &Path, page: &str) -> Result<(), RunError> {
    std::fs::write(path, page)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn real_main() -> Result<(), RunError> {
    match Cli::parse().cmd {
        Cmd::Report { run, output } => write_page(&output, &html::report(&report::load(&run)?)?),
        Cmd::Compare { runs, output } => {
            let all = runs
                .iter()
                .map(|p| report::load(p))
                .collect::<Result<Vec<_>, _>>()?;
            // A run's label names it; unlabeled runs go by file name.
            let names: Vec<String> = all
                .iter()
                .zip(&runs)
                .map(|(s, p)| s.label.clone().unwrap_or_else(|| p.display().to_string()))
                .collect();
            let page = html::compare(&all, &names)?;
            print!("{}", html::markdown_table(&all, &names));
            write_page(&output, &page)
        }
        Cmd::SendCost(a) => {
            let report = send_cost::run(&send_cost::Plan {
                conns: a.conns,
                rate: a.rate,
                duration: a.duration,
                bytes: a.bytes,
                calls: a.calls,
                sender_core: a.sender_core,
                reader_core: a.reader_core,
            })?;
            let text = if a.json {
                to_json(&report, true)? + "\n"
            } else {
                report.text()
            };
            std::io::stdout().lock().write_all(text.as_bytes())?;
            Ok(())
        }
        Cmd::Measure(cmd) => {
            let (job, common) = job(*cmd)?;
            match perform(&job, &common)? {
                Some(outcome) => emit(&outcome, &common),
                None => Ok(()),
            }
        }
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardhub-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
