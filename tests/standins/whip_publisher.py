"""A WHIP publisher for tests: aiortc sending a moving picture to a gateway's WHIP endpoint.

  whip_publisher.py --url http://127.0.0.1:PORT/whip/cam --token TOKEN --codec h264|vp8
                    --size 320x240 [--lifetime 120] [--host-ip 127.0.0.1]

Prints, one per line (flushed):
  STATUS <code> <body>     the answer to the POST (then exits unless it is 201)
  LOCATION <path>          the resource (PATCH/DELETE) of a 201
  CONNECTED                the peer connection is up
  PLI <n>                  a keyframe request (PLI/FIR) arrived; n counts them
  CLOSED <state>           the connection ended (the gateway ended it, or it failed)

H.264 is encoded by PyAV's bundled libx264, VP8 by its libvpx: nothing is downloaded. Host
candidate is loopback (or --host-ip, a local address such as a test veth's): tests send traffic
nowhere else. Stops on SIGTERM/SIGINT, when
the connection ends, or after --lifetime seconds.
"""

import argparse
import asyncio
import signal
import sys
import urllib.error
import urllib.request

import aioice.ice
import av
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription, VideoStreamTrack

# One host candidate (loopback unless --host-ip names another local address): aioice would
# otherwise offer every interface address of the machine.
HOST_IP = "127.0.0.1"
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [HOST_IP]

FPS = 15
PLIS = 0

_send_keyframe = RTCRtpSender._send_keyframe


def counting_send_keyframe(self):
    """aiortc calls this for every PLI and FIR it receives: count and report them."""
    global PLIS
    PLIS += 1
    print(f"PLI {PLIS}", flush=True)
    _send_keyframe(self)


RTCRtpSender._send_keyframe = counting_send_keyframe


class MovingBar(VideoStreamTrack):
    """A grey picture with a white bar that moves one step per frame."""

    def __init__(self, width, height):
        super().__init__()
        self.width, self.height, self.n = width, height, 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        x = (self.n * 8) % self.width
        row = bytearray([96] * self.width)
        row[x : x + 16] = bytes([235] * len(row[x : x + 16]))
        y_plane = bytes(row) * self.height
        frame.planes[0].update(y_plane[: frame.planes[0].buffer_size])
        frame.planes[1].update(bytes([128]) * frame.planes[1].buffer_size)
        frame.planes[2].update(bytes([128]) * frame.planes[2].buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        self.n += 1
        return frame


def post(url, token, sdp):
    req = urllib.request.Request(
        url,
        data=sdp.encode(),
        method="POST",
        headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Location"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, None, e.read().decode(errors="replace")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--codec", choices=["h264", "vp8"], required=True)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--lifetime", type=float, default=120)
    ap.add_argument("--host-ip", default="127.0.0.1")
    args = ap.parse_args()
    global HOST_IP
    HOST_IP = args.host_ip
    width, height = (int(v) for v in args.size.split("x"))

    pc = RTCPeerConnection()
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)

    @pc.on("connectionstatechange")
    async def on_state():
        if pc.connectionState == "connected":
            print("CONNECTED", flush=True)
        elif pc.connectionState in ("failed", "closed"):
            print(f"CLOSED {pc.connectionState}", flush=True)
            done.set()

    transceiver = pc.addTransceiver(MovingBar(width, height), direction="sendonly")
    mime = "video/H264" if args.codec == "h264" else "video/VP8"
    codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == mime]
    transceiver.setCodecPreferences(codecs)
    # aiortc gathers every candidate before the offer is set: no trickle needed.
    await pc.setLocalDescription(await pc.createOffer())
    status, location, body = await asyncio.to_thread(
        post, args.url, args.token, pc.localDescription.sdp
    )
    print(f"STATUS {status} {' '.join(body.split()) if status != 201 else ''}", flush=True)
    if status != 201:
        await pc.close()
        return
    print(f"LOCATION {location}", flush=True)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    try:
        await asyncio.wait_for(done.wait(), args.lifetime)
    except asyncio.TimeoutError:
        pass
    await pc.close()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
