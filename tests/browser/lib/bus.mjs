// A real cluster bus for browser tests: Debian's nats-server or redis-server on a free loopback
// port, started per test and killed after it (`.ci/run` installs both).
//
//   const bus = await startBus("nats");   // or "redis"
//   ... startServer({ args: ["--cluster", bus.url, "--node", "a"] }) ...
//   await bus.stop();

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";

import { freePort, waitFor } from "./server.mjs";

const BINARIES = { nats: "nats-server", redis: "redis-server" };

/** The bus server's binary on PATH or in the usual Debian places, or null. */
export function findBus(kind) {
  const dirs = [...(process.env.PATH || "").split(":"), "/usr/sbin", "/usr/bin", "/usr/local/bin"];
  return dirs.map((d) => path.join(d, BINARIES[kind])).find((p) => existsSync(p)) ?? null;
}

/** Starts a bus of `kind` ("nats" or "redis"); resolves once it accepts connections. */
export async function startBus(kind) {
  const bin = findBus(kind);
  if (!bin) throw new Error(`${BINARIES[kind]} is not installed (apt-get install ${BINARIES[kind]})`);
  const port = await freePort();
  const args = kind === "nats"
    ? ["-a", "127.0.0.1", "-p", String(port)]
    : ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
  const child = spawn(bin, args, { stdio: "ignore" });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  await waitFor(`${BINARIES[kind]} on port ${port}`, () => new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => { s.end(); resolve(true); });
    s.once("error", () => resolve(false));
  }));
  return {
    url: `${kind}://127.0.0.1:${port}`,
    async stop() {
      child.kill("SIGKILL");
      await exited;
    },
  };
}
