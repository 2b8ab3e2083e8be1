// Debian's Chromium driven by playwright-core: nothing is downloaded, the executable is named
// explicitly ($CHROMIUM or /usr/bin/chromium), headless, with --no-sandbox (CI runs as root).

import { mkdirSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

import { ARTIFACTS } from "./server.mjs";

/** The Chromium the tests drive. */
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/** Launches Chromium; close it with `browser.close()`. */
export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
    timeout: 30_000,
  });
}

/** A new page (own context: own sessionStorage) of 1400x1000 CSS pixels, 10 s per action. */
export async function newPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  // Uncaught exceptions of the page's scripts (console errors are not: Chromium logs every
  // 401 a page's fetch gets as one).
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(e));
  return page;
}

/** Saves a full-page screenshot as `ARTIFACTS/<name>.png` and returns its path. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
