//! The gorilla/websocket hub tutorial's private chat on shardhub: clients keep their typed
//! JSON messages, `{"type":N,"sender":"…","receiver":"…","content":"…"}`, and the server
//! answers them as the Go hub did.
//!
//! ```sh
//! cargo run --release --example gorilla_hub     # ws://127.0.0.1:8000/ws?uid=alice
//! ```
//!
//! | type | name | from | meaning |
//! | --- | --- | --- | --- |
//! | 1 | connect | server | `sender` came online (to everyone else) |
//! | 2 | send | client | a private message to `receiver`; it gets the message, the sender a system reply |
//! | 3 | system | server | the reply to a send or broadcast: `"success send"`, `"not online"`, or what was wrong |
//! | 4 | broadcast | client | a message to everyone else; the sender gets `"success send"` |
//! | 5 | close | both | a client asks to leave (the server closes it with 1000); the server tells everyone else that `sender` went offline, however it left |
//!
//! The user id comes from `?uid=` as in the tutorial (`?user=` and the built-in authentication
//! work too); the server sets `sender` on what it relays, so nobody can speak for another.
//! `tests/examples.rs` runs [`hooks`] against real clients.

use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};
use shardhub::{Config, Context, Flow, Hooks, Hub, Message, Reject, Server};

/// The message types of the tutorial.
pub const CONNECT: u64 = 1;
/// A private message.
pub const SEND: u64 = 2;
/// A reply from the server.
pub const SYSTEM: u64 = 3;
/// A message to everyone else.
pub const BROADCAST: u64 = 4;
/// Leaving.
pub const CLOSE: u64 = 5;

/// A message of the tutorial's shape.
fn message(kind: u64, sender: &str, receiver: &str, content: &str) -> String {
    json!({"type": kind, "sender": sender, "receiver": receiver, "content": content}).to_string()
}

/// Replies to the current client with a system message.
fn system(ctx: &mut Context<'_>, content: &str) {
    let me = ctx.session().user().to_string();
    ctx.send_text(&message(SYSTEM, "system", &me, content));
}

/// The hub's hooks. `hub` is filled once the server is built: the disconnect hook announces a
/// departure through it.
pub fn hooks(hub: Arc<OnceLock<Hub>>) -> Hooks {
    Hooks::default()
        .without_welcome()
        .on_connect(|req, session| {
            if let Some(uid) = req.query_param("uid") {
                // The user id rules (length, characters) are checked after this hook.
                if uid.is_empty() {
                    return Err(Reject::with_status(400, "uid must not be empty"));
                }
                session.set_user(uid);
            }
            Ok(())
        })
        .on_open(|ctx| {
            let me = ctx.session().user().to_string();
            let online = message(CONNECT, &me, "", &format!("{me} is online"));
            let _ = ctx
                .hub()
                .broadcast_others(online.as_str(), ctx.session().id());
        })
        .on_message(|ctx, msg| {
            let Message::Text(text) = msg else {
                system(ctx, "bad message: expected JSON text");
                return Flow::Handled;
            };
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                system(ctx, "bad message: not JSON");
                return Flow::Handled;
            };
            let me = ctx.session().user().to_string();
            let content = v["content"].as_str().unwrap_or("");
            match v["type"].as_u64() {
                Some(SEND) => {
                    let Some(to) = v["receiver"].as_str() else {
                        system(ctx, "bad message: send needs a receiver");
                        return Flow::Handled;
                    };
                    let relayed = message(SEND, &me, to, content);
                    let reply = match ctx.hub().send_to_user(to, relayed.as_str()) {
                        Ok(0) => "not online",
                        Ok(_) => "success send",
                        Err(_) => "server busy, try again",
                    };
                    system(ctx, reply);
                }
                Some(BROADCAST) => {
                    let relayed = message(BROADCAST, &me, "", content);
                    let reply = match ctx
                        .hub()
                        .broadcast_others(relayed.as_str(), ctx.session().id())
                    {
                        Ok(()) => "success send",
                        Err(_) => "server busy, try again",
                    };
                    system(ctx, reply);
                }
                Some(CLOSE) => ctx.close(1000, "bye"),
                _ => system(ctx, "bad message: unknown type"),
            }
            Flow::Handled
        })
        .on_disconnect(move |session, _| {
            if let Some(hub) = hub.get() {
                let me = session.user();
                let offline = message(CLOSE, me, "", &format!("{me} is offline"));
                let _ = hub.broadcast_others(offline.as_str(), session.id());
            }
        })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::new().parse_filters("info").init();
    let config = Config {
        listen: "127.0.0.1:8000".parse()?,
        ..Config::default()
    };
    let hub = Arc::new(OnceLock::new());
    let server = Server::builder(config).hooks(hooks(hub.clone())).build()?;
    let _ = hub.set(server.hub());
    server.run()?;
    Ok(())
}
