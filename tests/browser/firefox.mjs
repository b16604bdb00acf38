// Scenarios ff1/ff2: stock Firefox ESR (Debian's /usr/bin/firefox-esr) driven by
// puppeteer-core over WebDriver BiDi plays the gateway's viewer page through the embedded
// relay (TURN/TLS or TURN/TCP on 443) from the UDP-blocked namespace.
//
//   node firefox.mjs '<json options>'      (run.sh builds them)
//
// A fresh profile that trusts the test CA (imported into the profile's cert9.db with certutil)
// and never fetches the OpenH264 plugin (GMP manager off). Checks: the selected local
// candidate is relay with the expected relayProtocol, frames decoded keep growing, and the
// received codec is VP8. Prints `RESULT … PASS|FAIL …`, and a DIAGNOSIS on failure.
import puppeteer from "puppeteer-core";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const opts = JSON.parse(process.argv[2] || "{}");
const { name, url, hostIp, gatewayLog, caFile, profileDir, protocol, codec = "video/VP8", timeoutMs = 30000 } = opts;

const log = (...a) => console.log(`[${name}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const failures = [];

// The profile: an NSS database trusting the test CA, made before Firefox first starts.
fs.mkdirSync(profileDir, { recursive: true });
execFileSync("certutil", ["-d", `sql:${profileDir}`, "-N", "--empty-password"]);
execFileSync("certutil", ["-d", `sql:${profileDir}`, "-A", "-t", "C,,", "-n", "gateway-test-ca", "-i", caFile]);

const browser = await puppeteer.launch({
  browser: "firefox",
  protocol: "webDriverBiDi",
  executablePath: "/usr/bin/firefox-esr",
  headless: true,
  userDataDir: profileDir,
  acceptInsecureCerts: false,
  extraPrefsFirefox: {
    // No OpenH264: never ask the GMP manager (no download of any plugin).
    "media.gmp-manager.url": "",
    "media.gmp-manager.updateEnabled": false,
    "media.gmp-gmpopenh264.enabled": false,
    "media.gmp-gmpopenh264.autoupdate": false,
    "media.gmp-gmpopenh264.visible": false,
    "media.gmp-widevinecdm.enabled": false,
    "media.gmp-provider.enabled": false,
    // Names resolve through the namespace's hosts file / DNS only; no DNS-over-HTTPS.
    "network.trr.mode": 5,
    "network.dns.disableIPv6": true,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.navigator.permission.disabled": true,
  },
});
log(`browser ${await browser.version()}`);
const page = await browser.newPage();
const consoleLines = [];
page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));
await page.evaluateOnNewDocument(fs.readFileSync(path.join(here, "instrument.js"), "utf8"));

let st = null;
const read = async () => {
  try {
    st = await page.evaluate(() => JSON.parse(JSON.stringify({ gw: window.__gw || null, stats: window.gatewayStats || null, status: (document.getElementById("status") || {}).textContent || null })));
  } catch {
    /* navigating */
  }
  return st;
};

let passed = false;
try {
  const resp = await page.goto(url, { waitUntil: "load", timeout: 15000 });
  if (!resp || !resp.ok()) failures.push(`could not load ${url}: HTTP ${resp ? resp.status() : "no response"}`);
} catch (e) {
  failures.push(`could not load ${url}: ${e.message.split("\n")[0]}`);
}

if (!failures.length) {
  const deadline = Date.now() + timeoutMs;
  let framesAtOk = null;
  while (Date.now() < deadline) {
    await sleep(250);
    await read();
    const pc = st && st.gw && st.gw.pcs[0];
    if (pc && pc.frames >= 10 && pc.selected) {
      if (framesAtOk == null) {
        framesAtOk = pc.frames;
        await sleep(2000);
        continue;
      }
      if (pc.frames > framesAtOk) {
        passed = true;
        break;
      }
    }
    const offer = st && st.gw && st.gw.fetches.find((f) => /\/offer$/.test(f.url) && f.status != null);
    if (offer && offer.status >= 400) {
      failures.push(`the offer was answered ${offer.status}; page status: ${st.status}`);
      break;
    }
    const last = pc && pc.timeline[pc.timeline.length - 1];
    if (last && last[0] === "connection" && last[1] === "failed") {
      failures.push("the peer connection failed");
      break;
    }
  }
  await read();
  const pc = st && st.gw && st.gw.pcs[0];
  if (!passed && !failures.length)
    failures.push(`no growing decoded-frame count within ${timeoutMs} ms (frames=${pc ? pc.frames : "no RTCPeerConnection"}; page status: ${st && st.status})`);
  if (passed) {
    const local = pc.selected.local || {};
    const remote = pc.selected.remote || {};
    log(
      `selected pair: local ${local.type}/${local.protocol}${local.relayProtocol ? " relayProtocol=" + local.relayProtocol : ""} ${local.address}:${local.port}` +
        ` -> remote ${remote.type} ${remote.address}:${remote.port}; frames ${pc.frames} ${pc.width}x${pc.height}; codec ${pc.codec}`,
    );
    if (local.type !== "relay") failures.push(`selected local candidate is ${local.type}, expected relay`);
    if (local.relayProtocol !== protocol) failures.push(`relayProtocol is ${local.relayProtocol}, expected ${protocol}`);
    if (remote.address !== hostIp) failures.push(`remote candidate ${remote.address}, expected the gateway's ${hostIp}`);
    if ((pc.codec || "").toLowerCase() !== codec.toLowerCase()) failures.push(`received codec is ${pc.codec}, expected ${codec}`);
    const before = pc.frames;
    await sleep(3000);
    await read();
    const now = st.gw.pcs[0].frames;
    log(`after 3 s more: frames ${before} -> ${now}`);
    if (!(now > before)) failures.push(`frames stopped growing (${before} -> ${now})`);
  }
}

{
  const pc = st && st.gw && st.gw.pcs[0];
  const t = (v) => (pc && v != null ? `${Math.round(v - pc.createdAt)}ms` : "n/a");
  console.log(`TIMING ${name} ice_connected=${t(pc && pc.iceConnectedAt)} first_frame=${t(pc && pc.firstFrameAt)} (from RTCPeerConnection creation)`);
}
if (failures.length) {
  console.log(`DIAGNOSIS ${name}:`);
  for (const f of failures) console.log(`  failure: ${f}`);
  await read();
  for (const f of (st && st.gw && st.gw.fetches) || []) console.log(`  fetch ${f.method} ${f.url} -> ${f.status}`);
  for (const p of (st && st.gw && st.gw.pcs) || []) {
    console.log(`  RTCPeerConnection #${p.index} (policy ${p.config.iceTransportPolicy}): ${p.config.iceServers.map((s) => s.urls.join(" ")).join("; ")}`);
    console.log(`    states: ${p.timeline.map(([w, s, ms]) => `${w}=${s}@${ms}ms`).join(" ") || "(none)"}; frames ${p.frames}; codec ${p.codec}`);
    for (const c of p.candidates) console.log(`    @${c.at}ms ${c.candidate}`);
    for (const e of p.errors) console.log(`    candidate error: ${e.errorCode} ${e.errorText} url=${e.url}`);
    for (const pr of p.pairs || [])
      console.log(`    pair ${pr.state}${pr.nominated ? " nominated" : ""}: ${pr.local && pr.local.type}/${pr.local && (pr.local.relayProtocol || pr.local.protocol)} -> ${pr.remote && pr.remote.address}:${pr.remote && pr.remote.port}`);
  }
  for (const l of consoleLines.slice(-10)) console.log(`  console ${l}`);
  if (gatewayLog && fs.existsSync(gatewayLog)) {
    const lines = fs.readFileSync(gatewayLog, "utf8").replace(/\x1b\[[0-9;]*m/g, "").split("\n").filter((l) => /codec|offer|WARN|ERROR/.test(l));
    console.log(`  gateway log (${gatewayLog}), last offer/codec/warning lines:`);
    for (const l of lines.slice(-8)) console.log(`    ${l}`);
  }
  console.log(`RESULT ${name} FAIL: ${failures.join("; ")}`);
} else {
  console.log(`RESULT ${name} PASS relay/${protocol} ${codec}`);
}
await browser.close().catch(() => {});
process.exit(failures.length ? 1 : 0);
