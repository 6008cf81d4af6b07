"""make check-package: the Debian package, installed on this machine.

Run as root on a disposable Debian 12 machine (it installs and purges the
package, creates and removes the relayq user):

    make check-package      # builds build-deb/relayq_*.deb, then
    RELAYQ_DEB_DIR=build-deb /usr/bin/python3 -m pytest tests/package

The tests run in file order and share one installation:

1. apt-get purge relayq if an earlier run left it, then apt-get install
   ./relayq_*.deb (refused if apt would remove another MTA); the
   installed layout: statoverride, owners and modes, links, unit; the
   service starts with the configuration as shipped.
2. /etc/relayq.ini points at a local STARTTLS+AUTH relay
   (tests/e2e/fakerelay.py); the daemon is started as relayq.service
   would start it (ExecStart and User of the installed unit, under runuser,
   NoNewPrivileges as setpriv --no-new-privs; systemd does not run here);
   www-data sends with /usr/sbin/sendmail -t -i and the relay gets it.
   mailq works for root, and is refused to www-data (exit 77).
3. Without /etc/relayq.ini, root is configured by the environment alone
   (RELAYQ_CONFIG="", credentials from *_FILE); the same variables are
   ignored for www-data, whose message goes through the maildrop.
4. apt-get purge relayq leaves nothing behind.
"""

import glob
import grp
import os
import pwd
import shlex
import signal
import stat
import subprocess
import sys
import time

import pytest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))

import certs as certs_mod  # noqa: E402
from fakerelay import FakeRelay  # noqa: E402

DEB_DIR = os.environ.get("RELAYQ_DEB_DIR") or os.path.join(REPO, "build-deb")
WORK = "/var/tmp/relayq-package-test"      # readable by the relayq user
PIDFILE = os.path.join(WORK, "daemon.pid")
SPOOL = "/var/spool/relayq"
INI = "/etc/relayq.ini"
SBIN = "/usr/sbin/relayq"
UNIT = "/lib/systemd/system/relayq.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/relayq.service"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

RELAY_USER = "pkgtest@example.com"
SECRET = "pkg-s3cret-%d" % os.getpid()
SENDER = "noreply@example.com"            # [sender] address of the file
ENV_SENDER = "envonly@example.org"        # RELAYQ_SENDER_ADDRESS
RCPT = "rcpt@example.net"
LINKS = {
    "/usr/sbin/sendmail": "relayq",
    "/usr/lib/sendmail": "../sbin/relayq",
    "/usr/bin/mailq": "../sbin/relayq",
    "/usr/bin/newaliases": "../sbin/relayq",
    "/usr/sbin/mailq": "relayq",
    "/usr/sbin/newaliases": "relayq",
}


# ---- helpers ---------------------------------------------------------------

def fmt(cp):
    return "cmd=%r rc=%s\nstdout=%s\nstderr=%s" % (
        cp.args, cp.returncode,
        cp.stdout.decode(errors="replace")[-3000:] if cp.stdout else "",
        cp.stderr.decode(errors="replace")[-3000:] if cp.stderr else "")


def run(cmd, stdin=b"", env=None, timeout=120, check=False, cwd="/"):
    e = {"PATH": PATH, "LANG": "C.UTF-8"}
    e.update(env or {})
    cp = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, env=e, timeout=timeout, cwd=cwd)
    for out in (cp.stdout, cp.stderr):
        assert SECRET.encode() not in out, "password leaked\n" + fmt(cp)
    if check:
        assert cp.returncode == 0, fmt(cp)
    return cp


def as_user(user, cmd, **kw):
    return run(["runuser", "-u", user, "--", *cmd], **kw)


def apt(*args, **kw):
    return run(["apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0", *args],
               env={"DEBIAN_FRONTEND": "noninteractive"}, **kw)


def pkg_status():
    cp = run(["dpkg-query", "-W", "-f=${Status}", "relayq"])
    return cp.stdout.decode() if cp.returncode == 0 else ""


def purge():
    if pkg_status() and "not-installed" not in pkg_status():
        apt("purge", "relayq", check=True)


def user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def statoverride(path):
    cp = run(["dpkg-statoverride", "--list", path])
    return cp.stdout.decode().split() if cp.returncode == 0 else None


def owner(path):
    st = os.lstat(path)
    return (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name,
            stat.S_IMODE(st.st_mode))


def unit_service(path=UNIT):
    """The [Service] keys of a unit file (the last value of each)."""
    keys, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
            elif section == "Service" and "=" in line:
                k, v = line.split("=", 1)
                keys[k.strip()] = v.strip()
    return keys


def proc_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


def kill_stale_daemon():
    """A daemon an interrupted run left (by its recorded pid only)."""
    try:
        with open(PIDFILE) as f:
            pid = int(f.read())
        exe = os.readlink("/proc/%d/exe" % pid)
    except (OSError, ValueError):
        return
    if exe.startswith(SBIN):
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not os.path.exists("/proc/%d" % pid):
                break
            time.sleep(0.1)


def maildrop_files():
    d = os.path.join(SPOOL, "maildrop")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def message(subject, extra=""):
    return ("To: Receiver <%s>\n%sSubject: %s\n\nhello from the package test\n"
            % (RCPT, extra, subject)).encode()


def subject_of(data):
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"subject:"):
            return line[8:].strip().decode()
    return None


def wait_subject(relay, subject, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in relay.messages:
            if subject_of(m["data"]) == subject:
                return m
        time.sleep(0.1)
    raise AssertionError("relay never got %r; it has %r" % (
        subject, [subject_of(m["data"]) for m in relay.messages]))


class Daemon:
    """relayq.service without systemd: ExecStart as User/Group of the
    installed unit, with no_new_privs, a clean environment, cwd /."""

    def __init__(self):
        svc = unit_service()
        self.user = svc["User"]
        self.group = svc.get("Group", self.user)
        self.argv = shlex.split(svc["ExecStart"])
        assert svc.get("NoNewPrivileges") == "yes", svc
        self.cmd = ["runuser", "-u", self.user, "-g", self.group, "--",
                    "setpriv", "--no-new-privs", *self.argv]
        self.log = os.path.join(WORK, "daemon.log")
        self.proc = None
        self.pid = None          # relayq itself (runuser's child)

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, cwd="/",
                                         env={"PATH": PATH, "LANG": "C.UTF-8"})
        deadline = time.monotonic() + 10
        while self.pid is None and time.monotonic() < deadline:
            assert self.proc.poll() is None, "daemon exited:\n" + self.output()
            try:
                with open("/proc/%d/task/%d/children" % ((self.proc.pid,) * 2)) as f:
                    kids = f.read().split()
            except OSError:
                kids = []
            for k in kids:
                try:
                    if os.readlink("/proc/%s/exe" % k) == self.argv[0]:
                        self.pid = int(k)
                except OSError:
                    pass
            time.sleep(0.05)
        assert self.pid, "relayq did not start under runuser:\n" + self.output()
        with open(PIDFILE, "w") as f:
            f.write("%d\n" % self.pid)
        # Settled: holding the runner lock and watching the maildrop.
        time.sleep(0.5)
        assert self.proc.poll() is None, "daemon exited:\n" + self.output()
        return self

    def output(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None and self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        try:
            os.unlink(PIDFILE)
        except OSError:
            pass


# ---- the installation shared by the tests ------------------------------------

@pytest.fixture(scope="module")
def pkg():
    if os.geteuid() != 0:
        pytest.fail("make check-package installs a package: run it as root "
                    "on a disposable Debian 12 machine")
    debs = glob.glob(os.path.join(DEB_DIR, "relayq_*.deb"))
    if len(debs) != 1:
        pytest.fail("want exactly one relayq_*.deb in %s (make deb), found %r"
                    % (DEB_DIR, debs))
    deb = debs[0]
    for u in ("www-data",):
        assert user_exists(u), "%s must exist (it does on Debian)" % u

    kill_stale_daemon()
    purge()
    run(["rm", "-rf", WORK], check=True)
    os.makedirs(WORK)
    os.chmod(WORK, 0o755)

    # Never let apt replace or bring in another MTA: the plan may only
    # install relayq itself (and what it depends on), and remove nothing.
    local = "./" + os.path.basename(deb)
    plan = apt("-s", "install", "--no-install-recommends", local,
               cwd=DEB_DIR, check=True).stdout.decode()
    removes = [l for l in plan.splitlines() if l.startswith("Remv ")]
    assert not removes, "installing relayq would remove:\n%s" % "\n".join(removes)
    cp = apt("install", "--no-install-recommends", local, cwd=DEB_DIR)
    assert cp.returncode == 0, fmt(cp)
    assert pkg_status() == "install ok installed"

    certs = certs_mod.make_certs(os.path.join(WORK, "certs"))
    os.chmod(certs.dir, 0o755)
    os.chmod(certs.ca, 0o644)
    relay = FakeRelay(mode="starttls", cert=certs.server_cert,
                      key=certs.server_key, user=RELAY_USER, password=SECRET)
    relay.start()
    # Secrets as a container or an administrator would provide them:
    # readable by root and the service user only.
    secrets = {}
    for name, value in (("relay_user", RELAY_USER), ("relay_password", SECRET)):
        path = os.path.join(WORK, name)
        with open(path, "w") as f:
            f.write(value + "\n")
        os.chown(path, 0, grp.getgrnam("relayq").gr_gid)
        os.chmod(path, 0o640)
        secrets[name] = path
    state = {"deb": deb, "certs": certs, "relay": relay, "secrets": secrets,
             "daemon": None}
    yield state
    if state["daemon"] is not None:
        state["daemon"].stop()
    relay.stop()
    purge()
    run(["rm", "-rf", WORK])


# ---- 1. the installed layout ---------------------------------------------------

def test_installed_layout(pkg):
    cp = run([SBIN, "--version"], check=True)
    version = cp.stdout.decode().split()[-1]
    assert os.path.basename(pkg["deb"]).startswith("relayq_%s" % version), cp.stdout

    u = pwd.getpwnam("relayq")
    assert u.pw_uid < 1000 and u.pw_dir == SPOOL, u
    assert u.pw_shell in ("/usr/sbin/nologin", "/bin/false"), u
    assert grp.getgrgid(u.pw_gid).gr_name == "relayq"
    assert grp.getgrnam("relayq-drop").gr_mem == []

    assert statoverride(SBIN) == ["root", "relayq-drop", "2755", SBIN]
    assert owner(SBIN) == ("root", "relayq-drop", 0o2755)
    assert owner(INI) == ("root", "relayq", 0o640)
    assert owner(SPOOL) == ("relayq", "relayq-drop", 0o710)
    assert owner(SPOOL + "/maildrop") == ("relayq", "relayq-drop", 0o1730)
    for d in ("queue", "tmp", "failed", "corrupt"):
        assert owner(os.path.join(SPOOL, d)) == ("relayq", "relayq", 0o700), d

    for link, target in LINKS.items():
        assert os.readlink(link) == target, link
        assert os.path.realpath(link) == SBIN, link
    for page in ("relayq.8", "sendmail.8", "mailq.8", "newaliases.8"):
        assert os.path.exists("/usr/share/man/man8/%s.gz" % page), page
    assert os.path.exists("/usr/share/man/man5/relayq.ini.5.gz")

    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "relayq"]).stdout
    assert INI.encode() in conffiles, conffiles

    svc = unit_service()
    assert svc["ExecStart"] == SBIN + " -q1m", svc
    assert svc["User"] == "relayq", svc
    # deb-systemd-helper enabled it; systemd does not run here, so nothing
    # was started.
    assert os.path.realpath(WANTS) == os.path.realpath(UNIT), WANTS

    # www-data can neither read the configuration nor look into the spool.
    cp = as_user("www-data", ["cat", INI])
    assert cp.returncode != 0, fmt(cp)
    cp = as_user("www-data", ["ls", SPOOL + "/maildrop"])
    assert cp.returncode != 0, fmt(cp)


def test_service_starts_with_the_shipped_configuration(pkg):
    """Where systemd runs, postinst starts the service before anyone has
    edited /etc/relayq.ini: the placeholders must not make it fail."""
    daemon = Daemon().start()
    try:
        time.sleep(1)
        assert daemon.proc.poll() is None, daemon.output()
        assert "queue runner started" in daemon.output(), daemon.output()
    finally:
        daemon.stop()
    assert "queue runner stopping" in daemon.output(), daemon.output()


# ---- 2. the service, fed by www-data -----------------------------------------------

def write_ini(pkg):
    """The three lines a user writes, plus where the test relay is.  The
    file keeps the owner and mode the package gave it."""
    relay, certs = pkg["relay"], pkg["certs"]
    text = ("[relay]\n"
            "host = 127.0.0.1\n"
            "port = %d\n"
            "tls = starttls\n"
            "ca_file = %s\n"
            "timeout = 20\n"
            "user = %s\n"
            "password_file = %s\n"
            "[sender]\n"
            "address = %s\n"
            "[log]\n"
            "target = stderr\n"
            % (relay.port, certs.ca, RELAY_USER, pkg["secrets"]["relay_password"],
               SENDER))
    with open(INI, "w") as f:
        f.write(text)
    assert owner(INI) == ("root", "relayq", 0o640)


def test_service_delivers_what_www_data_sends(pkg):
    write_ini(pkg)
    relay = pkg["relay"]
    daemon = pkg["daemon"] = Daemon().start()

    # Run as the unit says: the service user, its own group (the
    # set-group-ID bit has no effect under no_new_privs), no_new_privs set.
    st = proc_status(daemon.pid)
    uid, gid = pwd.getpwnam("relayq").pw_uid, grp.getgrnam("relayq").gr_gid
    assert st["Uid"] == [str(uid)] * 4, st["Uid"]
    assert st["Gid"] == [str(gid)] * 4, st["Gid"]
    assert st["NoNewPrivs"] == ["1"], st["NoNewPrivs"]

    subject = "package test via the service %d" % os.getpid()
    msg = message(subject, extra="Bcc: hidden@example.net\n")
    cp = as_user("www-data", ["/usr/sbin/sendmail", "-t", "-i"], stdin=msg)
    assert cp.returncode == 0, fmt(cp)
    m = wait_subject(relay, subject)
    assert m["mail_from"] == SENDER                  # www-data@host rewritten
    assert sorted(m["rcpt_tos"]) == sorted([RCPT, "hidden@example.net"])
    assert m["tls"] and m["auth_login"] == RELAY_USER
    assert b"\r\nbcc:" not in m["data"].lower() and not m["data"].lower().startswith(b"bcc:")
    assert maildrop_files() == []
    assert daemon.proc.poll() is None, daemon.output()
    assert "status=sent" in daemon.output(), daemon.output()


def test_mailq_root_and_www_data(pkg):
    cp = run(["/usr/bin/mailq"])
    assert cp.returncode == 0, fmt(cp)
    cp = run([SBIN, "queue", "list", "--json"])
    assert cp.returncode == 0 and cp.stdout.strip() == b"[]", fmt(cp)
    for cmd in (["/usr/sbin/newaliases"], [SBIN, "--version"]):
        cp = as_user("www-data", cmd)
        assert cp.returncode == 0, fmt(cp)
    for cmd in (["/usr/bin/mailq"], ["/usr/sbin/sendmail", "-bp"],
                [SBIN, "-q"], [SBIN, "queue", "list"]):
        cp = as_user("www-data", cmd)
        assert cp.returncode == 77, fmt(cp)
        assert cp.stderr.strip(), fmt(cp)


# ---- 3. configuration from the environment ---------------------------------------

def env_config(pkg, **extra):
    env = {
        "RELAYQ_CONFIG": "",
        "RELAYQ_RELAY_HOST": "127.0.0.1",
        "RELAYQ_RELAY_PORT": str(pkg["relay"].port),
        "RELAYQ_RELAY_TLS": "starttls",
        "RELAYQ_RELAY_CA_FILE": pkg["certs"].ca,
        "RELAYQ_RELAY_USER_FILE": pkg["secrets"]["relay_user"],
        "RELAYQ_RELAY_PASSWORD_FILE": pkg["secrets"]["relay_password"],
        "RELAYQ_SENDER_ADDRESS": ENV_SENDER,
        "RELAYQ_LOG_TARGET": "stderr",
    }
    env.update(extra)
    return env


def test_environment_only_for_root(pkg):
    # The daemon would take the messages (and it read the file): stop it,
    # so that root's own run delivers with what the environment says.
    pkg["daemon"].stop()
    pkg["daemon"] = None
    os.unlink(INI)
    relay = pkg["relay"]
    for name, env in (("RELAYQ_CONFIG empty", env_config(pkg)),
                      ("no RELAYQ_CONFIG, no file",
                       {k: v for k, v in env_config(pkg).items()
                        if k != "RELAYQ_CONFIG"})):
        subject = "environment only, %s, %d" % (name, os.getpid())
        cp = run(["/usr/sbin/sendmail", "-i", "--", RCPT], stdin=message(subject),
                 env=env)
        assert cp.returncode == 0, fmt(cp)
        # Foreground delivery: exit 0 came after the relay's 250.
        m = wait_subject(relay, subject, timeout=1)
        assert m["auth_login"] == RELAY_USER        # from RELAYQ_RELAY_USER_FILE
        assert m["mail_from"] == ENV_SENDER, m["mail_from"]
        assert m["rcpt_tos"] == [RCPT]
    # The queue root wrote belongs to the service user.
    for d in ("queue", "failed", "tmp"):
        for n in os.listdir(os.path.join(SPOOL, d)):
            assert owner(os.path.join(SPOOL, d, n))[0] == "relayq", (d, n)


def test_environment_ignored_for_www_data(pkg):
    relay = pkg["relay"]
    elsewhere = os.path.join(WORK, "www-spool")
    os.makedirs(elsewhere, mode=0o777, exist_ok=True)
    os.chmod(elsewhere, 0o777)
    before = len(relay.messages)
    subjects = []
    for extra in ({}, {"RELAYQ_CONFIG": "/nonexistent/relayq.ini"}):
        subject = "www-data with RELAYQ_* %r %d" % (sorted(extra), os.getpid())
        subjects.append(subject)
        env = env_config(pkg, RELAYQ_QUEUE_DIR=elsewhere, **extra)
        # env(1) sets the variables right before the set-group-ID exec.
        argv = ["env"] + ["%s=%s" % kv for kv in sorted(env.items())] + \
            ["/usr/sbin/sendmail", "-i", "--", RCPT]
        cp = as_user("www-data", argv, stdin=message(subject))
        assert cp.returncode == 0, fmt(cp)
    time.sleep(1)
    assert len(relay.messages) == before, "www-data's run delivered directly"
    assert os.listdir(elsewhere) == [], "RELAYQ_QUEUE_DIR was obeyed"
    drops = maildrop_files()
    assert len(drops) == 2, drops
    for n in drops:
        assert owner(os.path.join(SPOOL, "maildrop", n))[0] == "www-data"
    # The queue runner (root, configured by its environment) takes them in.
    cp = run([SBIN, "-q"], env=env_config(pkg))
    assert cp.returncode == 0, fmt(cp)
    for subject in subjects:
        m = wait_subject(relay, subject, timeout=10)
        assert m["mail_from"] == ENV_SENDER       # the runner's rewriting
    assert maildrop_files() == []


# ---- 4. purge ----------------------------------------------------------------

def test_purge_leaves_nothing(pkg):
    if pkg["daemon"] is not None:
        pkg["daemon"].stop()
        pkg["daemon"] = None
    uid = pwd.getpwnam("relayq").pw_uid
    procs = [p for p in os.listdir("/proc") if p.isdigit()
             and os.path.exists("/proc/" + p)
             and os.stat("/proc/" + p).st_uid == uid]
    assert procs == [], "processes of relayq before purge: %r" % procs
    cp = apt("purge", "relayq")
    assert cp.returncode == 0, fmt(cp)
    assert pkg_status() in ("", "unknown ok not-installed"), pkg_status()
    left = [p for p in [SPOOL, INI, SBIN, UNIT, WANTS, *LINKS,
                        "/usr/share/man/man8/sendmail.8.gz",
                        "/usr/share/doc/relayq"]
            if os.path.lexists(p)]
    left += glob.glob(INI + "*") + glob.glob("/var/lib/systemd/deb-systemd-*/*relayq*")
    assert left == [], "left after purge: %r" % left
    assert not user_exists("relayq")
    assert not group_exists("relayq") and not group_exists("relayq-drop")
    assert statoverride(SBIN) is None and statoverride(INI) is None
