#!/usr/bin/python3
"""A scriptable smarthost for relayq's end-to-end tests, built on aiosmtpd.

    relay = FakeRelay(mode="starttls", cert=..., key=..., user=..., password=...)
    relay.start()            # binds 127.0.0.1 on a free port -> relay.port
    ...
    msgs = relay.wait_for_messages(1, timeout=10)
    relay.stop()

Modes
  starttls          STARTTLS advertised and required (530 before it); AUTH
                    advertised only after TLS.
  tls               implicit TLS from the first byte (like port 465).
  plain-no-starttls no TLS at all, no STARTTLS, but AUTH advertised in clear
                    (a client must send neither AUTH nor MAIL here).
  none              plain SMTP; AUTH only if a user is configured.

With a user configured, AUTH PLAIN and LOGIN are offered; a wrong login or
password gets "535 5.7.8 ..." and MAIL without successful AUTH gets
"530 5.7.0 Authentication required".

Fault injection (constructor keywords or attributes; may be changed while
running, from any thread).  A reply is (code, text) or a "CODE text" string;
None means the normal 2xx answer.
  greeting_reply=(421, "4.3.2 try later")
                   answered to each new connection instead of the 220
                   greeting, then the connection is closed.
  mail_reply       reply to every MAIL.
  mail_replies     list, one item consumed per MAIL; when empty, mail_reply.
  rcpt_replies     {addr: reply} (addr compared case-insensitively); a value
                   that is a list is consumed one item per RCPT of that
                   address and, once empty, the address gets 250:
                   {"a@x": [(451, "4.3.0 later")]} -> 451 once, then 250.
  data_reply       reply after the final dot, for every message.
  data_replies     list, one item consumed per message (after the final
                   dot); when empty, data_reply.
  drop_after_data=N
                   the next N messages: after the final dot the connection
                   is cut (TCP, no TLS close_notify) WITHOUT a reply; such a
                   message is recorded in `dropped`, never in `messages`,
                   and consumes no data_replies item.
  reply_delay      seconds to wait before the reply to the final dot (the
                   message is recorded, with its arrival time, before it).
  auth_fail=True   every AUTH gets "535 5.7.8 ...", whatever the password.
  size_limit=N     EHLO advertises SIZE N (RFC 1870): MAIL with SIZE=
                   above it gets aiosmtpd's 552, and so does more data
                   than N (default: aiosmtpd's 32 MiB).  Set before start().
  rcpt_limit=N     a transaction takes at most N recipients: further RCPTs
                   get "452 4.5.3 Too many recipients" (RFC 5321
                   4.5.3.1.10).
  data_cmd_reply   reply to the DATA command itself instead of 354 (the
                   transaction is then reset, as by RSET).
  data_cmd_replies list, one item consumed per DATA command; when empty,
                   data_cmd_reply.
  starttls_reply   reply to STARTTLS instead of 220 (no handshake follows).

Recorded (thread-safe; the properties return copies):
  connections      TCP connections accepted; connection n (1-based, in
                   accept order) is "conn" n in the records below
  tls_handshakes   completed TLS handshakes (STARTTLS or implicit)
  auth_attempts    [{"mechanism", "login", "success", "tls", "conn"}]
                   (never a password)
  auth_successes   number of successful AUTHs
  commands         [(VERB, tls_active)] for every command line read
  messages         accepted messages: [{"mail_from", "rcpt_tos", "data",
                   "time", "mail_options", "rcpt_options", "tls", "auth_login",
                   "conn"}]; data = bytes exactly as received, after
                   dot-unstuffing; time = time.time() at the final dot;
                   conn = the connection (SMTP session) that carried it
  rejected         messages refused after DATA (same shape + "reply")
  dropped          messages cut off by drop_after_data (same shape)
  errors           exceptions seen by the event loop (for debugging)
  per_connection() {conn: number of accepted messages}

Command line (for `make demo`; runs until SIGTERM/SIGINT):
  /usr/bin/python3 fakerelay.py --cert C --key K --user U --password-file F \
      --port-file P --maildir D [--mode starttls] [--port N]
"""

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
import threading
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, syntax

# aiosmtpd warns (and logs) when AUTH is allowed without STARTTLS, which the
# 'tls' and 'plain-no-starttls' modes do on purpose.
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
logging.getLogger("mail.log").setLevel(logging.CRITICAL)
logging.getLogger("mail.debug").setLevel(logging.CRITICAL)

MODES = ("starttls", "tls", "plain-no-starttls", "none")
_NOARG = object()


def _fmt_reply(r):
    if isinstance(r, str):
        return r
    code, text = r
    return "%d %s" % (code, text)


def _is_refusal(r):
    return r is not None and int(_fmt_reply(r)[:3]) >= 300


def _raw_transport(server):
    """The TCP transport under a (possibly TLS) SMTP session."""
    if server._original_transport is not None:      # after STARTTLS
        return server._original_transport
    t = server.transport
    ssl_proto = getattr(t, "_ssl_protocol", None)    # implicit TLS
    inner = getattr(ssl_proto, "_transport", None)
    return inner if inner is not None else t


class _Handler:
    def __init__(self, relay):
        self.relay = relay

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.relay.user is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        r = self.relay._next_mail_reply()
        if _is_refusal(r):
            return _fmt_reply(r)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        limit = self.relay.rcpt_limit
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            return "452 4.5.3 Too many recipients"
        r = self.relay._next_rcpt_reply(address)
        if _is_refusal(r):
            return _fmt_reply(r)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        relay = self.relay
        rec = {
            # the null sender is recorded as ""
            "mail_from": "" if envelope.mail_from == "<>" else envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "data": bytes(envelope.original_content or envelope.content or b""),
            "time": time.time(),
            "mail_options": list(envelope.mail_options),
            "rcpt_options": list(envelope.rcpt_options),
            "tls": server._fr_tls_active(),
            "auth_login": (session.login_data.decode("utf-8", "replace")
                           if isinstance(session.login_data, bytes)
                           else session.login_data),
            "conn": server._fr_conn,
        }
        if relay._take_drop():
            relay._record("dropped", rec)
            # Cut the TCP connection under any TLS layer, without a reply:
            # connection_lost() then cancels this coroutine.
            _raw_transport(server).abort()
            await asyncio.sleep(3600)
            return "421 4.4.2 not reached"
        r = relay._next_data_reply()
        if _is_refusal(r):
            rec["reply"] = _fmt_reply(r)
            relay._record("rejected", rec)
            status = _fmt_reply(r)
        else:
            n = relay._record_message(rec)
            status = "250 2.0.0 OK queued as FAKE%04d" % n
        delay = relay.reply_delay
        if delay:
            await asyncio.sleep(delay)
        return status


class _RecordingSMTP(SMTP):
    """aiosmtpd's SMTP, plus bookkeeping for FakeRelay."""

    @syntax("DATA")
    async def smtp_DATA(self, arg):
        relay = self._fr_relay
        if (self.envelope.rcpt_tos and not arg
                and not (relay.user is not None and not self.session.authenticated)):
            r = relay._next_data_cmd_reply()
            if _is_refusal(r):
                await self.push(_fmt_reply(r))
                self.envelope = self._create_envelope()
                return
        return await super().smtp_DATA(arg)

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg):
        r = self._fr_relay.starttls_reply
        if r is not None and not arg:
            await self.push(_fmt_reply(r))
            return
        return await super().smtp_STARTTLS(arg)

    def __init__(self, relay, probe, conn, *args, **kwargs):
        self._fr_relay = relay
        self._fr_probe = probe
        self._fr_conn = conn
        self._fr_reader_wrapped = False
        super().__init__(*args, **kwargs)

    def _fr_tls_active(self):
        return self._fr_relay.mode == "tls" or self._tls_protocol is not None

    async def _handle_client(self):
        r = None if self._fr_probe else self._fr_relay.greeting_reply
        if r is None:
            return await super()._handle_client()
        await self.push(_fmt_reply(r))
        self.transport.close()

    def connection_made(self, transport):
        starttls_done = self._original_transport is not None
        super().connection_made(transport)
        if self._fr_probe:
            return
        if starttls_done or self._fr_relay.mode == "tls":
            self._fr_relay._bump("tls_handshakes")
        if not self._fr_reader_wrapped:
            self._fr_reader_wrapped = True
            reader = self._reader
            orig = reader.readuntil
            relay = self._fr_relay
            smtp = self

            # The command loop calls readuntil() without arguments; DATA uses
            # readuntil(b"\r\n") and AUTH continuation lines go through
            # readline() -> readuntil(b"\n"), so neither is recorded here (an
            # AUTH line would carry the password).
            async def readuntil(separator=_NOARG):
                if separator is _NOARG:
                    line = await orig()
                    verb = line.strip().split(b" ", 1)[0].upper()
                    relay._record("commands", (verb.decode("ascii", "replace"),
                                               smtp._fr_tls_active()))
                    return line
                return await orig(separator)

            reader.readuntil = readuntil


class _Controller(Controller):
    def __init__(self, relay, *args, **kwargs):
        self._fr_relay = relay
        self._fr_in_trigger = True
        super().__init__(*args, **kwargs)

    def factory(self):
        probe = self._fr_in_trigger
        conn = 0 if probe else self._fr_relay._bump("connections")
        return _RecordingSMTP(self._fr_relay, probe, conn, self.handler,
                              **self.SMTP_kwargs)

    def _run(self, ready_event):
        self.loop.set_exception_handler(
            lambda loop, ctx: self._fr_relay._record(
                "errors", ctx.get("message", "") + " " + repr(ctx.get("exception"))))
        super()._run(ready_event)

    def _trigger_server(self):
        # Port 0: learn the port the kernel picked before the self-test connect.
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class FakeRelay:
    def __init__(self, mode="starttls", cert=None, key=None, user=None,
                 password=None, host="127.0.0.1", port=0,
                 mail_reply=None, rcpt_replies=None, data_reply=None,
                 hostname="fakerelay.test", on_message=None, ssl_context=None,
                 greeting_reply=None, mail_replies=None, data_replies=None,
                 drop_after_data=0, reply_delay=0, auth_fail=False,
                 size_limit=None, rcpt_limit=None, data_cmd_reply=None,
                 data_cmd_replies=None, starttls_reply=None):
        if mode not in MODES:
            raise ValueError("mode must be one of %s" % (MODES,))
        if mode in ("starttls", "tls") and ssl_context is None and not (cert and key):
            raise ValueError("mode %s needs cert and key" % mode)
        self.mode = mode
        self.user = user
        self._password = password.encode() if isinstance(password, str) else password
        self.host = host
        self.port = port
        self.hostname = hostname
        self.mail_reply = mail_reply
        self.rcpt_replies = dict(rcpt_replies or {})
        self.data_reply = data_reply
        self.greeting_reply = greeting_reply
        self.mail_replies = list(mail_replies or [])
        self.data_replies = list(data_replies or [])
        self.drop_after_data = drop_after_data
        self.reply_delay = reply_delay
        self.auth_fail = auth_fail
        self.size_limit = size_limit
        self.rcpt_limit = rcpt_limit
        self.data_cmd_reply = data_cmd_reply
        self.data_cmd_replies = list(data_cmd_replies or [])
        self.starttls_reply = starttls_reply
        self.on_message = on_message
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._controller = None
        if ssl_context is None and mode in ("starttls", "tls"):
            # Default server settings on purpose: TLS 1.2 and 1.3, session
            # tickets sent after the 1.3 handshake.
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(cert, key)
        self.ssl_context = ssl_context
        self.reset()

    # ---- recording -------------------------------------------------------
    def reset(self):
        with self._lock:
            self._stats = {"connections": 0, "tls_handshakes": 0}
            self._lists = {"auth_attempts": [], "commands": [], "messages": [],
                           "rejected": [], "dropped": [], "errors": []}

    def _bump(self, name):
        with self._lock:
            self._stats[name] += 1
            return self._stats[name]

    # ---- fault injection state (read on the event loop thread) -------------
    def _next_mail_reply(self):
        with self._lock:
            if self.mail_replies:
                return self.mail_replies.pop(0)
            return self.mail_reply

    def _next_rcpt_reply(self, address):
        with self._lock:
            for k, v in (self.rcpt_replies or {}).items():
                if k.lower() == address.lower():
                    if isinstance(v, list):
                        return v.pop(0) if v else None
                    return v
            return None

    def _next_data_reply(self):
        with self._lock:
            if self.data_replies:
                return self.data_replies.pop(0)
            return self.data_reply

    def _next_data_cmd_reply(self):
        with self._lock:
            if self.data_cmd_replies:
                return self.data_cmd_replies.pop(0)
            return self.data_cmd_reply

    def _take_drop(self):
        with self._lock:
            if self.drop_after_data and self.drop_after_data > 0:
                self.drop_after_data -= 1
                return True
            return False

    def _record(self, name, item):
        with self._cond:
            self._lists[name].append(item)
            self._cond.notify_all()

    def _record_message(self, rec):
        with self._cond:
            self._lists["messages"].append(rec)
            n = len(self._lists["messages"])
            self._cond.notify_all()
        if self.on_message is not None:
            try:
                self.on_message(n, rec)
            except Exception as e:  # never break the SMTP session
                self._record("errors", "on_message: %r" % (e,))
        return n

    def _get(self, name):
        with self._lock:
            return list(self._lists[name])

    connections = property(lambda self: self._stats["connections"])
    tls_handshakes = property(lambda self: self._stats["tls_handshakes"])
    auth_attempts = property(lambda self: self._get("auth_attempts"))
    commands = property(lambda self: self._get("commands"))
    messages = property(lambda self: self._get("messages"))
    rejected = property(lambda self: self._get("rejected"))
    dropped = property(lambda self: self._get("dropped"))
    errors = property(lambda self: self._get("errors"))

    @property
    def auth_successes(self):
        return sum(1 for a in self.auth_attempts if a["success"])

    def per_connection(self):
        """{conn: number of accepted messages it carried}."""
        out = {}
        for m in self.messages:
            out[m["conn"]] = out.get(m["conn"], 0) + 1
        return out

    def verbs(self, tls=None):
        """Command verbs seen, optionally only those with tls_active == tls."""
        return [v for v, t in self.commands if tls is None or t == tls]

    def wait_for_messages(self, n, timeout=10.0):
        """Waits until at least n messages were accepted; returns them all.
        Raises AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._lists["messages"]) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "fake relay: %d message(s) after %.1fs, wanted %d; "
                        "commands=%r" % (len(self._lists["messages"]), timeout, n,
                                         self._lists["commands"]))
                self._cond.wait(left)
            return list(self._lists["messages"])

    # ---- authentication --------------------------------------------------
    def _authenticator(self, server, session, envelope, mechanism, auth_data):
        login = getattr(auth_data, "login", None)
        password = getattr(auth_data, "password", None)
        ok = (self.user is not None and login is not None
              and login.decode("utf-8", "replace") == self.user
              and password == self._password and not self.auth_fail)
        self._record("auth_attempts", {
            "mechanism": mechanism,
            "login": login.decode("utf-8", "replace") if login is not None else None,
            "success": bool(ok),
            "tls": server._fr_tls_active(),
            "conn": server._fr_conn,
        })
        del password
        # Keep the login only: session.auth_data must not hold the password.
        return AuthResult(success=bool(ok), handled=False,
                          auth_data=LoginPassword(login, b"") if ok else None)

    # ---- life cycle ------------------------------------------------------
    def start(self):
        kwargs = dict(hostname=self.host, port=self.port,
                      server_hostname=self.hostname, ident="fakerelay ESMTP",
                      ready_timeout=10.0)
        if self.size_limit is not None:
            kwargs.update(data_size_limit=self.size_limit)
        if self.user is not None:
            # AUTH is enforced in handle_MAIL (530 5.7.0): aiosmtpd's own
            # auth_required warns when combined with auth_require_tls=False.
            kwargs.update(authenticator=self._authenticator)
        if self.mode == "starttls":
            kwargs.update(tls_context=self.ssl_context, require_starttls=True,
                          auth_require_tls=True)
        elif self.mode == "tls":
            # aiosmtpd does not know the socket is TLS: let it offer AUTH.
            kwargs.update(ssl_context=self.ssl_context, auth_require_tls=False)
        else:
            # plain-no-starttls (and none with a user): AUTH offered in clear.
            kwargs.update(auth_require_tls=self.user is None)
        ctl = _Controller(self, _Handler(self), **kwargs)
        ctl.start()
        ctl._fr_in_trigger = False
        self.port = ctl.port
        self._controller = ctl
        self.reset()
        return self

    def stop(self):
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---- command line ---------------------------------------------------------

def _write_atomic(path, data):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def _subject(data):
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"subject:"):
            return line[8:].strip().decode("utf-8", "replace")
    return ""


def main(argv=None):
    ap = argparse.ArgumentParser(description="fake TLS+AUTH smarthost for relayq")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--user")
    ap.add_argument("--password-file")
    ap.add_argument("--port-file")
    ap.add_argument("--maildir", required=True)
    ap.add_argument("--mode", default="starttls", choices=MODES)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args(argv)

    password = None
    if a.password_file:
        with open(a.password_file, "rb") as f:
            password = f.readline().rstrip(b"\r\n")
    if a.user and password is None:
        ap.error("--user needs --password-file")
    os.makedirs(a.maildir, exist_ok=True)

    def on_message(n, rec):
        name = os.path.join(a.maildir, "%04d.eml" % n)
        head = ("X-FakeRelay-Mail-From: <%s>\r\n"
                "X-FakeRelay-Rcpt-To: %s\r\n"
                "X-FakeRelay-Received: %s\r\n"
                "X-FakeRelay-TLS: %s\r\n"
                "X-FakeRelay-Auth: %s\r\n" % (
                    rec["mail_from"], ", ".join("<%s>" % r for r in rec["rcpt_tos"]),
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(rec["time"])),
                    "yes" if rec["tls"] else "no", rec["auth_login"] or "-"))
        _write_atomic(name, head.encode() + rec["data"])
        print("fakerelay: #%d from=<%s> to=%s size=%d tls=%s auth=%s subject=%r file=%s"
              % (n, rec["mail_from"], ",".join("<%s>" % r for r in rec["rcpt_tos"]),
                 len(rec["data"]), "yes" if rec["tls"] else "no",
                 rec["auth_login"] or "-", _subject(rec["data"]), name), flush=True)

    relay = FakeRelay(mode=a.mode, cert=a.cert, key=a.key, user=a.user,
                      password=password, host=a.host, port=a.port,
                      on_message=on_message)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    relay.start()
    if a.port_file:
        _write_atomic(a.port_file, b"%d\n" % relay.port)
    print("fakerelay: listening on %s:%d mode=%s auth=%s" % (
        a.host, relay.port, a.mode, a.user or "-"), flush=True)
    while not stop.wait(0.5):
        pass
    relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
