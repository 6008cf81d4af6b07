#!/usr/bin/python3
"""What the relay fixture can take without relayq: one STARTTLS+AUTH
session, then N messages of SIZE bytes, pipelined (MAIL, RCPT and DATA in
one write, then the body), as fast as the fixture answers.  Prints JSON
{"n", "seconds", "per_s"}.  Usage: fixture_load.py PORT CA USER PASSWORD N SIZE
"""
import base64
import json
import socket
import ssl
import sys
import time


class Conn:
    def __init__(self, sock):
        self.s = sock
        self.buf = b""

    def reply(self):
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                d = self.s.recv(65536)
                if not d:
                    raise EOFError("relay closed")
                self.buf += d
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def send(self, data):
        self.s.sendall(data)

    def cmd(self, line, want):
        self.send(line + b"\r\n")
        code, lines = self.reply()
        if code != want:
            raise RuntimeError("%r -> %r" % (line, lines))
        return lines


def main():
    port, ca, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    n, size = int(sys.argv[5]), int(sys.argv[6])
    body = b"Subject: fixture load\r\nFrom: a@bench.example\r\n\r\n"
    body += (b"x" * 76 + b"\r\n") * max(1, (size - len(body)) // 78)
    body += b".\r\n"
    t0 = time.perf_counter()
    raw = socket.create_connection(("127.0.0.1", port))
    c = Conn(raw)
    c.reply()
    c.cmd(b"EHLO load.bench", 250)
    c.cmd(b"STARTTLS", 220)
    ctx = ssl.create_default_context(cafile=ca)
    c.s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    c.cmd(b"EHLO load.bench", 250)
    c.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()), 235)
    t1 = time.perf_counter()
    for _ in range(n):
        c.send(b"MAIL FROM:<a@bench.example>\r\nRCPT TO:<rcpt@example.com>\r\nDATA\r\n")
        for want in (250, 250, 354):
            code, lines = c.reply()
            if code != want:
                raise RuntimeError(lines)
        c.send(body)
        code, lines = c.reply()
        if code != 250:
            raise RuntimeError(lines)
    c.cmd(b"QUIT", 221)
    t2 = time.perf_counter()
    print(json.dumps({"n": n, "seconds": t2 - t1, "per_s": n / (t2 - t1),
                      "session_setup_s": t1 - t0}))


if __name__ == "__main__":
    main()
