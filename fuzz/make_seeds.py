#!/usr/bin/env python3
"""Write seed inputs for the fuzz targets (fuzz/corpus/*/seed-*): well-formed packets for the
paths that matter (a Fast Open cookie request and SYN data to the listener on 7, a SYN to the
IPv6 listener on 80, an ACK, a datagram to 53, an ICMP error about the stack's own SYN). The
`ingress` target fixes checksums itself when a packet's flag asks, so these need none."""
import os, struct, ipaddress

def ip4(src, dst, proto, payload):
    total = 20 + len(payload)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, proto, 0,
                       ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed) + payload

def ip6(src, dst, proto, payload):
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), proto, 64,
                       ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed) + payload

def tcp(sport, dport, seq, ack, flags, opts=b"", data=b""):
    opts = opts + b"\0" * (-len(opts) % 4)
    off = (20 + len(opts)) // 4
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, off << 4, flags, 65535, 0, 0) + opts + data

def udp(sport, dport, data):
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data

SYN, ACK, PSH, FIN = 2, 16, 8, 1
mss = b"\x02\x04\x05\xb4"
packets = {
    "cookie-request": ip4("192.0.2.1", "192.0.2.2", 6, tcp(40000, 7, 1000, 0, SYN, mss + b"\x22\x02")),
    "syn-data-bad-cookie": ip4("192.0.2.1", "192.0.2.2", 6, tcp(40001, 7, 2000, 0, SYN, mss + b"\x22\x0a" + b"12345678", b"hello")),
    "syn-v6": ip6("2001:db8::1", "2001:db8::2", 6, tcp(40002, 80, 3000, 0, SYN, mss)),
    "ack": ip4("192.0.2.1", "192.0.2.2", 6, tcp(40000, 7, 1001, 5, ACK, b"", b"data")),
    "fin": ip4("192.0.2.1", "192.0.2.2", 6, tcp(40000, 7, 1005, 5, FIN | ACK)),
    "udp": ip4("192.0.2.1", "192.0.2.2", 17, udp(5353, 53, b"query")),
    "synack-to-client": ip4("192.0.2.1", "192.0.2.2", 6, tcp(9, 49152, 7000, 1, SYN | ACK, mss + b"\x22\x0a" + b"abcdefgh")),
}
quoted = ip4("192.0.2.2", "192.0.2.1", 6, tcp(49152, 9, 12345, 0, SYN))[:28]
icmp = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
packets["icmp-port-unreachable"] = ip4("192.0.2.1", "192.0.2.2", 1, icmp)

here = os.path.dirname(os.path.abspath(__file__))
def write(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

for name, p in packets.items():
    write("wire", name, p)
    write("icmp", name, p)
    write("fast_open", name, p)
    # ingress: [flags (bit 0: fix checksums; the rest: ms to wait after)] [len] [packet]
    write("ingress", name, bytes([0x03]) + struct.pack("!H", len(p)) + p)
# A handshake and a close, in one ingress input.
seq = b"".join(bytes([0x03]) + struct.pack("!H", len(p)) + p for p in
               (packets["cookie-request"], packets["ack"], packets["fin"]))
write("ingress", "handshake", seq)

# offload: [virtio-net header fields, little-endian: flags, gso_type, hdr_len, gso_size,
# csum_start, csum_offset] [packet], with real checksums (the target checks them).
def fold(s):
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return s

def sum16(b):
    b = b + b"\0" * (len(b) % 2)
    return sum(struct.unpack("!%dH" % (len(b) // 2), b))

def tcp_checksummed(p, partial=False):
    v6 = p[0] >> 4 == 6
    hl = 40 if v6 else 20
    src, dst = (p[8:24], p[24:40]) if v6 else (p[12:16], p[16:20])
    seg = p[hl:]
    pseudo = sum16(src) + sum16(dst) + 6 + len(seg)
    ck = fold(pseudo) if partial else (~fold(pseudo + sum16(seg))) & 0xffff
    return p[:hl + 16] + struct.pack("!H", ck) + p[hl + 18:]

def vnet(flags, gso, hdr_len, gso_size, start, off):
    return struct.pack("<BBHHHH", flags, gso, hdr_len, gso_size, start, off)

big = ip4("192.0.2.1", "192.0.2.2", 6, tcp(7, 40000, 5000, 1, ACK, b"", bytes(range(256)) * 12))
big6 = ip6("2001:db8::1", "2001:db8::2", 6, tcp(80, 40002, 5000, 1, ACK, b"", bytes(range(256)) * 12))
write("offload", "plain-syn", vnet(0, 0, 0, 0, 0, 0) + tcp_checksummed(packets["cookie-request"]))
write("offload", "partial-syn-v6", vnet(1, 0, 0, 0, 40, 16) + tcp_checksummed(packets["syn-v6"], True))
write("offload", "gso-v4", vnet(1, 1, 40, 1460, 20, 16) + tcp_checksummed(big, True))
write("offload", "gso-v6", vnet(1, 4, 60, 1440, 40, 16) + tcp_checksummed(big6, True))
write("offload", "data-valid", vnet(2, 0, 0, 0, 0, 0) + big)
