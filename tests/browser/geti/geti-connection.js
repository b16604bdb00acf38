// The Geti Instant Learn UI's stream connection as it ships
// (application/ui/src/features/stream/web-rtc/web-rtc-connection.ts, the provider beside it and
// video.component.tsx in open-edge-platform/geti-instant-learn), rewritten for a plain page so
// the test drives exactly that behaviour against the gateway:
//
// - one id per connection object (a UUID v4 as the `uuid` package makes it: the native
//   crypto.randomUUID where the page is a secure context, else from crypto.getRandomValues, so
//   a page on plain http://host:9100 works too), sent as `webrtc_id`, reused on every
//   Stop -> Start of that object;
// - GET /api/v1/system/webrtc/config, of which only `iceServers` is read (never `sessionId`);
//   any error there means "no ICE servers";
// - RTCPeerConnection with the default configuration besides iceServers (ICE policy "all");
// - one recvonly video transceiver, createOffer / setLocalDescription, then waiting for ICE
//   gathering "complete" with a hard 5 s limit that rejects (start fails and stops);
// - POST {webrtc_id, type, sdp} to /api/v1/projects/{projectId}/offer: a non-2xx answer leaves
//   the data undefined -> status "failed" (and the object stays "active": no start() until
//   stop()); a 200 {"status":"failed","meta":{...}} -> "failed" + error, then
//   setRemoteDescription throws on it and the object stops;
// - status from connectionstatechange (listener added after the answer is applied);
// - stop(): stops the transceivers (and senders' tracks), waits 500 ms, closes the connection,
//   status "idle";
// - start() refuses while a connection is active (connection object present and status neither
//   "idle" nor "disconnected");
// - the video element gets the receivers' tracks when the status becomes "connected".
//
// window.getiApp exposes start/stop for the test and records every event with its time.
"use strict";

(() => {
  const GATHERING_LIMIT_MS = 5000;
  const CLOSE_DELAY_MS = 500;

  function uuidv4() {
    if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  class StreamConnection {
    constructor() {
      this.pc = null;
      this.webrtcId = uuidv4();
      this.status = "idle";
      this.listeners = [];
      this.slowTimer = undefined;
    }

    subscribe(fn) {
      this.listeners.push(fn);
      return () => {
        this.listeners = this.listeners.filter((l) => l !== fn);
      };
    }

    emit(event) {
      for (const l of this.listeners) l(event);
    }

    setStatus(status) {
      this.status = status;
      this.emit({ type: "status_change", status });
    }

    isActive() {
      return this.pc !== null && this.status !== "idle" && this.status !== "disconnected";
    }

    async iceServers() {
      try {
        const r = await fetch("/api/v1/system/webrtc/config");
        if (!r.ok) {
          console.warn("WebRTC config request failed; no ICE servers");
          return [];
        }
        const body = await r.json();
        return body.iceServers.map((s) => ({
          urls: s.urls,
          username: s.username ?? undefined,
          credential: s.credential ?? undefined,
        }));
      } catch (e) {
        console.warn("WebRTC config request threw:", e);
        return [];
      }
    }

    gatheringComplete() {
      const done = new Promise((resolve) => {
        const pc = this.pc;
        if (!pc || pc.iceGatheringState === "complete") {
          resolve();
          return;
        }
        const onChange = () => {
          if (this.pc && this.pc.iceGatheringState === "complete") {
            this.pc.removeEventListener("icegatheringstatechange", onChange);
            resolve();
          }
        };
        pc.addEventListener("icegatheringstatechange", onChange);
      });
      const limit = new Promise((_, reject) => {
        setTimeout(() => reject(new Error("ICE gathering timed out")), GATHERING_LIMIT_MS);
      });
      return Promise.race([done, limit]);
    }

    // openapi-fetch semantics: `data` is the parsed body of a 2xx answer, undefined otherwise.
    async postOffer(projectId) {
      if (this.pc === null || this.pc.localDescription === null) throw new Error("Local description is not set");
      const r = await fetch(`/api/v1/projects/${encodeURIComponent(projectId)}/offer`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          webrtc_id: this.webrtcId,
          type: this.pc.localDescription.type,
          sdp: this.pc.localDescription.sdp,
        }),
      });
      if (!r.ok) {
        await r.text().catch(() => "");
        return undefined;
      }
      return await r.json();
    }

    async applyAnswer(data) {
      if (data === undefined) {
        this.setStatus("failed");
        return;
      }
      if ("status" in data && data.status === "failed") {
        const meta = data.meta || {};
        const message =
          meta.error === "concurrency_limit_reached" ? `Too many connections. Maximum limit is ${meta.limit}` : meta.error;
        this.setStatus("failed");
        this.emit({ type: "error", error: new Error(message) });
      }
      if (this.pc) await this.pc.setRemoteDescription(data);
    }

    watchState() {
      if (this.pc === null) return;
      this.pc.addEventListener("connectionstatechange", () => {
        if (this.pc === null) return;
        const s = this.pc.connectionState;
        if (s === "connected") {
          this.setStatus("connected");
          clearTimeout(this.slowTimer);
        } else if (s === "disconnected" || s === "closed") {
          this.setStatus("disconnected");
        } else if (s === "failed") {
          this.setStatus("failed");
          this.emit({ type: "error", error: new Error("WebRTC connection failed.") });
        } else {
          this.setStatus("connecting");
        }
      });
    }

    async start(projectId) {
      if (this.isActive()) {
        console.warn("WebRTC connection is already active or in progress.");
        return;
      }
      try {
        this.setStatus("connecting");
        const iceServers = await this.iceServers();
        this.pc = new RTCPeerConnection({ iceServers });
        this.slowTimer = setTimeout(() => console.warn("Connection is taking longer than usual."), GATHERING_LIMIT_MS);
        this.pc.addTransceiver("video", { direction: "recvonly" });
        const offer = await this.pc.createOffer();
        await this.pc.setLocalDescription(offer);
        await this.gatheringComplete();
        const data = await this.postOffer(projectId);
        await this.applyAnswer(data);
        this.watchState();
      } catch (e) {
        clearTimeout(this.slowTimer);
        this.setStatus("failed");
        this.emit({ type: "error", error: e });
        await this.stop();
      }
    }

    async stop() {
      if (this.pc === null) return;
      for (const t of this.pc.getTransceivers()) t.stop();
      for (const s of this.pc.getSenders()) if (s.track) s.track.stop();
      await new Promise((resolve) =>
        setTimeout(() => {
          if (this.pc) {
            this.pc.close();
            this.pc = null;
            this.setStatus("idle");
          }
          resolve();
        }, CLOSE_DELAY_MS),
      );
    }
  }

  // The provider and the video component: one connection object for the page's lifetime.
  const video = document.getElementById("video");
  const statusEl = document.getElementById("status");
  const conn = new StreamConnection();
  const t0 = performance.now();
  const events = [];
  conn.subscribe((e) => {
    const at = Math.round(performance.now() - t0);
    if (e.type === "status_change") {
      events.push({ at, status: e.status });
      statusEl.dataset.status = e.status;
      statusEl.textContent = e.status;
      if (e.status === "connected" && conn.pc) {
        video.srcObject = new MediaStream(conn.pc.getReceivers().map((r) => r.track));
      }
    } else {
      events.push({ at, error: String(e.error && e.error.message ? e.error.message : e.error) });
      console.error("WebRTC error:", e.error);
    }
  });
  const projectId = new URLSearchParams(location.search).get("project") || "default";
  window.getiApp = {
    webrtcId: conn.webrtcId,
    events,
    start: () => conn.start(projectId),
    stop: () => conn.stop(),
    status: () => conn.status,
    active: () => conn.isActive(),
  };
})();
