#!/usr/bin/python3
"""The loopback relay of `make bench`: tests/e2e/fakerelay.py (STARTTLS
required, AUTH PLAIN/LOGIN) in a process of its own, steered by one command
per line on standard input, each answered by one JSON line on stdout:

  stats            {"n", "connections", "tls", "auth"}
  times FROM       arrival times (time.time()) of messages FROM.. (0-based)
  conns FROM       the SMTP session ("conn") of messages FROM..
  reset            forget everything recorded
  down / up        stop listening / listen again on the same port
  quit

Message bodies are not kept (only their size), so 100 000 messages or one
of 50 MB do not grow the relay.  Usage: relay.py CERT KEY USER PASSWORD
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests", "e2e"))
import fakerelay  # noqa: E402
from fakerelay import FakeRelay  # noqa: E402

# aiosmtpd refuses messages over 32 MiB by default; measure 5 needs 50 MB.
_orig_init = fakerelay._RecordingSMTP.__init__


def _init(self, *args, **kwargs):
    _orig_init(self, *args, **kwargs)
    self.data_size_limit = None


fakerelay._RecordingSMTP.__init__ = _init


def main():
    cert, key, user, password = sys.argv[1:5]
    relay = FakeRelay(mode="starttls", cert=cert, key=key, user=user,
                      password=password)

    def slim(n, rec):
        rec["data"] = len(rec["data"])
    relay.on_message = slim
    relay.start()
    port = relay.port
    out = sys.stdout

    def say(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    say({"port": port})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "stats":
            with relay._lock:
                n = len(relay._lists["messages"])
                st = dict(relay._stats)
                auth = sum(1 for a in relay._lists["auth_attempts"] if a["success"])
                err = len(relay._lists["errors"])
                rej = len(relay._lists["rejected"])
            say({"n": n, "connections": st["connections"],
                 "tls": st["tls_handshakes"], "auth": auth, "errors": err,
                 "rejected": rej})
        elif cmd[0] in ("times", "conns"):
            k = "time" if cmd[0] == "times" else "conn"
            start = int(cmd[1]) if len(cmd) > 1 else 0
            with relay._lock:
                msgs = relay._lists["messages"][start:]
                say([m[k] for m in msgs])
        elif cmd[0] == "reset":
            relay.reset()
            say({"ok": True})
        elif cmd[0] == "down":
            relay.stop()
            say({"ok": True})
        elif cmd[0] == "up":
            relay.port = port
            relay.start()
            say({"ok": relay.port == port})
        elif cmd[0] == "quit":
            break
    relay.stop()


if __name__ == "__main__":
    main()
