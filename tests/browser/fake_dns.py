"""A minimal DNS server for a test namespace: answers A queries for one name with one IPv4
address, NOERROR with no answer for other types of that name, NXDOMAIN for anything else.

Listens on 127.0.0.1:53 (UDP) inside the namespace, where resolv.conf points. Chromium's
WebRTC stack resolves STUN/TURN host names through DNS itself (not through
--host-resolver-rules), so without this a `turn:gateway.test:…?transport=udp` URL fails with
"TURN host lookup received error" before any UDP packet reaches the firewall.

    python3 fake_dns.py NAME IPV4
"""

import socket
import struct
import sys


def main():
    name, ip = sys.argv[1].lower().rstrip("."), socket.inet_aton(sys.argv[2])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 53))
    while True:
        q, peer = s.recvfrom(512)
        if len(q) < 12:
            continue
        tid, flags, qd = struct.unpack("!HHH", q[:6])
        if qd != 1:
            continue
        i, labels = 12, []
        while i < len(q) and q[i] != 0:
            n = q[i]
            labels.append(q[i + 1 : i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        question = q[12 : i + 5]
        if len(question) < i - 12 + 5:
            continue
        qtype, _qclass = struct.unpack("!HH", q[i + 1 : i + 5])
        qname = ".".join(labels).lower()
        rd = flags & 0x0100
        if qname != name:
            resp = struct.pack("!HHHHHH", tid, 0x8480 | rd | 3, 1, 0, 0, 0) + question
        elif qtype == 1:
            answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + ip
            resp = struct.pack("!HHHHHH", tid, 0x8480 | rd, 1, 1, 0, 0) + question + answer
        else:
            resp = struct.pack("!HHHHHH", tid, 0x8480 | rd, 1, 0, 0, 0) + question
        s.sendto(resp, peer)


if __name__ == "__main__":
    main()
