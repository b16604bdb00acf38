#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ (run from anywhere; rewrites the seed files).

Messages are encoded here by hand, independently of the Rust codecs: STUN (RFC 8489) with
attribute padding, XOR addresses, long-term MESSAGE-INTEGRITY and FINGERPRINT, the TURN
requests and indications the relay handles (RFC 8656), and ChannelData with stream padding.
"""
import hashlib
import hmac
import ipaddress
import os
import struct
import zlib

COOKIE = 0x2112A442
HERE = os.path.dirname(os.path.abspath(__file__))

USER, REALM, PASSWORD = b"1700000000:fuzz", b"example.org", b"pass"
NONCE = b"obMatJos2gAAAadl7W7PeDU4hKE72jda"


def attr(atype, value):
    pad = (-len(value)) % 4
    return struct.pack("!HH", atype, len(value)) + value + b"\0" * pad


def xor_addr(atype, ip, port, tid):
    ip = ipaddress.ip_address(ip)
    xport = port ^ (COOKIE >> 16)
    if ip.version == 4:
        xip = struct.pack("!I", int(ip) ^ COOKIE)
        return attr(atype, struct.pack("!BBH", 0, 1, xport) + xip)
    key = struct.pack("!I", COOKIE) + tid
    xip = bytes(a ^ b for a, b in zip(ip.packed, key))
    return attr(atype, struct.pack("!BBH", 0, 2, xport) + xip)


def message(mtype, tid, attrs, integrity=False, fingerprint=True):
    body = b"".join(attrs)

    def header(length):
        return struct.pack("!HHI", mtype, length, COOKIE) + tid

    if integrity:
        key = hashlib.md5(USER + b":" + REALM + b":" + PASSWORD).digest()
        mac = hmac.new(key, header(len(body) + 24) + body, hashlib.sha1).digest()
        body += attr(0x0008, mac)
    if fingerprint:
        crc = zlib.crc32(header(len(body) + 8) + body) ^ 0x5354554E
        body += attr(0x8028, struct.pack("!I", crc))
    return header(len(body)) + body


def channel_data(channel, data, stream=True):
    out = struct.pack("!HH", channel, len(data)) + data
    if stream:
        out += b"\0" * ((-len(out)) % 4)
    return out


def tid(n):
    return bytes([n]) * 12


def auth():
    return [attr(0x0006, USER), attr(0x0014, REALM), attr(0x0015, NONCE)]


BINDING = message(0x0001, tid(1), [attr(0x8022, b"seed")])
ALLOCATE_NOAUTH = message(0x0003, tid(2), [attr(0x0019, bytes([17, 0, 0, 0]))])
ALLOCATE = message(
    0x0003, tid(3),
    [attr(0x0019, bytes([17, 0, 0, 0])), attr(0x000D, struct.pack("!I", 600))] + auth(),
    integrity=True,
)
ALLOCATE_V6 = message(
    0x0003, tid(4),
    [attr(0x0019, bytes([17, 0, 0, 0])), attr(0x0017, bytes([2, 0, 0, 0]))] + auth(),
    integrity=True,
)
UNAUTHORIZED = message(
    0x0113, tid(2),
    [attr(0x0009, struct.pack("!HBB", 0, 4, 1) + b"Unauthorized"),
     attr(0x0014, REALM), attr(0x0015, NONCE)],
)
ALLOCATE_OK = message(
    0x0103, tid(3),
    [xor_addr(0x0016, "198.51.100.7", 49152, tid(3)),
     xor_addr(0x0020, "203.0.113.9", 40000, tid(3)),
     attr(0x000D, struct.pack("!I", 600))],
    integrity=True,
)
CREATE_PERMISSION = message(
    0x0008, tid(5),
    [xor_addr(0x0012, "192.0.2.10", 0, tid(5)),
     xor_addr(0x0012, "2001:db8::10", 0, tid(5))] + auth(),
    integrity=True,
)
CHANNEL_BIND = message(
    0x0009, tid(6),
    [attr(0x000C, struct.pack("!HH", 0x4001, 0)),
     xor_addr(0x0012, "192.0.2.10", 5000, tid(6))] + auth(),
    integrity=True,
)
REFRESH = message(0x0004, tid(7), [attr(0x000D, struct.pack("!I", 0))] + auth(), integrity=True)
SEND = message(
    0x0016, tid(8),
    [xor_addr(0x0012, "192.0.2.10", 5000, tid(8)), attr(0x0013, b"hello peer")],
    fingerprint=False,
)
DATA_IND = message(
    0x0017, tid(9),
    [xor_addr(0x0012, "2001:db8::10", 6000, tid(9)), attr(0x0013, b"\x80\x60rtp")],
    fingerprint=False,
)

STUN = {
    "binding-request": BINDING,
    "allocate-noauth": ALLOCATE_NOAUTH,
    "allocate-auth": ALLOCATE,
    "allocate-ipv6": ALLOCATE_V6,
    "allocate-401": UNAUTHORIZED,
    "allocate-success": ALLOCATE_OK,
    "create-permission": CREATE_PERMISSION,
    "channel-bind": CHANNEL_BIND,
    "refresh-delete": REFRESH,
    "send-indication": SEND,
    "data-indication": DATA_IND,
}
CD = {
    "channeldata-empty": channel_data(0x4000, b""),
    "channeldata-1": channel_data(0x4001, b"x"),
    "channeldata-7-udp": channel_data(0x4FFF, b"payload", stream=False),
    "channeldata-rtp": channel_data(0x4001, bytes(range(48))),
}

SESSION = ALLOCATE_NOAUTH + ALLOCATE + CREATE_PERMISSION + CHANNEL_BIND
SESSION += channel_data(0x4001, b"a") + channel_data(0x4001, b"abcdef") + SEND + REFRESH
FRAMER = {
    # [config, chunk_seed] + stream; see fuzz_targets/framer.rs.
    "session-whole": bytes([0, 0]) + SESSION,
    "session-chunked": bytes([0, 6]) + SESSION,
    "session-readbuf-small": bytes([4, 7]) + SESSION,
    "session-limit-1500": bytes([1, 3]) + SESSION,
    "channeldata-run": bytes([2, 1]) + b"".join(
        channel_data(0x4000 + i, bytes(i)) for i in range(17)),
    "partial-tail": bytes([0, 2]) + BINDING + CHANNEL_BIND[:30],
    "too-long": bytes([3 | (8 << 3), 0]) + channel_data(0x4002, bytes(60)),
    "garbage-after-stun": bytes([0, 5]) + BINDING + b"POST / HTTP/1.1\r\n\r\n",
    "tls-client-hello": bytes([0, 0]) + bytes.fromhex("160301020001") + bytes(8),
}


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)



# --- RTP ingest (fuzz_targets/rtp_depacketizer.rs) -----------------------------------------
# RTP (RFC 3550) with H.264 (RFC 6184: single NAL, STAP-A, FU-A) or VP8 (RFC 7741)
# payloads, and RTCP muxed on the same port. Input: [flags] + (sender, dt, len u16, datagram)*.


def rtp(seq, ts, payload, marker=False, pt=96, ssrc=0x1234ABCD, csrcs=0, ext=b"", pad=0):
    b0 = 0x80 | (0x20 if pad else 0) | (0x10 if ext else 0) | csrcs
    head = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, ssrc)
    head += b"\x00\x00\x00\x01" * csrcs
    if ext:
        head += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    tail = (b"\x00" * (pad - 1) + bytes([pad])) if pad else b""
    return head + payload + tail


def rtcp_sr(ssrc=0x1234ABCD):
    # Sender report, no report blocks (PT 200), then an SDES CNAME (PT 202).
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 0xE0000000, 0, 90000, 10, 1000)
    cname = b"\x01\x04cam0"
    chunk = struct.pack("!I", ssrc) + cname + b"\x00" * ((-len(cname)) % 4 or 4)
    sdes = struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk
    return sr + sdes


def rtcp_rr():
    return struct.pack("!BBHI", 0x80, 201, 1, 0x5555)


def datagrams(items, sender=0, dt=3):
    out = b""
    for d in items:
        out += bytes([sender, dt]) + struct.pack("!H", len(d)) + d
    return out


SPS = bytes.fromhex("6742c01fda01e0089f961000000300100000030320f1831a80")
PPS = bytes.fromhex("68ce3c80")
IDR = b"\x65\x88\x84" + bytes(range(200))
P_FRAME = b"\x41\x9a\x02" + bytes(range(60))


def stap_a(*nals):
    return b"\x18" + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def fu_a(nal, size):
    header, body = nal[0], nal[1:]
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    out = []
    for i, part in enumerate(parts):
        fu = (header & 0x1F) | (0x80 if i == 0 else 0) | (0x40 if i == len(parts) - 1 else 0)
        out.append(bytes([(header & 0xE0) | 28, fu]) + part)
    return out


def h264_session(ssrc=0x1234ABCD):
    pk, seq = [], 100
    # Frame 1 (keyframe): SPS and PPS aggregated, the IDR in FU-A fragments.
    frame1 = [stap_a(SPS, PPS)] + fu_a(IDR, 70)
    for i, p in enumerate(frame1):
        pk.append(rtp(seq, 3000, p, marker=i == len(frame1) - 1, ssrc=ssrc))
        seq += 1
    pk.append(rtcp_sr(ssrc))
    # Frame 2: a single-NAL P frame with a header extension, CSRCs and padding.
    pk.append(rtp(seq, 6000, P_FRAME, marker=True, ssrc=ssrc, csrcs=1, ext=b"\x10\xff\x00\x00", pad=4))
    seq += 1
    # Frame 3: a keyframe as single NALs.
    for i, n in enumerate([SPS, PPS, IDR]):
        pk.append(rtp(seq, 9000, n, marker=i == 2, ssrc=ssrc))
        seq += 1
    pk.append(rtcp_rr())
    return pk


def vp8_frame(key, size=80):
    body = bytes(range(size % 256)) * (size // 256 + 1)
    body = body[:size]
    first_part = min(size, 40)
    if key:
        tag = (first_part << 5) | (0 << 1) | 0x10 | 0  # keyframe bit 0, version 0, show_frame
        head = struct.pack("<I", tag)[:3] + b"\x9d\x01\x2a" + struct.pack("<HH", 320, 240)
    else:
        tag = (first_part << 5) | 0x10 | 1
        head = struct.pack("<I", tag)[:3]
    return head + body


def vp8_session():
    pk, seq = [], 7
    key = vp8_frame(True, 150)
    # Keyframe in two packets: descriptor with PictureID (X, I, M: 15 bits), start then not.
    pk.append(rtp(seq, 1000, b"\x90\x80\x81\x23" + key[:70]))
    pk.append(rtp(seq + 1, 1000, b"\x80\x80\x81\x23" + key[70:], marker=True))
    pk.append(rtcp_sr())
    # Inter frame, minimal descriptor.
    pk.append(rtp(seq + 2, 4000, b"\x10" + vp8_frame(False, 30), marker=True))
    return pk


h264 = h264_session()
vp8 = vp8_session()
RTP_SEEDS = {
    "h264-session": bytes([0]) + datagrams(h264),
    "h264-fixed-sender": bytes([2]) + datagrams(h264),
    "h264-loss": bytes([0]) + datagrams(h264[:3] + h264[4:]),
    "h264-two-senders": bytes([0]) + datagrams(h264[:4]) + datagrams(h264_session(0x99)[:4], sender=1)
    + datagrams(h264_session(0x99), sender=1, dt=150),
    "h264-rtcp-only": bytes([0]) + datagrams([rtcp_sr(), rtcp_rr(), b"\x80\xc8"]),
    "vp8-session": bytes([1]) + datagrams(vp8),
    "vp8-reordered": bytes([1]) + datagrams([vp8[1], vp8[0], vp8[3], vp8[2]]),
}

# --- SDP checks (fuzz_targets/sdp_checks.rs) -------------------------------------------------
# A browser-like offer (Chromium's order: VP8 first, H.264 packetization-mode=1), variants,
# and trickle-ICE sdpfrag bodies (RFC 8840).


def sdp(lines):
    return ("\r\n".join(lines) + "\r\n").encode()


OFFER = [
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:Fz9q",
    "a=ice-pwd:0123456789abcdefghijklmn",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
    "a=setup:actpass",
    "a=mid:0",
    "a=recvonly",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000",
    "a=rtcp-fb:102 nack pli",
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "a=rtpmap:103 rtx/90000",
    "a=fmtp:103 apt=102",
    "a=candidate:1 1 udp 2122260223 192.0.2.10 50000 typ host",
]
FRAG = [
    "a=ice-ufrag:Fz9q",
    "a=ice-pwd:0123456789abcdefghijklmn",
    "m=video 9 UDP/TLS/RTP/SAVPF 0",
    "a=mid:0",
    "a=candidate:1 1 udp 2122260223 192.0.2.10 50000 typ host",
    "a=candidate:2 1 udp 1686052607 203.0.113.5 61000 typ srflx raddr 192.0.2.10 rport 50000",
    "a=candidate:3 1 udp 2122260223 4a7b5c2e-1.local 50001 typ host",
    "a=end-of-candidates",
]
SDP_SEEDS = {
    "offer-chromium": sdp(OFFER),
    "offer-h264-only": sdp([l.replace(" 96 97 102 103", " 102 103") for l in OFFER
                            if ":96 " not in l and ":97 " not in l]),
    "offer-h264-mode0": sdp([l.replace("packetization-mode=1", "packetization-mode=0") for l in OFFER]),
    "offer-audio-only": sdp([l.replace("m=video 9", "m=audio 9").replace("VP8/90000", "opus/48000/2") for l in OFFER]),
    "offer-video-disabled": sdp([l.replace("m=video 9", "m=video 0") for l in OFFER]),
    "offer-bad-line": sdp(OFFER[:5] + ["this is not sdp"] + OFFER[5:]),
    "offer-lf-only": "\n".join(OFFER).encode(),
    "sdpfrag-trickle": sdp(FRAG),
    "sdpfrag-end-only": sdp(["a=end-of-candidates"]),
    "if-match": b'"Fz9q", W/"x", *',
}

# --- HTTP demux (fuzz_targets/http_demux.rs) ------------------------------------------------
# What clients send first on the shared port: HTTP requests the gateway serves, a TLS
# ClientHello record header and a STUN Binding (sniffed, not served here).

TOKEN = b"fuzz-api-token-0123456789"
HTTP_SEEDS = {
    "get-health": b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n",
    "get-metrics-keepalive": b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\nGET /health HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    "credentials-no-token": b"GET /api/v1/turn/credentials?service=turn&username=a HTTP/1.1\r\nHost: gw\r\n\r\n",
    "credentials-token": b"GET /api/v1/turn/credentials?service=turn&username=a HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + TOKEN + b"\r\n\r\n",
    "credentials-wrong-token": b"GET /api/v1/turn/credentials HTTP/1.1\r\nHost: gw\r\nAuthorization: Basic Zm9vOmJhcg==\r\n\r\n",
    "whep-post": b"POST /whep HTTP/1.1\r\nHost: gw\r\nContent-Type: application/sdp\r\nContent-Length: 12\r\n\r\nv=0\r\ns=-\r\nt=",
    "whep-options-cors": b"OPTIONS /whep HTTP/1.1\r\nHost: gw\r\nOrigin: https://viewer.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n",
    "whep-patch-if-match": b"PATCH /whep/abc HTTP/1.1\r\nHost: gw\r\nIf-Match: \"x\"\r\nContent-Type: application/trickle-ice-sdpfrag\r\nContent-Length: 20\r\n\r\na=end-of-candidates\n",
    "offer-json": b"POST /api/v1/projects/p1/offer HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"sdp\r\n0\r\n\r\n",
    "webrtc-config": b"GET /api/v1/webrtc/config HTTP/1.1\r\nHost: gw\r\n\r\n",
    "index": b"GET / HTTP/1.1\r\nHost: gw\r\nAccept-Encoding: gzip\r\n\r\n",
    "smuggling": b"POST /health HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n",
    "partial-head": b"GET /health HTTP/1.1\r\nHost: g",
    "tls-client-hello": bytes.fromhex("160301020001") + bytes(8),
    "stun-binding": BINDING,
}

write("stun_codec", {**STUN, **CD})
write("framer", FRAMER)
write("rtp_depacketizer", RTP_SEEDS)
write("sdp_checks", SDP_SEEDS)
write("http_demux", HTTP_SEEDS)
