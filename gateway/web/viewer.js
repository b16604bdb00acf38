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
// same figures as an object, updated every second.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const forceRelay = params.get("relay") === "1";
  const transport = (params.get("transport") || "").toLowerCase();
  const project = params.get("project") || "default";

  const video = document.getElementById("video");
  const statusEl = document.getElementById("status");
  const statsEl = document.getElementById("stats");
  const field = (id) => document.getElementById("stat-" + id);

  window.gatewayStats = { state: "new" };

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

  async function start() {
    setStatus("connecting", "fetching ICE servers…");
    const config = await fetchJson("/api/v1/webrtc/config", { cache: "no-store" });
    const iceServers = filterServers(config.iceServers || []);
    const pc = new RTCPeerConnection({
      iceServers,
      iceTransportPolicy: forceRelay ? "relay" : "all",
    });
    window.gatewayPeerConnection = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (e) => {
      video.srcObject = e.streams[0] || new MediaStream([e.track]);
      video.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      setStatus(s, s === "connected" ? "playing" : s);
    };

    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    setStatus("connecting", "sending offer…");
    const answer = await fetchJson(`/api/v1/projects/${encodeURIComponent(project)}/offer`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ webrtc_id: config.sessionId || randomId(), sdp: pc.localDescription.sdp, type: "offer" }),
    });
    await pc.setRemoteDescription({ type: answer.type || "answer", sdp: answer.sdp });
    setStatus("connecting", "connecting…");
    pollStats(pc);
  }

  function pollStats(pc) {
    let prev = null;
    const tick = async () => {
      if (pc.connectionState === "closed") return;
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
    const stats = { ...s, state, time: Date.now() };
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

  start().catch((e) => {
    setStatus("error", "error: " + e.message);
    statsEl.dataset.error = e.message;
    window.gatewayStats = { ...window.gatewayStats, state: "error", error: e.message };
  });
})();
