// A broadcast-to-all chat server on Node's `ws`, as its README shows it.
// Usage: node server.js 127.0.0.1:PORT
const { WebSocketServer, WebSocket } = require("ws");
const [host, port] = (process.argv[2] || "127.0.0.1:9300").split(":");
const wss = new WebSocketServer({ host, port: Number(port), perMessageDeflate: false });
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    for (const c of wss.clients) {
      if (c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
    }
  });
});
wss.on("listening", () => console.error(`peer-node-ws listening on ${host}:${port}`));
