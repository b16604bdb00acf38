"""A stand-in of Geti Instant Learn's WebRTC backend, for tests: aiortc behind Geti's endpoint
shapes, serving a moving VP8 picture.

Endpoints (as Geti's backend answers them):
  GET  /api/v1/system/webrtc/config          {"iceServers": []}
  POST /api/v1/projects/{id}/offer           {"webrtc_id","sdp","type"} -> {"sdp","type":"answer"}
                                             400 {"detail": "No active pipeline."} while inactive
Test controls (not Geti's):
  POST /test/pipeline?active=1|0             start or stop the pipeline
  GET  /test/stats                           {"offers", "peers_open", "peers_total",
                                              "keyframe_requests" (PLI/FIR received)}

The webrtc_id is whatever the client sends (Geti files connections by it and does not know it
in advance). Host candidates are loopback only: tests send traffic nowhere else.

Prints "LISTENING <port>" once serving. Stops on SIGTERM/SIGINT or after --lifetime seconds.
"""

import argparse
import asyncio
import json
import signal
import sys

import aioice.ice
import av
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription, VideoStreamTrack
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket

# Loopback only: aioice would otherwise offer every interface address of the machine.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

WIDTH, HEIGHT, FPS = 320, 240, 15


class MovingBar(VideoStreamTrack):
    """A grey picture with a white bar that moves one step per frame."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        x = (self.n * 8) % WIDTH
        row = bytearray([96] * WIDTH)
        row[x : x + 16] = bytes([235] * len(row[x : x + 16]))
        y_plane = bytes(row) * HEIGHT
        frame.planes[0].update(y_plane[: frame.planes[0].buffer_size])
        frame.planes[1].update(bytes([128]) * frame.planes[1].buffer_size)
        frame.planes[2].update(bytes([128]) * frame.planes[2].buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        self.n += 1
        return frame


class Backend:
    def __init__(self, active):
        self.active = active
        self.offers = 0
        self.peers = set()
        self.total = 0
        self.keyframe_requests = 0

    async def offer(self, body):
        if not self.active:
            return 400, {"detail": "No active pipeline."}
        try:
            req = json.loads(body)
            sdp, kind, webrtc_id = req["sdp"], req.get("type", "offer"), req["webrtc_id"]
        except (ValueError, KeyError, TypeError):
            return 422, {"detail": "webrtc_id and sdp are required"}
        self.offers += 1
        pc = RTCPeerConnection()
        self.peers.add(pc)
        self.total += 1

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState in ("failed", "closed"):
                self.peers.discard(pc)
                await pc.close()

        # VP8 only, set before the offer is applied: aiortc picks the codecs then.
        transceiver = pc.addTransceiver(MovingBar(), direction="sendonly")
        vp8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/VP8"]
        transceiver.setCodecPreferences(vp8)
        self.count_keyframe_requests(transceiver.sender)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        print(f"OFFER webrtc_id={webrtc_id} peers={len(self.peers)}", flush=True)
        return 200, {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    def count_keyframe_requests(self, sender):
        """Counts the PLI/FIR the peer sends (aiortc answers them with a keyframe itself)."""
        handle = sender._handle_rtcp_packet

        async def counting(packet):
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                self.keyframe_requests += 1
                print(f"KEYFRAME REQUEST total={self.keyframe_requests}", flush=True)
            await handle(packet)

        sender._handle_rtcp_packet = counting

    async def stop_pipeline(self):
        self.active = False
        for pc in list(self.peers):
            await pc.close()
        self.peers.clear()


async def handle(backend, reader, writer):
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        if length > 1 << 20:
            raise ValueError("body too large")
        body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
        path, _, query = target.partition("?")
        parts = path.strip("/").split("/")
        if method == "GET" and path == "/api/v1/system/webrtc/config":
            status, doc = 200, {"iceServers": []}
        elif (
            method == "POST"
            and len(parts) == 5
            and parts[:3] == ["api", "v1", "projects"]
            and parts[4] == "offer"
        ):
            status, doc = await backend.offer(body)
        elif method == "POST" and path == "/test/pipeline":
            if "active=1" in query:
                backend.active = True
            else:
                await backend.stop_pipeline()
            status, doc = 200, {"active": backend.active}
        elif method == "GET" and path == "/test/stats":
            status, doc = 200, {
                "offers": backend.offers,
                "peers_open": len(backend.peers),
                "peers_total": backend.total,
                "keyframe_requests": backend.keyframe_requests,
            }
        else:
            status, doc = 404, {"detail": "Not Found"}
        payload = json.dumps(doc).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 422: "Unprocessable"}.get(
            status, "Error"
        )
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--inactive", action="store_true", help="start with no pipeline")
    ap.add_argument("--lifetime", type=float, default=300.0)
    args = ap.parse_args()
    backend = Backend(active=not args.inactive)
    server = await asyncio.start_server(
        lambda r, w: handle(backend, r, w), "127.0.0.1", args.port
    )
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.lifetime)
    except asyncio.TimeoutError:
        pass
    await backend.stop_pipeline()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
