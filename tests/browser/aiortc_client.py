"""A second, independent WebRTC stack: aiortc receives the gateway's video through the
embedded relay over TURN/TCP (turn:HOST:443?transport=tcp).

Run inside the firewalled namespace (UDP leaving it is dropped, so aiortc's host candidates
cannot work and only the relay path can: aiortc has no iceTransportPolicy).

Prints TIMING and RESULT lines like scenario.mjs; on failure a DIAGNOSIS with the gathered
candidates, ICE/DTLS states and the gateway's log lines for the session. Exit 0 only on PASS.
"""

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)


def http_json(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def luma_variance(frame):
    """Variance of a sample of the Y plane (no numpy needed)."""
    f = frame.reformat(format="yuv420p")
    plane = f.planes[0]
    raw = bytes(plane)
    stride = plane.line_size
    vals = []
    for y in range(0, f.height, 8):
        row = raw[y * stride : y * stride + f.width]
        vals.extend(row[::8])
    if not vals:
        return 0.0
    mean = sum(vals) / len(vals)
    return sum((v - mean) ** 2 for v in vals) / len(vals)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="aiortc")
    ap.add_argument("--api", required=True, help="http://HOST:9100")
    ap.add_argument("--gateway-log")
    ap.add_argument("--nft-table")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--port", type=int, default=443, help="embedded relay port to keep")
    a = ap.parse_args()
    name = a.name

    def log(*x):
        print(f"[{name}]", *x, flush=True)

    cfg = http_json(f"{a.api}/api/v1/webrtc/config")
    session = cfg.get("sessionId")
    keep = re.compile(rf"^turn:[^?]+:{a.port}\?transport=tcp$", re.I)
    servers = []
    for s in cfg.get("iceServers", []):
        urls = s["urls"] if isinstance(s["urls"], list) else [s["urls"]]
        urls = [u for u in urls if keep.match(u)]
        if urls:
            servers.append(RTCIceServer(urls=urls, username=s.get("username"), credential=s.get("credential")))
    log("ICE servers:", ", ".join(f"{u} ({s.username})" for s in servers for u in s.urls) or "(none)")

    t0 = time.monotonic()
    timeline = []
    marks = {}
    frames = 0
    variance = None
    first_frame = None
    done = asyncio.Event()

    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))

    @pc.on("iceconnectionstatechange")
    def _ice():
        timeline.append(("ice", pc.iceConnectionState, round((time.monotonic() - t0) * 1000)))
        if pc.iceConnectionState in ("completed", "connected") and "ice" not in marks:
            marks["ice"] = time.monotonic() - t0

    @pc.on("connectionstatechange")
    def _conn():
        timeline.append(("connection", pc.connectionState, round((time.monotonic() - t0) * 1000)))
        if pc.connectionState == "failed":
            done.set()

    async def consume(track):
        nonlocal frames, first_frame, variance
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            frames += 1
            if first_frame is None:
                first_frame = time.monotonic() - t0
            if frames == 10:
                variance = luma_variance(frame)
            if frames >= 30:
                done.set()

    @pc.on("track")
    def _track(track):
        if track.kind == "video":
            asyncio.ensure_future(consume(track))

    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers everything here
    candidates = [l for l in pc.localDescription.sdp.splitlines() if l.startswith("a=candidate:")]
    ans = http_json(
        f"{a.api}/api/v1/projects/default/offer",
        {"webrtc_id": session, "sdp": pc.localDescription.sdp, "type": "offer"},
    )
    await pc.setRemoteDescription(RTCSessionDescription(sdp=ans["sdp"], type=ans["type"]))
    try:
        await asyncio.wait_for(done.wait(), a.timeout)
    except asyncio.TimeoutError:
        pass

    # The selected pair, from aioice's connection.
    selected = None
    dtls_state = None
    try:
        dtls = pc.getTransceivers()[0].receiver.transport
        dtls_state = dtls.state
        conn = dtls.transport._connection
        pair = conn._nominated.get(1)
        if pair:
            lc, rc = pair.local_candidate, pair.remote_candidate
            selected = (lc.type, lc.transport, f"{lc.host}:{lc.port}", rc.type, f"{rc.host}:{rc.port}")
    except Exception as e:  # internals moved: report, do not crash
        selected = None
        log("could not read the selected pair:", e)

    ice_ms = round(marks["ice"] * 1000) if "ice" in marks else None
    ff_ms = round(first_frame * 1000) if first_frame is not None else None
    fmt = lambda v: f"{v}ms" if v is not None else "n/a"
    print(f"TIMING {name} ice_connected={fmt(ice_ms)} first_frame={fmt(ff_ms)} (from RTCPeerConnection creation)")
    failures = []
    if selected:
        log(f"selected pair: local {selected[0]} {selected[2]} -> remote {selected[3]} {selected[4]}; frames={frames} luma variance={variance}")
    if frames < 30:
        failures.append(f"only {frames} decoded frame(s) within {a.timeout:.0f} s")
    if selected and selected[0] != "relay":
        failures.append(f"selected local candidate is {selected[0]}, expected relay")
    if frames >= 10 and (variance is None or variance < 50):
        failures.append(f"decoded frames are uniform (luma variance {variance})")

    if failures:
        print(f"DIAGNOSIS {name}:")
        for f in failures:
            print(f"  failure: {f}")
        print(f"  states: {' '.join(f'{w}={s}@{ms}ms' for w, s, ms in timeline) or '(none)'}; dtls={dtls_state}")
        print(f"  gathered candidates ({len(candidates)}):")
        for c in candidates:
            print(f"    {c}")
        if not any(" typ relay " in c for c in candidates):
            print("HINT: aiortc gathered no relay candidate: the TURN/TCP allocation on the embedded relay failed (credentials, TURN_HOST resolution, or TCP 443 blocked)")
        if a.nft_table:
            out = subprocess.run(["nft", "list", "table", "netdev", a.nft_table], capture_output=True, text=True).stdout
            m = re.search(r"packets (\d+)", out)
            print(f"  firewall: {m.group(1) if m else '?'} UDP packet(s) dropped on the namespace's veth")
        if a.gateway_log and session:
            try:
                lines = [re.sub(r"\x1b\[[0-9;]*m", "", l.rstrip()) for l in open(a.gateway_log, errors="replace") if session in l]
            except OSError:
                lines = []
            print(f"  gateway log ({a.gateway_log}), {len(lines)} line(s) for session {session}:")
            for l in lines[-40:]:
                print(f"    {l}")
        print(f"RESULT {name} FAIL: {'; '.join(failures)}")
    else:
        print(f"RESULT {name} PASS ice_connected={fmt(ice_ms)} first_frame={fmt(ff_ms)}")
    await pc.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
