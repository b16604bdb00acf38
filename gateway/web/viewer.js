// Viewer for the gateway's stream. No framework, no external resources.
//
// Query parameters:
//   ?relay=1                 iceTransportPolicy "relay" (only TURN paths)
//   ?transport=tls|tcp|udp   keep only the ICE server URLs of that kind
//                            (tls: turns:, tcp: turn:…?transport=tcp, udp: turn:/stun: over UDP)
//
// DOM contract (read by tests): <dl id="stats"> carries data-state, data-path, data-protocol,
// data-bitrate, data-fps, data-frames, data-rtt, data-loss, data-packets-lost,
// data-packets-received, data-codec, data-width, data-height; window.gatewayStats holds the
// same figures as an object, updated every second. #stats also carries data-reconnects (how many
// recoveries were started) and data-recovery (what the page is doing about a lost connection:
// "" | "waiting" | "ice-restart" | "new-session").
//
// Recovery: when the connection goes "failed", or stays "disconnected" for DISCONNECT_GRACE_MS,
// the page first restarts ICE on the same session (WHEP PATCH /whep/{id}, If-Match: *, an
// RFC 8840 sdpfrag with the new ufrag/pwd; the 200 carries the gateway's new ufrag/pwd and
// candidates, which replace the old ones in the remote description). If the session is gone or
// the restart does not connect in time, it starts a new session (new config, new offer). Between
// attempts it waits 1 s, 2 s, 4 s ... at most 15 s; a connection that comes back resets that.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const forceRelay = params.get("relay") === "1";
  const transport = (params.get("transport") || "").toLowerCase();
  // The stream to play: `?stream=` (or Geti's word for it, `?project=`).
  const project = params.get("stream") || params.get("project") || "default";

  const video = document.getElementById("video");
  const statusEl = document.getElementById("status");
  const statsEl = document.getElementById("stats");
  const field = (id) => document.getElementById("stat-" + id);

  const DISCONNECT_GRACE_MS = 4000;
  const RESTART_TIMEOUT_MS = 10000;
  const GATHER_WAIT_MS = 2000;
  const BACKOFF_MAX_MS = 15000;

  window.gatewayStats = { state: "new" };

  // The live session: { id, pc, etag } (etag: the ICE session's entity-tag, once known).
  let current = null;
  let reconnects = 0;
  let attempt = 0; // failed recoveries in a row
  let recovering = false;
  let disconnectTimer = null;

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
    statsEl.dataset.state = state;
    window.gatewayStats = { ...window.gatewayStats, state };
  }

  // Which transport an ICE server URL uses: "tls", "tcp", "udp" (null when unknown).
  function urlTransport(url) {
    const m = /^(turns?|stuns?):([^?]*)(\?.*)?$/i.exec(String(url).trim());
    if (!m) return null;
    const scheme = m[1].toLowerCase();
    const t = new URLSearchParams(m[3] || "").get("transport");
    if (scheme === "turns" || scheme === "stuns") return "tls";
    if (scheme === "stun") return "udp";
    return (t || "udp").toLowerCase();
  }

  function filterServers(servers) {
    if (!["tls", "tcp", "udp"].includes(transport)) return servers;
    return servers
      .map((s) => ({ ...s, urls: [].concat(s.urls || []).filter((u) => urlTransport(u) === transport) }))
      .filter((s) => s.urls.length > 0);
  }

  function randomId() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b); // works on plain http too (randomUUID needs a secure context)
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  async function fetchJson(url, init) {
    const r = await fetch(url, init);
    const text = await r.text();
    let body;
    try { body = JSON.parse(text); } catch { body = { detail: text }; }
    if (!r.ok) throw new Error(`${url}: ${r.status} ${body.error || ""} ${body.detail || ""}`.trim());
    return body;
  }

  // 1 s, 2 s, 4 s, ... capped.
  function backoffMs(n) {
    return Math.min(BACKOFF_MAX_MS, 1000 * 2 ** Math.max(0, n - 1));
  }

  function setRecovery(mode) {
    statsEl.dataset.recovery = mode;
    statsEl.dataset.reconnects = String(reconnects);
    window.gatewayStats = { ...window.gatewayStats, recovery: mode, reconnects };
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function onConnectionState(session) {
    const pc = session.pc;
    const s = pc.connectionState;
    if (session !== current) return; // an old connection being torn down
    setStatus(s, s === "connected" ? "playing" : s);
    clearTimeout(disconnectTimer);
    disconnectTimer = null;
    if (s === "connected") {
      attempt = 0;
      if (!recovering) setRecovery("");
    } else if (s === "failed") {
      recover();
    } else if (s === "disconnected") {
      disconnectTimer = setTimeout(() => {
        if (session === current && pc.connectionState === "disconnected") recover();
      }, DISCONNECT_GRACE_MS);
    }
  }

  // Resolves true when `pc` reaches "connected" within `ms`, false otherwise.
  function waitConnected(pc, ms) {
    return new Promise((resolve) => {
      if (pc.connectionState === "connected") return resolve(true);
      const done = (ok) => {
        clearTimeout(t);
        pc.removeEventListener("connectionstatechange", check);
        resolve(ok);
      };
      const check = () => {
        if (pc.connectionState === "connected") done(true);
        else if (pc.connectionState === "failed" || pc.connectionState === "closed") done(false);
      };
      const t = setTimeout(() => done(false), ms);
      pc.addEventListener("connectionstatechange", check);
    });
  }

  // Resolves when ICE gathering completes or after `ms`, whichever comes first.
  function gathered(pc, ms) {
    return new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const done = () => {
        clearTimeout(t);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      const t = setTimeout(done, ms);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  // An RFC 8840 sdpfrag from our (restart) offer: credentials, the first m-section's m-line
  // and mid, the candidates gathered so far.
  function sdpFragOf(sdp) {
    const lines = sdp.split(/\r?\n/);
    const first = (prefix) => lines.find((l) => l.startsWith(prefix));
    const out = [first("a=ice-ufrag:"), first("a=ice-pwd:")];
    const m = lines.findIndex((l) => l.startsWith("m="));
    if (m >= 0) {
      let end = lines.findIndex((l, i) => i > m && l.startsWith("m="));
      if (end < 0) end = lines.length;
      const section = lines.slice(m, end);
      out.push(lines[m]);
      const mid = section.find((l) => l.startsWith("a=mid:"));
      if (mid) out.push(mid);
      out.push(...section.filter((l) => l.startsWith("a=candidate:")));
    }
    if (!out[0] || !out[1]) throw new Error("the restart offer has no ICE credentials");
    return out.join("\r\n") + "\r\n";
  }

  // The remote description after an ICE restart: the old answer with the gateway's new
  // credentials, and its new candidates (from its sdpfrag) at the end of the first (bundle)
  // m-section in place of the old ones, which belong to the old ICE generation.
  function answerAfterRestart(answer, frag) {
    const f = frag.split(/\r?\n/).map((l) => l.trim());
    const ufrag = f.find((l) => l.startsWith("a=ice-ufrag:"));
    const pwd = f.find((l) => l.startsWith("a=ice-pwd:"));
    if (!ufrag || !pwd) throw new Error("the gateway's sdpfrag has no ICE credentials");
    const cands = f.filter((l) => l.startsWith("a=candidate:"));
    const out = [];
    for (const l of answer.split(/\r?\n/)) {
      if (l.startsWith("a=ice-ufrag:")) out.push(ufrag);
      else if (l.startsWith("a=ice-pwd:")) out.push(pwd);
      else if (l !== "" && !l.startsWith("a=candidate:") && !l.startsWith("a=end-of-candidates")) out.push(l);
    }
    const m = out.findIndex((l) => l.startsWith("m="));
    if (m >= 0) {
      let end = out.findIndex((l, i) => i > m && l.startsWith("m="));
      if (end < 0) end = out.length;
      out.splice(end, 0, ...cands, "a=end-of-candidates");
    }
    return out.join("\r\n") + "\r\n";
  }

  // ICE restart on the live session (RFC 9725 §4.3.2). True when the connection came back.
  async function iceRestart(session) {
    const pc = session.pc;
    const offer = await pc.createOffer({ iceRestart: true });
    await pc.setLocalDescription(offer);
    await gathered(pc, GATHER_WAIT_MS);
    const r = await fetch(`/whep/${encodeURIComponent(session.id)}`, {
      method: "PATCH",
      headers: { "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*" },
      body: sdpFragOf(pc.localDescription.sdp),
    });
    if (r.status !== 200) {
      await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
      return false; // 404: the session is gone; 4xx/5xx: no restart here
    }
    const frag = await r.text();
    session.etag = r.headers.get("ETag");
    await pc.setRemoteDescription({ type: "answer", sdp: answerAfterRestart(pc.remoteDescription.sdp, frag) });
    return waitConnected(pc, RESTART_TIMEOUT_MS);
  }

  function dropSession(session) {
    if (!session) return;
    try { session.pc.close(); } catch { /* already closed */ }
    // Best effort: free the gateway side now instead of at its timeout.
    fetch(`/whep/${encodeURIComponent(session.id)}`, { method: "DELETE" }).catch(() => {});
  }

  async function recover() {
    if (recovering) return;
    recovering = true;
    reconnects += 1;
    try {
      // First: an ICE restart on the same session, at once.
      if (current && current.pc.connectionState !== "closed") {
        setRecovery("ice-restart");
        statusEl.textContent = "connection lost: restarting ICE…";
        const ok = await iceRestart(current).catch(() => false);
        if (ok) { attempt = 0; return; }
      }
      // Then new sessions, with backoff.
      for (;;) {
        attempt += 1;
        const wait = backoffMs(attempt);
        setRecovery("waiting");
        statusEl.textContent = `reconnecting in ${Math.round(wait / 1000)} s (attempt ${attempt})…`;
        await sleep(wait);
        setRecovery("new-session");
        const old = current;
        current = null;
        dropSession(old);
        try {
          await start();
          if (await waitConnected(current.pc, RESTART_TIMEOUT_MS)) { attempt = 0; return; }
        } catch (e) {
          statsEl.dataset.error = e.message;
        }
      }
    } finally {
      recovering = false;
      if (current && current.pc.connectionState === "connected") setRecovery("");
    }
  }

  async function start() {
    setStatus("connecting", "fetching ICE servers…");
    const config = await fetchJson("/api/v1/webrtc/config", { cache: "no-store" });
    const iceServers = filterServers(config.iceServers || []);
    const pc = new RTCPeerConnection({
      iceServers,
      iceTransportPolicy: forceRelay ? "relay" : "all",
    });
    window.gatewayPeerConnection = pc;
    const sessionId = config.sessionId || randomId();
    const session = { id: sessionId, pc, etag: null };
    current = session;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (e) => {
      video.srcObject = e.streams[0] || new MediaStream([e.track]);
      video.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => onConnectionState(session);

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    setStatus("connecting", "sending offer…");
    const answer = await fetchJson(`/api/v1/projects/${encodeURIComponent(project)}/offer`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ webrtc_id: sessionId, sdp: pc.localDescription.sdp, type: "offer" }),
    });
    await pc.setRemoteDescription({ type: answer.type || "answer", sdp: answer.sdp });
    setStatus("connecting", "connecting…");
    return session;
  }

  // One poller for whichever connection is current.
  function pollStats() {
    let prev = null;
    let prevPc = null;
    const tick = async () => {
      const pc = current && current.pc;
      if (!pc || pc.connectionState === "closed") return;
      if (pc !== prevPc) { prev = null; prevPc = pc; }
      let report;
      try { report = await pc.getStats(); } catch { return; }
      const now = performance.now();
      const s = summarize(report);
      const dt = prev ? (now - prev.at) / 1000 : 0;
      if (prev && dt > 0) {
        s.bitrate = Math.max(0, Math.round(((s.bytesReceived - prev.bytesReceived) * 8) / dt));
        if (s.fps == null) s.fps = Math.max(0, Math.round((s.frames - prev.frames) / dt));
        const lost = s.packetsLost - prev.packetsLost;
        const recv = s.packetsReceived - prev.packetsReceived;
        s.lossRecent = lost + recv > 0 ? Math.max(0, lost) / (lost + recv) : 0;
      }
      prev = { at: now, bytesReceived: s.bytesReceived, frames: s.frames,
               packetsLost: s.packetsLost, packetsReceived: s.packetsReceived };
      show(s, pc.connectionState);
    };
    tick();
    setInterval(tick, 1000);
  }

  function summarize(report) {
    let inbound = null, pair = null, selectedId = null;
    report.forEach((r) => {
      if (r.type === "inbound-rtp" && (r.kind || r.mediaType) === "video") inbound = r;
      if (r.type === "transport" && r.selectedCandidatePairId) selectedId = r.selectedCandidatePairId;
    });
    if (selectedId) pair = report.get(selectedId);
    if (!pair) {
      // Firefox: no transport stats; the pair says it is selected.
      report.forEach((r) => {
        if (r.type === "candidate-pair" && (r.selected || (r.nominated && r.state === "succeeded"))) pair = r;
      });
    }
    const local = pair ? report.get(pair.localCandidateId) : null;
    const remote = pair ? report.get(pair.remoteCandidateId) : null;
    const codec = inbound && inbound.codecId ? report.get(inbound.codecId) : null;
    const path = local ? local.candidateType || null : null;
    const protocol = local
      ? (path === "relay" ? local.relayProtocol || null : local.protocol || null)
      : null;
    const packetsLost = inbound ? Math.max(0, inbound.packetsLost || 0) : 0;
    const packetsReceived = inbound ? inbound.packetsReceived || 0 : 0;
    return {
      path,
      protocol,
      localAddress: local ? `${local.address || local.ip || ""}:${local.port || ""}` : null,
      remoteAddress: remote ? `${remote.address || remote.ip || ""}:${remote.port || ""}` : null,
      bitrate: null,
      fps: inbound && inbound.framesPerSecond != null ? Math.round(inbound.framesPerSecond) : null,
      frames: inbound ? inbound.framesDecoded || 0 : 0,
      rtt: pair && pair.currentRoundTripTime != null ? Math.round(pair.currentRoundTripTime * 1000) : null,
      packetsLost,
      packetsReceived,
      loss: packetsLost + packetsReceived > 0 ? packetsLost / (packetsLost + packetsReceived) : 0,
      lossRecent: null,
      bytesReceived: inbound ? inbound.bytesReceived || 0 : 0,
      codec: codec ? codec.mimeType || null : null,
      width: inbound ? inbound.frameWidth || null : null,
      height: inbound ? inbound.frameHeight || null : null,
    };
  }

  function show(s, state) {
    const stats = { ...s, state, time: Date.now(), recovery: statsEl.dataset.recovery || "", reconnects };
    window.gatewayStats = stats;
    const d = statsEl.dataset;
    d.state = state;
    d.path = s.path || "";
    d.protocol = s.protocol || "";
    d.bitrate = s.bitrate != null ? String(s.bitrate) : "";
    d.fps = s.fps != null ? String(s.fps) : "";
    d.frames = String(s.frames);
    d.rtt = s.rtt != null ? String(s.rtt) : "";
    d.loss = (s.loss * 100).toFixed(2);
    d.packetsLost = String(s.packetsLost);
    d.packetsReceived = String(s.packetsReceived);
    d.codec = s.codec || "";
    d.width = s.width != null ? String(s.width) : "";
    d.height = s.height != null ? String(s.height) : "";

    field("path").textContent = s.path || "–";
    field("protocol").textContent = s.protocol || "–";
    field("bitrate").textContent = s.bitrate != null ? formatBitrate(s.bitrate) : "–";
    field("fps").textContent = s.fps != null ? `${s.fps} fps` : "–";
    field("rtt").textContent = s.rtt != null ? `${s.rtt} ms` : "–";
    field("loss").textContent = `${(s.loss * 100).toFixed(2)} % (${s.packetsLost} packets)`;
    field("frames").textContent = String(s.frames);
    field("video").textContent = s.width
      ? `${s.width}×${s.height} ${(s.codec || "").replace(/^video\//, "")}`
      : "–";
  }

  function formatBitrate(bps) {
    if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
    return `${Math.round(bps / 1e3)} kbit/s`;
  }

  setRecovery("");
  pollStats();
  start().catch((e) => {
    setStatus("error", "error: " + e.message);
    statsEl.dataset.error = e.message;
    window.gatewayStats = { ...window.gatewayStats, state: "error", error: e.message };
    // Retry by itself (the error stays visible in data-error until a connection comes up).
    if (!current) recover();
  });
})();
