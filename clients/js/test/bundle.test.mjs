// The bundle the server embeds for its demo page (src/pages/shardhub-client.js in the
// repository) is the client's sources as they are: a fresh `npm run bundle` gives the same
// bytes. A change to src/ without `npm run bundle` fails here.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { BUNDLE, bundle } from "../scripts/bundle.mjs";

test("the committed bundle is a fresh build of src/", async () => {
  const committed = readFileSync(BUNDLE, "utf8");
  const fresh = await bundle();
  assert.ok(committed === fresh,
    `${BUNDLE} differs from a fresh build of clients/js/src: run \`npm run bundle\` in clients/js and commit it`);
  assert.match(committed, /^\/\/ GENERATED FILE, DO NOT EDIT/);
});

test("the bundle loads as an ES module and exports the client", async () => {
  const mod = await import(`data:text/javascript;base64,${Buffer.from(readFileSync(BUNDLE)).toString("base64")}`);
  for (const name of ["Client", "Room", "ShardhubError", "reconnects", "CLOSE_CODES"]) {
    assert.ok(name in mod, `the bundle exports ${name}`);
  }
  assert.equal(mod.reconnects(3006), true);
  assert.equal(mod.reconnects(3500), false);
});
