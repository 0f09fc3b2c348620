#!/usr/bin/env python3
"""A second implementation of peershare's secure handshake, for tests/secure.rs.

Usage: secure_vector.py HOST:PORT EXPECTED_FINGERPRINT

Built only on Python's `ssl` module and the `openssl` command (no peershare code, no MessagePack
library): makes an Ed25519 key and a self-signed certificate with `openssl`, connects with
TLS 1.3, ALPN "peershare/1" and that certificate as its client certificate, checks the server's
Ed25519 key itself against EXPECTED_FINGERPRINT (lowercase base32 of the 32 key bytes, no
padding), then sends a hand-encoded Hello frame and reads the Welcome frame.

Prints the cipher suite negotiated and the Welcome's fields and exits 0; on any mismatch prints
one line on stderr and exits 1.
"""

import base64
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile

ALPN = "peershare/1"
# DER SubjectPublicKeyInfo of an Ed25519 key, before its 32 key bytes (RFC 8410).
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
TAG_HELLO, TAG_WELCOME, TAG_ERROR = 0x01, 0x02, 0x03
TIMEOUT = 10.0


class Mismatch(Exception):
    pass


def fingerprint(key):
    return base64.b32encode(key).decode("ascii").lower().rstrip("=")


def make_identity(workdir):
    key = os.path.join(workdir, "key.pem")
    cert = os.path.join(workdir, "cert.pem")
    for cmd in (
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", key],
        ["openssl", "req", "-new", "-x509", "-key", key, "-out", cert,
         "-subj", "/CN=peershare", "-days", "36500"],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise Mismatch(f"{cmd[0]} {cmd[1]} failed: {last}")
    return cert, key


# MessagePack, by hand: just what a Hello needs and a Welcome holds.

def mp_str(s):
    b = s.encode("utf-8")
    if len(b) < 32:
        return bytes([0xA0 | len(b)]) + b
    if len(b) < 256:
        return bytes([0xD9, len(b)]) + b
    return b"\xda" + struct.pack(">H", len(b)) + b


def mp_uint(n):
    if n < 128:
        return bytes([n])
    if n < 256:
        return bytes([0xCC, n])
    if n < 65536:
        return b"\xcd" + struct.pack(">H", n)
    return b"\xce" + struct.pack(">I", n)


def hello_frame(agent):
    # Keys in the order of docs/PROTOCOL.md §5; no "features" key (a client knowing none).
    fields = [("version_min", mp_uint(1)), ("version_max", mp_uint(1)), ("agent", mp_str(agent))]
    payload = bytes([0x80 | len(fields)]) + b"".join(mp_str(k) + v for k, v in fields)
    return struct.pack(">I", 1 + len(payload)) + bytes([TAG_HELLO]) + payload


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise Mismatch("truncated MessagePack in the reply")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def uint(self, n):
        return int.from_bytes(self.take(n), "big")

    def value(self):
        t = self.take(1)[0]
        if t <= 0x7F:
            return t
        if t >= 0xE0:
            return t - 0x100
        if 0x80 <= t <= 0x8F:
            return self.map(t & 0x0F)
        if 0x90 <= t <= 0x9F:
            return [self.value() for _ in range(t & 0x0F)]
        if 0xA0 <= t <= 0xBF:
            return self.take(t & 0x1F).decode("utf-8")
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if t in simple:
            return simple[t]
        sizes = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
        if t in sizes:
            return self.uint(sizes[t])
        sizes = {0xC4: 1, 0xC5: 2, 0xC6: 4}
        if t in sizes:
            return bytes(self.take(self.uint(sizes[t])))
        sizes = {0xD9: 1, 0xDA: 2, 0xDB: 4}
        if t in sizes:
            return self.take(self.uint(sizes[t])).decode("utf-8")
        if t in (0xDC, 0xDD):
            return [self.value() for _ in range(self.uint(2 if t == 0xDC else 4))]
        if t in (0xDE, 0xDF):
            return self.map(self.uint(2 if t == 0xDE else 4))
        raise Mismatch(f"MessagePack type 0x{t:02x} not expected in a Welcome")

    def map(self, n):
        return {self.value(): self.value() for _ in range(n)}


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise Mismatch(f"connection closed after {len(buf)} of {n} bytes of a frame")
        buf += chunk
    return buf


def run(addr, expected):
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    with tempfile.TemporaryDirectory() as workdir:
        cert, key = make_identity(workdir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # no CA: the server's key is checked below
        ctx.set_alpn_protocols([ALPN])
        ctx.load_cert_chain(cert, key)
        raw = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    with ctx.wrap_socket(raw, server_hostname=None) as tls:
        tls.settimeout(TIMEOUT)
        if tls.version() != "TLSv1.3":
            raise Mismatch(f"negotiated {tls.version()}, not TLSv1.3")
        if tls.selected_alpn_protocol() != ALPN:
            raise Mismatch(f"ALPN {tls.selected_alpn_protocol()!r} agreed, not {ALPN!r}")
        der = tls.getpeercert(binary_form=True)
        if not der:
            raise Mismatch("the server sent no certificate")
        at = der.find(ED25519_SPKI_PREFIX)
        if at < 0 or at + len(ED25519_SPKI_PREFIX) + 32 > len(der):
            raise Mismatch("the server's certificate carries no Ed25519 key")
        start = at + len(ED25519_SPKI_PREFIX)
        found = fingerprint(der[start:start + 32])
        if found != expected:
            raise Mismatch(f"the server holds the key {found}, not the expected {expected}")
        cipher = tls.cipher()[0]

        tls.sendall(hello_frame("vector/1"))
        length = struct.unpack(">I", read_exact(tls, 4))[0]
        if not 1 <= length <= 1048577:
            raise Mismatch(f"frame length {length} out of range")
        body = read_exact(tls, length)
        tag, payload = body[0], body[1:]
        r = Reader(payload)
        fields = r.value()
        if r.pos != len(payload) or not isinstance(fields, dict):
            raise Mismatch("the reply's payload is not one MessagePack map")
        if tag == TAG_ERROR:
            raise Mismatch(f"the server answered Error {fields.get('code')}: {fields.get('message')}")
        if tag != TAG_WELCOME:
            raise Mismatch(f"the server answered tag 0x{tag:02x}, not Welcome (0x02)")
        version = fields.get("version")
        if version != 1:
            raise Mismatch(f"Welcome version {version!r}, not 1")
        nonce = fields.get("nonce")
        if not isinstance(nonce, bytes) or len(nonce) != 32:
            raise Mismatch("Welcome nonce is not 32 bytes")
        print(f"cipher {cipher}")
        print(f"welcome version {version} agent {fields.get('agent')!r}")
        print(f"server key {found}")
    return 0


def main(argv):
    if len(argv) != 3:
        print("usage: secure_vector.py HOST:PORT EXPECTED_FINGERPRINT", file=sys.stderr)
        return 2
    try:
        return run(argv[1], argv[2].strip().lower())
    except Mismatch as e:
        print(f"secure_vector: {e}", file=sys.stderr)
    except (OSError, ssl.SSLError, ValueError, subprocess.SubprocessError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"secure_vector: {type(e).__name__}: {msg}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
