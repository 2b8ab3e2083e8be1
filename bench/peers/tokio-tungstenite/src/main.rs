//! Broadcast-to-all WebSocket chat server (text in, the same text out to every client) on
//! tokio-tungstenite, single-threaded runtime so that it uses one core like one shardhub shard.
//!
//! Usage: peer-tokio-tungstenite 127.0.0.1:PORT [read_buffer_bytes]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Clients = Arc<Mutex<HashMap<u64, UnboundedSender<Message>>>>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9100".into());
    // tungstenite's default buffers cost ~135 KB per connection; 4 KiB is the usual tuning.
    let buf: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(4096);
    let config = WebSocketConfig::default().read_buffer_size(buf).write_buffer_size(0);
    let listener = TcpListener::bind(&addr).await.expect("bind");
    let clients: Clients = Arc::default();
    let mut next = 0u64;
    eprintln!("peer-tokio-tungstenite listening on {addr}");
    while let Ok((tcp, _)) = listener.accept().await {
        next += 1;
        tokio::spawn(serve(tcp, next, clients.clone(), config));
    }
}

async fn serve(tcp: TcpStream, id: u64, clients: Clients, config: WebSocketConfig) {
    let _ = tcp.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else { return };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = unbounded_channel::<Message>();
    clients.lock().unwrap().insert(id, tx);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = stream.next().await {
        if let Message::Text(_) | Message::Binary(_) = msg {
            for tx in clients.lock().unwrap().values() {
                let _ = tx.send(msg.clone());
            }
        }
    }
    clients.lock().unwrap().remove(&id);
    writer.abort();
}
