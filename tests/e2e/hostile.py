#!/usr/bin/python3
"""Scripted hostile SMTP servers for relayq's fault and attack tests.

FakeRelay (fakerelay.py) is a well-behaved aiosmtpd server with fault
knobs; this module is for what aiosmtpd cannot say: raw reply bytes
(oversized, NUL, bare LF, mismatched codes), bytes injected right after
"220 ready for TLS", a greeting that stalls half-way, different EHLO
capabilities before and after STARTTLS.  One thread per connection,
blocking sockets, 127.0.0.1 only.

    srv = HostileServer(tls_ctx=ctx, user=U, password=P)
    srv.replies["rcpt"] = {"victim@example.com": b"550 5.1.1 x\\x00y\\r\\n"}
    srv.start()            # srv.port
    ...
    srv.stop()

The dialogue, unless a knob changes it:
  greeting   "220 hostile.test ESMTP"
  EHLO       250 with caps_pre (before TLS) or caps_post (after TLS);
             by default STARTTLS is offered (with a tls_ctx) before TLS,
             AUTH PLAIN LOGIN after it (or at once without a tls_ctx)
  STARTTLS   "220 2.0.0 Ready to start TLS", then the TLS handshake
  AUTH       PLAIN and LOGIN against user/password: 235 or 535
  MAIL       530 without AUTH (when a user is set) or, with a tls_ctx,
             without TLS; else 250
  RCPT, DATA, the final dot, RSET, NOOP, QUIT: the usual answers.

Knobs (attributes; may be changed while running):
  greeting        bytes, or a callable(session) that does the greeting
                  itself (see stall()); a non-2xx greeting is followed by
                  the command loop as usual (every command but QUIT then
                  gets 503), so what the client does next is recorded
  caps_pre, caps_post
                  lists of EHLO keywords ("AUTH PLAIN", "8BITMIME", ...)
  starttls_reply  bytes sent for STARTTLS; a non-220 reply means no TLS
  starttls_inject bytes sent in the SAME send() as the 220 to STARTTLS,
                  before the handshake (the CVE-2011-0411 family)
  replies         {phase: override}, phase one of "ehlo", "mail", "rcpt",
                  "data" (the reply to the DATA command), "dot" (after the
                  final dot), "auth".  An override is raw bytes (sent as
                  they are, CRLFs included), a callable(session) returning
                  bytes or None (None: it handled the reply itself), a
                  list (one item consumed per use; when empty, the normal
                  reply), or for "rcpt" a dict {address: override}.
  per_conn        list of dicts {knob: value}, applied to connection n
                  (1-based) from item n-1, on top of the knobs above
  delay           seconds to wait before every reply (not the greeting)

Recorded (lists of plain values; read after the client is done):
  connections     accepted TCP connections
  tls_handshakes  completed TLS handshakes
  commands        [(VERB, tls_active, conn)] of every command line read
  auth            [{"mechanism", "login", "success", "tls", "conn"}]
  messages        [{"mail_from", "rcpt_tos", "data", "tls", "conn",
                    "mail_params"}] (data unstuffed, CRLF kept)
  closed_at       {conn: time.monotonic() when the client closed or reset}
  errors          exceptions in connection threads (TLS failures included)
  resets          connections the client reset or cut while we wrote
"""

import base64
import os
import select
import socket
import ssl
import threading
import time
import warnings

DEFAULT_GREETING = b"220 hostile.test ESMTP\r\n"
STARTTLS_220 = b"220 2.0.0 Ready to start TLS\r\n"


class _Closed(Exception):
    pass


def stall(first=b"220-hostile.test ESMTP", then=None):
    """A greeting (or reply) callable: sends `first` (no line end by
    default: the greeting stops half-way), then waits for the client to
    give up, or the server to stop; `then`, if given, is sent after
    `then[0]` seconds: then=(seconds, bytes)."""
    def act(s):
        s.send_raw(first)
        t0 = time.monotonic()
        sent_then = then is None
        while not s.server._stop.is_set():
            if not sent_then and time.monotonic() - t0 >= then[0]:
                s.send_raw(then[1])
                sent_then = True
                return None
            if s.wait_peer_closed(0.1):
                raise _Closed()
        raise _Closed()
    return act


def trickle(data, interval):
    """A callable sending data one byte every `interval` seconds (a
    slow-loris greeting or reply); stops when the client goes away."""
    def act(s):
        for i in range(len(data)):
            s.send_raw(data[i:i + 1])
            if s.wait_peer_closed(interval) or s.server._stop.is_set():
                raise _Closed()
        return None
    return act


class Session:
    """One client connection."""

    def __init__(self, server, sock, conn):
        self.server = server
        self.sock = sock
        self.raw = sock
        self.conn = conn
        self.buf = b""
        self.tls = False
        self.authenticated = False
        self.knobs = {}
        self.mail_from = None
        self.mail_params = ""
        self.rcpts = []

    # ---- knobs ---------------------------------------------------------------
    def knob(self, name):
        if name in self.knobs:
            return self.knobs[name]
        return getattr(self.server, name)

    def _override(self, phase, key=None):
        """The override for a phase (consuming a list item), or None."""
        replies = self.knobs.get("replies", self.server.replies)
        if phase not in replies:
            return None
        v = replies[phase]
        if isinstance(v, dict):
            hit = None
            for k in v:
                if key is not None and k.lower() == key.lower():
                    hit = k
            if hit is None:
                return None
            v = v[hit]
            if isinstance(v, list):
                with self.server._lock:
                    return v.pop(0) if v else None
            return v
        if isinstance(v, list):
            with self.server._lock:
                return v.pop(0) if v else None
        return v

    def reply(self, phase, normal, key=None):
        """Sends the override for phase if there is one, else normal.
        Returns the bytes sent (None when a callable handled it)."""
        d = self.knob("delay")
        if d:
            time.sleep(d)
        o = self._override(phase, key)
        if o is None:
            self.send_raw(normal)
            return normal
        if callable(o):
            out = o(self)
            if out is not None:
                self.send_raw(out)
            return out
        self.send_raw(o)
        return o

    # ---- I/O -------------------------------------------------------------------
    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode()
        if data:
            self.sock.sendall(data)

    def wait_peer_closed(self, timeout):
        """True when the client closed (or reset) within timeout."""
        try:
            r, _, _ = select.select([self.raw], [], [], timeout)
        except (OSError, ValueError):
            return True
        if not r:
            return False
        try:
            if self.tls:
                data = self.sock.recv(4096)
            else:
                data = self.raw.recv(4096)
        except ssl.SSLWantReadError:
            return False
        except (OSError, ssl.SSLError):
            return True
        if not data:
            return True
        self.buf += data
        return False

    def readline(self, limit=1 << 20):
        while b"\n" not in self.buf:
            try:
                data = self.sock.recv(65536)
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                raise _Closed()
            self.buf += data
            if len(self.buf) > limit:
                raise _Closed()
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def record(self, verb):
        self.server._add("commands", (verb, self.tls, self.conn))

    # ---- the dialogue ------------------------------------------------------------
    def caps(self):
        v = self.knob("caps_post" if self.tls else "caps_pre")
        if v is not None:
            return list(v)
        if self.server.tls_ctx is not None and not self.tls:
            return ["8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS"]
        out = ["8BITMIME", "ENHANCEDSTATUSCODES"]
        if self.server.user is not None:
            out.append("AUTH PLAIN LOGIN")
        return out

    def ehlo_reply(self):
        lines = ["hostile.test"] + self.caps()
        out = b""
        for i, l in enumerate(lines):
            sep = "-" if i < len(lines) - 1 else " "
            out += ("250%s%s\r\n" % (sep, l)).encode()
        return out

    def run(self):
        g = self.knob("greeting")
        if callable(g):
            g(self)
        else:
            self.send_raw(g)
        while True:
            line = self.readline()
            text = line.rstrip(b"\r\n")
            verb = text.split(b" ", 1)[0].upper().decode("ascii", "replace")
            arg = text[len(verb) + 1:].decode("utf-8", "replace") if b" " in text else ""
            self.record(verb)
            g = self.knob("greeting")
            if not callable(g) and not g.startswith(b"2") and verb != "QUIT":
                self.send_raw(b"503 5.5.1 go away\r\n")
                continue
            handler = getattr(self, "do_" + verb, None)
            if handler is None:
                self.send_raw(b"502 5.5.2 command not recognised\r\n")
                continue
            if handler(arg) == "quit":
                return

    def do_EHLO(self, arg):
        self.reply("ehlo", self.ehlo_reply())

    def do_HELO(self, arg):
        self.send_raw(b"250 hostile.test\r\n")

    def do_NOOP(self, arg):
        self.send_raw(b"250 2.0.0 OK\r\n")

    def do_RSET(self, arg):
        self.mail_from, self.rcpts = None, []
        self.send_raw(b"250 2.0.0 OK\r\n")

    def do_QUIT(self, arg):
        self.send_raw(b"221 2.0.0 Bye\r\n")
        return "quit"

    def do_STARTTLS(self, arg):
        if self.server.tls_ctx is None or self.tls:
            self.send_raw(b"454 4.7.0 TLS not available\r\n")
            return
        rep = self.knob("starttls_reply")
        inject = self.knob("starttls_inject") or b""
        self.send_raw(rep + inject)
        if not rep.startswith(b"220"):
            return
        # Whatever the client pipelined after STARTTLS is dropped.
        self.buf = b""
        try:
            self.sock = self.server.tls_ctx.wrap_socket(self.raw, server_side=True)
        except (OSError, ssl.SSLError) as e:
            self.server._add("errors", "conn %d: TLS handshake: %r" % (self.conn, e))
            raise _Closed()
        self.tls = True
        self.server._bump("tls_handshakes")
        self.authenticated = False
        self.mail_from, self.rcpts = None, []

    def _auth_result(self, mech, login, password):
        srv = self.server
        ok = (srv.user is not None and login == srv.user and password == srv.password)
        srv._add("auth", {"mechanism": mech, "login": login, "success": ok,
                          "tls": self.tls, "conn": self.conn})
        o = self._override("auth")
        if o is not None:
            self.send_raw(o if not callable(o) else o(self) or b"")
            return
        if ok:
            self.authenticated = True
            self.send_raw(b"235 2.7.0 Authentication successful\r\n")
        else:
            self.send_raw(b"535 5.7.8 Authentication credentials invalid\r\n")

    def do_AUTH(self, arg):
        parts = arg.split()
        if not parts:
            self.send_raw(b"501 5.5.4 Syntax: AUTH mechanism\r\n")
            return
        mech = parts[0].upper()
        try:
            if mech == "PLAIN":
                if len(parts) > 1:
                    blob = parts[1]
                else:
                    self.send_raw(b"334 \r\n")
                    blob = self.readline().strip().decode()
                raw = base64.b64decode(blob)
                _, login, password = raw.split(b"\0", 2)
                self._auth_result(mech, login.decode("utf-8", "replace"),
                                  password.decode("utf-8", "replace"))
            elif mech == "LOGIN":
                if len(parts) > 1:
                    login = base64.b64decode(parts[1])
                else:
                    self.send_raw(b"334 VXNlcm5hbWU6\r\n")
                    login = base64.b64decode(self.readline().strip())
                self.send_raw(b"334 UGFzc3dvcmQ6\r\n")
                password = base64.b64decode(self.readline().strip())
                self._auth_result(mech, login.decode("utf-8", "replace"),
                                  password.decode("utf-8", "replace"))
            else:
                self.server._add("auth", {"mechanism": mech, "login": None,
                                          "success": False, "tls": self.tls,
                                          "conn": self.conn})
                self.send_raw(b"504 5.5.4 Unrecognized authentication type\r\n")
        except (ValueError, UnicodeDecodeError):
            self.send_raw(b"501 5.5.2 Cannot decode response\r\n")

    def do_MAIL(self, arg):
        srv = self.server
        if srv.tls_ctx is not None and not self.tls:
            self.send_raw(b"530 5.7.0 Must issue a STARTTLS command first\r\n")
            return
        if srv.user is not None and not self.authenticated:
            self.send_raw(b"530 5.7.0 Authentication required\r\n")
            return
        addr, _, params = arg.partition(">")
        addr = addr.split(":", 1)[-1].strip().lstrip("<")
        sent = self.reply("mail", b"250 2.1.0 OK\r\n")
        if sent is None or sent.startswith(b"250"):
            self.mail_from, self.mail_params, self.rcpts = addr, params.strip(), []

    def do_RCPT(self, arg):
        if self.mail_from is None:
            self.send_raw(b"503 5.5.1 need MAIL\r\n")
            return
        addr = arg.split(":", 1)[-1].strip().split(">")[0].lstrip("<")
        sent = self.reply("rcpt", b"250 2.1.5 OK\r\n", key=addr)
        if sent is None or sent.startswith(b"250"):
            self.rcpts.append(addr)

    def do_DATA(self, arg):
        if not self.rcpts:
            self.send_raw(b"503 5.5.1 need RCPT\r\n")
            return
        sent = self.reply("data", b"354 End data with <CR><LF>.<CR><LF>\r\n")
        if sent is not None and not sent.startswith(b"354"):
            self.mail_from, self.rcpts = None, []
            return
        lines = []
        while True:
            line = self.readline(limit=64 << 20)
            if line == b".\r\n":
                break
            if line.startswith(b"."):
                line = line[1:]
            lines.append(line)
        rec = {"mail_from": self.mail_from, "rcpt_tos": list(self.rcpts),
               "data": b"".join(lines), "tls": self.tls, "conn": self.conn,
               "mail_params": self.mail_params, "time": time.time()}
        self.server._add("messages", rec)
        self.mail_from, self.rcpts = None, []
        self.reply("dot", b"250 2.0.0 OK queued\r\n")


class HostileServer:
    def __init__(self, tls_ctx=None, user=None, password=None, **knobs):
        self.tls_ctx = tls_ctx
        self.user = user
        self.password = password
        self.greeting = DEFAULT_GREETING
        self.caps_pre = None
        self.caps_post = None
        self.starttls_reply = STARTTLS_220
        self.starttls_inject = b""
        self.replies = {}
        self.per_conn = []
        self.delay = 0
        for k, v in knobs.items():
            if not hasattr(self, k):
                raise TypeError("unknown knob %r" % k)
            setattr(self, k, v)
        self.port = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._socks = []
        self._listener = None
        self.reset()

    def reset(self):
        with self._lock:
            self.connections = 0
            self.tls_handshakes = 0
            self.commands = []
            self.auth = []
            self.messages = []
            self.closed_at = {}
            self.errors = []
            self.resets = []

    def _add(self, name, item):
        with self._lock:
            getattr(self, name).append(item)

    def _bump(self, name):
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)
            return getattr(self, name)

    def verbs(self, tls=None):
        return [v for v, t, _ in list(self.commands) if tls is None or t == tls]

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        s.settimeout(0.2)
        self._listener = s
        self.port = s.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(None)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            n = self._bump("connections")
            self._socks.append(c)
            t = threading.Thread(target=self._serve, args=(c, n), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, c, n):
        s = Session(self, c, n)
        if n - 1 < len(self.per_conn):
            s.knobs = dict(self.per_conn[n - 1])
        try:
            s.run()
            # After QUIT: wait for the client to close.
            s.wait_peer_closed(2)
        except _Closed:
            pass
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError,
                ssl.SSLZeroReturnError) as e:
            self._add("resets", "conn %d: %r" % (n, e))     # the client left
        except (OSError, ssl.SSLError) as e:
            self._add("errors", "conn %d: %r" % (n, e))
        except Exception as e:          # a bug here must show in the test
            self._add("errors", "conn %d: %r" % (n, e))
        finally:
            with self._lock:
                self.closed_at.setdefault(n, time.monotonic())
            for sock in {id(s.sock): s.sock, id(c): c}.values():
                try:
                    sock.close()
                except OSError:
                    pass

    def stop(self):
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        for c in self._socks:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def server_ctx(cert, key, minimum=None, maximum=None, ciphers=None):
    """A server SSLContext; minimum/maximum are ssl.TLSVersion values."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if ciphers:
        ctx.set_ciphers(ciphers)
    with warnings.catch_warnings():
        # TLS 1.0 and 1.1 are deprecated: the T7 server offers them on purpose
        warnings.simplefilter("ignore", DeprecationWarning)
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
    ctx.load_cert_chain(cert, key)
    return ctx


# ---- helpers shared by test_catalog_relay.py and test_catalog_tls.py ---------

_NS_SCRIPT = ('mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf '
              '&& shift 2 && exec "$@"')


def hosts_wrap(directory, names=()):
    """A Relayq wrap= prefix running relayq in a private mount namespace
    whose /etc/hosts maps names (and localhost) to 127.0.0.1 and whose
    resolver is 127.0.0.1 (where nothing answers), so a name outside the
    list fails at once and no query leaves the host.  Needs root."""
    if os.geteuid() != 0:
        import pytest
        pytest.fail("mapping host names needs a mount namespace: run the tests as root")
    os.makedirs(str(directory), exist_ok=True)
    hosts = os.path.join(str(directory), "hosts")
    resolv = os.path.join(str(directory), "resolv.conf")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n")
        for n in names:
            f.write("127.0.0.1 %s\n" % n)
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    return ["unshare", "-m", "sh", "-c", _NS_SCRIPT, "sh", hosts, resolv]


def dsn_report(data):
    """(text part, [per-recipient dicts]) of an RFC 3464 report."""
    import email
    import email.policy
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", data[:800]
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts][:2] == [
        "text/plain", "message/delivery-status"], [p.get_content_type() for p in parts]
    blocks = parts[1].get_payload()
    rcpts = [{k.lower(): str(v).strip() for k, v in b.items()} for b in blocks[1:]]
    return parts[0].get_payload(decode=True) or b"", rcpts


def dsn_failed(data):
    """{final recipient address: per-recipient fields} of a DSN."""
    out = {}
    for b in dsn_report(data)[1]:
        kind, _, addr = b["final-recipient"].partition(";")
        assert kind.strip().lower() == "rfc822", b
        assert b["action"].lower() == "failed", b
        out[addr.strip().strip("<>")] = b
    return out


STATE_KEYWORDS = (b"relayq-state", b"attempts", b"next", b"last", b"rcpt",
                  b"reported", b"atrcpt", b"dkim")


def check_state_file(path):
    """The state file has only its own line types and no control bytes:
    nothing a relay said can add a line to it.  Returns its lines."""
    with open(path, "rb") as f:
        data = f.read()
    assert b"\0" not in data and b"\x1b" not in data and b"\r" not in data, data[:2000]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for line in lines:
        word = line.split(b" ", 1)[0]
        if word.startswith(b"\t") or word == b"":
            continue            # a folded dkim line
        assert word in STATE_KEYWORDS, "foreign line in %s: %r" % (path, line[:200])
    return lines


def check_log_sane(stderr, max_line=4096):
    """relayq's stderr: no NUL, no escape, no over-long line, and every
    line one of relayq's own (nothing a relay said starts a line)."""
    assert b"\0" not in stderr, stderr[:3000]
    assert b"\x1b" not in stderr, stderr[:3000]
    for line in stderr.split(b"\n"):
        if not line:
            continue
        assert len(line) <= max_line, "log line of %d bytes" % len(line)
        assert line.startswith(b"relayq"), "not a relayq log line: %r" % line[:300]


def closed_port():
    """A TCP port on 127.0.0.1 where nothing listens."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
