//! A chat server embedded the way Melody users embed Melody: hooks for connect, open, typed
//! messages and disconnect, per-session keys, and the hub handle from another thread.
//!
//! ```sh
//! cargo run --release --example chat            # ws://127.0.0.1:8080/ws?user=alice
//! ```
//! Then, from a client: `{"type":"nick","name":"Ally"}`, `{"type":"say","text":"hi"}`,
//! `{"type":"who"}`, and every built-in request of docs/protocol.md.

use std::time::Duration;

use shardhub::{Config, Hooks, Reject, Server};

// As in the `shardhub` binary; any global allocator works.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::new().parse_filters("info").init();

    let hooks = Hooks::default()
        // Refuse reserved names; remember a display name per session.
        .on_connect(|_req, session| {
            if session.user() == "admin" {
                return Err(Reject::forbidden("that name is reserved"));
            }
            let nick = session.user().to_string();
            session.set("nick", nick);
            Ok(())
        })
        // Everyone starts in the lobby (the client gets the join ack).
        .on_open(|ctx| ctx.join("lobby"))
        // {"type":"nick","name":"..."}: change the display name.
        .handle("nick", |ctx, req| {
            let name = req.str_field("name").unwrap_or("").trim();
            if name.is_empty() || name.len() > 32 {
                ctx.send_text(
                    r#"{"type":"error","code":"bad_request","message":"name must be 1-32 bytes"}"#,
                );
                return;
            }
            ctx.session_mut().set("nick", name.to_string());
            ctx.send_text(&serde_json::json!({"type":"nick","name":name}).to_string());
        })
        // {"type":"say","text":"..."}: a lobby message signed with the display name.
        .handle("say", |ctx, req| {
            let text = req.str_field("text").unwrap_or("");
            let nick = ctx
                .session()
                .get::<String>("nick")
                .cloned()
                .unwrap_or_default();
            let msg = serde_json::json!({"type":"say","nick":nick,"text":text}).to_string();
            // Raw room publish through the hub: every lobby member on every shard.
            let _ = ctx.hub().publish("lobby", msg.as_str());
        })
        // {"type":"who"}: how many are online.
        .handle("who", |ctx, _req| {
            let n = ctx.hub().session_count();
            ctx.send_text(&serde_json::json!({"type":"who","online":n}).to_string());
        })
        .on_disconnect(|session, d| log::info!("{} left ({})", session.user(), d.code));

    let server = Server::builder(Config::default()).hooks(hooks).build()?;
    let hub = server.hub();
    // Any thread may use the hub: here, a clock announcement every minute.
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(60));
        let _ = hub.publish(
            "lobby",
            r#"{"type":"say","nick":"clock","text":"another minute"}"#,
        );
    });
    server.run()?;
    Ok(())
}
