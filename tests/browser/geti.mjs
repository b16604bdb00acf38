// Scenario g1: the Geti Instant Learn UI's stream connection (geti/geti-connection.js, its
// shipped behaviour rewritten) in headless Chromium, in the UDP-blocked namespace, against a
// gateway on its defaults. The page is served at https://gateway.test/geti/ by Playwright's
// page.route (so API calls are same-origin, as when Geti's backend serves its UI).
//
//   node geti.mjs '<json options>'     (run.sh builds them)
//
// Steps, each must pass:
//   1. start(): relayed video plays (frames decoded grow) within startMs;
//   2. it keeps playing for watchMs (frames grow at every checkEveryMs check);
//   3. stop() -> start() on the same object (same webrtc_id) while the old session is still
//      alive on the gateway: plays again within replayMs;
//   4. stop(), wait (bounded) until the gateway's log says the session ended, start(): plays
//      again within replayMs.
// Prints `STEP …` lines, `RESULT g1-… PASS|FAIL …`, and on failure a DIAGNOSIS with the offer
// answers, the client's events, the connections' states and the gateway's log for the ids.
import { launchChromium } from "./chromium.mjs";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const opts = JSON.parse(process.argv[2] || "{}");
const {
  name,
  hostIp,
  hostName = "gateway.test",
  gatewayLog,
  userDataDir,
  startMs = 20000,
  watchMs = 130000,
  checkEveryMs = 5000,
  replayMs = 10000,
  endWaitMs = 90000,
} = opts;

const log = (...a) => console.log(`[${name}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const failures = [];
const t0 = Date.now();
const secs = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;

const context = await launchChromium({ userDataDir, hostName, hostIp });
// Only the test page's own files come from disk; every other request goes to the gateway.
await context.route(`https://${hostName}/geti/**`, async (route) => {
  const u = new URL(route.request().url());
  const file = u.pathname.replace(/^\/geti\/?/, "") || "index.html";
  if (!/^[a-z0-9.-]+$/.test(file) || !fs.existsSync(path.join(here, "geti", file))) {
    await route.fulfill({ status: 404, body: "not found" });
    return;
  }
  const type = file.endsWith(".js") ? "text/javascript" : "text/html";
  await route.fulfill({ status: 200, contentType: type, body: fs.readFileSync(path.join(here, "geti", file)) });
});
const page = context.pages()[0] || (await context.newPage());
const consoleLines = [];
page.on("console", (m) => consoleLines.push(`${secs()} ${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => consoleLines.push(`${secs()} pageerror: ${e.message}`));

const state = async () => page.evaluate(() => JSON.parse(JSON.stringify({ gw: window.__gw, app: { id: window.getiApp.webrtcId, events: window.getiApp.events, status: window.getiApp.status() } })));

let webrtcId = null;
try {
  const resp = await page.goto(`https://${hostName}/geti/index.html`, { waitUntil: "load", timeout: 15000 });
  if (!resp || !resp.ok()) throw new Error(`HTTP ${resp ? resp.status() : "no response"}`);
  webrtcId = await page.evaluate(() => window.getiApp.webrtcId);
  log(`page loaded; webrtc_id ${webrtcId}`);
} catch (e) {
  failures.push(`could not load the test page: ${e.message.split("\n")[0]}`);
}

// The offer answers the page got since fetch index `from`.
async function offersSince(from) {
  const s = await state();
  return s.gw.fetches.slice(from).filter((f) => /\/offer$/.test(f.url));
}

// start() and wait until the newest RTCPeerConnection decodes growing frames; returns ms.
async function startAndPlay(label, limitMs) {
  const before = await state();
  const pcIndex = before.gw.pcs.length;
  const fetchFrom = before.gw.fetches.length;
  const started = Date.now();
  await page.evaluate(() => {
    window.getiApp.start(); // the provider does not await it either
  });
  let firstOk = null;
  while (Date.now() - started < limitMs) {
    await sleep(250);
    const s = await state();
    const pc = s.gw.pcs[pcIndex];
    if (pc && pc.frames >= 10) {
      if (firstOk == null) firstOk = pc.frames;
      else if (pc.frames > firstOk) {
        const ms = Date.now() - started;
        const sel = pc.selected && pc.selected.local;
        log(
          `${label}: playing ${ms} ms after start() (frames ${pc.frames}, status ${s.app.status}, local ${sel ? sel.type + "/" + (sel.relayProtocol || sel.protocol) + (sel.url ? " via " + sel.url : "") : "?"})`,
        );
        return { ok: true, ms, pcIndex, pc };
      }
    }
    if (s.app.status === "failed" || (s.app.status === "idle" && s.app.events.some((e) => e.error && e.at >= 0) && Date.now() - started > 1000 && !pc))
      break;
  }
  const s = await state();
  const offers = await offersSince(fetchFrom);
  const pc = s.gw.pcs[pcIndex];
  const errs = s.app.events.filter((e) => e.error).slice(-3).map((e) => e.error);
  const why =
    `${label}: no playing video within ${limitMs} ms of start(): status ${s.app.status}; ` +
    `offer answers ${offers.map((f) => f.status).join(",") || "none (no offer sent)"}; ` +
    `connection ${pc ? pc.timeline.map(([w, st, ms]) => `${w}=${st}@${ms}ms`).join(" ") : "none"}; frames ${pc ? pc.frames : "-"}` +
    (errs.length ? `; client errors: ${errs.join(" | ")}` : "");
  return { ok: false, why, pcIndex };
}

function logLinesFor(ids) {
  if (!gatewayLog || !fs.existsSync(gatewayLog)) return [];
  return fs
    .readFileSync(gatewayLog, "utf8")
    .replace(/\x1b\[[0-9;]*m/g, "")
    .split("\n")
    .filter((l) => ids.some((id) => id && l.includes(id)));
}
// gateway_viewers from the gateway's /metrics (null when unreadable).
async function viewers() {
  try {
    const r = await fetch(`http://${hostIp}:9100/metrics`, { signal: AbortSignal.timeout(2000) });
    const m = /^gateway_viewers (\d+)/m.exec(await r.text());
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}
// The gateway's /metrics lines about refused requests (auth, revocation, expiry), nonzero only.
async function refusalMetrics(ip) {
  try {
    const r = await fetch(`http://${ip}:9100/metrics`, { signal: AbortSignal.timeout(2000) });
    return (await r.text())
      .split("\n")
      .filter((l) => !l.startsWith("#") && /auth|401|unauthori|stale|revok|expir|reject|forbidden|403|437/i.test(l) && !/ 0$/.test(l));
  } catch (e) {
    return [`(could not read /metrics: ${e.message})`];
  }
}

const ended = (ids) => logLinesFor(ids).filter((l) => /\bended\b/i.test(l)).length;

// The session ids a connection may be known by: the client's webrtc_id and the session its
// TURN credential was minted for (REST username "expiry:session").
function idsOf(pc) {
  const ids = new Set([webrtcId]);
  for (const s of (pc && pc.config.iceServers) || []) if (s.username && s.username.includes(":")) ids.add(s.username.split(":").slice(1).join(":"));
  return [...ids];
}

const steps = [];
const step = (n, ok, text) => {
  steps.push({ n, ok, text });
  console.log(`STEP ${n} ${ok ? "PASS" : "FAIL"} ${text}`);
  if (!ok) failures.push(`step ${n}: ${text}`);
};

if (failures.length === 0) {
  // 1. first start
  const first = await startAndPlay("start", startMs);
  step(1, first.ok, first.ok ? `relayed video after ${first.ms} ms` : first.why);
  if (first.ok) {
    const sel = first.pc.selected.local || {};
    if (sel.type !== "relay") step("1b", false, `selected local candidate is ${sel.type}/${sel.protocol}, expected relay (UDP is dropped here)`);
    else log(`selected pair: relay ${sel.relayProtocol} ${sel.url || ""}`);
    // The client refuses a second start() while its connection is active (no request, no new pc).
    const n = await state();
    await page.evaluate(() => window.getiApp.start());
    const m = await state();
    if (m.gw.pcs.length !== n.gw.pcs.length || m.gw.fetches.length !== n.gw.fetches.length)
      step("1c", false, "start() while connected made a new connection (the client must refuse it)");

    // 2. long watch
    const watchStart = Date.now();
    let last = first.pc.frames;
    let stalledAt = null;
    let lastLog = 0;
    while (Date.now() - watchStart < watchMs) {
      await sleep(checkEveryMs);
      const s = await state();
      const pc = s.gw.pcs[first.pcIndex];
      const el = Math.round((Date.now() - watchStart) / 1000);
      if (!(pc.frames > last)) {
        stalledAt = el;
        const lastConn = [...pc.timeline].reverse().find((e) => e[0] === "connection");
        step(2, false, `video stopped ${el} s into the watch (${Math.round((Date.now() - t0) / 1000)} s after the page opened): frames ${last} -> ${pc.frames} in ${checkEveryMs} ms, connection ${lastConn ? lastConn[1] : "?"}, client status ${s.app.status}`);
        break;
      }
      last = pc.frames;
      if (el - lastLog >= 30) {
        log(`watch ${el} s: frames ${pc.frames}, status ${s.app.status}`);
        lastLog = el;
      }
    }
    if (stalledAt == null) step(2, true, `video kept playing for ${Math.round(watchMs / 1000)} s (frames ${last})`);
  }

  // 3. Stop -> Start at once (old session still alive on the gateway)
  let s = await state();
  const oldPc = s.gw.pcs[s.gw.pcs.length - 1];
  const endedMark3 = ended(idsOf(oldPc));
  await page.evaluate(() => window.getiApp.stop());
  log(`stop() done; the gateway's log ${ended(idsOf(oldPc)) > endedMark3 ? "already shows the session ended" : "shows the session still alive"} at the re-offer`);
  const again = await startAndPlay("stop->start at once", replayMs);
  const sameId = (await page.evaluate(() => window.getiApp.webrtcId)) === webrtcId;
  step(3, again.ok && sameId, again.ok ? `played again ${again.ms} ms after start() with the same webrtc_id` : again.why);

  // 4. Stop, wait until the gateway ended the session, Start
  s = await state();
  const pc3 = s.gw.pcs[s.gw.pcs.length - 1];
  const ids = [...new Set([...idsOf(oldPc), ...idsOf(pc3)])];
  const endedMark = ended(ids);
  await page.evaluate(() => window.getiApp.stop());
  const stopAt = Date.now();
  let endedOk = null;
  while (Date.now() - stopAt < endWaitMs) {
    // Ended: the gateway's log names an end for one of the client's ids since stop(), or its
    // /metrics shows no viewer left (this gateway serves only this client).
    if (ended(ids) > endedMark) endedOk = "log";
    else if ((await viewers()) === 0) endedOk = "metrics gateway_viewers 0";
    if (endedOk) break;
    await sleep(250);
  }
  if (!endedOk) {
    step(4, false, `the gateway did not end the stopped session (${ids.join(", ")}) within ${endWaitMs / 1000} s of stop() (no "ended" line for it in its log, gateway_viewers ${await viewers()})`);
  } else {
    log(`gateway ended the session ${((Date.now() - stopAt) / 1000).toFixed(1)} s after stop() (${endedOk})`);
    const later = await startAndPlay("start after the session ended", replayMs);
    step(4, later.ok, later.ok ? `played again ${later.ms} ms after start()` : later.why);
  }
}

const st = await state().catch(() => null);
if (failures.length) {
  console.log(`DIAGNOSIS ${name}:`);
  for (const f of failures) console.log(`  failure: ${f}`);
  if (st) {
    console.log(`  client events: ${st.app.events.map((e) => `${e.status || "error: " + e.error}@${e.at}ms`).join(" ")}`);
    for (const f of st.gw.fetches) console.log(`  fetch ${f.method} ${f.url} -> ${f.status}${f.webrtcId ? " webrtc_id=" + f.webrtcId : ""}`);
    for (const p of st.gw.pcs) {
      console.log(`  RTCPeerConnection #${p.index} (policy ${p.config.iceTransportPolicy}): ${p.config.iceServers.map((s) => s.urls.join(" ") + " user=" + s.username).join("; ")}`);
      console.log(`    states: ${p.timeline.map(([w, s2, ms]) => `${w}=${s2}@${ms}ms`).join(" ")}; frames ${p.frames}`);
      for (const e of p.errors) console.log(`    candidate error: ${e.errorCode} ${e.errorText} url=${e.url}`);
    }
    for (const l of await refusalMetrics(hostIp)) console.log(`  metrics: ${l}`);
    const ids = [...new Set(st.gw.pcs.flatMap(idsOf))];
    const lines = logLinesFor(ids).filter((l) => /session|revok|alloc|ended|idle|409|duplicate/i.test(l));
    console.log(`  gateway log (${gatewayLog}), ${lines.length} line(s) for ${ids.join(", ")} (last 30):`);
    for (const l of lines.slice(-30)) console.log(`    ${l}`);
  }
  for (const l of consoleLines.slice(-10)) console.log(`  console ${l}`);
  console.log(`RESULT ${name} FAIL: ${failures.join("; ")}`);
} else {
  console.log(`RESULT ${name} PASS ${steps.map((x) => x.text).join("; ")}`);
}
await context.close().catch(() => {});
process.exit(failures.length ? 1 : 0);
