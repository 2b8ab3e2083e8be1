// Bundles the client's sources (src/index.ts) into one ES module, the file the `shardhub`
// binary embeds and serves at /shardhub-client.js for its demo page (src/pages/ in the
// repository). `npm run bundle` writes it; test/bundle.test.mjs fails when the committed file
// differs from a fresh build, so a change to src/ must be followed by `npm run bundle`.

import { writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));

/** The package's directory. */
export const PKG = path.resolve(here, "..");

/** Where the bundle is committed. */
export const BUNDLE = path.resolve(PKG, "../../src/pages/shardhub-client.js");

const HEADER = `// GENERATED FILE, DO NOT EDIT: the shardhub JavaScript client (clients/js/src) bundled into one
// ES module by \`npm run bundle\` in clients/js (esbuild; scripts/bundle.mjs). The shardhub binary
// serves it at /shardhub-client.js for the demo page. Edit clients/js/src and run
// \`npm run bundle\`; clients/js's test/bundle.test.mjs checks this file against a fresh build.
`;

/** The bundle's text, built from the sources now (nothing written). */
export async function bundle() {
  const result = await build({
    entryPoints: [path.join(PKG, "src", "index.ts")],
    bundle: true,
    format: "esm",
    target: "es2022",
    platform: "neutral",
    charset: "utf8",
    legalComments: "none",
    write: false,
    logLevel: "silent",
    banner: { js: HEADER },
  });
  return result.outputFiles[0].text;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const text = await bundle();
  writeFileSync(BUNDLE, text);
  console.log(`wrote ${path.relative(process.cwd(), BUNDLE)} (${text.length} bytes)`);
}
