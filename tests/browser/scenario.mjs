// One browser scenario: headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) opens a gateway page from inside the test's network namespace, waits for
// decoded frames, and checks the selected ICE candidate pair from getStats().
//
//   node scenario.mjs '<json options>'      (run.sh builds the options; see `opts` below)
//
// Prints `TIMING …` and `RESULT <name> PASS|FAIL …`; on failure a `DIAGNOSIS` block (gathered
// candidates, candidate errors, ICE/DTLS states, the gateway's and coturn's log lines for the
// session) and `HINT:` lines saying what to fix. Exit status 0 only on PASS.
import { launchChromium } from "./chromium.mjs";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import tls from "node:tls";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const opts = JSON.parse(process.argv[2] || "{}");
const {
  name, // scenario name
  mode = "viewer", // viewer | whep | external (JS client keeping only the external TURN server)
  url, // page to open
  hostIp, // gateway address (gateway.test is mapped to it)
  hostName = "gateway.test",
  expect = {}, // { path, protocol, urlPort }
  screenshot = null, // PNG path (viewer mode)
  pixelCheck = false,
  externalPort = null, // external mode: keep only TURN URLs on this port with transport=tcp
  coturnExpected = false, // check coturn's log for this session's successful ALLOCATE
  timeoutMs = 25000,
  holdMs = 0, // after frames flow, keep watching this long: frames must keep growing
  watchMs = 0, // long watch: frames must grow at every check for this long (and in the last 10 s)
  checkEveryMs = 5000,
  whepTransport = null, // whep mode: keep only the ICE server URLs of this transport (tls|tcp)
  allocCheck = false, // whep mode: after DELETE the gateway's /health allocations drop within 1 s
  gatewayLog = null,
  coturnLog = null,
  caFile = null,
  tlsPort = 443,
  nftTable = null,
  userDataDir,
} = opts;

const log = (...a) => console.log(`[${name}]`, ...a);
const t = (ms) => (ms == null ? "n/a" : `${Math.round(ms)}ms`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const failures = [];
const hints = [];
const extraDiag = [];

const context = await launchChromium({ userDataDir, hostName, hostIp, viewport: { width: 1000, height: 700 } });
const page = context.pages()[0] || (await context.newPage());
const consoleLines = [];
page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e.message}`));

let state = null; // window.__gw
let navError = null;
let whepInfo = null;
let pcIndex = 0;
const t0 = Date.now();

async function readState() {
  try {
    state = await page.evaluate(() => JSON.parse(JSON.stringify(window.__gw || null)));
  } catch (e) {
    /* page navigating */
  }
  return state;
}

function relayCandidates(pc) {
  return (pc.candidates || []).filter((c) => / typ relay /.test(c.candidate));
}

// --- open the page and start the client ------------------------------------------------------
try {
  const resp = await page.goto(url, { waitUntil: "load", timeout: 15000 });
  if (!resp || !resp.ok()) navError = `HTTP ${resp ? resp.status() : "no response"} for ${url}`;
} catch (e) {
  navError = e.message.split("\n")[0];
}

if (!navError && mode === "whep") {
  try {
    whepInfo = await page.evaluate(whepClient, { transport: whepTransport });
  } catch (e) {
    failures.push(`WHEP client: ${e.message}`);
  }
} else if (!navError && mode === "external") {
  try {
    await page.evaluate(externalClient, { port: externalPort });
  } catch (e) {
    failures.push(`client: ${e.message}`);
  }
}

// --- wait for frames (or an early, certain failure) ------------------------------------------
let passed = false;
if (!navError && failures.length === 0) {
  const deadline = Date.now() + timeoutMs;
  let framesAtOk = null;
  while (Date.now() < deadline) {
    await sleep(200);
    await readState();
    const pc = state && state.pcs && state.pcs[pcIndex];
    if (!pc) continue;
    if (pc.frames >= 10 && pc.selected) {
      if (framesAtOk == null) {
        framesAtOk = pc.frames;
        await sleep(1000);
        continue;
      }
      if (pc.frames > framesAtOk) {
        passed = true;
        break;
      }
    }
    // Gathering finished without a relay candidate while only relay is allowed: certain failure.
    if (pc.gatheringCompleteAt != null && pc.config.iceTransportPolicy === "relay" && relayCandidates(pc).length === 0) {
      failures.push("ICE gathering completed without any relay candidate (relay-only policy): no TURN allocation succeeded");
      break;
    }
    const last = pc.timeline[pc.timeline.length - 1];
    if (last && last[0] === "connection" && last[1] === "failed") {
      failures.push("the peer connection failed");
      break;
    }
  }
  await readState();
  if (!passed && failures.length === 0) {
    const pc = state && state.pcs && state.pcs[pcIndex];
    failures.push(
      `no growing decoded-frame count within ${timeoutMs} ms (frames=${pc ? pc.frames : "no RTCPeerConnection"})`,
    );
  }
}
if (navError) failures.push(`could not load ${url}: ${navError}`);

// --- checks on the selected pair and the page --------------------------------------------------
const pc = state && state.pcs && state.pcs[pcIndex];
if (passed && pc) {
  const local = pc.selected.local || {};
  const remote = pc.selected.remote || {};
  log(
    `selected pair: local ${local.type}/${local.protocol}${local.relayProtocol ? " relayProtocol=" + local.relayProtocol : ""}` +
      `${local.url ? " via " + local.url : ""} ${local.address || "?"}:${local.port} -> remote ${remote.type} ${remote.address}:${remote.port}` +
      ` rtt=${pc.selected.rttMs}ms frames=${pc.frames} ${pc.width}x${pc.height}`,
  );
  if (expect.path && local.type !== expect.path)
    failures.push(`selected local candidate is ${local.type}, expected ${expect.path}`);
  if (expect.path === "relay" && expect.protocol && local.relayProtocol !== expect.protocol)
    failures.push(`relayProtocol is ${local.relayProtocol}, expected ${expect.protocol}`);
  if (expect.path === "host" && expect.protocol && local.protocol !== expect.protocol)
    failures.push(`host candidate protocol is ${local.protocol}, expected ${expect.protocol}`);
  if (expect.path === "host" && remote.type !== "host")
    failures.push(`remote candidate is ${remote.type}, expected the gateway's host candidate`);
  if (remote.address !== hostIp || remote.type !== "host")
    failures.push(`remote candidate is ${remote.type} ${remote.address}:${remote.port}, expected the gateway's host candidate on ${hostIp}`);
  if ((mode === "external" || coturnExpected) && coturnLog) {
    const ids = sessionIds();
    const lines = fs.readFileSync(coturnLog, "utf8").split("\n").filter((l) => ids.some((id) => l.includes(id)));
    const ok = lines.some((l) => /ALLOCATE processed, success/.test(l));
    log(`coturn log: ${lines.length} line(s) for the session, allocation ${ok ? "succeeded" : "NOT seen"}`);
    if (!ok) failures.push("coturn's log shows no successful ALLOCATE for this session: the media did not go through coturn");
  }
  if (expect.urlPort && !(local.url || "").includes(`:${expect.urlPort}`))
    failures.push(`relay candidate came from ${local.url}, expected the TURN server on port ${expect.urlPort}`);

  if (mode === "viewer") {
    const dom = await page.evaluate(() => ({ ...document.getElementById("stats").dataset }));
    log(`page #stats: path=${dom.path} protocol=${dom.protocol} frames=${dom.frames} state=${dom.state}`);
    if (expect.path && dom.path !== expect.path) failures.push(`page shows data-path=${dom.path}, expected ${expect.path}`);
    const wantProto = expect.protocol;
    if (wantProto && dom.protocol !== wantProto) failures.push(`page shows data-protocol=${dom.protocol}, expected ${wantProto}`);
    if (!(Number(dom.frames) > 0)) failures.push(`page shows data-frames=${dom.frames}`);
  }
  if (holdMs > 0) {
    const before = pc.frames;
    await sleep(holdMs);
    await readState();
    const now = state.pcs[pcIndex];
    const last = now.timeline[now.timeline.length - 1];
    log(`after ${holdMs} ms more: frames ${before} -> ${now.frames}, last state ${last ? last.join("=") : "?"}`);
    const lastConn = [...now.timeline].reverse().find((e) => e[0] === "connection");
    if (!(now.frames >= before + holdMs / 100) || (lastConn && lastConn[1] !== "connected"))
      failures.push(
        `video stopped within ${holdMs} ms after it started (frames ${before} -> ${now.frames}, ${last ? last[0] + " " + last[1] : ""})`,
      );
  }
  if (watchMs > 0) await longWatch();
  if (pixelCheck) {
    const px = await page.evaluate(videoPixels);
    log(`video pixels: ${px.width}x${px.height} mean=${px.mean.toFixed(1)} variance=${px.variance.toFixed(1)}`);
    if (!(px.width > 0) || px.variance < 50)
      failures.push(`the video frame is uniform (variance ${px.variance.toFixed(1)}): frozen or black video`);
  }
  if (screenshot) {
    fs.mkdirSync(path.dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot });
    log(`screenshot: ${screenshot}`);
  }
  if (mode === "whep") await whepTeardown();
}

if (pc) {
  const firstRelay = relayCandidates(pc)[0];
  log(
    `timeline: ${pc.timeline.map(([w, s, ms]) => `${w}=${s}@${ms}ms`).join(" ")}; ` +
      `first relay candidate ${firstRelay ? "@" + firstRelay.at + "ms" : "none"}`,
  );
}
const ice = pc && pc.iceConnectedAt != null ? pc.iceConnectedAt - pc.createdAt : null;
const first = pc && pc.firstFrameAt != null ? pc.firstFrameAt - pc.createdAt : null;
console.log(`TIMING ${name} ice_connected=${t(ice)} first_frame=${t(first)} (from RTCPeerConnection creation; page opened ${t(pc ? Date.now() - t0 : null)} ago)`);

if (failures.length) {
  await diagnose();
  console.log(`RESULT ${name} FAIL: ${failures.join("; ")}`);
} else {
  console.log(`RESULT ${name} PASS ice_connected=${t(ice)} first_frame=${t(first)}`);
}
await context.close().catch(() => {});
process.exit(failures.length ? 1 : 0);

// ============================================================================================

// WHEP client (runs in the page): OPTIONS /whep for the session's ICE servers (Link headers),
// POST /whep with the offer bound to that session, Location + Link from the 201.
async function whepClient({ transport }) {
  const parseLinks = (h) => {
    const out = [];
    for (const m of (h || "").matchAll(/<([^>]+)>([^<]*)/g)) {
      const attrs = {};
      for (const a of m[2].matchAll(/([a-z-]+)="([^"]*)"/g)) attrs[a[1]] = a[2];
      if (!/rel="ice-server"/.test(m[2])) continue;
      out.push({ urls: m[1], username: attrs.username, credential: attrs.credential });
    }
    return out;
  };
  const opt = await fetch("/whep", { method: "OPTIONS" });
  const sessionId = opt.headers.get("x-session-id");
  const kind = (u) => (/^turns:/i.test(u) ? "tls" : /transport=tcp/i.test(u) ? "tcp" : "udp");
  const optServers = parseLinks(opt.headers.get("link"))
    .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => !transport || kind(u) === transport) }))
    .filter((s) => s.urls.length);
  if (!optServers.length) throw new Error(`OPTIONS /whep: ${opt.status}, no Link ice-server headers${transport ? " of transport " + transport : ""}`);
  const pc = new RTCPeerConnection({ iceServers: optServers, iceTransportPolicy: "relay" });
  pc.addTransceiver("video", { direction: "recvonly" });
  const video = document.createElement("video");
  video.muted = true;
  video.autoplay = true;
  document.body.appendChild(video);
  pc.ontrack = (e) => {
    video.srcObject = e.streams[0] || new MediaStream([e.track]);
  };
  await pc.setLocalDescription(await pc.createOffer());
  const r = await fetch("/whep", {
    method: "POST",
    headers: { "Content-Type": "application/sdp", "X-Session-Id": sessionId },
    body: pc.localDescription.sdp,
  });
  const answer = await r.text();
  if (r.status !== 201) throw new Error(`POST /whep: ${r.status} ${answer}`);
  const location = r.headers.get("location");
  const servers = parseLinks(r.headers.get("link"));
  if (!location) throw new Error("POST /whep: 201 without Location");
  if (!servers.length) throw new Error("POST /whep: 201 without Link ice-server headers");
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  window.__whep = { pc, location, servers };
  return {
    status: r.status,
    location,
    sessionId,
    links: servers.map((s) => `${s.urls} (${s.username})`),
  };
}

// Client keeping only the external TURN server's TCP URL (port `port`) from the gateway's list.
async function externalClient({ port }) {
  const r = await fetch("/api/v1/webrtc/config", { cache: "no-store" });
  const cfg = await r.json();
  if (!r.ok) throw new Error(`GET /api/v1/webrtc/config: ${r.status} ${JSON.stringify(cfg)}`);
  const keep = (u) => /^turn:/i.test(u) && /transport=tcp/i.test(u) && new RegExp(`:${port}(\\?|$)`).test(u);
  const iceServers = (cfg.iceServers || [])
    .map((s) => ({ ...s, urls: [].concat(s.urls).filter(keep) }))
    .filter((s) => s.urls.length);
  if (!iceServers.length)
    throw new Error(`the gateway lists no turn:…:${port}?transport=tcp server (COTURN_HOST/COTURN_PORT unset?): ${JSON.stringify((cfg.iceServers || []).map((s) => s.urls))}`);
  const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: "relay" });
  pc.addTransceiver("video", { direction: "recvonly" });
  const video = document.createElement("video");
  video.muted = true;
  video.autoplay = true;
  document.body.appendChild(video);
  pc.ontrack = (e) => {
    video.srcObject = e.streams[0] || new MediaStream([e.track]);
  };
  await pc.setLocalDescription(await pc.createOffer());
  const id = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
  const a = await fetch("/api/v1/projects/default/offer", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ webrtc_id: cfg.sessionId || id, sdp: pc.localDescription.sdp, type: "offer" }),
  });
  const ans = await a.json();
  if (!a.ok) throw new Error(`POST offer: ${a.status} ${JSON.stringify(ans)}`);
  await pc.setRemoteDescription({ type: "answer", sdp: ans.sdp });
}

// Grabs the current video frame into a canvas; luma mean and variance.
function videoPixels() {
  const v = document.querySelector("video");
  const w = v.videoWidth;
  const h = v.videoHeight;
  if (!w || !h) return { width: 0, height: 0, mean: 0, variance: 0 };
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(v, 0, 0, w, h);
  const d = ctx.getImageData(0, 0, w, h).data;
  let sum = 0;
  let sq = 0;
  const n = d.length / 4;
  for (let i = 0; i < d.length; i += 4) {
    const y = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
    sum += y;
    sq += y * y;
  }
  const mean = sum / n;
  return { width: w, height: h, mean, variance: sq / n - mean * mean };
}

// After frames flowed: DELETE the WHEP resource, then check the same TURN credentials no
// longer allocate (a second RTCPeerConnection, relay-only, TCP/TLS URLs, gathers no relay
// candidate).
async function whepTeardown() {
  log(`WHEP: ${whepInfo.status} Location ${whepInfo.location}; Link: ${whepInfo.links.join(", ")}`);
  await readState();
  // The session's allocations: one per relay candidate its connection gathered.
  const own = new Set(relayCandidates(state.pcs[0]).map((c) => c.candidate.split(" ").slice(4, 6).join(":"))).size;
  const allocBefore = allocCheck ? await allocations() : null;
  const del = await page.evaluate(async () => {
    const r = await fetch(window.__whep.location, { method: "DELETE" });
    return r.status;
  });
  const delAt = Date.now();
  log(`WHEP: DELETE ${whepInfo.location} -> ${del}`);
  if (allocCheck) {
    // Polled every 100 ms for 1 s: the count must drop by the session's allocations.
    let now = allocBefore;
    const seen = [];
    while (Date.now() - delAt <= 1000) {
      now = await allocations();
      seen.push(now);
      if (allocBefore != null && now != null && now <= allocBefore - own) break;
      await sleep(100);
    }
    const ms = Date.now() - delAt;
    log(`allocations (/health): ${allocBefore} before DELETE (${own} of this session) -> ${now} ${ms} ms after (polled: ${seen.join(",")})`);
    if (allocBefore == null || now == null) failures.push("could not read allocations from the gateway's /health");
    else if (own < 1) failures.push("the session gathered no relay candidate: nothing to check");
    else if (!(now <= allocBefore - own))
      failures.push(`its ${own} allocation(s) were not closed within 1 s of DELETE (/health allocations ${allocBefore} -> ${now})`);
  }
  if (del < 200 || del >= 300) {
    failures.push(`DELETE ${whepInfo.location} answered ${del}`);
    return;
  }
  const again = await page.evaluate(async () => (await fetch(window.__whep.location, { method: "DELETE" })).status);
  if (again !== 404) failures.push(`a second DELETE answered ${again}, expected 404`);
  pcIndex = 1; // diagnosis now concerns the revocation probe
  const probe = await page.evaluate(async () => {
    const servers = window.__whep.servers
      .map((s) => ({ ...s, urls: [].concat(s.urls).filter((u) => /^turns:/i.test(u) || /transport=tcp/i.test(u)) }))
      .filter((s) => s.urls.length);
    const pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: "relay" });
    pc.addTransceiver("video", { direction: "recvonly" });
    await pc.setLocalDescription(await pc.createOffer());
    const info = window.__gw.pcs[window.__gw.pcs.length - 1];
    const until = performance.now() + 15000;
    while (info.gatheringCompleteAt == null && performance.now() < until) await new Promise((r) => setTimeout(r, 100));
    const relays = info.candidates.filter((c) => / typ relay /.test(c.candidate));
    pc.close();
    return {
      urls: servers.flatMap((s) => s.urls),
      complete: info.gatheringCompleteAt != null,
      relays: relays.map((c) => c.candidate),
      errors: info.errors,
      firstState: window.__whep.pc.connectionState,
    };
  });
  await readState();
  log(
    `after DELETE: revoked credentials on ${probe.urls.join(", ")}: relay candidates=${probe.relays.length}, ` +
      `errors=${probe.errors.map((e) => `${e.errorCode} ${e.errorText} (${e.url})`).join("; ") || "none"}; ` +
      `first connection now ${probe.firstState}`,
  );
  if (!probe.complete) failures.push("after DELETE: ICE gathering with the revoked credentials did not complete within 15 s");
  if (probe.relays.length)
    failures.push(`after DELETE the revoked credentials still allocate: ${probe.relays.join(" | ")}`);
  else if (!probe.errors.some((e) => e.errorCode === 401 || e.errorCode === 403 || e.errorCode === 437))
    extraDiag.push(`(no 401 reported for the revoked credentials; errors: ${JSON.stringify(probe.errors)})`);
  if (failures.length === 0) pcIndex = 0;
}

// The gateway's /health `allocations` (read from this namespace, over plain HTTP).
async function allocations() {
  try {
    const r = await fetch(`http://${hostIp}:9100/health`, { signal: AbortSignal.timeout(1000) });
    const j = await r.json();
    return typeof j.allocations === "number" ? j.allocations : null;
  } catch {
    return null;
  }
}

// Watches for watchMs after the video started: frames must grow at every check (every
// checkEveryMs) and in the last 10 s. Stops at the first stall (the failure says when).
async function longWatch() {
  const started = Date.now();
  await readState();
  let last = state.pcs[pcIndex].frames;
  let lastLog = 0;
  let tenBefore = null; // frames about 10 s before the end
  while (Date.now() - started < watchMs) {
    const left = watchMs - (Date.now() - started);
    await sleep(Math.min(checkEveryMs, Math.max(left, 100)));
    await readState();
    const p = state.pcs[pcIndex];
    const el = Math.round((Date.now() - started) / 1000);
    if (tenBefore == null && watchMs - (Date.now() - started) <= 10000) tenBefore = p.frames;
    if (!(p.frames > last)) {
      const lastConn = [...p.timeline].reverse().find((e) => e[0] === "connection");
      failures.push(
        `video stopped ${el} s into the ${Math.round(watchMs / 1000)} s watch (${Math.round((Date.now() - t0) / 1000)} s after the page opened): ` +
          `frames ${last} -> ${p.frames} in ${checkEveryMs} ms, connection ${lastConn ? lastConn[1] + "@" + lastConn[2] + "ms" : "?"}`,
      );
      return;
    }
    last = p.frames;
    if (el - lastLog >= 60) {
      log(`watch ${el} s: frames ${p.frames}`);
      lastLog = el;
    }
  }
  await sleep(0);
  log(`watched ${Math.round(watchMs / 1000)} s: frames ${tenBefore} -> ${last} in the last 10 s`);
  if (!(last > (tenBefore ?? last))) failures.push(`no frame decoded in the last 10 s of the ${Math.round(watchMs / 1000)} s watch`);
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

function sessionIds() {
  const ids = new Set();
  for (const p of (state && state.pcs) || [])
    for (const s of p.config.iceServers) if (s.username && s.username.includes(":")) ids.add(s.username.split(":").slice(1).join(":"));
  for (const f of (state && state.fetches) || []) {
    if (f.webrtcId) ids.add(f.webrtcId);
    if (f.sessionId) ids.add(f.sessionId);
  }
  if (whepInfo && whepInfo.sessionId) ids.add(whepInfo.sessionId);
  return [...ids].filter((x) => x.length >= 6);
}

function grepLog(file, ids, label, max = 40) {
  if (!file || !fs.existsSync(file)) return;
  const lines = fs
    .readFileSync(file, "utf8")
    .replace(/\x1b\[[0-9;]*m/g, "")
    .split("\n")
    .filter((l) => ids.some((id) => l.includes(id)));
  console.log(`  ${label} (${file}), ${lines.length} line(s) for session ${ids.join(", ") || "(unknown)"}:`);
  for (const l of lines.slice(-max)) console.log(`    ${l}`);
  return lines;
}

async function tlsCheck() {
  if (!caFile) return null;
  return await new Promise((resolve) => {
    const s = tls.connect(
      { host: hostIp, port: tlsPort, servername: hostName, ca: fs.readFileSync(caFile), ALPNProtocols: ["http/1.1"] },
      () => {
        const cert = s.getPeerCertificate();
        resolve({ ok: true, text: `TLS to ${hostName}:${tlsPort} verifies (subject ${cert.subject && cert.subject.CN}, SAN ${cert.subjectaltname})` });
        s.destroy();
      },
    );
    s.setTimeout(5000, () => {
      resolve({ ok: false, text: `TLS to ${hostIp}:${tlsPort} timed out` });
      s.destroy();
    });
    s.on("error", (e) => resolve({ ok: false, text: `TLS to ${hostName} (${hostIp}:${tlsPort}) fails verification with the test CA: ${e.message}` }));
  });
}

function nftDrops() {
  if (!nftTable) return null;
  try {
    const out = execFileSync("nft", ["list", "table", "netdev", nftTable], { encoding: "utf8" });
    const m = /packets (\d+) bytes (\d+) drop/.exec(out);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

async function diagnose() {
  console.log(`DIAGNOSIS ${name}:`);
  for (const f of failures) console.log(`  failure: ${f}`);
  for (const d of extraDiag) console.log(`  ${d}`);
  await readState();
  const pcs = (state && state.pcs) || [];
  if (!pcs.length) console.log("  no RTCPeerConnection was created by the page");
  for (const p of pcs) {
    console.log(`  RTCPeerConnection #${p.index} (policy ${p.config.iceTransportPolicy}):`);
    for (const s of p.config.iceServers) console.log(`    ice server: ${s.urls.join(" ")} user=${s.username || "-"}`);
    if (!p.config.iceServers.length) console.log("    ice server: (none)");
    console.log(`    states: ${p.timeline.map(([w, s, ms]) => `${w}=${s}@${ms}ms`).join(" ") || "(none)"}`);
    console.log(`    transport: iceState=${p.iceState || "?"} dtlsState=${p.dtlsState || "?"}; frames=${p.frames}; gathering ${p.gatheringCompleteAt != null ? "complete" : "NOT complete"}`);
    console.log(`    gathered candidates (${p.candidates.length}):`);
    for (const c of p.candidates) console.log(`      @${c.at}ms ${c.candidate}${c.url ? "  [" + c.url + "]" : ""}`);
    for (const e of p.errors) console.log(`    candidate error: ${e.errorCode} ${e.errorText} url=${e.url} local=${e.address}:${e.port}`);
    for (const pr of p.pairs || [])
      console.log(
        `    pair ${pr.state}${pr.nominated ? " nominated" : ""}: ${pr.local && pr.local.type}/${pr.local && (pr.local.relayProtocol || pr.local.protocol)} -> ${pr.remote && pr.remote.type} ${pr.remote && pr.remote.address}:${pr.remote && pr.remote.port} (requests ${pr.requestsSent}, responses ${pr.responsesReceived})`,
      );
  }
  for (const l of consoleLines.slice(-15)) console.log(`  console ${l}`);
  const drops = nftDrops();
  if (drops != null) console.log(`  firewall: ${drops} UDP packet(s) dropped so far on the namespace's veth (nft netdev egress)`);
  const tlsRes = await tlsCheck();
  if (tlsRes) console.log(`  ${tlsRes.text}`);
  for (const l of await refusalMetrics(hostIp)) console.log(`  metrics: ${l}`);
  const ids = sessionIds();
  grepLog(gatewayLog, ids, "gateway log");
  const cotLines = grepLog(coturnLog, ids, "coturn log");

  // Hints: what a person should change.
  const all = pcs.flatMap((p) => p.errors);
  const urls = pcs.flatMap((p) => p.config.iceServers.flatMap((s) => s.urls));
  const p = pcs[pcIndex];
  if (navError && /CERT|SSL/i.test(navError))
    hints.push(`the page's HTTPS certificate is not accepted (${navError}); TLS_CERT must chain to a trusted CA and name ${hostName}`);
  if (navError && /ERR_CONNECTION|ERR_TIMED_OUT|ERR_ADDRESS/i.test(navError))
    hints.push(`nothing answers on ${url}: is the gateway running and listening on ${hostIp} (TURN_LISTEN / GATEWAY_HTTP_ADDR)?`);
  for (const e of all.filter((e) => e.errorCode === 401))
    hints.push(
      `the TURN server ${e.url} rejected the credentials (401 ${e.errorText}): the secret the gateway mints with ` +
        `(COTURN_SECRET for an external coturn, TURN_SECRET for the embedded relay) differs from the server's static-auth-secret, or the credential expired/was revoked`,
    );
  if (cotLines && cotLines.some((l) => /401|Unauthorized|check_stun_auth|cannot find credentials|incorrect/i.test(l)))
    hints.push("coturn logged an authentication failure for this session: make its static-auth-secret equal the gateway's COTURN_SECRET");
  if (tlsRes && !tlsRes.ok && urls.some((u) => /^turns:/i.test(u)))
    hints.push(`TURNS cannot work: ${tlsRes.text}. Serve a certificate (TLS_CERT/TLS_KEY) whose subjectAltName contains ${hostName} (TURN_HOST) and that chains to a CA the browser trusts`);
  const udpUrls = urls.filter((u) => /^(turn|stun):/i.test(u) && !/transport=tcp/i.test(u));
  if (p && relayCandidates(p).length === 0 && udpUrls.length && udpUrls.length === urls.length && drops)
    hints.push(
      `only UDP ICE servers were given (${udpUrls.join(", ")}) and UDP to them is dropped by the firewall (${drops} UDP packets dropped): ` +
        `a UDP-only relay URL cannot work from this network; give clients turns:${hostName}:443?transport=tcp or turn:${hostName}:443?transport=tcp`,
    );
  if (p && p.config.iceServers.length === 0 && p.config.iceTransportPolicy === "relay")
    hints.push("the client had no ICE server at all (the transport filter left none): check the gateway's ICE server list and the page's ?transport= value");
  if (p && relayCandidates(p).length && p.iceConnectedAt == null)
    hints.push("relay candidates were allocated but connectivity checks failed: look for 403 (peer policy) on CreatePermission/ChannelBind in the relay log, and check WEBRTC_ADVERTISE_IP is reachable from the relay");
  if (p && (p.iceState === "connected" || p.iceState === "completed") && p.dtlsState !== "connected")
    hints.push("ICE connected but DTLS did not: check the gateway log for DTLS errors for this session");
  const offered = ((state && state.fetches) || []).filter((f) => f.webrtcId);
  const minted = new Set(((p && p.config.iceServers) || []).map((s) => (s.username || "").split(":").slice(1).join(":")).filter(Boolean));
  if (offered.length && minted.size && !offered.some((f) => minted.has(f.webrtcId)))
    hints.push(
      `the page offered with webrtc_id ${offered.map((f) => f.webrtcId).join(",")} but its TURN credential was minted for session ${[...minted].join(",")} ` +
        `(sessionId of /api/v1/webrtc/config): the two are not bound, so when that config session idles out (SESSION_IDLE_TIMEOUT) the gateway revokes the TURN user ` +
        `and the live relay allocation with it. The client must send config.sessionId as webrtc_id`,
    );
  if (p && p.dtlsState === "connected" && !(p.frames > 0))
    hints.push("ICE and DTLS are up but no frame was decoded: check MEDIA_SOURCE and the negotiated codec in the gateway log");
  const died = p && p.timeline.find((e) => e[0] === "connection" && e[1] === "failed" && p.iceConnectedAt != null);
  if (died && p.selected && p.selected.local && p.selected.local.type === "relay" && died[2] > 30000)
    hints.push(
      `the relayed connection ran ${Math.round(died[2] / 1000)} s, then failed while its gateway session was alive: the relay stopped relaying for it ` +
        `(a refused Refresh / CreatePermission / ChannelBind, e.g. 401 once the REST credential's expiry passed: Chromium refreshes permissions about every 4 min, ` +
        `or the allocation closed by a revocation of the session's TURN user). A live session's allocation must refresh for as long as the session lives`,
    );
  if (!hints.length) hints.push("no specific cause recognised; read the states, candidates and log lines above");
  for (const h of new Set(hints)) console.log(`HINT: ${h}`);
}
