// The test harness: the real shardhub server as a child process, clients of the built package
// (dist/) on the `ws` package, and bounded waits.
//
// The server binary is target/release/shardhub of this repository (build it with
// `cargo build --release -p shardhub`), or $SHARDHUB_BIN. Every wait here has a deadline, and
// every server started is killed when the test process exits, whatever happens.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { Client } from "../dist/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, "../../..");
export const BIN = process.env.SHARDHUB_BIN ?? path.join(REPO, "target/release/shardhub");

const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** A free TCP port on 127.0.0.1 (the OS picks it; the server binds it right after). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `predicate` every 10 ms until it is true; throws after `timeout` ms. */
export async function until(predicate, { timeout = 5000, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * The next `event` of `emitter` (a client or a room) whose arguments pass `filter`; resolves
 * with the first argument. Throws after `timeout` ms.
 */
export function nextEvent(emitter, event, { timeout = 5000, filter = () => true } = {}) {
  return new Promise((resolve, reject) => {
    const listener = (...args) => {
      if (!filter(...args)) return;
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve(args[0]);
    };
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`timed out after ${timeout} ms waiting for event ${event}`));
    }, timeout);
    emitter.on(event, listener);
  });
}

/** Records every emission of the given events of `emitter` in `log` (an array). */
export function record(emitter, events, log = []) {
  for (const event of events) emitter.on(event, (...args) => log.push({ event, args }));
  return log;
}

/** The real server, started by the tests on a free port; `restart()` keeps the port. */
export class Server {
  constructor(args = []) {
    this.args = args;
    this.port = 0;
    this.child = null;
    this.stderr = "";
  }

  static async start(args = []) {
    const server = new Server(args);
    server.port = await freePort();
    await server.start();
    return server;
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    if (!existsSync(BIN)) {
      throw new Error(`${BIN} not found: build it with \`cargo build --release -p shardhub\` (or set SHARDHUB_BIN)`);
    }
    const args = ["--listen", `127.0.0.1:${this.port}`, "--shards", "2", "--pin-cores", "false", "--log", "warn", ...this.args];
    const child = spawn(BIN, args, { stdio: ["ignore", "ignore", "pipe"] });
    this.child = child;
    this.stderr = "";
    running.add(child);
    child.stderr.on("data", (chunk) => {
      this.stderr = (this.stderr + chunk).slice(-4000);
    });
    let exited = false;
    child.on("exit", () => {
      exited = true;
      running.delete(child);
    });
    await until(
      async () => {
        if (exited) throw new Error(`shardhub exited at start: ${this.stderr}`);
        try {
          const res = await fetch(`${this.http}/ready`);
          return res.status === 200;
        } catch {
          return false;
        }
      },
      { timeout: 10_000, what: `shardhub on port ${this.port} to be ready` },
    );
  }

  /** Kills the server (SIGKILL by default: clients see the connection drop, 1006) and waits for it to exit. */
  async stop(signal = "SIGKILL") {
    const child = this.child;
    if (child === null) return;
    this.child = null;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill(signal);
    // SIGTERM drains for up to the server's drain timeout; never wait more than 10 s.
    const force = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(force);
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  /**
   * SIGSTOP: the server holds its sockets but answers nothing (a dead connection). Resolves
   * once the kernel reports the process stopped.
   */
  async pause() {
    this.child.kill("SIGSTOP");
    const stat = `/proc/${this.child.pid}/stat`;
    await until(() => / T /.test(readFileSync(stat, "utf8")), { timeout: 2000, what: "the server to stop" });
  }

  resume() {
    this.child.kill("SIGCONT");
  }

  /** An HTTP API call; resolves with `{ status, body }` (the body parsed as JSON). */
  async api(method, route, body) {
    const res = await fetch(`${this.http}${route}`, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(5000),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }
}

const clients = new Set();

/**
 * A client of `server` with test-friendly timings (reconnects after 50-300 ms, 2 s request
 * timeout), on `ws`. `closeClients()` disconnects every client made here.
 */
export function makeClient(server, options = {}) {
  const client = new Client(server.url, {
    WebSocket,
    minReconnectDelay: 50,
    maxReconnectDelay: 300,
    timeout: 2000,
    connectTimeout: 2000,
    ...options,
  });
  clients.add(client);
  return client;
}

/** Connects `client` and waits for its `welcome`. */
export async function connected(client, timeout = 5000) {
  const up = nextEvent(client, "connected", { timeout });
  client.connect();
  return up;
}

export function closeClients() {
  for (const client of clients) client.disconnect();
  clients.clear();
}

/** An HS256 JWT for `claims` (`exp` one hour ahead unless given). */
export function jwt(secret, claims) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const body = { exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(body)}`;
  const sig = createHmac("sha256", secret).update(unsigned).digest("base64url");
  return `${unsigned}.${sig}`;
}

/** A room name no other test uses. */
let rooms = 0;
export function uniqueRoom(prefix = "room") {
  rooms += 1;
  return `${prefix}-${process.pid}-${rooms}`;
}
