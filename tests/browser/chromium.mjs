// The one way the browser drivers (scenario.mjs, geti.mjs, backend.mjs) start Chromium:
// Debian's /usr/bin/chromium, headless, a fresh profile, certificates verified (the test CA
// is in the NSS database of HOME), QUIC off, the test host name mapped to the gateway, no
// throttling of a page watched for minutes in a headless window, and instrument.js
// (window.__gw) injected into every page before its own scripts.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

export async function launchChromium({ userDataDir, hostName, hostIp, viewport = { width: 800, height: 500 } }) {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    ignoreHTTPSErrors: false,
    viewport,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--autoplay-policy=no-user-gesture-required",
      "--disable-background-timer-throttling",
      "--disable-renderer-backgrounding",
      "--disable-backgrounding-occluded-windows",
      `--host-resolver-rules=MAP ${hostName} ${hostIp}`,
    ],
  });
  await context.addInitScript({ content: fs.readFileSync(path.join(here, "instrument.js"), "utf8") });
  return context;
}
