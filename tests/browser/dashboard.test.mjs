// GET /dashboard in Debian's Chromium against the real release server, with real WebSocket
// clients making traffic. Screenshots: target/browser-artifacts/dashboard*.png.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { launch, newPage, screenshot } from "./lib/browser.mjs";
import { startBus } from "./lib/bus.mjs";
import { connect } from "./lib/clients.mjs";
import { startServer, waitFor } from "./lib/server.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

// A room name a client chose, with markup in it: the page must show it as text.
const HOSTILE_ROOM = `<img src=x onerror="window.pwned=1"><b>bold</b>`;

/** The canvas's pixels as a data URL, and how many of them are painted. */
function canvasState(page, id) {
  return page.$eval(`#${id}`, (c) => {
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let painted = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) painted++;
    return { url: c.toDataURL(), painted, samples: Number(c.dataset.samples || 0) };
  });
}

test("the dashboard shows real clients' connections, rooms, rates and latency plots", async () => {
  const server = await startServer({ name: "dashboard-server" });
  const clients = [];
  let traffic;
  try {
    for (let i = 0; i < 6; i++) {
      const c = await connect(server.wsUrl(`/ws?user=user${i}`));
      await c.join("lobby");
      if (i < 2) await c.join("ops");
      if (i === 0) await c.join(HOSTILE_ROOM);
      clients.push(c);
    }
    // Publications keep coming (20 a second, far below the rate limit): fan-outs to plot.
    let n = 0;
    traffic = setInterval(() => {
      clients[n % clients.length].send({ type: "publish", room: "lobby", data: { n } });
      n++;
    }, 50);

    const page = await newPage(browser);
    const response = await page.goto(server.url("/dashboard"));
    assert.equal(response.status(), 200);
    assert.match(response.headers()["content-type"], /^text\/html/);

    await page.waitForFunction(() => document.getElementById("connections").textContent === "6");
    // The shard table: one row per shard, and the rows add up.
    const perShard = await page.$$eval("#shards tbody tr",
      (rows) => rows.map((r) => Number(r.cells[1].textContent.replace(/,/g, ""))));
    assert.equal(perShard.length, 2);
    assert.equal(perShard[0] + perShard[1], 6);
    // The largest rooms, largest first.
    const rooms = await page.$$eval("#top-rooms tbody tr",
      (rows) => rows.map((r) => [r.cells[0].textContent, r.cells[1].textContent]));
    assert.deepEqual(rooms.slice(0, 2), [["lobby", "6"], ["ops", "2"]]);
    // The room with markup in its name is text, nothing else.
    assert.ok(rooms.some(([name]) => name === HOSTILE_ROOM), JSON.stringify(rooms));
    assert.equal(await page.locator("#top-rooms img, #top-rooms b").count(), 0);
    assert.equal(await page.evaluate(() => window.pwned), undefined);

    // Rates need two samples; the traffic makes them non-zero.
    await page.waitForFunction(
      () => parseFloat(document.getElementById("rate-in").textContent) > 0 &&
        parseFloat(document.getElementById("rate-out").textContent) > 0);

    // The fan-out plot: drawn, and redrawn with new samples a second later.
    const first = await waitFor("fan-out samples on the plot",
      async () => { const s = await canvasState(page, "chart-fanout"); return s.samples >= 2 && s; });
    assert.ok(first.painted > 500, `the plot paints ${first.painted} pixels`);
    const later = await waitFor("the fan-out plot to change", async () => {
      const s = await canvasState(page, "chart-fanout");
      return s.samples > first.samples && s.url !== first.url && s;
    });
    assert.ok(later.painted > 500);
    // The percentile ladder of the last second has counted fan-outs.
    await page.waitForFunction(() => Number(document.getElementById("ladder-fanout").dataset.count) > 0);
    await waitFor("a few seconds of plot", async () =>
      (await canvasState(page, "chart-tick")).samples >= 5, { timeout: 15_000 });

    assert.match(await page.textContent("#status"), /^live/);
    await screenshot(page, "dashboard");
    assert.deepEqual(page.errors, []);
  } finally {
    clearInterval(traffic);
    await Promise.all(clients.map((c) => c.close()));
    await server.stop();
  }
});

test("with an API key the dashboard asks for it once per tab", async () => {
  const key = "dashboard-test-key";
  const server = await startServer({ args: ["--api-key", key], name: "dashboard-key-server" });
  const client = await connect(server.wsUrl("/ws?user=alice"));
  try {
    const page = await newPage(browser);
    await page.goto(server.url("/dashboard"));
    await page.locator("#key").waitFor({ state: "visible" });
    assert.equal(await page.isVisible("#dash"), false, "no data without the key");
    assert.equal(await page.textContent("#gate-title"), "API key required");
    await screenshot(page, "dashboard-key-prompt");

    // A wrong key is refused and forgotten.
    await page.fill("#key", "wrong");
    await page.click("#key-form button");
    await page.waitForFunction(
      () => document.getElementById("key-error").textContent === "That key was refused.");
    assert.equal(await page.evaluate(() => sessionStorage.getItem("shardhub.apiKey")), null);

    // The right one opens the dashboard and stays in this tab's sessionStorage.
    await page.fill("#key", key);
    await page.click("#key-form button");
    await page.waitForFunction(() => document.getElementById("connections").textContent === "1");
    assert.equal(await page.isVisible("#gate"), false);
    assert.equal(await page.evaluate(() => sessionStorage.getItem("shardhub.apiKey")), key);
    await page.reload();
    await page.waitForFunction(() => document.getElementById("connections").textContent === "1");
    assert.equal(await page.isVisible("#gate"), false, "a reload keeps the key");
    await screenshot(page, "dashboard-with-key");

    // Another tab (its own sessionStorage) asks again.
    const other = await newPage(browser);
    await other.goto(server.url("/dashboard"));
    await other.locator("#key").waitFor({ state: "visible" });
    assert.deepEqual([...page.errors, ...other.errors], []);
  } finally {
    await client.close();
    await server.stop();
  }
});

test("with the HTTP API off the dashboard says so", async () => {
  const server = await startServer({ args: ["--http-api", "false"], name: "dashboard-off-server" });
  try {
    const page = await newPage(browser);
    await page.goto(server.url("/dashboard"));
    await page.waitForFunction(
      () => document.getElementById("gate-title").textContent === "The HTTP API is off");
    assert.equal(await page.isVisible("#key"), false, "no key can help");
    assert.equal(await page.isVisible("#dash"), false);
    await screenshot(page, "dashboard-api-off");
    assert.deepEqual(page.errors, []);
  } finally {
    await server.stop();
  }
});

/** The cluster table's rows, each its cells' text. */
function nodeRows(page) {
  return page.$$eval("#nodes tbody tr", (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
}

for (const kind of ["nats", "redis"]) {
  test(`over ${kind}, each node's dashboard lists the cluster's nodes and forgets one that leaves`, async () => {
    const bus = await startBus(kind);
    const servers = [];
    const clients = [];
    try {
      for (const node of ["node-a", "node-b"]) {
        servers.push(await startServer({
          args: ["--cluster", bus.url, "--node", node], name: `dashboard-${kind}-${node}`,
        }));
      }
      const [a, b] = servers;
      for (let i = 0; i < 3; i++) clients.push(await connect(a.wsUrl(`/ws?user=a${i}`)));
      for (let i = 0; i < 2; i++) clients.push(await connect(b.wsUrl(`/ws?user=b${i}`)));
      for (const c of clients) await c.join("lobby");
      // Both nodes know all five members, so each listens on the room's channel by now.
      for (const server of servers) {
        await waitFor(`five members of lobby on ${server.url()}`, async () => {
          const r = await fetch(server.url("/api/v1/rooms/lobby"));
          return r.ok && (await r.json()).members.length === 5;
        });
      }
      // A publication from node b reaches node a's members over the bus.
      clients[3].send({ type: "publish", room: "lobby", data: "over the bus" });
      assert.equal((await clients[0].next("message")).data, "over the bus");

      const pages = [];
      for (const [server, me, mine, other, theirs] of
        [[a, "node-a", "3", "node-b", "2"], [b, "node-b", "2", "node-a", "3"]]) {
        const page = await newPage(browser);
        await page.goto(server.url("/dashboard"));
        const rows = await waitFor(`${me}'s dashboard to list both nodes`, async () => {
          const r = await nodeRows(page);
          return r.length === 2 && r[0][1] === mine && r[1][1] === theirs && r;
        });
        assert.equal(rows[0][0], `${me} (this node)`);
        assert.equal(rows[1][0], other);
        assert.match(rows[1][3], /s ago$/);
        assert.match(await page.textContent("#bus"), /^bus connected/);
        pages.push(page);
      }
      // Node b published to the bus (its sessions, joins and the message): node a's table shows it.
      await waitFor("node b's publications on node a's dashboard", async () =>
        Number((await nodeRows(pages[0]))[1][2].replace(/,/g, "")) > 0);
      await screenshot(pages[0], `dashboard-cluster-${kind}`);

      // Node b shuts down and says goodbye: node a forgets it at once, well before a silent
      // node would be (`DEAD_AFTER`, 6 s); the page polls every second.
      await b.stop();
      await waitFor("node a's dashboard to drop node b", async () => {
        const r = await nodeRows(pages[0]);
        return r.length === 1 && r[0][0] === "node-a (this node)";
      }, { timeout: 3_000 });
      assert.deepEqual(pages.flatMap((p) => p.errors), []);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await Promise.all(servers.map((s) => s.stop()));
      await bus.stop();
    }
  });
}
