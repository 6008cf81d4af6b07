"""Fixtures for relayq's end-to-end tests.

Run with Debian's interpreter (it has python3-aiosmtpd and python3-pytest):
    /usr/bin/python3 -m pytest tests/e2e
The binary is $RELAYQ_BIN, default <repo>/relayq.  A missing binary is a
failure, never a skip.
"""

import base64
import concurrent.futures
import json
import os
import pwd
import re
import subprocess
import sys
import time

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


def faketime(offset):
    """(wrap, env) running relayq under libfaketime with the wall clock moved
    by offset (e.g. "+6d"); the monotonic clock stays real."""
    return ["faketime", "-f", offset], {"FAKETIME_DONT_FAKE_MONOTONIC": "1"}


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
        self._nproc = 0
        self._procs = []

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

    def _prepare(self, args, config, relay, env, ini, write, wrap, prog):
        if relay is not None:
            self.port = relay.port
        if write and ini is None:
            self.write_config(config)
        e = {k: v for k, v in os.environ.items() if not k.startswith("RELAYQ_")}
        # The login must come from getuid(), never from these.
        e.update(USER="not-the-login", LOGNAME="not-the-login")
        if env:
            e.update(env)
        return [*wrap, prog or self.bin, "-C", ini or self.ini, *args], e

    def __call__(self, args=(), stdin=b"", config=None, relay=None, env=None,
                 timeout=60, ini=None, write=True, check_tmp=True, wrap=(),
                 prog=None):
        """Runs `relayq -C <ini> args...` and returns the CompletedProcess
        (stdout/stderr bytes).  relay= sets the port; config= overrides.
        write=False keeps the ini file as it is (needed when runs overlap);
        check_tmp=False skips the tmp/ check (other runs may be writing);
        wrap= prefixes the command (e.g. faketime); prog= runs another path
        to the binary (e.g. a symlink named mailq)."""
        cmd, e = self._prepare(args, config, relay, env, ini, write, wrap, prog)
        cp = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=e, timeout=timeout)
        self.check_run(cp, check_tmp)
        return cp

    def check_run(self, cp, check_tmp=True):
        # Checked after every run, whatever the test: the password (plain or
        # as any AUTH blob) never appears, and tmp/ is left empty.
        for needle in SECRET_FORMS:
            assert needle not in cp.stdout and needle not in cp.stderr, \
                "relay password leaked (%r)\n%s" % (needle, fmt(cp))
        if check_tmp:
            # A detached runner (the rest of the queue, a DSN) may still be
            # writing a state file there; a real leftover stays.
            deadline = time.time() + 3
            while self.tmp_files() and time.time() < deadline:
                time.sleep(0.05)
            assert self.tmp_files() == [], "tmp/ not empty after a run: %r\n%s" % (
                self.tmp_files(), fmt(cp))

    def popen(self, args=(), stdin=b"", config=None, relay=None, env=None,
              ini=None, write=True, wrap=(), prog=None):
        """Starts relayq in the background (stdout/stderr go to files, so a
        chatty daemon never blocks); returns a Proc: .proc is the Popen,
        .finish(timeout) waits and returns a CompletedProcess (after the
        same password check as a normal run), .stderr() reads it so far."""
        cmd, e = self._prepare(args, config, relay, env, ini, write, wrap, prog)
        self._nproc += 1
        base = os.path.join(str(self.tmp_path), "proc%d" % self._nproc)
        with open(base + ".in", "wb") as f:
            f.write(stdin)
        fin = open(base + ".in", "rb")
        fout = open(base + ".out", "wb")
        ferr = open(base + ".err", "wb")
        try:
            p = subprocess.Popen(cmd, stdin=fin, stdout=fout, stderr=ferr, env=e)
        finally:
            fin.close()
            fout.close()
            ferr.close()
        proc = Proc(self, p, cmd, base)
        self._procs.append(proc)
        return proc

    def link(self, name):
        """A symlink named name to the binary (argv[0] selects the mode)."""
        d = os.path.join(str(self.tmp_path), "bin")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, name)
        if not os.path.islink(path):
            os.symlink(os.path.abspath(self.bin), path)
        return path

    def queue_messages(self, n, rcpt="rcpt@example.com", args=("-odq",), workers=4,
              subject="queued %d", extra=()):
        """Queues n distinct messages (Message-ID <queued-N@example.com>) with
        `relayq -odq` (several runs at a time); the config must already be
        written.  Returns their Message-IDs in order."""
        def one(i):
            stdin = ("To: %s\nSubject: %s\nMessage-ID: <queued-%d@example.com>\n\n"
                     "body %d\n" % (rcpt, subject % i, i, i)).encode()
            cp = self([*args, *extra, rcpt], stdin, write=False, check_tmp=False)
            assert cp.returncode == 0, fmt(cp)
            return "<queued-%d@example.com>" % i
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            mids = list(ex.map(one, range(n)))
        assert self.tmp_files() == []
        return mids

    def queue_list(self, **kw):
        """`relayq -C ini queue list --json`, parsed."""
        cp = self(["queue", "list", "--json"], write=False, **kw)
        assert cp.returncode == 0, fmt(cp)
        try:
            return json.loads(cp.stdout)
        except ValueError:
            raise AssertionError("queue list --json: not JSON\n%s" % fmt(cp))

    def stop_all(self):
        for proc in self._procs:
            if proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait(10)

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


class Proc:
    """A relayq started by Relayq.popen()."""

    def __init__(self, rq, proc, cmd, base):
        self.rq, self.proc, self.cmd, self.base = rq, proc, cmd, base

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        with open(self.base + ".err", "rb") as f:
            return f.read()

    def finish(self, timeout=30, check_tmp=False):
        """Waits for the exit (a timeout is a test failure, and kills it)."""
        t = time.monotonic()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("relayq still running after %.1fs: %r\nstderr=%r"
                                 % (time.monotonic() - t, self.cmd, self.stderr()[-3000:]))
        with open(self.base + ".out", "rb") as f:
            out = f.read()
        cp = subprocess.CompletedProcess(self.cmd, self.proc.returncode, out,
                                         self.stderr())
        self.rq.check_run(cp, check_tmp)
        return cp


@pytest.fixture
def relayq(tmp_path, certs):
    rq = Relayq(tmp_path, certs)
    yield rq
    rq.stop_all()


def fmt(cp):
    """Diagnostic text for an assertion message."""
    return "rc=%s\nstdout=%r\nstderr=%r" % (cp.returncode, cp.stdout[-2000:],
                                           cp.stderr[-3000:])
