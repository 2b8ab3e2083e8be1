//! Melody's chatroom (github.com/olahol/melody, `examples/chat`) on shardhub: the page at `/`,
//! the WebSocket at `/ws`, and every text message broadcast as it is to everyone, the sender
//! included. A Melody user's page works unchanged; the server now runs a reactor per core.
//!
//! ```sh
//! cargo run --release --example melody_chat     # then open http://127.0.0.1:5000 in two tabs
//! ```
//!
//! The whole server is [`hooks`]: no `welcome` frame (the page would print it), the page, and a
//! message hook that broadcasts. `tests/examples.rs` runs these hooks against a real client.

use shardhub::{Config, Flow, Hooks, Message, Server};

/// Melody's `index.html`: a text box, and every message received appended to the log.
pub const PAGE: &str = r#"<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>Melody example: chatting</title>
<style>
  #chat { text-align: left; background: #f1f1f1; width: 500px; min-height: 300px; padding: 20px; }
</style>
</head>
<body>
<center>
  <h3>Chat</h3>
  <pre id="chat"></pre>
  <input placeholder="say something" id="text" type="text">
</center>
<script>
  var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  var ws = new WebSocket(url);
  var name = "Guest" + Math.floor(Math.random() * 1000);
  var chat = document.getElementById("chat");
  var text = document.getElementById("text");
  var now = function () {
    var iso = new Date().toISOString();
    return iso.split("T")[1].split(".")[0];
  };
  ws.onmessage = function (msg) {
    var line = now() + " " + msg.data + "\n";
    chat.innerText += line;
  };
  text.onkeydown = function (e) {
    if (e.keyCode === 13 && text.value !== "" && ws.readyState === WebSocket.OPEN) {
      ws.send("<" + name + "> " + text.value);
      text.value = "";
    }
  };
</script>
</body>
</html>
"#;

/// The chatroom: Melody's `m.HandleMessage(func(s, msg) { m.Broadcast(msg) })`.
pub fn hooks() -> Hooks {
    Hooks::default()
        .page("/", "text/html; charset=utf-8", PAGE)
        .without_welcome()
        .on_message(|ctx, msg| {
            // A full shard inbox drops the broadcast there (counted in /metrics); Melody's
            // Broadcast has no answer either.
            let _ = match msg {
                Message::Text(text) => ctx.hub().broadcast(text),
                Message::Binary(bytes) => ctx.hub().broadcast(bytes),
            };
            Flow::Handled
        })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::new().parse_filters("info").init();
    let config = Config {
        listen: "127.0.0.1:5000".parse()?,
        ..Config::default()
    };
    Server::builder(config).hooks(hooks()).build()?.run()?;
    Ok(())
}
