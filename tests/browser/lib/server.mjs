// The real shardhub server for browser tests: the release binary on a free loopback port,
// started per test and stopped with SIGTERM (SIGKILL if it does not exit in time).
//
//   const server = await startServer({ args: ["--api-key", "k"] });
//   ... server.url("/dashboard"), server.wsUrl("/ws?user=alice") ...
//   await server.stop();
//
// The binary is target/release/shardhub (build it first: `cargo build --release`), or
// $SHARDHUB_BIN. Every wait is bounded.

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository's root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** Where screenshots and server logs go (`target/browser-artifacts/`). */
export const ARTIFACTS = path.join(ROOT, "target", "browser-artifacts");

/** The server binary the tests run. */
export const BINARY = process.env.SHARDHUB_BIN || path.join(ROOT, "target", "release", "shardhub");

const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;

/** A free TCP port on 127.0.0.1 (the kernel's choice; released just before the server binds it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `check` (sync or async; truthy ends the wait) every `every` ms until `timeout` ms have
 * passed, then throws with `what` and the last error or value seen.
 */
export async function waitFor(what, check, { timeout = 10_000, every = 50 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last})`);
    }
    await sleep(every);
  }
}

/**
 * Starts the server. `args` are extra flags; `shards` defaults to 2 and `--pin-cores false`
 * keeps it off other processes' cores. `name` names its log under `ARTIFACTS`. `port` (default:
 * a free one) starts it where a stopped server was, for restarts.
 */
export async function startServer({ args = [], shards = 2, env = {}, name = "server", port } = {}) {
  if (!existsSync(BINARY)) {
    throw new Error(`${BINARY} does not exist: run \`cargo build --release\` first`);
  }
  port ??= await freePort();
  const child = spawn(
    BINARY,
    ["--listen", `127.0.0.1:${port}`, "--shards", String(shards), "--pin-cores", "false",
      "--log", "info", ...args],
    { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let log = "";
  child.stdout.on("data", (d) => { log += d; });
  child.stderr.on("data", (d) => { log += d; });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  let gone = null;
  exited.then((e) => { gone = e; });

  const base = `http://127.0.0.1:${port}`;
  const server = {
    port,
    base,
    /** An http:// URL of this server. */
    url: (p = "/") => base + p,
    /** A ws:// URL of this server. */
    wsUrl: (p = "/ws") => `ws://127.0.0.1:${port}${p}`,
    /** What the server wrote to stdout and stderr so far. */
    log: () => log,
    /**
     * Stops it (`signal`, SIGTERM by default: a graceful shutdown; then SIGKILL if it does not
     * exit in time), saves its log, and says how it exited.
     */
    async stop(signal = "SIGTERM") {
      if (!gone) {
        child.kill(signal);
        const timer = sleep(STOP_TIMEOUT_MS).then(() => "timeout");
        if ((await Promise.race([exited, timer])) === "timeout") child.kill("SIGKILL");
      }
      const how = await exited;
      mkdirSync(ARTIFACTS, { recursive: true });
      writeFileSync(path.join(ARTIFACTS, `${name}.log`), log);
      return how;
    },
  };
  try {
    await waitFor(`${BINARY} to answer /health on port ${port}`, async () => {
      if (gone) throw new Error(`the server exited (${JSON.stringify(gone)}):\n${log}`);
      const r = await fetch(base + "/health", { signal: AbortSignal.timeout(1000) });
      return r.ok;
    }, { timeout: START_TIMEOUT_MS });
  } catch (e) {
    await server.stop();
    if (gone) throw new Error(`the server exited (${JSON.stringify(gone)}):\n${log}`);
    throw e;
  }
  return server;
}
