"""A stand-in of Geti Instant Learn's WebRTC backend, for tests: aiortc behind Geti's endpoint
shapes, serving a moving VP8 picture.

Endpoints (as Geti's backend answers them):
  GET  /api/v1/system/webrtc/config          {"iceServers": [...]}: as Geti computes them from
                                             COTURN_HOST, COTURN_PORT (3478), COTURN_USERNAME
                                             ("user"), COTURN_PASSWORD ("password") and
                                             STUN_SERVER in the environment (none set: []);
                                             its own RTCPeerConnections use the same list
  POST /api/v1/projects/{id}/offer           {"webrtc_id","sdp","type"} -> {"sdp","type":"answer"}
                                             400 {"detail": "No active pipeline."} while inactive
  GET  /health                               {"status": "ok"}
  GET  /                                     the web application's page (HTML, with the
                                             cross-origin isolation headers Geti's UI sends);
                                             with --ui DIR, DIR/index.html, and DIR's other
                                             files at /<name> (the Geti UI's connection logic)
  GET  /api/v1/projects                      a JSON API endpoint: the projects, the active one
  POST /api/v1/upload                        counts the body's bytes as they arrive (read in
                                             64 KiB pieces, never held): {"bytes": N}
  GET  /api/v1/events                        server-sent events: 3 events, 200 ms apart
  GET  /api/v1/ws                            WebSocket echo (text and binary messages)
With --project UUID only that project's offers are answered (the active project); others get
what Geti answers them, 400 {"detail": "Project ID <id> does not match the active pipeline's
project ID."}; refusals are counted in /test/stats "refusals".
Requests (but /test/*) are counted in /test/stats "requests", the last one's Host and
X-Forwarded-* headers in "forwarded".
Test controls (not Geti's):
  POST /test/pipeline?active=1|0             start or stop the pipeline
  GET  /test/stats                           {"offers", "peers_open", "peers_total",
                                              "keyframe_requests" (PLI/FIR received),
                                              "relay_candidates" (relayed candidates in its
                                              answers: its own TURN allocations)}

The webrtc_id is whatever the client sends (Geti files connections by it and does not know it
in advance). Host candidates are loopback only: tests send traffic nowhere else. HTTP listens
on --host (127.0.0.1 unless a test's own namespace address is given).

Prints "LISTENING <port>" once serving. Stops on SIGTERM/SIGINT or after --lifetime seconds.
"""

import argparse
import asyncio
import os
import base64
import hashlib
import json
import struct
import signal
import sys

import aioice.ice
import av
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
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


PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>Geti stand-in</title></head>
<body><h1 id="app">Geti stand-in</h1><p>The web application the gateway fronts.</p></body></html>
"""

UI_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}


def ice_servers_from_env():
    """Geti's settings.ice_servers: one TURN/TCP entry from COTURN_*, one STUN entry."""
    servers = []
    host = os.environ.get("COTURN_HOST")
    if host:
        servers.append(
            {
                "urls": f"turn:{host}:{os.environ.get('COTURN_PORT', '3478')}?transport=tcp",
                "username": os.environ.get("COTURN_USERNAME", "user"),
                "credential": os.environ.get("COTURN_PASSWORD", "password"),
            }
        )
    if os.environ.get("STUN_SERVER"):
        servers.append({"urls": os.environ["STUN_SERVER"]})
    return servers


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_WS_MESSAGE = 1 << 20


class Backend:
    def __init__(self, active, project=None, ui=None):
        self.active = active
        self.ui = ui
        self.ice_servers = ice_servers_from_env()
        self.relay_candidates = 0
        self.project = project
        self.refusals = 0
        self.requests = 0
        self.forwarded = {}
        self.uploaded = 0
        self.offers = 0
        self.peers = set()
        self.total = 0
        self.keyframe_requests = 0

    async def offer(self, project, body):
        if not self.active:
            self.refusals += 1
            return 400, {"detail": "No active pipeline."}
        if self.project is not None and project != self.project:
            self.refusals += 1
            return 400, {
                "detail": f"Project ID {project} does not match the active pipeline's project ID."
            }
        try:
            req = json.loads(body)
            sdp, kind, webrtc_id = req["sdp"], req.get("type", "offer"), req["webrtc_id"]
        except (ValueError, KeyError, TypeError):
            return 422, {"detail": "webrtc_id and sdp are required"}
        self.offers += 1
        config = RTCConfiguration(iceServers=[RTCIceServer(**s) for s in self.ice_servers])
        pc = RTCPeerConnection(configuration=config)
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
        relayed = pc.localDescription.sdp.count(" typ relay")
        self.relay_candidates += relayed
        print(
            f"OFFER webrtc_id={webrtc_id} peers={len(self.peers)} relay_candidates={relayed}",
            flush=True,
        )
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


async def read_upload(reader, length):
    """Reads and counts `length` bytes in pieces (an upload is never held in memory)."""
    left, total = length, 0
    while left > 0:
        piece = await asyncio.wait_for(reader.read(min(left, 1 << 16)), 30)
        if not piece:
            raise asyncio.IncompleteReadError(b"", left)
        total += len(piece)
        left -= len(piece)
    return total


async def websocket_echo(headers, reader, writer):
    """RFC 6455 server: the handshake, then every text/binary message echoed, pings answered."""
    key = headers.get("sec-websocket-key", "").encode()
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    writer.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
    )
    await writer.drain()
    while True:
        b0, b1 = await asyncio.wait_for(reader.readexactly(2), 60)
        opcode, masked, n = b0 & 0x0F, b1 & 0x80, b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await reader.readexactly(8))
        if n > MAX_WS_MESSAGE or not masked:
            return
        mask = await reader.readexactly(4)
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(await reader.readexactly(n)))
        if opcode == 0x8:
            writer.write(bytes([0x88, 0]))
            await writer.drain()
            return
        reply = {0x1: 0x1, 0x2: 0x2, 0x9: 0xA}.get(opcode)
        if reply is None:
            continue
        head = bytes([0x80 | reply])
        if len(data) < 126:
            head += bytes([len(data)])
        elif len(data) < 1 << 16:
            head += bytes([126]) + struct.pack("!H", len(data))
        else:
            head += bytes([127]) + struct.pack("!Q", len(data))
        writer.write(head + data)
        await writer.drain()


def ui_path(ui, path):
    """The file of the --ui directory `path` names (`/` is index.html), or None."""
    if ui is None:
        return None
    name = "index.html" if path == "/" else path.lstrip("/")
    if "/" in name or name.startswith(".") or os.path.splitext(name)[1] not in UI_TYPES:
        return None
    full = os.path.join(ui, name)
    return full if os.path.isfile(full) else None


def respond(writer, status, doc, content_type="application/json", extra=""):
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 422: "Unprocessable"}.get(
        status, "Error"
    )
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{extra}"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )


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
        path, _, query = target.partition("?")
        if not path.startswith("/test/"):
            backend.requests += 1
            backend.forwarded = {
                k: v for k, v in headers.items() if k.startswith("x-forwarded-") or k == "host"
            }
        if method == "POST" and path == "/api/v1/upload":
            n = await read_upload(reader, length)
            backend.uploaded += n
            respond(writer, 200, {"bytes": n})
            await writer.drain()
            return
        if method == "GET" and path == "/api/v1/ws":
            if headers.get("upgrade", "").lower() != "websocket":
                respond(writer, 400, {"detail": "a WebSocket upgrade is expected"})
                await writer.drain()
                return
            await websocket_echo(headers, reader, writer)
            return
        if method == "GET" and path == "/api/v1/events":
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
            )
            for i in range(3):
                writer.write(f"data: event {i}\n\n".encode())
                await writer.drain()
                await asyncio.sleep(0.2)
            return
        if length > 1 << 20:
            raise ValueError("body too large")
        body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
        parts = path.strip("/").split("/")
        ui_file = ui_path(backend.ui, path) if method == "GET" else None
        if ui_file is not None or (method == "GET" and path == "/"):
            if ui_file is not None:
                with open(ui_file, "rb") as f:
                    page, ctype = f.read(), UI_TYPES[os.path.splitext(ui_file)[1]]
            else:
                page, ctype = PAGE, UI_TYPES[".html"]
            respond(
                writer,
                200,
                page,
                ctype,
                "Cross-Origin-Opener-Policy: same-origin\r\n"
                "Cross-Origin-Embedder-Policy: require-corp\r\nCache-Control: no-store\r\n",
            )
            await writer.drain()
            return
        if method == "GET" and path == "/health":
            status, doc = 200, {"status": "ok"}
        elif method == "GET" and path == "/api/v1/projects":
            status, doc = 200, {
                "projects": [{"id": backend.project or "any", "active": backend.active}]
            }
        elif method == "GET" and path == "/api/v1/system/webrtc/config":
            status, doc = 200, {"iceServers": backend.ice_servers}
        elif (
            method == "POST"
            and len(parts) == 5
            and parts[:3] == ["api", "v1", "projects"]
            and parts[4] == "offer"
        ):
            status, doc = await backend.offer(parts[3], body)
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
                "relay_candidates": backend.relay_candidates,
                "refusals": backend.refusals,
                "requests": backend.requests,
                "uploaded": backend.uploaded,
                "forwarded": backend.forwarded,
            }
        else:
            status, doc = 404, {"detail": "Not Found"}
        respond(writer, status, doc)
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
    ap.add_argument("--project", help="the active project's id (default: every id)")
    ap.add_argument("--host", default="127.0.0.1", help="HTTP listen address")
    ap.add_argument("--ui", help="a directory whose index.html (and files) the backend serves")
    args = ap.parse_args()
    backend = Backend(active=not args.inactive, project=args.project, ui=args.ui)
    server = await asyncio.start_server(
        lambda r, w: handle(backend, r, w), args.host, args.port
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
