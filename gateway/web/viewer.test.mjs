// Runs gateway/web/viewer.js in a node VM with a fake DOM, fetch and RTCPeerConnection, and
// drives its recovery: a failed connection is restarted over WHEP PATCH (If-Match: *, an
// sdpfrag with the new credentials) and the gateway's sdpfrag replaces the old ICE data in the
// remote description; when the session is gone (404) a new session is made after a backoff.
//
// Run: node --test gateway/web/viewer.test.mjs   (no network, no browser; about 2 s)
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import vm from "node:vm";
import { webcrypto } from "node:crypto";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const source = fs.readFileSync(path.join(here, "viewer.js"), "utf8");

const ANSWER = [
  "v=0", "o=- 1 2 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0", "a=ice-lite",
  "m=video 9 UDP/TLS/RTP/SAVPF 108", "c=IN IP4 0.0.0.0", "a=mid:0",
  "a=ice-ufrag:srv1", "a=ice-pwd:srv1pwdsrv1pwdsrv1pwd00",
  "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host ufrag srv1", "a=end-of-candidates",
  "a=recvonly", "",
].join("\r\n");

let ufragCounter = 0;
function offerSdp() {
  ufragCounter += 1;
  return [
    "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
    "m=video 9 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 0.0.0.0", "a=mid:0",
    `a=ice-ufrag:cli${ufragCounter}`, `a=ice-pwd:clientpassword${ufragCounter}xxxxxxxxxx`,
    `a=candidate:7 1 udp 2122260223 192.0.2.7 ${40000 + ufragCounter} typ host`, "a=recvonly", "",
  ].join("\r\n");
}

class FakePc {
  constructor(config) {
    this.config = config;
    this.connectionState = "new";
    this.iceGatheringState = "complete";
    this.localDescription = null;
    this.remoteDescription = null;
    this.remoteSet = [];
    this.listeners = {};
    this.closed = false;
    FakePc.all.push(this);
  }
  addTransceiver() {}
  async createOffer(opts) { this.lastOfferOpts = opts || {}; return { type: "offer", sdp: offerSdp() }; }
  async setLocalDescription(d) {
    if (d.type === "rollback") { this.rolledBack = true; this.localDescription = this.prevLocal; return; }
    this.prevLocal = this.localDescription;
    this.localDescription = d;
  }
  async setRemoteDescription(d) { this.remoteDescription = d; this.remoteSet.push(d); }
  async getStats() { return new Map(); }
  addEventListener(t, f) { (this.listeners[t] ||= new Set()).add(f); }
  removeEventListener(t, f) { this.listeners[t] && this.listeners[t].delete(f); }
  close() { this.closed = true; this.connectionState = "closed"; }
  set(state) {
    this.connectionState = state;
    if (this.onconnectionstatechange) this.onconnectionstatechange();
    for (const f of this.listeners.connectionstatechange || []) f();
  }
}
FakePc.all = [];

function element() { return { dataset: {}, textContent: "" }; }

function loadViewer(routes) {
  const els = {};
  const requests = [];
  const fetch = async (url, init = {}) => {
    const req = { url, method: init.method || "GET", headers: init.headers || {}, body: init.body };
    requests.push(req);
    const r = routes(req);
    const headers = new Map(Object.entries(r.headers || {}).map(([k, v]) => [k.toLowerCase(), v]));
    return {
      status: r.status, ok: r.status >= 200 && r.status < 300,
      headers: { get: (k) => headers.get(k.toLowerCase()) ?? null },
      text: async () => (typeof r.body === "string" ? r.body : JSON.stringify(r.body ?? {})),
    };
  };
  const window = {};
  // The page's timers, so a test can stop the page (its recovery loop never ends by itself).
  const timers = new Set();
  let stopped = false;
  const pageSetTimeout = (f, ms) => {
    if (stopped) return 0;
    const t = setTimeout(() => { timers.delete(t); f(); }, ms);
    timers.add(t);
    return t;
  };
  const pageClearTimeout = (t) => { timers.delete(t); clearTimeout(t); };
  const stop = () => { stopped = true; for (const t of timers) clearTimeout(t); timers.clear(); };
  const ctx = {
    window, fetch, location: { search: "" }, URLSearchParams, crypto: webcrypto,
    performance, setTimeout: pageSetTimeout, clearTimeout: pageClearTimeout, setInterval: () => 0,
    Promise, Error, JSON, Math,
    MediaStream: class {}, RTCPeerConnection: FakePc,
    document: { getElementById: (id) => (els[id] ||= element()) },
  };
  vm.runInNewContext(source, ctx);
  return { els, requests, window, stop };
}

async function waitFor(what, pred, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = pred();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

test("a failed connection restarts ICE, then falls back to a new session with backoff", async (t) => {
  let session = 0;
  let patchStatus = 200;
  const { els, requests, stop } = loadViewer((req) => {
    if (req.url === "/api/v1/webrtc/config") {
      session += 1;
      return { status: 200, body: { sessionId: `s${session}`, iceServers: [] } };
    }
    if (req.url.endsWith("/offer")) return { status: 200, body: { type: "answer", sdp: ANSWER } };
    if (req.method === "PATCH" && patchStatus === 200)
      return {
        status: 200, headers: { ETag: '"srv2"' },
        body: "a=ice-lite\r\na=ice-ufrag:srv2\r\na=ice-pwd:srv2pwdsrv2pwdsrv2pwd00\r\n" +
          "m=video 9 UDP/TLS/RTP/SAVPF 108\r\na=mid:0\r\n" +
          "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host ufrag srv2\r\na=end-of-candidates\r\n",
      };
    if (req.method === "PATCH") return { status: patchStatus, body: { error: "unknown_session" } };
    if (req.method === "DELETE") return { status: 404, body: {} };
    return { status: 500, body: {} };
  });

  t.after(stop);
  const pc1 = await waitFor("the first connection", () => FakePc.all[0]?.remoteDescription && FakePc.all[0]);
  const offer = JSON.parse(requests.find((r) => r.url.endsWith("/offer")).body);
  assert.equal(offer.webrtc_id, "s1", "the offer is bound to the config's session");
  pc1.set("connected");
  assert.equal(els.status.textContent, "playing");
  assert.equal(els.stats.dataset.recovery, "");

  // Failure 1: ICE restart on the same session.
  pc1.set("failed");
  const patch = await waitFor("the restart PATCH", () => requests.find((r) => r.method === "PATCH"));
  assert.equal(patch.url, "/whep/s1");
  assert.equal(patch.headers["If-Match"], "*");
  assert.equal(patch.headers["Content-Type"], "application/trickle-ice-sdpfrag");
  assert.equal(pc1.lastOfferOpts.iceRestart, true);
  assert.match(patch.body, /^a=ice-ufrag:cli2\r\na=ice-pwd:clientpassword2x+\r\nm=video 9 /);
  assert.match(patch.body, /\r\na=mid:0\r\na=candidate:7 1 udp 2122260223 192\.0\.2\.7 40002 typ host\r\n$/);
  assert.equal(els.stats.dataset.recovery, "ice-restart");
  const restarted = await waitFor("the restarted remote description", () => pc1.remoteSet[1]);
  assert.equal(restarted.type, "answer");
  assert.match(restarted.sdp, /a=ice-ufrag:srv2\r\na=ice-pwd:srv2pwdsrv2pwdsrv2pwd00\r\n/);
  assert.ok(!restarted.sdp.includes("srv1"), "nothing of the old ICE generation: " + restarted.sdp);
  assert.match(restarted.sdp, /a=candidate:1 1 udp 2130706431 127\.0\.0\.1 50000 typ host ufrag srv2\r\na=end-of-candidates\r\n$/);
  assert.ok(restarted.sdp.includes("a=recvonly"), "the rest of the answer stays");
  pc1.set("connected");
  await waitFor("recovery done", () => els.stats.dataset.recovery === "");
  assert.equal(els.stats.dataset.reconnects, "1");
  assert.equal(FakePc.all.length, 1, "no new connection for a successful restart");

  // Failure 2: the session is gone (404): rollback, wait 1 s, new config and offer.
  patchStatus = 404;
  const at = Date.now();
  pc1.set("failed");
  await waitFor("the second PATCH", () => requests.filter((r) => r.method === "PATCH").length === 2);
  await waitFor("the waiting state", () => els.stats.dataset.recovery === "waiting");
  assert.ok(pc1.rolledBack, "the restart offer is rolled back");
  assert.match(els.status.textContent, /reconnecting in 1 s \(attempt 1\)/);
  const pc2 = await waitFor("a new connection", () => FakePc.all[1]?.remoteDescription && FakePc.all[1]);
  assert.ok(Date.now() - at >= 900, "backoff of about 1 s before the new session");
  assert.ok(pc1.closed, "the old connection is closed");
  assert.ok(requests.some((r) => r.method === "DELETE" && r.url === "/whep/s1"), "the old session is deleted");
  const offers = requests.filter((r) => r.url.endsWith("/offer"));
  assert.equal(JSON.parse(offers[1].body).webrtc_id, "s2", "a new session");
  pc2.set("connected");
  await waitFor("recovered", () => els.stats.dataset.recovery === "");
  assert.equal(els.stats.dataset.reconnects, "2");
  assert.equal(els.status.textContent, "playing");
});
