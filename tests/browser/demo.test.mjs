// GET / (the demo chat on the JavaScript client) in Debian's Chromium against the real release
// server: two pages chat, one is cut off and recovers what it missed, the server is restarted
// and both come back. Screenshots: target/browser-artifacts/demo-*.png.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { launch, newPage, screenshot } from "./lib/browser.mjs";
import { connect } from "./lib/clients.mjs";
import { sleep, startServer, waitFor } from "./lib/server.mjs";

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

// A user name and a message a client chose, with markup in them: the pages show them as text.
const HOSTILE_USER = `<img src=x onerror="window.pwned=1">`;
const HOSTILE_TEXT = `<b>bold</b><img src=x onerror="window.pwned=2">`;

/** Opens `/` in a new page and picks `name`; resolves once lobby is joined. */
async function openAs(server, name) {
  const page = await newPage(browser);
  const response = await page.goto(server.url("/"));
  assert.equal(response.status(), 200);
  assert.match(response.headers()["content-type"], /^text\/html/);
  await page.fill("#name", name);
  await page.click("#name-form button");
  await page.waitForFunction(() => document.getElementById("state").dataset.state === "connected");
  await page.waitForFunction(() => document.querySelector('#rooms li[data-room="lobby"]') !== null &&
    /^history/.test(document.getElementById("room-info").textContent));
  assert.equal(new URL(page.url()).searchParams.get("user"), name, "the name is the page's ?user=");
  return page;
}

const badge = (page) => page.$eval("#state", (e) => ({ state: e.dataset.state, text: e.textContent }));
/** The data-state of every line of the connection log, oldest first. */
const connStates = (page) => page.$$eval("#conn-log li[data-state]", (lis) => lis.map((li) => li.dataset.state));
const members = (page, room = "lobby") =>
  page.$$eval(`.members[data-room="${room}"] li`, (lis) => lis.map((li) => li.dataset.user).sort());
const messages = (page, room = "lobby") =>
  page.$$eval(`.log[data-room="${room}"] li.msg`, (lis) => lis.map((li) => ({
    who: li.querySelector(".who").textContent,
    text: li.querySelector(".text").textContent,
    offset: li.dataset.offset === undefined ? undefined : Number(li.dataset.offset),
  })));
const notices = (page, room = "lobby") =>
  page.$$eval(`.log[data-room="${room}"] li.notice`, (lis) => lis.map((li) => li.textContent));

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

/** Waits until `page` shows `text` from `who` in lobby. */
function waitMessage(page, who, text) {
  return waitFor(`${who}: ${text}`, async () =>
    (await messages(page)).some((m) => m.who === who && m.text === text));
}

async function waitState(page, state, timeout = 10_000) {
  await waitFor(`the badge to say ${state}`, async () => (await badge(page)).state === state, { timeout, every: 20 });
}

async function shootBoth(alice, bob, stage) {
  await screenshot(alice, `demo-${stage}-alice`);
  await screenshot(bob, `demo-${stage}-bob`);
}

test("two pages chat through /, recover from a cut, and come back after a server restart", async () => {
  const flags = ["--history-size", "100"];
  let server = await startServer({ args: flags, name: "demo-server" });
  const pages = [];
  try {
    const alice = await openAs(server, "alice");
    const bob = await openAs(server, "bob");
    pages.push(alice, bob);

    // Presence: each sees both.
    for (const page of [alice, bob]) {
      await waitFor("alice and bob in the presence list",
        async () => JSON.stringify(await members(page)) === JSON.stringify(["alice", "bob"]));
      await page.waitForFunction(() => document.getElementById("member-count").textContent === "2");
    }

    // Chat both ways.
    await say(alice, "hello bob");
    await waitMessage(bob, "alice", "hello bob");
    await say(bob, "hi alice");
    await waitMessage(alice, "bob", "hi alice");

    // A client with markup in its name and message: text on both pages, nothing executed.
    const mallory = await connect(server.wsUrl(`/ws?user=${encodeURIComponent(HOSTILE_USER)}`));
    await mallory.join("lobby");
    mallory.send({ type: "publish", room: "lobby", data: { text: HOSTILE_TEXT } });
    for (const page of [alice, bob]) {
      await waitMessage(page, HOSTILE_USER, HOSTILE_TEXT);
      await waitFor("mallory in the presence list", async () => (await members(page)).includes(HOSTILE_USER));
      assert.equal(await page.locator("#app img, #app b").count(), 0, "no markup from data");
      assert.equal(await page.evaluate(() => window.pwned), undefined);
    }
    await mallory.close();
    for (const page of [alice, bob]) {
      await waitFor("mallory gone from the presence list",
        async () => JSON.stringify(await members(page)) === JSON.stringify(["alice", "bob"]));
    }

    // Direct messages: delivered, and not_online shown.
    await alice.fill("#dm-to", "bob");
    await alice.fill("#dm-text", "psst");
    await alice.press("#dm-text", "Enter");
    await bob.waitForFunction(() => [...document.querySelectorAll("#direct li.in")]
      .some((li) => li.textContent === "alice → you:psst"));
    await alice.waitForFunction(() => [...document.querySelectorAll("#direct li.status")]
      .some((li) => li.textContent === "delivered to 1 session of bob"));
    await alice.fill("#dm-to", "carol");
    await alice.fill("#dm-text", "hello?");
    await alice.press("#dm-text", "Enter");
    await alice.waitForFunction(() => [...document.querySelectorAll("#direct li.fail")]
      .some((li) => li.textContent === "carol is not online"));
    await shootBoth(alice, bob, "1-chat");

    // The server cuts bob off (3006, reconnect) while alice sends three messages.
    const session = await bob.$eval("#who", (e) => e.dataset.session);
    assert.match(session, /^\d+$/);
    const cut = await fetch(server.url(`/api/v1/sessions/${session}?reconnect=true`), { method: "DELETE" });
    assert.equal(cut.status, 200, await cut.text());
    await waitState(bob, "reconnecting", 2_000);
    // Three submits at once: the client's first reconnect waits at least 500 ms.
    await alice.evaluate(() => {
      for (const n of [1, 2, 3]) {
        document.getElementById("text").value = `missed ${n}`;
        document.getElementById("say").requestSubmit();
      }
    });
    await waitState(bob, "recovered");
    const missed = ["missed 1", "missed 2", "missed 3"];
    for (const page of [alice, bob]) {
      await waitFor("the three messages", async () =>
        (await messages(page)).filter((m) => missed.includes(m.text)).length === 3);
    }
    // Once each, in order, with consecutive offsets.
    await sleep(300); // a duplicate would have come by now
    const got = (await messages(bob)).filter((m) => missed.includes(m.text));
    assert.deepEqual(got.map((m) => [m.who, m.text]), missed.map((t) => ["alice", t]));
    assert.deepEqual(got.map((m) => m.offset - got[0].offset), [0, 1, 2]);
    assert.deepEqual((await connStates(bob)).slice(-2), ["reconnecting", "recovered"]);
    assert.ok((await notices(bob)).some((t) => t.endsWith("reconnected: recovered 3 missed messages")),
      JSON.stringify(await notices(bob)));
    assert.equal((await badge(bob)).text, "connected · recovered");
    assert.equal((await badge(alice)).state, "connected", "alice was not cut");
    await shootBoth(alice, bob, "2-recovered");

    // The server restarts (killed, started again on the same port with the same flags): a new
    // epoch, so both pages come back saying the earlier history could not be recovered.
    await server.stop("SIGKILL");
    for (const page of [alice, bob]) await waitState(page, "reconnecting");
    await shootBoth(alice, bob, "3-server-down");
    server = await startServer({ args: flags, name: "demo-server-restarted", port: server.port });
    for (const page of [alice, bob]) {
      await waitState(page, "history-lost", 30_000);
      assert.equal((await badge(page)).text, "connected · history lost");
      assert.deepEqual((await connStates(page)).slice(-2), ["reconnecting", "history-lost"]);
      assert.ok((await notices(page)).some((t) => /could not be recovered/.test(t)));
      await waitFor("both in the presence list again",
        async () => JSON.stringify(await members(page)) === JSON.stringify(["alice", "bob"]));
    }
    // Chat works again, both ways.
    await say(alice, "back after the restart");
    await waitMessage(bob, "alice", "back after the restart");
    await say(bob, "me too");
    await waitMessage(alice, "bob", "me too");
    // Each message once, on both pages, through the whole story.
    for (const page of [alice, bob]) {
      const texts = (await messages(page)).map((m) => m.text);
      assert.equal(new Set(texts).size, texts.length, JSON.stringify(texts));
    }
    await shootBoth(alice, bob, "4-after-restart");
    for (const page of pages) assert.deepEqual(page.errors, []);
  } finally {
    await Promise.all(pages.map((p) => p.context().close()));
    await server.stop();
  }
});

test("rooms: join, leave, and the member count of a room over presence_limit", async () => {
  const server = await startServer({ args: ["--presence-limit", "2"], name: "demo-rooms-server" });
  const clients = [];
  let page;
  try {
    page = await openAs(server, "alice");
    await page.fill("#join-room", "ops");
    await page.press("#join-room", "Enter");
    await page.waitForFunction(() => document.getElementById("room-title").textContent === "# ops" &&
      document.querySelector('.members[data-room="ops"] li[data-user="alice"]') !== null);
    assert.deepEqual(await page.$$eval("#rooms li", (lis) => lis.map((li) => li.dataset.room)), ["lobby", "ops"]);

    // Three more members: past the limit of 2, the server sends counts, and the page shows them.
    for (let i = 0; i < 3; i++) {
      const c = await connect(server.wsUrl(`/ws?user=user${i}`));
      await c.join("ops");
      clients.push(c);
    }
    await page.waitForFunction(() => document.getElementById("member-count").textContent === "4");
    await page.waitForFunction(() => /^a large room: the server sends its member count/.test(document.getElementById("members-note").textContent));
    // The list follows with a members request.
    await waitFor("the full list", async () => (await members(page, "ops")).length === 4);
    await screenshot(page, "demo-presence-count");

    // Leaving ops: gone from the list and from the server's room.
    await page.click('#rooms li[data-room="ops"] .leave');
    await page.waitForFunction(() => document.querySelector('#rooms li[data-room="ops"]') === null &&
      document.getElementById("room-title").textContent === "# lobby");
    await waitFor("alice out of ops", async () => {
      clients[0].send({ type: "members", room: "ops", id: "m" });
      const m = await clients[0].next("members");
      return m.members.length === 3;
    });
    assert.deepEqual(page.errors, []);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
    await page?.context().close();
    await server.stop();
  }
});

test("without history the page says missed messages cannot be recovered; sends while away are queued", async () => {
  const server = await startServer({ name: "demo-no-history-server" });
  let page;
  try {
    page = await openAs(server, "alice");
    assert.match(await page.textContent("#room-info"), /^history off: messages sent while you are disconnected cannot be recovered/);
    const session = await page.$eval("#who", (e) => e.dataset.session);
    const cut = await fetch(server.url(`/api/v1/sessions/${session}?reconnect=true`), { method: "DELETE" });
    assert.equal(cut.status, 200);
    await waitState(page, "reconnecting", 2_000);
    // Typed while reconnecting: queued by the client, sent once connected again.
    await say(page, "sent while away");
    await page.waitForFunction(() => [...document.querySelectorAll(".log li.notice")]
      .some((li) => li.textContent.endsWith("queued until connected: sent while away")));
    await waitState(page, "connected");
    await waitMessage(page, "alice", "sent while away");
    assert.deepEqual((await connStates(page)).slice(-2), ["reconnecting", "connected"]);
    assert.ok((await notices(page)).some((t) => t.endsWith("the room kept no history, so messages sent while you were away cannot be recovered")));
    await screenshot(page, "demo-no-history");
    assert.deepEqual(page.errors, []);
  } finally {
    await page?.context().close();
    await server.stop();
  }
});
