// `npm pack` gives an installable package: the tarball holds the build, the declarations and
// the sources their maps point to (no tests), installs into an empty project without the network, and its entry
// point loads by the package's name.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const npm = process.platform === "win32" ? "npm.cmd" : "npm";

test("npm pack: an installable package with the build and its declarations", () => {
  const tmp = mkdtempSync(path.join(tmpdir(), "shardhub-client-pack-"));
  try {
    // dist/ was built by `npm test`'s pretest; --ignore-scripts skips prepack's second build.
    const out = execFileSync(npm, ["pack", "--json", "--ignore-scripts", "--pack-destination", tmp], {
      cwd: pkgDir,
      encoding: "utf8",
      timeout: 60_000,
    });
    const [info] = JSON.parse(out);
    const files = info.files.map((f) => f.path).sort();
    for (const f of ["package.json", "README.md", "dist/index.js", "dist/index.d.ts", "dist/client.js", "dist/room.d.ts"]) {
      assert.ok(files.includes(f), `${f} is in the package: ${files.join(", ")}`);
    }
    // The sources ride along for the source maps; tests and dependencies do not.
    assert.ok(files.includes("src/client.ts"), files.join(", "));
    assert.ok(!files.some((f) => f.startsWith("test/") || f.startsWith("node_modules/")), files.join(", "));

    const project = path.join(tmp, "app");
    execFileSync("mkdir", ["-p", project]);
    writeFileSync(path.join(project, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    execFileSync(npm, ["install", "--offline", "--no-audit", "--no-fund", path.join(tmp, info.filename)], {
      cwd: project,
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.ok(existsSync(path.join(project, "node_modules/shardhub-client/dist/index.d.ts")));
    const loaded = execFileSync(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        'import * as m from "shardhub-client"; console.log(JSON.stringify([typeof m.Client, m.CLOSE_CODES.length, m.reconnects(3505)]));',
      ],
      { cwd: project, encoding: "utf8", timeout: 30_000 },
    );
    assert.deepEqual(JSON.parse(loaded), ["function", 16, false]);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
