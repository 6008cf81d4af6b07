"""An installed, set-group-ID relayq for the privilege tests
(test_catalog_priv.py): build, install into a fixed throwaway root, test
users, and helpers to run things as them.

    make -C <repo> B=build-priv SYSCONFDIR=$ROOT/etc SPOOLDIR=$ROOT/spool \
        PREFIX=$ROOT RELAYQ_USER=rqt-svc DROP_GROUP=rqt-drop install

The compile-time paths are baked into the binary, so ROOT is fixed.  The
install creates the service user and the submission group; the fixture
adds two unprivileged submitters and removes all of it (users, groups,
ROOT, build-priv/) afterwards, also what an earlier, interrupted run left.
Needs root (useradd, chown, the set-group-ID bit); without it the tests
are skipped.  Nothing here talks to anything but 127.0.0.1.  PRIV_DEBUG=1
(with pytest -s) prints every run and its output.
"""

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import textwrap
import time

from conftest import REPO, RELAY_USER, SECRET, SECRET_FORMS, SENDER_DOMAIN

ROOT = "/var/tmp/relayq-priv-test"
SVC = "rqt-svc"
GRP = "rqt-drop"
USER1 = "rqt-user1"
USER2 = "rqt-user2"
SBIN = ROOT + "/sbin/relayq"
MAILQ = ROOT + "/sbin/mailq"
ETC = ROOT + "/etc"
INI = ETC + "/relayq.ini"
CA = ETC + "/ca.pem"
SPOOL = ROOT + "/spool"
BUILD = os.path.join(REPO, "build-priv")
SUBDIRS = ("maildrop", "queue", "tmp", "failed", "corrupt")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Every run made through Installed.run: P8 greps them all for the password.
OUTPUTS = []


def _sh(cmd, check=True, **kw):
    cp = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    if check and cp.returncode != 0:
        raise RuntimeError("%r failed (%d): %s" % (cmd, cp.returncode,
                                                   cp.stdout.decode(errors="replace")))
    return cp


def _exists_user(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _exists_group(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def remove_all():
    """Users, groups, ROOT and build-priv/ of this or an earlier run."""
    for u in (USER1, USER2, SVC):
        if _exists_user(u):
            _sh(["userdel", u], check=False)
    for g in (GRP, SVC, USER1, USER2):
        if _exists_group(g):
            _sh(["groupdel", g], check=False)
    shutil.rmtree(ROOT, ignore_errors=True)
    shutil.rmtree(BUILD, ignore_errors=True)


def _make_install():
    return _sh(["make", "-s", "-C", REPO, "B=build-priv", "SYSCONFDIR=" + ETC,
                "SPOOLDIR=" + SPOOL, "PREFIX=" + ROOT, "RELAYQ_USER=" + SVC,
                "DROP_GROUP=" + GRP, "install"])


def install(ca_source):
    """Builds and installs; returns the make output."""
    remove_all()
    os.makedirs(ROOT, mode=0o755)
    os.chmod(ROOT, 0o755)
    out = _make_install().stdout
    with open(os.path.join(BUILD, "relayq"), "rb") as f:
        if INI.encode() not in f.read():
            raise RuntimeError("build-priv/relayq does not name %s" % INI)
    for u in (USER1, USER2):
        _sh(["useradd", "--no-create-home", "--user-group", "--home-dir",
             "/nonexistent", "--shell", "/usr/sbin/nologin", u])
    for d in (ROOT, ETC, ROOT + "/sbin"):
        os.chmod(d, 0o755)
    shutil.copyfile(ca_source, CA)
    os.chmod(CA, 0o644)
    return out


def uid(name):
    return pwd.getpwnam(name).pw_uid


def gid(name):
    return grp.getgrnam(name).gr_gid


def as_user(user, extra_groups=None):
    """Command prefix running as user (None: root as we are).  extra_groups
    replaces the supplementary groups, e.g. [GRP] for a caller who got the
    submission group through some set-group-ID escape."""
    if user is None:
        return []
    cmd = ["setpriv", "--reuid", user, "--regid", user]
    if extra_groups:
        cmd += ["--groups", ",".join(str(gid(g)) for g in extra_groups)]
    else:
        cmd += ["--init-groups"]
    return cmd + ["--"]


def check_no_secret(cp):
    for needle in SECRET_FORMS:
        assert needle not in (cp.stdout or b"") and needle not in (cp.stderr or b""), \
            "relay password leaked (%r) by %r" % (needle, cp.args)


# A probe run as a test user: tries file operations, reports errno names.
PROBE = textwrap.dedent(r"""
    import errno, json, os, sys
    out = []
    for op, path in json.loads(sys.argv[1]):
        try:
            if op == "read":
                with open(path, "rb") as f:
                    f.read(1)
            elif op == "list":
                os.listdir(path)
            elif op == "create":
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
            elif op == "stat":
                os.stat(path)
            elif op == "mkfifo":
                os.mkfifo(path, 0o600)
            elif op.startswith("symlink:"):
                os.symlink(op[8:], path)
            elif op.startswith("link:"):
                os.link(op[5:], path)
            out.append("ok")
        except OSError as e:
            out.append(errno.errorcode.get(e.errno, str(e.errno)))
    print(json.dumps(out))
""")


class Installed:
    """The installed relayq of one test, with its fake relay."""

    def __init__(self, relay):
        self.relay = relay
        self.runs = []

    # ---- configuration
    def ini_text(self, relay=None, extra=None, port=None):
        r = relay or self.relay
        cfg = {
            "relay": {"host": "127.0.0.1", "port": str(port or r.port),
                      "tls": "starttls", "ca_file": CA, "user": RELAY_USER,
                      "password": SECRET, "timeout": "10"},
            "queue": {"dir": SPOOL},
            "sender": {"domain": SENDER_DOMAIN},
            "aliases": {"root": "admin@example.com"},
            "log": {"target": "stderr"},
        }
        for sec, keys in (extra or {}).items():
            s = cfg.setdefault(sec, {})
            for k, v in keys.items():
                if v is None:
                    s.pop(k, None)
                else:
                    s[k] = str(v)
        lines = []
        for sec, keys in cfg.items():
            lines.append("[%s]" % sec)
            lines += ["%s = %s" % kv for kv in keys.items()]
            lines.append("")
        return "\n".join(lines)

    def write_ini(self, **kw):
        with open(INI, "w") as f:
            f.write(self.ini_text(**kw))
        os.chown(INI, 0, gid(SVC))
        os.chmod(INI, 0o640)

    # ---- running
    def run(self, user, args, stdin=b"", env=None, timeout=30, groups=None,
            prog=SBIN, cwd="/", wrap=()):
        """Runs prog args as user (None: root) with a clean environment plus
        env; returns the CompletedProcess after the password check."""
        e = ["PATH=" + PATH] + ["%s=%s" % kv for kv in (env or {}).items()]
        cmd = [*wrap, *as_user(user, groups), "/usr/bin/env", "-i", *e, prog, *args]
        cp = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=timeout, cwd=cwd)
        OUTPUTS.append((cmd, cp.stdout, cp.stderr))
        self.runs.append(cp)
        if os.environ.get("PRIV_DEBUG"):
            print("\n$ %s %r -> %d\n%s%s" % (user or "root", args[:6], cp.returncode,
                                            cp.stdout[-1500:].decode(errors="replace"),
                                            cp.stderr[-1500:].decode(errors="replace")))
        check_no_secret(cp)
        return cp

    def popen(self, user, args, stdin=b"", env=None, out=None):
        e = ["PATH=" + PATH] + ["%s=%s" % kv for kv in (env or {}).items()]
        cmd = [*as_user(user), "/usr/bin/env", "-i", *e, SBIN, *args]
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out,
                                stderr=out)

    def run_queue(self, args=("-q",), timeout=60):
        """The root runner: takes the maildrop in and sends the queue."""
        return self.run(None, list(args), timeout=timeout)

    def probe(self, user, ops, groups=None):
        """[(op, path)] tried as user -> ["ok" | errno name, ...]."""
        cmd = [*as_user(user, groups), "/usr/bin/python3", "-c", PROBE, json.dumps(ops)]
        cp = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            timeout=30, cwd="/")
        assert cp.returncode == 0, cp.stderr
        return json.loads(cp.stdout)

    # ---- the spool, as root sees it
    @staticmethod
    def files(sub):
        d = os.path.join(SPOOL, sub)
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    @staticmethod
    def clean_spool():
        for sub in SUBDIRS:
            d = os.path.join(SPOOL, sub)
            for n in os.listdir(d):
                p = os.path.join(d, n)
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
        for n in ("lock", "rate"):
            p = os.path.join(SPOOL, n)
            if os.path.lexists(p):
                os.unlink(p)
        svc, drop = uid(SVC), gid(GRP)
        os.chown(SPOOL, svc, drop)
        os.chmod(SPOOL, 0o710)
        os.chown(SPOOL + "/maildrop", svc, drop)
        os.chmod(SPOOL + "/maildrop", 0o1730)
        for sub in ("queue", "tmp", "failed", "corrupt"):
            os.chown(os.path.join(SPOOL, sub), svc, gid(SVC))
            os.chmod(os.path.join(SPOOL, sub), 0o700)

    @staticmethod
    def snapshot(path):
        """(mode, uid, gid, nlink is ignored, content) of a file, for
        'untouched' checks."""
        st = os.lstat(path)
        with open(path, "rb") as f:
            data = f.read()
        return (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
                st.st_mtime_ns, data)

    def spool_bytes(self):
        """Every regular file under the spool, concatenated (P8)."""
        out = []
        for dirpath, _, names in os.walk(SPOOL):
            for n in names:
                p = os.path.join(dirpath, n)
                if os.path.isfile(p) and not os.path.islink(p):
                    with open(p, "rb") as f:
                        out.append(f.read())
        return b"\n".join(out)


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def compile_c(src, out, shared=False):
    """gcc src -> out (a helper binary or a shared object)."""
    cfile = out + ".c"
    with open(cfile, "w") as f:
        f.write(src)
    cmd = ["gcc", "-O0", "-o", out, cfile]
    if shared:
        cmd[1:1] = ["-shared", "-fPIC"]
    _sh(cmd)
    return out
