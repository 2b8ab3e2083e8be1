// A broadcast-to-all chat server on Socket.IO, as its chat example shows it: every `msg` event
// from any client is emitted to every connected client (the sender included, like the other
// broadcast peers). WebSocket transport only: the load generator's `socketio` adapter connects
// straight to /socket.io/?EIO=4&transport=websocket, without HTTP long-polling first.
// Per-message deflate off, like every other peer. One Node process (one core).
// Usage: node server.js 127.0.0.1:PORT
const http = require("http");
const { Server } = require("socket.io");
const [host, port] = (process.argv[2] || "127.0.0.1:9400").split(":");
const server = http.createServer();
const io = new Server(server, { transports: ["websocket"], perMessageDeflate: false, serveClient: false });
io.on("connection", (socket) => {
  socket.on("msg", (data) => io.emit("msg", data));
});
server.listen(Number(port), host, () => console.error(`peer-socketio listening on ${host}:${port}`));
