// Close codes of the do-not-reconnect class stop the client; tokens, and getToken called
// again on every reconnect, against the real server with --jwt-secret.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { closeClients, connected, jwt, makeClient, nextEvent, record, Server, sleep, uniqueRoom } from "./harness.mjs";

const SECRET = "test-secret-of-the-js-client-0123456789"; // at least 32 bytes

let open; // anonymous access, no authentication
let secured; // --jwt-secret
before(async () => {
  [open, secured] = await Promise.all([
    Server.start(),
    Server.start(["--jwt-secret", SECRET, "--allow-anonymous", "false"]),
  ]);
});
after(async () => {
  closeClients();
  await Promise.all([open?.stop(), secured?.stop()]);
});

/** Asserts that `client` stays disconnected for `ms` (several of its reconnect delays). */
async function staysDown(client, ms = 700) {
  const states = record(client, ["state"]);
  await sleep(ms);
  assert.equal(client.state, "disconnected");
  assert.deepEqual(states, [], "no reconnect attempt");
}

describe("close codes", () => {
  test("3505 (DELETE /api/v1/sessions/{id}) stops the client; requests fail at once; connect() again rejoins its rooms", async () => {
    const client = makeClient(open);
    const welcome = await connected(client);
    const room = client.room(uniqueRoom());
    await room.join();
    const down = nextEvent(client, "disconnected");
    const res = await open.api("DELETE", `/api/v1/sessions/${welcome.session}`);
    assert.equal(res.body.code, 3505);
    assert.deepEqual(await down, { code: 3505, reason: "force disconnect", reconnect: false });
    assert.equal(client.state, "disconnected");
    await assert.rejects(client.ping(), { code: "disconnected" });
    await staysDown(client);
    // The room stays wanted: connect() again joins it again.
    const back = nextEvent(room, "subscribed");
    client.connect();
    assert.equal((await back).room, room.name);
  });

  test("the application's codes: 4000-4499 reconnect, 4500-4999 do not", async () => {
    const client = makeClient(open);
    let welcome = await connected(client);
    const again = nextEvent(client, "connected");
    await open.api("DELETE", `/api/v1/sessions/${welcome.session}?code=4000`);
    welcome = await again;
    assert.equal(client.state, "connected");
    const down = nextEvent(client, "disconnected");
    await open.api("DELETE", `/api/v1/sessions/${welcome.session}?code=4500&reason=banned`);
    assert.deepEqual(await down, { code: 4500, reason: "banned", reconnect: false });
    await staysDown(client);
  });

  test("3000 (server shutdown, SIGTERM) reconnects", async () => {
    const server = await Server.start();
    try {
      const client = makeClient(server);
      await connected(client);
      const down = nextEvent(client, "disconnected");
      await server.stop("SIGTERM");
      const info = await down;
      assert.equal(info.code, 3000);
      assert.equal(info.reconnect, true);
      assert.equal(client.state, "reconnecting");
      client.disconnect();
    } finally {
      await server.stop();
    }
  });
});

describe("tokens", () => {
  test("getToken is called on every connection; the token's sub is the user", async () => {
    let calls = 0;
    const client = makeClient(secured, {
      getToken: async () => {
        calls += 1;
        await sleep(5);
        return jwt(SECRET, { sub: "tok-user" });
      },
    });
    const first = await connected(client);
    assert.equal(first.user, "tok-user");
    assert.equal(calls, 1);
    const again = nextEvent(client, "connected");
    await secured.api("DELETE", `/api/v1/sessions/${first.session}?reconnect=true`);
    const second = await again;
    assert.equal(calls, 2);
    assert.equal(second.user, "tok-user");
    assert.notEqual(second.session, first.session);
  });

  test("a token in the query string works too", async () => {
    const client = makeClient(secured, { token: jwt(SECRET, { sub: "query-user" }), tokenTransport: "query" });
    assert.equal((await connected(client)).user, "query-user");
  });

  test("a refused token (3500) stops the client, also when a reconnect's fresh token is refused", async () => {
    // A token signed with another secret: refused on the first attempt.
    const bad = makeClient(secured, { token: jwt("another secret", { sub: "x" }) });
    const refused = nextEvent(bad, "disconnected");
    bad.connect();
    const info = await refused;
    assert.equal(info.code, 3500);
    assert.equal(info.reconnect, false);
    assert.match(info.reason, /invalid token/);
    await staysDown(bad);

    // No token at all with anonymous access off.
    const none = makeClient(secured);
    const noToken = nextEvent(none, "disconnected");
    none.connect();
    assert.deepEqual(await noToken, { code: 3500, reason: "a bearer token is required", reconnect: false });

    // Good first, then getToken hands out an expired token on the reconnect.
    let calls = 0;
    const client = makeClient(secured, {
      getToken: () => {
        calls += 1;
        return calls === 1 ? jwt(SECRET, { sub: "once" }) : jwt(SECRET, { sub: "once", exp: 1000 });
      },
    });
    const welcome = await connected(client);
    const downs = record(client, ["disconnected"]);
    const stopped = nextEvent(client, "disconnected", { filter: (d) => !d.reconnect });
    await secured.api("DELETE", `/api/v1/sessions/${welcome.session}?reconnect=true`);
    const last = await stopped;
    assert.equal(last.code, 3500);
    assert.match(last.reason, /expired/);
    assert.equal(calls, 2);
    assert.deepEqual(
      downs.map((d) => [d.args[0].code, d.args[0].reconnect]),
      [
        [3006, true],
        [3500, false],
      ],
    );
    await staysDown(client);
  });

  test("a failing getToken is reported and retried with backoff", async () => {
    let calls = 0;
    const client = makeClient(secured, {
      getToken: () => {
        calls += 1;
        if (calls < 3) throw new Error("token service down");
        return jwt(SECRET, { sub: "patient" });
      },
    });
    const errors = record(client, ["error"]);
    const welcome = await connected(client);
    assert.equal(welcome.user, "patient");
    assert.equal(calls, 3);
    assert.deepEqual(
      errors.map((e) => [e.args[0].code, e.args[0].message]),
      [
        ["token", "getToken failed: token service down"],
        ["token", "getToken failed: token service down"],
      ],
    );
  });
});
