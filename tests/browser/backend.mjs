// Scenarios p1 and r1: a WebRTC backend's own web application (the Geti stand-in,
// tests/standins/geti_backend.py, serving the Geti UI's connection logic from geti/ at `/`)
// opened in headless Chromium in the UDP-blocked namespace.
//
//   p1 (mode "proxy"): the page comes from https://gateway.test/ (443, the only port the
//      namespace reaches), the gateway in proxy mode in front of the stand-in on loopback. The
//      page's own requests must work through the gateway: a JSON API call, an upload, a
//      WebSocket echo, server-sent events; two viewers play the project's video through the
//      embedded relay while the stand-in sees one peer connection (the gateway's pull); a
//      wrong project id gets the stand-in's own 400.
//   r1 (mode "relay"): Geti's coturn recipe: the stand-in's page on its own port, its ICE
//      servers from COTURN_HOST/PORT=443/USERNAME/PASSWORD, the gateway in relay-only mode with
//      that static user. Two viewers play over TURN/TCP on 443; every offer is answered; the
//      stand-in's aiortc allocated relayed candidates of its own on the gateway.
//
//   node backend.mjs '<json options>'     (run.sh builds them)
//
// Prints `STEP …` lines, `TIMING …`, `RESULT NAME PASS|FAIL …`; on failure a DIAGNOSIS.
import { launchChromium } from "./chromium.mjs";
import fs from "node:fs";

const opts = JSON.parse(process.argv[2] || "{}");
const {
  name,
  mode, // "proxy" | "relay"
  url, // the page, with ?project=<the active project>
  hostIp,
  hostName = "gateway.test",
  gatewayLog,
  userDataDir,
  protocol, // relay protocols the selected local candidate may have ("tls", "tcp" or "tcp,tls")
  wrongProject = "00000000-0000-4000-8000-000000000000",
  uploadBytes = 8 << 20,
  startMs = 25000,
  watchMs = 20000,
} = opts;

const log = (...a) => console.log(`[${name}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const failures = [];
const steps = [];
const step = (n, ok, text) => {
  steps.push({ n, ok, text });
  console.log(`STEP ${n} ${ok ? "PASS" : "FAIL"} ${text}`);
  if (!ok) failures.push(`step ${n}: ${text}`);
};

const context = await launchChromium({ userDataDir, hostName, hostIp });
const consoleLines = [];
const pages = [];

async function openPage(label) {
  const page = await context.newPage();
  page.on("console", (m) => consoleLines.push(`${label} ${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`${label} pageerror: ${e.message}`));
  const resp = await page.goto(url, { waitUntil: "load", timeout: 15000 });
  if (!resp || !resp.ok()) throw new Error(`${url}: HTTP ${resp ? resp.status() : "no response"}`);
  const hasApp = await page.evaluate(() => typeof window.getiApp === "object");
  if (!hasApp) throw new Error(`${url} is not the backend's Geti page (no window.getiApp)`);
  pages.push(page);
  return page;
}

const state = (page) =>
  page.evaluate(() => JSON.parse(JSON.stringify({ gw: window.__gw, app: { id: window.getiApp.webrtcId, events: window.getiApp.events, status: window.getiApp.status() } })));
// The stand-in's test counters, fetched by the page from its own origin (through the gateway in
// proxy mode: /test/* is not the gateway's, so it is proxied like the rest).
const stats = (page) => page.evaluate(async () => (await fetch("/test/stats", { cache: "no-store" })).json());

// start() and wait until this page's connection decodes growing frames.
async function startAndPlay(page, label) {
  const started = Date.now();
  await page.evaluate(() => {
    window.getiApp.start();
  });
  let first = null;
  while (Date.now() - started < startMs) {
    await sleep(250);
    const s = await state(page);
    const pc = s.gw.pcs[s.gw.pcs.length - 1];
    if (pc && pc.frames >= 10) {
      if (first == null) first = pc.frames;
      else if (pc.frames > first) return { ok: true, ms: Date.now() - started, pc, id: s.app.id };
    }
    if (s.app.status === "failed") break;
  }
  const s = await state(page);
  const pc = s.gw.pcs[s.gw.pcs.length - 1];
  const offers = s.gw.fetches.filter((f) => /\/offer$/.test(f.url)).map((f) => f.status);
  const errs = s.app.events.filter((e) => e.error).map((e) => e.error);
  return {
    ok: false,
    why:
      `${label}: no playing video within ${startMs} ms: status ${s.app.status}; offer answers ${offers.join(",") || "none"}; ` +
      `connection ${pc ? pc.timeline.map(([w, st, ms]) => `${w}=${st}@${ms}ms`).join(" ") : "none"}; frames ${pc ? pc.frames : "-"}` +
      (pc && pc.errors.length ? `; candidate errors ${pc.errors.map((e) => `${e.errorCode} ${e.url}`).join(", ")}` : "") +
      (errs.length ? `; client errors: ${errs.join(" | ")}` : ""),
  };
}

function checkPath(n, label, pc) {
  const sel = (pc.selected && pc.selected.local) || {};
  const urlPort = sel.url ? Number((/:(\d+)(\?|$)/.exec(sel.url) || [])[1]) : null;
  // Relayed: a relay candidate, or a peer-reflexive one learned on a relayed port (Chromium
  // reports its relayProtocol and TURN url). The latter is what a backend on the relay's own
  // host makes: relay sockets bound to the wildcard (TURN_RELAY_IP unset) reach a loopback
  // peer from 127.0.0.1, not from the relayed address, and the backend's answer to the check
  // names that address.
  const relayed = sel.type === "relay" || (sel.type === "prflx" && !!sel.url && !!sel.relayProtocol);
  const ok = relayed && protocol.split(",").includes(sel.relayProtocol) && urlPort === 443;
  step(
    n,
    ok,
    `${label}: selected local candidate ${sel.type}/${sel.relayProtocol || sel.protocol}${sel.url ? " via " + sel.url : ""}` +
      (ok ? "" : ` (expected relay/${protocol.replace(",", " or ")} via port 443: UDP is dropped here)`),
  );
}

const t0 = Date.now();
try {
  const page1 = await openPage("viewer1");
  log(`page ${url} loaded from the backend (window.getiApp present, webrtc_id ${await page1.evaluate(() => window.getiApp.webrtcId)})`);
  const project = new URL(url).searchParams.get("project");

  if (mode === "proxy") {
    // The web application's own requests, through the gateway.
    const api = await page1.evaluate(async () => {
      const r = await fetch("/api/v1/projects");
      return { status: r.status, body: await r.json() };
    });
    const listed = (api.body.projects || []).map((p) => p.id);
    step("1a", api.status === 200 && listed.includes(project), `JSON API GET /api/v1/projects -> ${api.status} ${JSON.stringify(api.body)}`);

    const up = await page1.evaluate(async (n) => {
      const body = new Uint8Array(n);
      for (let i = 0; i < n; i += 4096) body[i] = i & 0xff;
      const t = performance.now();
      const r = await fetch("/api/v1/upload", { method: "POST", body, headers: { "Content-Type": "application/octet-stream" } });
      return { status: r.status, body: await r.json(), ms: Math.round(performance.now() - t) };
    }, uploadBytes);
    step("1b", up.status === 200 && up.body.bytes === uploadBytes, `upload of ${uploadBytes} bytes -> ${up.status} ${JSON.stringify(up.body)} in ${up.ms} ms`);

    const ws = await page1.evaluate(
      () =>
        new Promise((resolve) => {
          const got = [];
          const sock = new WebSocket(`wss://${location.host}/api/v1/ws`);
          sock.binaryType = "arraybuffer";
          const done = (why) => {
            try {
              sock.close();
            } catch {}
            resolve({ got, why });
          };
          setTimeout(() => done("timeout"), 5000);
          sock.onopen = () => {
            sock.send("hello through the gateway");
            sock.send(new Uint8Array([1, 2, 3, 250]).buffer);
          };
          sock.onmessage = (m) => {
            got.push(typeof m.data === "string" ? m.data : [...new Uint8Array(m.data)].join(","));
            if (got.length === 2) done("ok");
          };
          sock.onerror = () => done("error");
        }),
    );
    step("1c", ws.why === "ok" && ws.got[0] === "hello through the gateway" && ws.got[1] === "1,2,3,250", `WebSocket echo over wss:// on 443: ${ws.why}, got ${JSON.stringify(ws.got)}`);

    const sse = await page1.evaluate(
      () =>
        new Promise((resolve) => {
          const got = [];
          const es = new EventSource("/api/v1/events");
          const done = (why) => {
            es.close();
            resolve({ got, why });
          };
          setTimeout(() => done("timeout"), 5000);
          es.onmessage = (m) => {
            got.push(m.data);
            if (got.length === 3) done("ok");
          };
        }),
    );
    step("1d", sse.why === "ok", `server-sent events: ${sse.why}, got ${JSON.stringify(sse.got)}`);

    const st = await stats(page1);
    const fwd = st.forwarded || {};
    step("1e", fwd["x-forwarded-proto"] === "https" && (fwd["x-forwarded-host"] || "").startsWith(hostName), `the backend saw the requests forwarded: ${JSON.stringify(fwd)}`);
  }

  // Two viewers, each the Geti UI's connection logic in its own page (its own webrtc_id).
  const before = await stats(page1);
  const v1 = await startAndPlay(page1, "viewer 1");
  step(2, v1.ok, v1.ok ? `viewer 1 plays ${v1.ms} ms after start()` : v1.why);
  if (v1.ok) {
    checkPath("2b", "viewer 1", v1.pc);
    const since = (t) => (t != null ? `${Math.round(t - v1.pc.createdAt)}ms` : "?");
    console.log(`TIMING ${name} viewer1 ice_connected=${since(v1.pc.iceConnectedAt)} first_frame=${since(v1.pc.firstFrameAt)}`);
  }
  const page2 = await openPage("viewer2");
  const v2 = await startAndPlay(page2, "viewer 2");
  step(3, v2.ok, v2.ok ? `viewer 2 plays ${v2.ms} ms after start()` : v2.why);
  if (v2.ok) checkPath("3b", "viewer 2", v2.pc);

  // Both keep playing.
  const frames0 = await Promise.all(pages.map(async (p) => (await state(p)).gw.pcs.at(-1)?.frames ?? 0));
  await sleep(watchMs);
  const frames1 = await Promise.all(pages.map(async (p) => (await state(p)).gw.pcs.at(-1)?.frames ?? 0));
  step(4, frames1.every((f, i) => f > frames0[i]), `both viewers kept playing for ${watchMs / 1000} s: frames ${frames0.join(",")} -> ${frames1.join(",")}`);

  const after = await stats(page1);
  if (mode === "proxy") {
    const peers = after.peers_total - before.peers_total;
    step(5, peers === 1, `the backend made ${peers} peer connection(s) for the two viewers (the gateway pulls once): ${JSON.stringify({ offers: after.offers, peers_open: after.peers_open, peers_total: after.peers_total })}`);
    // A wrong project id: the backend's own refusal, passed through.
    const wrong = await page1.evaluate(async (p) => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver("video", { direction: "recvonly" });
      await pc.setLocalDescription(await pc.createOffer());
      const r = await fetch(`/api/v1/projects/${p}/offer`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ webrtc_id: crypto.randomUUID(), type: "offer", sdp: pc.localDescription.sdp }),
      });
      pc.close();
      return { status: r.status, body: await r.text() };
    }, wrongProject);
    const refusals = (await stats(page1)).refusals - after.refusals;
    let body = null;
    try {
      body = JSON.parse(wrong.body);
    } catch {}
    // The backend's own words (Geti's), passed through as it gave them.
    const expected = `Project ID ${wrongProject} does not match the active pipeline's project ID.`;
    step(6, wrong.status === 400 && body && body.detail === expected && refusals >= 1, `a wrong project id -> ${wrong.status} ${wrong.body} (refusals counted by the backend: ${refusals})`);
  } else {
    const offers = after.offers - before.offers;
    const relayed = after.relay_candidates - before.relay_candidates;
    step(5, offers === 2 && after.refusals === before.refusals, `the backend answered every offer: ${offers} answered, ${after.refusals - before.refusals} refused`);
    step(6, relayed >= 2, `the backend's aiortc allocated on the gateway with the static user: ${relayed} relayed candidate(s) in its two answers`);
  }
} catch (e) {
  failures.push(`${e.message.split("\n")[0]}`);
}

if (failures.length) {
  console.log(`DIAGNOSIS ${name}:`);
  for (const f of failures) console.log(`  failure: ${f}`);
  for (const [i, page] of pages.entries()) {
    const st = await state(page).catch(() => null);
    if (!st) continue;
    console.log(`  viewer ${i + 1} (webrtc_id ${st.app.id}) events: ${st.app.events.map((e) => `${e.status || "error: " + e.error}@${e.at}ms`).join(" ")}`);
    for (const f of st.gw.fetches) console.log(`    fetch ${f.method} ${f.url} -> ${f.status}`);
    for (const p of st.gw.pcs) {
      console.log(`    RTCPeerConnection #${p.index}: ${p.config.iceServers.map((s) => s.urls.join(" ") + " user=" + s.username).join("; ") || "no ICE servers"}`);
      console.log(`      states: ${p.timeline.map(([w, s2, ms]) => `${w}=${s2}@${ms}ms`).join(" ")}; frames ${p.frames}`);
      for (const c of p.candidates || []) console.log(`      local candidate @${c.at}ms ${c.candidate}${c.url ? " from " + c.url : ""}`);
      for (const e of p.errors) console.log(`      candidate error: ${e.errorCode} ${e.errorText} url=${e.url}`);
    }
  }
  if (gatewayLog && fs.existsSync(gatewayLog)) {
    const lines = fs.readFileSync(gatewayLog, "utf8").replace(/\x1b\[[0-9;]*m/g, "").split("\n").filter((l) => /WARN|ERROR|pull|upstream|proxy|refus|403|401/i.test(l));
    console.log(`  gateway log (${gatewayLog}), last ${Math.min(30, lines.length)} notable lines:`);
    for (const l of lines.slice(-30)) console.log(`    ${l}`);
  }
  for (const l of consoleLines.slice(-10)) console.log(`  console ${l}`);
  console.log(`RESULT ${name} FAIL: ${failures.join("; ")}`);
} else {
  console.log(`RESULT ${name} PASS in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${steps.map((x) => x.text).join("; ")}`);
}
await context.close().catch(() => {});
process.exit(failures.length ? 1 : 0);
