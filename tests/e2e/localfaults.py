"""Helpers for the local-fault part of the catalog (test_catalog_local.py):
private mount namespaces, process killing at random instants, strace logs,
relay quiescence, spool inspection and messages with known wire forms.

Nothing here talks to anything but 127.0.0.1, and nothing changes the host
outside the test's tmp_path: mounts happen in a private mount namespace
that dies with its holder process.
"""

import hashlib
import os
import re
import signal
import subprocess
import threading
import time

from conftest import ID_RE, normalize_lines

UNSHARE = "/usr/bin/unshare"
NSENTER = "/usr/bin/nsenter"
STRACE = "/usr/bin/strace"
PRLIMIT = "/usr/bin/prlimit"
FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
NO_TLS = {"tls": "none", "user": None, "password": None, "ca_file": None}


def no_lsan_env():
    """Environment for a run under strace: LeakSanitizer (ASan builds)
    cannot work under ptrace and would abort the exit."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "detect_leaks=0"}


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


# ---- mount namespaces ----------------------------------------------------------

class MountNS:
    """A private mount namespace held by a `sleep` started under unshare -m.

    .wrap is a command prefix (nsenter) that runs a command inside it, for
    Relayq(..., wrap=ns.wrap); .sh(script) runs a shell script inside it;
    .outside(path) is the path by which this process sees `path` as the
    namespace sees it (/proc/PID/root/...).  close() kills the holder and
    every process started with .wrap that is still running, so the mounts
    vanish with the namespace."""

    def __init__(self):
        self.holder = subprocess.Popen(
            [UNSHARE, "-m", "--propagation", "private", "sleep", "3600"],
            stdin=subprocess.DEVNULL)
        # wait until the holder is in its own namespace
        deadline = time.monotonic() + 5
        mine = os.readlink("/proc/self/ns/mnt")
        while True:
            try:
                if os.readlink("/proc/%d/ns/mnt" % self.holder.pid) != mine:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.holder.poll() is not None:
                raise AssertionError("unshare -m did not start")
            time.sleep(0.01)
        self.pid = self.holder.pid
        self.wrap = [NSENTER, "-t", str(self.pid), "-m", "--"]

    def sh(self, script, *args, check=True, timeout=60):
        cp = subprocess.run([*self.wrap, "sh", "-ec", script, "sh", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            timeout=timeout)
        if check and cp.returncode != 0:
            raise AssertionError("in the namespace: %r -> rc=%d\n%s%s" % (
                script, cp.returncode, cp.stdout.decode(errors="replace"),
                cp.stderr.decode(errors="replace")))
        return cp

    def outside(self, path):
        return "/proc/%d/root%s" % (self.pid, os.path.abspath(path))

    def close(self):
        # Processes entered with nsenter keep the namespace alive: end them.
        ns = "/proc/%d/ns/mnt" % self.pid
        try:
            target = os.readlink(ns)
        except OSError:
            target = None
        if target is not None:
            for d in os.listdir("/proc"):
                if not d.isdigit() or int(d) in (self.pid, os.getpid()):
                    continue
                try:
                    if os.readlink("/proc/%s/ns/mnt" % d) == target:
                        os.kill(int(d), signal.SIGKILL)
                except OSError:
                    pass
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait(10)


# ---- spool inspection ------------------------------------------------------------

def spool_dir_list(spool, sub):
    d = os.path.join(spool, sub)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def spool_ids(spool, sub="queue"):
    return [n for n in spool_dir_list(spool, sub) if ID_RE.match(n)]


_MID_RE = re.compile(rb"(?im)^message-id:[ \t]*(<[^>\r\n]+>)")


def spool_mid(path, limit=65536):
    """The Message-ID in a spool file (read from its first `limit` bytes),
    or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(limit)
    except OSError:
        return None
    m = _MID_RE.search(head)
    return m.group(1).decode() if m else None


def spool_complete(data):
    """True if data is a complete relayq spool file (see src/spool.c):
    envelope, blank line, `size` octets, END."""
    head, sep, rest = data.partition(b"\n\n")
    if not sep or not head.startswith(b"relayq-spool 1\n"):
        return False
    m = re.search(rb"(?m)^size (\d+)$", head)
    return bool(m) and len(rest) == int(m.group(1)) + 4 and rest.endswith(b"END\n")


# ---- processes ------------------------------------------------------------------

def kill9_after(proc, delay):
    """Sleeps delay seconds, then SIGKILLs proc (a Popen) if it still runs.
    Returns True if it was killed by this call."""
    if delay > 0:
        time.sleep(delay)
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        proc.wait(10)
        return proc.returncode == -signal.SIGKILL
    return False


def feed(proc, data, chunk=65536):
    """Writes data to proc.stdin in a thread (a killed reader makes it stop
    quietly); returns the thread."""
    def run():
        try:
            for i in range(0, len(data), chunk):
                proc.stdin.write(data[i:i + chunk])
            proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def flock_free(path):
    """True if an exclusive flock on path can be taken right now."""
    import fcntl
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


# ---- the relay's side of loopback TCP -----------------------------------------

_TCP_BUSY = {"01", "02", "03", "08"}    # ESTABLISHED SYN_SENT SYN_RECV CLOSE_WAIT


def relay_sockets_open(port):
    """Server-side sockets of the relay (local port = port) that are not
    closed by the relay yet, from /proc/net/tcp."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, state = parts[1], parts[3]
            if int(local.split(":")[1], 16) == port and state in _TCP_BUSY:
                n += 1
    return n


def wait_relay_idle(port, timeout=10.0):
    """Waits until the relay has closed every connection: whatever a killed
    client sent has then been processed (and recorded) by the relay."""
    deadline = time.monotonic() + timeout
    while relay_sockets_open(port):
        if time.monotonic() > deadline:
            raise AssertionError("relay connections still open after %.1fs" % timeout)
        time.sleep(0.002)


# ---- messages with a known wire form --------------------------------------------

def big_message(tag, size, rcpt="rcpt@example.com"):
    """(raw input, Message-ID, sha256 of the wire body) for a message of
    about size octets whose every body line names tag and its line number,
    so a torn or spliced body can never pass for a complete one."""
    mid = "<%s@example.com>" % tag
    head = ("From: Kill Test <sender@example.com>\nTo: %s\nSubject: %s\n"
            "Date: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: %s\n\n"
            % (rcpt, tag, mid)).encode()
    lines = []
    n, total = 0, len(head)
    filler = hashlib.sha256(tag.encode()).hexdigest() * 30
    while total < size:
        line = ("%s line %07d %s\n" % (tag, n, filler))[:900].encode()
        if not line.endswith(b"\n"):
            line = line[:-1] + b"\n"
        lines.append(line)
        total += len(line)
        n += 1
    lines.append(("%s END-OF-BODY %d lines\n" % (tag, n)).encode())
    body = b"".join(lines)
    return head + body, mid, hashlib.sha256(normalize_lines(body)).hexdigest()


def small_message(tag, rcpt="rcpt@example.com"):
    mid = "<%s@example.com>" % tag
    body = ("body of %s\nsecond line of %s\n" % (tag, tag)).encode()
    raw = ("To: %s\nSubject: %s\nMessage-ID: %s\n\n" % (rcpt, tag, mid)).encode() + body
    return raw, mid, hashlib.sha256(normalize_lines(body)).hexdigest()


def wire_mid(data):
    m = re.search(rb"(?im)^message-id:[ \t]*(<[^>\r\n]+>)", data.partition(b"\r\n\r\n")[0])
    return m.group(1).decode() if m else None


def wire_body_sha(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    return hashlib.sha256(body).hexdigest() if sep else None


# ---- strace ---------------------------------------------------------------------

def parse_strace(text):
    """[(pid, syscall, args string, return value or None)] of an `strace -f
    -o FILE` log (unfinished/resumed lines joined); a "+++ exited with N
    +++" line becomes (pid, "+++exit", line, N)."""
    out, pending = [], {}
    for line in text.splitlines():
        m = re.match(r"^(\d+)\s+(.*)$", line)
        if not m:
            continue
        pid, rest = m.group(1), m.group(2)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        r = re.match(r"^<\.\.\. (\w+) resumed>(.*)$", rest)
        if r:
            rest = pending.pop(pid, r.group(1) + "(") + r.group(2)
        s = re.match(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)", rest)
        if s:
            ret = None if s.group(3) == "?" else int(s.group(3))
            out.append((int(pid), s.group(1), s.group(2), ret))
        elif rest.startswith("+++ exited with"):
            out.append((int(pid), "+++exit", rest, int(rest.split()[3])))
    return out
