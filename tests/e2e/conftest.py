"""Fixtures for relayq's end-to-end tests.

Run with Debian's interpreter (it has python3-aiosmtpd and python3-pytest):
    /usr/bin/python3 -m pytest tests/e2e
The binary is $RELAYQ_BIN, default <repo>/relayq.  A missing binary is a
failure, never a skip.
"""

import base64
import os
import pwd
import re
import subprocess
import sys

import pytest

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import certs as certs_mod  # noqa: E402
from fakerelay import FakeRelay  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
RELAYQ_BIN = os.environ.get("RELAYQ_BIN") or os.path.join(REPO, "relayq")
# CI clones the repo with shared/ beside it, as on the developers' machines.
FIXTURES = os.environ.get("RELAYQ_CLIENT_FIXTURES") or os.path.normpath(
    os.path.join(REPO, "..", "shared", "fixtures", "clients"))

RELAY_USER = "relayuser@example.com"
SECRET = "s3cr3t-PASS-xyz"
SENDER_DOMAIN = "host.example"
ID_RE = re.compile(r"^[0-9a-f]{20}$")
# The password as it could leak: plain, base64 (AUTH LOGIN), AUTH PLAIN blobs.
SECRET_FORMS = [
    SECRET.encode(),
    base64.b64encode(SECRET.encode()),
    base64.b64encode(b"\0" + RELAY_USER.encode() + b"\0" + SECRET.encode()),
    base64.b64encode(RELAY_USER.encode() + b"\0" + RELAY_USER.encode() + b"\0"
                     + SECRET.encode()),
]


def login_name():
    return pwd.getpwuid(os.getuid()).pw_name


def default_sender():
    """Envelope sender relayq must use without -f: <login>@[sender] domain."""
    return "%s@%s" % (login_name(), SENDER_DOMAIN)


# ---- message helpers -------------------------------------------------------

def split_message(data):
    """(header lines, body) of wire data; header lines are raw (folded
    continuation lines kept separate), without their CRLF."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, "no header/body separator in %r" % data[:300]
    return head.split(b"\r\n"), body


def headers(data):
    """Unfolded headers as [(lowercase name, value bytes)]."""
    out = []
    for line in split_message(data)[0]:
        if line[:1] in (b" ", b"\t") and out:
            name, value = out[-1]
            out[-1] = (name, value + b"\r\n" + line)
        else:
            name, _, value = line.partition(b":")
            out.append((name.strip().lower().decode("latin-1"), value))
    return out


def header_values(data, name):
    return [v for n, v in headers(data) if n == name.lower()]


def body_of(data):
    return split_message(data)[1]


def assert_crlf_only(data):
    """Every line ends in CRLF; no bare LF, no bare CR; ends with CRLF."""
    assert data.endswith(b"\r\n"), "data does not end in CRLF: %r" % data[-40:]
    assert re.search(rb"(?<!\r)\n", data) is None, "bare LF in %r" % data
    assert re.search(rb"\r(?!\n)", data) is None, "bare CR in %r" % data


def normalize_lines(raw):
    """What relayq must make of raw input lines: LF/CRLF -> CRLF, stray CR ->
    space, a final CRLF added.  (No dot handling, no header changes.)"""
    s = raw.replace(b"\r\n", b"\n").replace(b"\r", b" ")
    if not s.endswith(b"\n"):
        s += b"\n"
    return s.replace(b"\n", b"\r\n")


# ---- fixtures --------------------------------------------------------------

@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return certs_mod.make_certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture
def relay(certs):
    """Factory: relay(mode="starttls", cert="good"|"evil"|"wrong",
    user=RELAY_USER, password=SECRET, **knobs) -> started FakeRelay."""
    started = []

    def make(mode="starttls", cert="good", user=RELAY_USER, password=SECRET, **kw):
        c, k = certs.pair(cert)
        r = FakeRelay(mode=mode, cert=c, key=k, user=user, password=password, **kw)
        r.start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


class Relayq:
    """Runs the relayq binary with a generated ini file (see default_config)."""

    def __init__(self, tmp_path, certs):
        if not (os.path.isfile(RELAYQ_BIN) and os.access(RELAYQ_BIN, os.X_OK)):
            pytest.fail("relayq binary not found or not executable: %s "
                        "(build it with make, or set RELAYQ_BIN)" % RELAYQ_BIN)
        self.bin = RELAYQ_BIN
        self.tmp_path = tmp_path
        self.certs = certs
        self.spool = os.path.join(str(tmp_path), "spool")
        os.makedirs(self.spool, mode=0o700, exist_ok=True)
        self.ini = os.path.join(str(tmp_path), "relayq.ini")
        self.port = None          # relay port used when config has none

    def default_config(self):
        return {
            "relay": {
                "host": "127.0.0.1",
                "port": str(self.port if self.port is not None else 1),
                "tls": "starttls",
                "ca_file": self.certs.ca,
                "user": RELAY_USER,
                "password": SECRET,
                "timeout": "10",
            },
            "queue": {"dir": self.spool},
            "sender": {"domain": SENDER_DOMAIN},
            "log": {"target": "stderr"},
        }

    def write_config(self, overrides=None, path=None):
        """Writes default_config() updated by overrides (section -> key ->
        value; a value None removes the key) and returns the text."""
        cfg = self.default_config()
        for section, keys in (overrides or {}).items():
            sec = cfg.setdefault(section, {})
            for k, v in keys.items():
                if v is None:
                    sec.pop(k, None)
                else:
                    sec[k] = str(v)
        lines = []
        for section, keys in cfg.items():
            lines.append("[%s]" % section)
            for k, v in keys.items():
                lines.append("%s = %s" % (k, v))
            lines.append("")
        text = "\n".join(lines)
        with open(path or self.ini, "w") as f:
            f.write(text)
        os.chmod(path or self.ini, 0o600)
        return text

    def __call__(self, args=(), stdin=b"", config=None, relay=None, env=None,
                 timeout=60, ini=None, write=True):
        """Runs `relayq -C <ini> args...` and returns the CompletedProcess
        (stdout/stderr bytes).  relay= sets the port; config= overrides."""
        if relay is not None:
            self.port = relay.port
        if write and ini is None:
            self.write_config(config)
        e = {k: v for k, v in os.environ.items() if not k.startswith("RELAYQ_")}
        # The login must come from getuid(), never from these.
        e.update(USER="not-the-login", LOGNAME="not-the-login")
        if env:
            e.update(env)
        cp = subprocess.run([self.bin, "-C", ini or self.ini, *args],
                            input=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=e, timeout=timeout)
        # Checked after every run, whatever the test: the password (plain or
        # as any AUTH blob) never appears, and tmp/ is left empty.
        for needle in SECRET_FORMS:
            assert needle not in cp.stdout and needle not in cp.stderr, \
                "relay password leaked (%r)\n%s" % (needle, fmt(cp))
        assert self.tmp_files() == [], "tmp/ not empty after a run: %r\n%s" % (
            self.tmp_files(), fmt(cp))
        return cp

    # ---- spool inspection
    def _ids(self, sub):
        d = os.path.join(self.spool, sub)
        if not os.path.isdir(d):
            return []
        return sorted(n for n in os.listdir(d) if ID_RE.match(n))

    def queued_ids(self):
        return self._ids("queue")

    def failed_ids(self):
        return self._ids("failed")

    def tmp_files(self):
        d = os.path.join(self.spool, "tmp")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def queue_files(self):
        """Everything in queue/ (ids and .state sidecars)."""
        d = os.path.join(self.spool, "queue")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def read_queued(self, qid):
        with open(os.path.join(self.spool, "queue", qid), "rb") as f:
            return f.read()


@pytest.fixture
def relayq(tmp_path, certs):
    return Relayq(tmp_path, certs)


def fmt(cp):
    """Diagnostic text for an assertion message."""
    return "rc=%s\nstdout=%r\nstderr=%r" % (cp.returncode, cp.stdout[-2000:],
                                           cp.stderr[-3000:])
