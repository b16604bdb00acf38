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


write("stun_codec", {**STUN, **CD})
write("framer", FRAMER)
