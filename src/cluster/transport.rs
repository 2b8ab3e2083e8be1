//! The bus itself: a NATS client (async-nats) or a Redis client (redis), behind one small
//! interface, both on the bus thread's current-thread runtime.
//!
//! What differs between them, and what this file hides:
//! * NATS reconnects by itself, subscriptions included, and holds what is published while it
//!   is away (up to its buffer). Its events (disconnected, reconnected, slow consumer) go to
//!   the bus counters.
//! * Redis pub/sub does neither: when the subscription connection ends, [`Transport::recv`]
//!   says so, and [`Transport::reconnect`] opens both connections again with jittered backoff
//!   and re-subscribes every channel in one `SUBSCRIBE`. What was published meanwhile is lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::history::{self, HistoryOp};
use super::BusStats;

/// How long connecting may take before the bus counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One message from the bus.
#[derive(Debug)]
pub struct Inbound {
    /// Its channel (subject).
    pub channel: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// A connected bus client.
pub enum Transport {
    /// NATS.
    Nats(Nats),
    /// Redis.
    Redis(Redis),
}

/// The NATS client and one forwarding task per subscription.
pub struct Nats {
    client: async_nats::Client,
    subs: HashMap<String, JoinHandle<()>>,
    tx: mpsc::Sender<Inbound>,
    rx: mpsc::Receiver<Inbound>,
}

/// The Redis clients: one connection for publishing, one in subscriber mode.
pub struct Redis {
    client: redis::Client,
    publish: redis::aio::MultiplexedConnection,
    sink: redis::aio::PubSubSink,
    stream: redis::aio::PubSubStream,
    channels: Vec<String>,
    stats: Arc<BusStats>,
}

/// Messages waiting between the NATS forwarding tasks and the bus loop.
const INBOUND_CAPACITY: usize = 65_536;

impl Transport {
    /// Connects to `url` (`nats://…` or `redis://…`), within [`CONNECT_TIMEOUT`].
    pub async fn connect(url: &str, node: &str, stats: Arc<BusStats>) -> Result<Self, String> {
        if url.starts_with("nats://") || url.starts_with("tls://") {
            let events = stats.clone();
            // no_echo: a node does not need its own publications back (it ignores them).
            let options = async_nats::ConnectOptions::new()
                .name(format!("shardhub {node}"))
                .no_echo()
                .connection_timeout(CONNECT_TIMEOUT)
                .event_callback(move |ev| {
                    let stats = events.clone();
                    async move { stats.nats_event(&ev) }
                });
            let client = tokio::time::timeout(CONNECT_TIMEOUT, options.connect(url))
                .await
                .map_err(|_| format!("no answer from {url} within {CONNECT_TIMEOUT:?}"))?
                .map_err(|e| format!("cannot connect to {url}: {e}"))?;
            stats.set_connected(true);
            let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
            Ok(Self::Nats(Nats {
                client,
                subs: HashMap::new(),
                tx,
                rx,
            }))
        } else if url.starts_with("redis://") || url.starts_with("rediss://") {
            let client =
                redis::Client::open(url).map_err(|e| format!("bad Redis URL {url}: {e}"))?;
            let (publish, sink, stream) = redis_connect(&client)
                .await
                .map_err(|e| format!("cannot connect to {url}: {e}"))?;
            stats.set_connected(true);
            Ok(Self::Redis(Redis {
                client,
                publish,
                sink,
                stream,
                channels: Vec::new(),
                stats,
            }))
        } else {
            Err(format!(
                "{url}: the cluster bus URL must start with nats:// or redis://"
            ))
        }
    }

    /// Subscribes to channels (batched: one command for Redis).
    pub async fn subscribe(&mut self, channels: &[String]) -> Result<(), String> {
        match self {
            Self::Nats(n) => {
                for ch in channels {
                    if n.subs.contains_key(ch) {
                        continue;
                    }
                    let mut sub = n
                        .client
                        .subscribe(ch.clone())
                        .await
                        .map_err(|e| format!("subscribe {ch}: {e}"))?;
                    let tx = n.tx.clone();
                    let task = tokio::spawn(async move {
                        while let Some(m) = sub.next().await {
                            let inbound = Inbound {
                                channel: m.subject.to_string(),
                                payload: m.payload.to_vec(),
                            };
                            if tx.send(inbound).await.is_err() {
                                return;
                            }
                        }
                    });
                    n.subs.insert(ch.clone(), task);
                }
                Ok(())
            }
            Self::Redis(r) => {
                let new: Vec<&String> = channels
                    .iter()
                    .filter(|c| !r.channels.contains(c))
                    .collect();
                if new.is_empty() {
                    return Ok(());
                }
                r.sink
                    .subscribe(&new)
                    .await
                    .map_err(|e| format!("SUBSCRIBE: {e}"))?;
                r.channels.extend(new.into_iter().cloned());
                Ok(())
            }
        }
    }

    /// Unsubscribes from a channel.
    pub async fn unsubscribe(&mut self, channel: &str) {
        match self {
            // Dropping the subscriber (with its task) unsubscribes.
            Self::Nats(n) => {
                if let Some(task) = n.subs.remove(channel) {
                    task.abort();
                }
            }
            Self::Redis(r) => {
                r.channels.retain(|c| c != channel);
                let _ = r.sink.unsubscribe(channel).await;
            }
        }
    }

    /// Publishes a batch of envelopes, in order. NATS buffers them in its client; Redis sends
    /// them as one pipeline, so a burst costs one round trip instead of one per envelope.
    pub async fn publish(&mut self, batch: Vec<(String, Vec<u8>)>) -> Result<(), String> {
        match self {
            Self::Nats(n) => {
                for (channel, payload) in batch {
                    n.client
                        .publish(channel, payload.into())
                        .await
                        .map_err(|e| format!("publish: {e}"))?;
                }
                Ok(())
            }
            Self::Redis(r) => {
                let mut pipe = redis::pipe();
                for (channel, payload) in batch {
                    pipe.cmd("PUBLISH").arg(channel).arg(payload).ignore();
                }
                pipe.query_async::<()>(&mut r.publish)
                    .await
                    .map_err(|e| format!("PUBLISH: {e}"))
            }
        }
    }

    /// Waits until what was published has reached the server. NATS' client publishes from a
    /// buffer that its connection task writes later: a node that shuts down right after its
    /// goodbye would otherwise drop it with the runtime, and the others would wait for its
    /// silence to time out. Redis answered every publish already.
    pub async fn flush(&mut self) -> Result<(), String> {
        match self {
            Self::Nats(n) => n.client.flush().await.map_err(|e| format!("flush: {e}")),
            Self::Redis(_) => Ok(()),
        }
    }

    /// Runs room history operations (Redis only) as one pipeline, in order, and returns each
    /// one's answer (a `ServerError` for a failed one); `Err` when Redis did not answer at
    /// all. An operation answered `NOSCRIPT` is run again with the script's text.
    pub async fn history(
        &mut self,
        ops: &[(String, Vec<u8>, HistoryOp)],
    ) -> Result<Vec<redis::Value>, String> {
        let Self::Redis(r) = self else {
            return Err("room history in cluster mode needs --cluster redis://".into());
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (channel, payload, op) in ops {
            pipe.add_command(history::command(op, channel, payload, false));
        }
        let mut answers: Vec<redis::Value> = pipe
            .query_async(&mut r.publish)
            .await
            .map_err(|e| format!("history: {e}"))?;
        for (i, (channel, payload, op)) in ops.iter().enumerate() {
            if answers.get(i).is_some_and(history::is_noscript) {
                let again = history::command(op, channel, payload, true)
                    .query_async(&mut r.publish)
                    .await
                    .map_err(|e| format!("history: {e}"))?;
                answers[i] = again;
                load_scripts(&mut r.publish).await;
            }
        }
        Ok(answers)
    }

    /// The next message; `None` when the connection is lost (Redis: call `reconnect`).
    pub async fn recv(&mut self) -> Option<Inbound> {
        match self {
            Self::Nats(n) => n.rx.recv().await,
            Self::Redis(r) => {
                let m = r.stream.next().await?;
                Some(Inbound {
                    channel: m.get_channel_name().to_string(),
                    payload: m.get_payload_bytes().to_vec(),
                })
            }
        }
    }

    /// After `recv` said the connection is gone: connect again, with jittered exponential
    /// backoff (100 ms doubling to 5 s), and restore every subscription at once. NATS
    /// reconnects by itself; this only waits for it.
    pub async fn reconnect(&mut self) {
        let Self::Redis(r) = self else {
            return;
        };
        r.stats.set_connected(false);
        let mut delay = Duration::from_millis(100);
        loop {
            let jitter = Duration::from_nanos(super::random() % (delay.as_nanos() as u64 + 1));
            tokio::time::sleep(delay / 2 + jitter / 2).await;
            if let Ok(Ok((publish, mut sink, stream))) =
                tokio::time::timeout(CONNECT_TIMEOUT, redis_connect(&r.client)).await
            {
                if r.channels.is_empty() || sink.subscribe(&r.channels).await.is_ok() {
                    r.publish = publish;
                    r.sink = sink;
                    r.stream = stream;
                    r.stats.reconnected();
                    return;
                }
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

async fn redis_connect(
    client: &redis::Client,
) -> redis::RedisResult<(
    redis::aio::MultiplexedConnection,
    redis::aio::PubSubSink,
    redis::aio::PubSubStream,
)> {
    let config = redis::AsyncConnectionConfig::new().set_connection_timeout(Some(CONNECT_TIMEOUT));
    let mut publish = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    load_scripts(&mut publish).await;
    let (sink, stream) = client.get_async_pubsub().await?.split();
    Ok((publish, sink, stream))
}

/// Loads the history scripts, so that `EVALSHA` finds them (best effort: a `NOSCRIPT` later is
/// answered by `EVAL`).
async fn load_scripts(c: &mut redis::aio::MultiplexedConnection) {
    for src in [history::PUBLISH, history::READ] {
        let loaded: redis::RedisResult<String> = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(src)
            .query_async(c)
            .await;
        if let Err(e) = loaded {
            log::warn!("cluster: cannot load the history scripts into Redis: {e}");
        }
    }
}
