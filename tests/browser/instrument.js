// Injected into every page before its own scripts (Playwright addInitScript, which CSP does
// not block). Wraps RTCPeerConnection so the test sees what the page's connection did:
// ICE servers (URLs and usernames), gathered candidates, candidate errors (401 from a TURN
// server, 701 unreachable), the ICE / DTLS / connection state timeline, and a 100 ms getStats
// poll that records the selected candidate pair and decoded frames with timestamps.
// Everything lands in window.__gw; times are performance.now() milliseconds.
(() => {
  if (window.__gw) return;
  const rec = (window.__gw = { pcs: [], fetches: [] });
  const Orig = window.RTCPeerConnection;
  if (!Orig) return;

  function redact(config) {
    const servers = ((config && config.iceServers) || []).map((s) => ({
      urls: [].concat(s.urls || []),
      username: s.username || null,
      hasCredential: !!s.credential,
    }));
    return { iceServers: servers, iceTransportPolicy: (config && config.iceTransportPolicy) || "all" };
  }

  function candidateSummary(c) {
    if (!c) return null;
    return {
      id: c.id,
      type: c.candidateType,
      protocol: c.protocol,
      relayProtocol: c.relayProtocol || null,
      address: c.address || c.ip || null,
      port: c.port,
      url: c.url || null,
    };
  }

  async function poll(pc, info) {
    let report;
    try {
      report = await pc.getStats();
    } catch {
      return;
    }
    let inbound = null;
    let transport = null;
    const pairs = [];
    report.forEach((r) => {
      if (r.type === "inbound-rtp" && (r.kind || r.mediaType) === "video") inbound = r;
      if (r.type === "transport") transport = r;
      if (r.type === "candidate-pair") pairs.push(r);
    });
    const now = performance.now();
    if (transport) {
      info.iceState = transport.iceState || null;
      info.dtlsState = transport.dtlsState || null;
      if (transport.dtlsState === "connected" && info.dtlsConnectedAt == null) info.dtlsConnectedAt = now;
    } else {
      // Firefox has no transport stats: take the states from the connection itself.
      info.iceState = pc.iceConnectionState;
      info.dtlsState = pc.connectionState === "connected" ? "connected" : pc.connectionState;
      if (info.dtlsState === "connected" && info.dtlsConnectedAt == null) info.dtlsConnectedAt = now;
    }
    {
      let pair = transport && transport.selectedCandidatePairId ? report.get(transport.selectedCandidatePairId) : null;
      // Firefox: no transport stats; the selected pair says so itself (non-standard `selected`).
      if (!pair && !transport) pair = pairs.find((p) => p.selected) || pairs.find((p) => p.nominated && p.state === "succeeded") || null;
      if (pair) {
        info.selected = {
          state: pair.state,
          local: candidateSummary(report.get(pair.localCandidateId)),
          remote: candidateSummary(report.get(pair.remoteCandidateId)),
          rttMs: pair.currentRoundTripTime != null ? Math.round(pair.currentRoundTripTime * 1000) : null,
        };
      }
    }
    info.pairs = pairs.map((p) => ({
      state: p.state,
      nominated: !!p.nominated,
      local: candidateSummary(report.get(p.localCandidateId)),
      remote: candidateSummary(report.get(p.remoteCandidateId)),
      requestsSent: p.requestsSent,
      responsesReceived: p.responsesReceived,
    }));
    if (inbound) {
      info.frames = inbound.framesDecoded || 0;
      info.packetsReceived = inbound.packetsReceived || 0;
      info.bytesReceived = inbound.bytesReceived || 0;
      info.width = inbound.frameWidth || null;
      info.height = inbound.frameHeight || null;
      const codec = inbound.codecId ? report.get(inbound.codecId) : null;
      info.codec = codec ? codec.mimeType || null : null;
      if (info.frames > 0 && info.firstFrameAt == null) info.firstFrameAt = now;
    }
  }

  function Wrapped(config, ...rest) {
    const pc = new Orig(config, ...rest);
    const info = {
      index: rec.pcs.length,
      createdAt: performance.now(),
      config: redact(config),
      candidates: [],
      errors: [],
      timeline: [],
      gatheringCompleteAt: null,
      iceConnectedAt: null,
      dtlsConnectedAt: null,
      firstFrameAt: null,
      frames: 0,
      codec: null,
      selected: null,
      pairs: [],
    };
    rec.pcs.push(info);
    const mark = (what, state) => info.timeline.push([what, state, Math.round(performance.now() - info.createdAt)]);
    pc.addEventListener("icecandidate", (e) => {
      if (e.candidate && e.candidate.candidate) {
        info.candidates.push({ candidate: e.candidate.candidate, url: e.candidate.url || null, at: Math.round(performance.now() - info.createdAt) });
      } else if (!e.candidate) {
        info.gatheringCompleteAt = performance.now();
      }
    });
    pc.addEventListener("icecandidateerror", (e) => {
      info.errors.push({ url: e.url, errorCode: e.errorCode, errorText: e.errorText, address: e.address, port: e.port });
    });
    pc.addEventListener("icegatheringstatechange", () => mark("gathering", pc.iceGatheringState));
    pc.addEventListener("iceconnectionstatechange", () => {
      const s = pc.iceConnectionState;
      mark("ice", s);
      if ((s === "connected" || s === "completed") && info.iceConnectedAt == null) info.iceConnectedAt = performance.now();
    });
    pc.addEventListener("connectionstatechange", () => mark("connection", pc.connectionState));
    const timer = setInterval(() => {
      if (pc.connectionState === "closed") {
        clearInterval(timer);
        return;
      }
      poll(pc, info);
    }, 100);
    return pc;
  }
  Wrapped.prototype = Orig.prototype;
  Object.setPrototypeOf(Wrapped, Orig);
  window.RTCPeerConnection = Wrapped;

  // Remember the webrtc_id / WHEP session the page uses (to grep the gateway's log).
  const origFetch = window.fetch;
  window.fetch = async function (input, init) {
    const url = typeof input === "string" ? input : input && input.url;
    const entry = { url: String(url), method: (init && init.method) || "GET" };
    if (init && typeof init.body === "string") {
      const m = /"webrtc_id"\s*:\s*"([^"]+)"/.exec(init.body);
      if (m) entry.webrtcId = m[1];
    }
    rec.fetches.push(entry);
    const resp = await origFetch.call(this, input, init);
    entry.status = resp.status;
    const loc = resp.headers.get("location");
    if (loc) entry.location = loc;
    const sid = resp.headers.get("x-session-id");
    if (sid) entry.sessionId = sid;
    return resp;
  };
})();
