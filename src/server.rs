//! Starting and stopping a server: bind every shard's listener, start the pinned reactor
//! threads, and shut them down gracefully.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::{Poll, Waker};

use crate::config::{Config, ConfigError};
use crate::engine::router::ShardMsg;
use crate::hooks::Hooks;
use crate::hub::{Hub, Shared};
use crate::shard::bus::{self, Inbox, Mailbox, Mailboxes};
use crate::shard::{listener, Shard, WAKER};

/// Why a server could not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// Binding, polling or spawning failed.
    Io(io::Error),
    /// The cluster bus is unreachable, or this node cannot join (its name or tag is taken).
    Cluster(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Cluster(e) => write!(f, "cannot join the cluster: {e}"),
            Self::Io(e) => write!(f, "cannot start: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Configures a [`Server`]: the configuration and the application's hooks.
#[derive(Debug)]
pub struct ServerBuilder {
    config: Config,
    hooks: Hooks,
}

impl ServerBuilder {
    /// Sets the application's hooks (connect, message, typed handlers, disconnect, error).
    pub fn hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Validates the configuration and binds every shard's listener; nothing runs yet.
    pub fn build(self) -> Result<Server, StartError> {
        let config = self.config;
        config.validate().map_err(StartError::Config)?;
        let n = config.shard_count();
        if config.listen.port() != 0 {
            // SO_REUSEPORT would let this server silently share the port with another process
            // (an old instance, say) and split the clients between two unrelated hubs. A plain
            // bind fails if anyone holds the port; the probe is released before the real binds.
            std::net::TcpListener::bind(config.listen).map_err(|e| {
                StartError::Io(io::Error::new(e.kind(), format!("{}: {e}", config.listen)))
            })?;
        }
        let first = listener::bind(config.listen, config.backlog)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..n {
            // Port 0 resolved to a real port on the first bind; the others share it.
            listeners.push(listener::bind(local_addr, config.backlog)?);
        }
        // The HTTP API's own address: one plain listener on shard 0 (API traffic is light, and
        // a plain bind fails loudly if another process holds the port).
        let mut admin = match config.admin_listen {
            Some(a) => {
                let l = std::net::TcpListener::bind(a).map_err(|e| {
                    StartError::Io(io::Error::new(e.kind(), format!("admin_listen {a}: {e}")))
                })?;
                l.set_nonblocking(true)?;
                Some(mio::net::TcpListener::from_std(l))
            }
            None => None,
        };
        let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
        let mut mailboxes = Vec::with_capacity(n);
        let mut parts = Vec::with_capacity(n);
        for l in listeners {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            let (mb, inbox) = bus::inbox(waker);
            mailboxes.push(mb);
            parts.push((poll, l, admin.take(), inbox));
        }
        let bus = Box::new(Mailboxes(mailboxes.clone()));
        // Cluster mode: the link exists before the hub (the router forwards through it), the
        // bus thread after it (it routes what arrives); the node has joined when this returns.
        let cluster_url = config.cluster.clone();
        let node = config
            .node
            .clone()
            .unwrap_or_else(crate::cluster::default_node_name);
        let (link, outbound) = match &cluster_url {
            Some(url) => {
                let redis = url.starts_with("redis://") || url.starts_with("rediss://");
                let (link, rx) = crate::cluster::Link::new(&node, redis);
                (Some(link), Some(rx))
            }
            None => (None, None),
        };
        let shared =
            Shared::new(config, self.hooks, bus, link.clone()).map_err(StartError::Config)?;
        let hub = Hub {
            shared: Arc::new(shared),
        };
        let cluster = match (cluster_url, link, outbound) {
            (Some(url), Some(link), Some(rx)) => Some(
                crate::cluster::bus::start(&url, link, rx, hub.clone())
                    .map_err(StartError::Cluster)?,
            ),
            _ => None,
        };
        Ok(Server {
            hub,
            parts,
            mailboxes,
            cluster,
            local_addr,
            admin_addr,
        })
    }
}

/// A bound server, ready to run.
pub struct Server {
    hub: Hub,
    parts: Vec<ShardParts>,
    /// Each shard's mailbox, for the shutdown message (everything else goes through the
    /// router).
    mailboxes: Vec<Mailbox>,
    /// The bus thread, in cluster mode.
    cluster: Option<crate::cluster::bus::Running>,
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
}

/// What one shard thread starts from: its poll, listener, `admin_listen` listener (shard 0
/// only) and inbox.
type ShardParts = (
    Poll,
    mio::net::TcpListener,
    Option<mio::net::TcpListener>,
    Inbox,
);

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Starts configuring a server.
    pub fn builder(config: Config) -> ServerBuilder {
        ServerBuilder {
            config,
            hooks: Hooks::default(),
        }
    }

    /// The address the shards listen on (with the real port when the configuration said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The `admin_listen` address, with its real port, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// A handle to the hub, usable before and after the server starts.
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// Starts the shard threads and returns at once.
    pub fn spawn(self) -> Result<RunningServer, StartError> {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let pin = self.hub.config().pin_cores;
        let mut threads = Vec::new();
        let (ended_tx, ended) = crossbeam_channel::unbounded();
        for (i, (poll, listener, admin, inbox)) in self.parts.into_iter().enumerate() {
            let hub = self.hub.clone();
            let core = if pin && !cores.is_empty() {
                Some(cores[i % cores.len()])
            } else {
                None
            };
            let ended_tx = ended_tx.clone();
            let t = std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || {
                    report_end(i, &ended_tx, || {
                        if let Some(core) = core {
                            core_affinity::set_for_current(core);
                        }
                        let shard = Shard::new(i, poll, listener, admin, inbox, hub)?;
                        shard.run()
                    })
                })?;
            threads.push(t);
        }
        log::info!(
            "shardhub listening on {} with {} shard(s){}",
            self.local_addr,
            threads.len(),
            if self.hub.config().echo {
                " in echo mode"
            } else {
                ""
            }
        );
        Ok(RunningServer {
            hub: self.hub,
            threads,
            mailboxes: self.mailboxes,
            cluster: self.cluster,
            local_addr: self.local_addr,
            ended,
        })
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    ///
    /// If a shard thread stops on its own (it cannot, short of a bug that escapes the
    /// per-session containment), the server does not go on with some of its connections
    /// unserved: it logs why, shuts the other shards down and returns an error, so that the
    /// process exits non-zero and its supervisor restarts it.
    pub fn run(self) -> Result<(), StartError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let (sig_tx, sig_rx) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let _ = sig_tx.send(sig);
                }
            })?;
        let running = self.spawn()?;
        crossbeam_channel::select! {
            recv(sig_rx) -> sig => {
                log::info!(
                    "signal {}: shutting down (drain up to {:?})",
                    sig.unwrap_or_default(),
                    running.hub.config().drain_timeout
                );
                running.shutdown()?;
                Ok(())
            }
            recv(running.ended) -> end => {
                let (shard, why) = match end {
                    Ok((shard, Err(why))) => (shard, why),
                    Ok((shard, Ok(()))) => (shard, "it ended without a shutdown".into()),
                    Err(_) => (0, "every shard is gone".into()),
                };
                let msg = format!(
                    "shard {shard} stopped: {why}; stopping the server (exit non-zero) so that a \
                     supervisor can restart it"
                );
                log::error!("{msg}");
                // The other shards still close their clients (3000 server shutdown).
                let _ = running.shutdown();
                Err(StartError::Io(io::Error::other(msg)))
            }
        }
    }
}

/// How a shard thread ended: `Ok` after a shutdown, or why not.
type ShardEnd = (usize, Result<(), String>);

/// Runs a shard thread's body and tells `ended` how it ended, panics included (which then
/// go on unwinding, so that `join` sees them too).
fn report_end(
    shard: usize,
    ended: &Sender<ShardEnd>,
    body: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    let outcome = match &result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("its reactor failed: {e}")),
        Err(p) => Err(format!(
            "it panicked: {}",
            crate::engine::panic_message(&**p)
        )),
    };
    let _ = ended.send((shard, outcome));
    result.unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// A server whose shards are running.
#[derive(Debug)]
pub struct RunningServer {
    hub: Hub,
    threads: Vec<JoinHandle<io::Result<()>>>,
    mailboxes: Vec<Mailbox>,
    cluster: Option<crate::cluster::bus::Running>,
    local_addr: SocketAddr,
    /// How each shard thread ended (`report_end`).
    ended: Receiver<ShardEnd>,
}

impl RunningServer {
    /// A handle to the hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, sends close 3000 (`Close::Shutdown`) to every client, waits up to `drain_timeout` for the
    /// close frames to go out, and joins the shard threads.
    pub fn shutdown(self) -> io::Result<()> {
        for mb in &self.mailboxes {
            // A full inbox: keep trying, the shard is draining it. A shard that is gone has
            // nothing to drain.
            while let Err(TrySendError::Full(_)) = mb.send(ShardMsg::Shutdown) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        self.join()
    }

    /// Waits for the shard threads to end (after a shutdown from elsewhere).
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for t in self.threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(io::Error::other("a shard thread panicked")),
            }
        }
        // Last: the others forget this node at once (its sessions are closed by now).
        if let Some(bus) = self.cluster {
            bus.stop();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard thread that dies is heard of, with the reason, however it died.
    #[test]
    fn a_dying_shard_thread_reports_why() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let t =
            std::thread::spawn(move || report_end(3, &tx, || -> io::Result<()> { panic!("boom") }));
        assert!(t.join().is_err(), "the panic still reaches join");
        let (shard, why) = rx.recv().unwrap();
        assert_eq!((shard, why), (3, Err("it panicked: boom".to_string())));
        let (tx, rx) = crossbeam_channel::unbounded();
        let _ = report_end(1, &tx, || Err(io::Error::other("epoll gone")));
        assert_eq!(
            rx.recv().unwrap(),
            (1, Err("its reactor failed: epoll gone".to_string()))
        );
    }
}
