"""Fault/attack catalog, privilege cases P1-P8 (shared/notes/reliability.md
sections 2 and 5), against relayq installed set-group-ID by make install
(see privsetup.py): root:rqt-drop 2755, spool rqt-svc:rqt-drop 0710,
maildrop/ 1730, queue/ tmp/ failed/ corrupt/ 0700 rqt-svc, ini 0640
root:rqt-svc.  rqt-user1 and rqt-user2 are ordinary users; root's
`relayq -q` is the queue runner.  The I cases that behave differently for
an unprivileged submitter (I10, I13) are here too, since they need the
installed layout.

Needs root (it creates users and a set-group-ID install), as make check
does; run otherwise, every test fails saying so.  Only 127.0.0.1 is ever
contacted.
"""

import email.utils
import os
import re
import shutil
import stat
import subprocess
import threading
import time

import pytest

import privsetup as ps
from conftest import RELAY_USER, SECRET_FORMS, SENDER_DOMAIN, fmt, header_values



@pytest.fixture(autouse=True)
def _needs_root():
    assert os.geteuid() == 0, ("the privilege tests need root: they create "
                               "users and a set-group-ID install under " +
                               ps.ROOT)

RCPT = "bob@example.com"
MSG = b"Subject: priv\n\nbody\n"
ID_RE = re.compile(r"^[0-9a-f]{20}$")
SCRATCH = ps.ROOT + "/scratch"
HELPERS = ps.ROOT + "/helpers"


@pytest.fixture(scope="session")
def installed(certs):
    ps.install(certs.ca)
    for d in (SCRATCH, HELPERS):
        os.makedirs(d, mode=0o755, exist_ok=True)
        os.chmod(d, 0o755)
    yield
    ps.remove_all()


@pytest.fixture
def priv(installed, relay, certs):
    shutil.copyfile(certs.ca, ps.CA)
    r = relay()
    inst = ps.Installed(r)
    inst.clean_spool()
    inst.write_ini()
    shutil.rmtree(SCRATCH)
    os.makedirs(SCRATCH, mode=0o755)
    os.chmod(SCRATCH, 0o755)
    for u in (ps.USER1, ps.USER2, ps.SVC):
        d = os.path.join(SCRATCH, u)
        os.mkdir(d, 0o700)
        os.chown(d, ps.uid(u), ps.gid(u))
    yield inst


def home(user):
    return os.path.join(SCRATCH, user)


def maildrop():
    return ps.Installed.files("maildrop")


def queue_ids():
    return [n for n in ps.Installed.files("queue") if ID_RE.match(n)]


def submit(priv, user, args=(RCPT,), stdin=MSG, **kw):
    cp = priv.run(user, list(args), stdin, **kw)
    assert cp.returncode == 0, fmt(cp)
    return cp


def drop_id(cp):
    m = re.search(rb"([0-9a-f]{20}): dropped into", cp.stderr) or \
        re.search(rb"queued as ([0-9a-f]{20})", cp.stdout)
    assert m, fmt(cp)
    return m.group(1).decode()


def run_queue(priv, **kw):
    cp = priv.run_queue(**kw)
    assert cp.returncode == 0, fmt(cp)
    return cp


def settle(r, seconds=0.3):
    time.sleep(seconds)
    return r.messages


def assert_nothing_submitted(priv, cp):
    """No file at all in the maildrop, and the runner then finds nothing."""
    assert maildrop() == [], fmt(cp)
    run_queue(priv)
    assert queue_ids() == [] and ps.Installed.files("corrupt") == [], fmt(cp)
    assert settle(priv.relay) == [] and priv.relay.connections == 0


def dsns_to(r, addr):
    return [m for m in r.messages if m["mail_from"] == "" and addr in m["rcpt_tos"]]


USER1_ADDR = "%s@%s" % (ps.USER1, SENDER_DOMAIN)


# ---- the installed layout, and the normal unprivileged path ------------------

def _mode_owner(path):
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_P_installed_layout_as_INSTALL_says(priv):
    svc, svcg, drop = ps.uid(ps.SVC), ps.gid(ps.SVC), ps.gid(ps.GRP)
    assert _mode_owner(ps.SBIN) == (0o2755, 0, drop)
    assert _mode_owner(ps.INI) == (0o640, 0, svcg)
    assert _mode_owner(ps.SPOOL) == (0o710, svc, drop)
    assert _mode_owner(ps.SPOOL + "/maildrop") == (0o1730, svc, drop)
    for sub in ("queue", "tmp", "failed", "corrupt"):
        assert _mode_owner(os.path.join(ps.SPOOL, sub)) == (0o700, svc, svcg), sub
    assert os.readlink(ps.MAILQ) == "relayq"


def test_P_unprivileged_submission_then_root_runner_delivers(priv):
    r = priv.relay
    cp = submit(priv, ps.USER1, [RCPT], b"To: bob@example.com\nSubject: hello\n\nhi\n")
    qid = drop_id(cp)
    assert maildrop() == [qid]
    st = os.lstat(os.path.join(ps.SPOOL, "maildrop", qid))
    assert stat.S_IMODE(st.st_mode) == 0o604 and st.st_uid == ps.uid(ps.USER1)
    assert st.st_nlink == 1 and stat.S_ISREG(st.st_mode)
    assert queue_ids() == []
    assert settle(r) == [] and r.connections == 0      # the submitter never delivers

    cp = submit(priv, ps.USER1, ["-bs"], b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<carol@example.com>\r\n"
                b"DATA\r\nSubject: bs\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    assert re.search(rb"250 2\.0\.0 Ok: queued as [0-9a-f]{20}", cp.stdout), fmt(cp)
    assert len(maildrop()) == 2

    cp = run_queue(priv)
    msgs = r.wait_for_messages(2)
    assert maildrop() == [] and queue_ids() == [], fmt(cp)
    by_rcpt = {m["rcpt_tos"][0]: m for m in msgs}
    m = by_rcpt["bob@example.com"]
    assert m["mail_from"] == USER1_ADDR
    assert header_values(m["data"], "from") == [b" " + USER1_ADDR.encode()]
    assert header_values(m["data"], "message-id") == [
        b" <%s.relayq@%s>" % (qid.encode(), SENDER_DOMAIN.encode())]
    assert m["auth_login"] == RELAY_USER and m["tls"]
    assert by_rcpt["carol@example.com"]["mail_from"] == ""


# ---- P1: CR / LF / NUL in envelope values ----------------------------------------

P1_CASES = [
    ("rcpt-crlf", ["a@example.com\r\nRCPT TO:<victim@example.com>"]),
    ("rcpt-lf", ["a@example.com\nvictim@example.com"]),
    ("rcpt-cr", ["a@example.com\rvictim@example.com"]),
    ("rcpt-list-lf", ["a@example.com,\nvictim@example.com"]),
    ("f-crlf", ["-f", "app@example.com\r\nRCPT TO:<victim@example.com>", RCPT]),
    ("f-lf", ["-f", "app@example.com\nvictim@example.com", RCPT]),
    ("r-cr", ["-r", "app@example.com\r", RCPT]),
    ("f-attached-lf", ["-fapp@example.com\n", RCPT]),
]


@pytest.mark.parametrize("args", [c[1] for c in P1_CASES], ids=[c[0] for c in P1_CASES])
def test_P1_cr_lf_in_recipient_or_sender_refused(priv, args):
    cp = priv.run(ps.USER1, args, MSG)
    assert cp.returncode == 65, fmt(cp)
    assert b"control character" in cp.stderr, fmt(cp)
    assert_nothing_submitted(priv, cp)


def _bs(lines):
    return b"".join(l + b"\r\n" for l in lines)


def test_P1_nul_in_bs_address_refused(priv):
    r = priv.relay
    cp = priv.run(ps.USER1, ["-bs"], _bs([
        b"EHLO c",
        b"MAIL FROM:<app\x00@example.com>",
        b"MAIL FROM:<app@example.com>",
        b"RCPT TO:<victim@example.com\x00@allowed.example>",
        b"RCPT TO:<a\x00b@example.com>",
        b"RCPT TO:<ok@example.com>",
        b"DATA", b"Subject: nul", b"", b"x", b".", b"QUIT"]))
    assert cp.returncode == 0, fmt(cp)
    codes = [int(x[:3]) for x in cp.stdout.split(b"\r\n") if re.match(rb"^\d{3} ", x)]
    assert codes == [220, 250, 501, 250, 501, 501, 250, 354, 250, 221], fmt(cp)
    run_queue(priv)
    (m,) = r.wait_for_messages(1)
    assert settle(r) == [m]
    assert m["rcpt_tos"] == ["ok@example.com"] and m["mail_from"] == "app@example.com"


def test_P1_nul_in_bare_bs_address_refused(priv):
    r = priv.relay
    cp = priv.run(ps.USER1, ["-bs"], _bs([
        b"EHLO c", b"MAIL FROM:<app@example.com>",
        b"RCPT TO:victim@example.com\x00@allowed.example",
        b"RCPT TO:<ok@example.com>",
        b"DATA", b"Subject: nul", b"", b"x", b".", b"QUIT"]))
    replies = [x for x in cp.stdout.split(b"\r\n") if x]
    # The two replies after MAIL's: to the NUL line, then to the good RCPT.
    i = next(k for k, x in enumerate(replies) if x.startswith(b"250 2.1.0"))
    rcpt_replies = replies[i + 1:i + 3]
    assert rcpt_replies[0][:1] == b"5", replies
    assert rcpt_replies[1][:3] == b"250", replies
    run_queue(priv)
    (m,) = r.wait_for_messages(1)
    assert m["rcpt_tos"] == ["ok@example.com"]


@pytest.mark.parametrize("args,stdin", [
    (["-t"], b"To: ok@example.com\x00victim@example.com\nSubject: t\n\nbody\n"),
    ([RCPT], b"Subject: t\n\nbody\x00more\n"),
], ids=["t-header", "body"])
def test_P1_nul_via_t_headers_or_body_refused(priv, args, stdin):
    cp = priv.run(ps.USER1, args, stdin)
    assert cp.returncode == 65, fmt(cp)
    assert b"NUL" in cp.stderr, fmt(cp)
    # The submitter gave up the group before reading, so it cannot remove
    # its file (documented): an empty, unfinished (0600) file may remain,
    # never one the runner would take in.
    for n in maildrop():
        st = os.lstat(os.path.join(ps.SPOOL, "maildrop", n))
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 0, (n, st)
    run_queue(priv)
    assert queue_ids() == [] and ps.Installed.files("corrupt") == []
    assert settle(priv.relay) == [] and priv.relay.connections == 0


# ---- P2: option-like values, -oQ, -C ---------------------------------------------------

P2_CASES = [
    ("f-dash-X", ["-f", "-Xshell.php", RCPT], 65),
    ("f-dash-oQ", ["-f", "-oQ/tmp", RCPT], 65),
    ("rcpt-dash-X", ["--", "-X{h}/shell.php"], 65),
    ("rcpt-dash-X-after-operand", [RCPT, "-X{h}/shell.php"], 65),
    ("rcpt-dash-C", ["--", "-C{h}/other.cf"], 65),
    ("option-X", ["-X{h}/shell.php", RCPT], 64),
    ("option-X-separate", ["-X", "{h}/shell.php", RCPT], 64),
    ("mode-be", ["-be", RCPT], 64),
    ("mode-bd", ["-bd"], 64),
    ("debug-d", ["-d0.1", RCPT], 64),
]


@pytest.mark.parametrize("args,code", [c[1:] for c in P2_CASES],
                         ids=[c[0] for c in P2_CASES])
def test_P2_option_like_values_refused(priv, args, code):
    h = home(ps.USER1)
    cp = priv.run(ps.USER1, [a.format(h=h) for a in args], MSG, cwd=h)
    assert cp.returncode == code, fmt(cp)
    assert cp.stderr.strip(), fmt(cp)
    assert os.listdir(h) == [], os.listdir(h)
    assert not os.path.exists("/tmp/shell.php") and not os.path.exists("/shell.php")
    assert_nothing_submitted(priv, cp)


def test_P2_oQ_and_other_legacy_options_ignored_without_effect(priv):
    h = home(ps.USER1)
    for args in (["-oQ.", RCPT], ["-oQ" + h, RCPT], ["-oA" + h + "/aliases", RCPT],
                 ["-O", "QueueDirectory=" + h, RCPT]):
        submit(priv, ps.USER1, args, cwd=h)
        assert os.listdir(h) == [], (args, os.listdir(h))
    assert len(maildrop()) == 4
    run_queue(priv)
    msgs = priv.relay.wait_for_messages(4)
    assert all(m["rcpt_tos"] == [RCPT] and m["mail_from"] == USER1_ADDR for m in msgs)
    assert os.listdir(h) == []


def _user_ini(priv, path, user, **sections):
    text = priv.ini_text(extra=sections)
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, ps.uid(user), ps.gid(user))
    os.chmod(path, 0o600)


def test_P2_C_other_config_as_non_root_gives_up_the_group(priv):
    h = home(ps.USER1)
    # a file that does not exist, attached to -C as in "-Cother.cf"
    cp = priv.run(ps.USER1, ["-Cother.cf", RCPT], MSG, cwd=h)
    assert cp.returncode == 78 and b"other.cf" in cp.stderr, fmt(cp)
    # files the user may not read, the real configuration included
    for path in (ps.INI, "/etc/shadow"):
        cp = priv.run(ps.USER1, ["-C", path, RCPT], MSG)
        assert cp.returncode == 78, fmt(cp)
        assert path.encode() in cp.stderr, fmt(cp)
        assert b"root:" not in cp.stderr and b"[relay]" not in cp.stderr, fmt(cp)
    assert maildrop() == [] and queue_ids() == []
    # its own file naming the real spool: without the group it cannot write it
    _user_ini(priv, h + "/real-spool.ini", ps.USER1, queue={"dir": ps.SPOOL})
    cp = priv.run(ps.USER1, ["-C", h + "/real-spool.ini", RCPT], MSG)
    assert cp.returncode == 73, fmt(cp)
    assert maildrop() == [] and queue_ids() == [] and ps.Installed.files("tmp") == []
    # its own file and spool: it works as itself, not with the group, and
    # cannot read the password file it names
    _user_ini(priv, h + "/own.ini", ps.USER1, queue={"dir": h + "/spool"},
              relay={"password": None, "password_file": ps.INI})
    cp = priv.run(ps.USER1, ["-C", h + "/own.ini", RCPT], MSG)
    assert cp.returncode == 0, fmt(cp)
    assert b"deferred" in cp.stderr, fmt(cp)
    own = [n for n in os.listdir(h + "/spool/queue") if ID_RE.match(n)]
    assert len(own) == 1
    st = os.lstat(os.path.join(h, "spool/queue", own[0]))
    assert (st.st_uid, st.st_gid) == (ps.uid(ps.USER1), ps.gid(ps.USER1))
    assert priv.relay.auth_successes == 0 and priv.relay.messages == []
    assert maildrop() == [] and queue_ids() == []


# ---- P3: -F ----------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["-F", "Eve\r\nBcc: victim@example.com", RCPT],
    ["-F", "Eve\nBcc: victim@example.com", RCPT],
    ["-F", "Eve\rX", RCPT],
    ["-FEve\n", RCPT],
    ["-F", "Eve\tTab\x7f", RCPT],
], ids=["crlf", "lf", "cr", "attached-lf", "tab-del"])
def test_P3_fullname_control_characters_refused(priv, args):
    cp = priv.run(ps.USER1, args, MSG)
    assert cp.returncode == 65, fmt(cp)
    assert b"-F" in cp.stderr, fmt(cp)
    assert_nothing_submitted(priv, cp)


def _one_from(m):
    (v,) = header_values(m["data"], "from")
    unfolded = v.replace(b"\r\n", b"").decode("utf-8", "replace")
    addrs = email.utils.getaddresses([unfolded])
    assert len(addrs) == 1, (v[:300], addrs[:5])
    return addrs[0], v


def test_P3_fullname_quotes_safely_encoded(priv):
    name = 'Eve "the" \\ hacker <evil@example.com>, other@example.com'
    submit(priv, ps.USER1, ["-F", name, RCPT])
    run_queue(priv)
    (m,) = priv.relay.wait_for_messages(1)
    (dname, addr), raw = _one_from(m)
    assert addr == USER1_ADDR
    assert dname == name, raw
    assert m["rcpt_tos"] == [RCPT] and m["mail_from"] == USER1_ADDR


BIG_NAME = ('Big "quoted" \\name ' * 6000)[:100 * 1024]

LINE = ("relayq bug: an unprivileged submitter writes -F as one maildrop "
        "envelope line, but the runner refuses lines over 1024 octets "
        "(MAILDROP_LINE in src/maildrop.c): exit 0, then the message is moved "
        "to corrupt/ without a DSN, where a direct submission takes the name")


def _from_of_submission(priv, user, name):
    cp = priv.run(user, ["-odq", "-F", name, RCPT], MSG)
    if cp.returncode == 65:
        assert_nothing_submitted(priv, cp)
        return None
    assert cp.returncode == 0, fmt(cp)
    run_queue(priv)
    assert ps.Installed.files("corrupt") == [], "moved to corrupt/"
    (m,) = priv.relay.wait_for_messages(1)
    for line in m["data"].split(b"\r\n"):
        assert len(line) <= 998
    (dname, addr), raw = _one_from(m)
    assert addr == (USER1_ADDR if user else "root@" + SENDER_DOMAIN), raw[-300:]
    return dname


@pytest.mark.parametrize("user", [
    None,
    ps.USER1,
], ids=["root-direct", "unprivileged"])
def test_P3_fullname_100kb_safely_encoded_or_refused(priv, user):
    dname = _from_of_submission(priv, user, BIG_NAME)
    if dname is not None:
        # the line breaks relayq inserts (CRLF SP) may add spaces, nothing else
        assert dname.replace(" ", "") == BIG_NAME.replace(" ", "")


@pytest.mark.parametrize("user", [None, ps.USER1], ids=["root-direct", "unprivileged"])
def test_P3_fullname_fold_cannot_inject_a_from_address(priv, user):
    # 990 octets put the backslash of the escaped quote last on the first
    # 998-octet line of 'From: "...'; short enough for the maildrop's
    # envelope line limit
    name = "A" * 990 + '", ev@x.io, "B'
    dname = _from_of_submission(priv, user, name)
    if dname is not None:
        assert "ev@x.io" in dname


# ---- P4: hostile environment --------------------------------------------------------------

MARKER_SO = r"""
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void marker(void)
{
    int fd = open("%s", O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (fd >= 0) { (void)write(fd, "loaded\n", 7); close(fd); }
}
unsigned int la_version(unsigned int v) { return v; }
"""


def _marker_so():
    marker = os.path.join(SCRATCH, "marker")
    so = os.path.join(HELPERS, "marker.so")
    ps.compile_c(MARKER_SO % marker, so, shared=True)
    os.chmod(so, 0o755)
    return so, marker


def test_P4_hostile_environment_ignored(priv, relay):
    r = priv.relay
    evil = relay()                       # a second relay nobody may use
    so, marker = _marker_so()
    os.chmod(SCRATCH, 0o1777)
    h = home(ps.USER1)
    fifo = h + "/fifo"
    os.mkfifo(fifo, 0o666)
    os.chown(fifo, ps.uid(ps.USER1), ps.gid(ps.USER1))
    # positive control: the marker library does load in an ordinary program
    cp = subprocess.run([*ps.as_user(ps.USER1), "/usr/bin/env", "-i",
                         "LD_PRELOAD=" + so, "/bin/true"], timeout=30)
    assert cp.returncode == 0 and os.path.exists(marker)
    os.unlink(marker)
    svc_dir = home(ps.SVC)
    hostile = {
        "GLIBC_TUNABLES": "glibc.malloc.mxfast=glibc.malloc.mxfast=A",
        "LD_PRELOAD": so, "LD_AUDIT": so, "LD_LIBRARY_PATH": h,
        "MALLOC_CHECK_": "3", "MALLOC_PERTURB_": "165",
        "TZ": "XST-05:17", "LANG": "de_DE.UTF-8", "LC_ALL": "de_DE.UTF-8",
        "LANGUAGE": "de", "LOCPATH": h, "NLSPATH": fifo, "GCONV_PATH": h,
        "HOSTALIASES": fifo, "LOCALDOMAIN": "evil.example",
        "RELAYQ_CONFIG": fifo,           # opening it would hang the run
        "RELAYQ_QUEUE_DIR": h + "/spool",
        "RELAYQ_RELAY_HOST": "127.0.0.1", "RELAYQ_RELAY_PORT": str(evil.port),
        "RELAYQ_RELAY_TLS": "none", "RELAYQ_RELAY_PASSWORD_FILE": fifo,
        "RELAYQ_SENDER_ADDRESS": "evil@example.net",
        "RELAYQ_SENDER_REWRITE": "always",
        "RELAYQ_ALIASES_ROOT": "evil@example.net",
        "RELAYQ_QUEUE_DELIVERY": "foreground", "RELAYQ_LOG_TARGET": "stderr",
    }
    # 1. an ordinary user: maildrop submission, nothing of the above used
    cp = priv.run(ps.USER1, ["root"], b"Subject: env1\n\nbody\n", env=hostile,
                  timeout=20)
    assert cp.returncode == 0, fmt(cp)
    assert b"dropped into " + ps.SPOOL.encode() in cp.stderr, fmt(cp)
    # 2. RELAYQ_CONFIG naming a file the user owns and may read: still ignored
    _user_ini(priv, h + "/evil.ini", ps.USER1, queue={"dir": h + "/spool"},
              relay={"port": evil.port, "tls": "none", "user": None, "password": None})
    cp = priv.run(ps.USER1, ["root"], b"Subject: env2\n\nbody\n",
                  env=dict(hostile, RELAYQ_CONFIG=h + "/evil.ini"), timeout=20)
    assert cp.returncode == 0, fmt(cp)
    assert len(maildrop()) == 2
    # 3. the service user, who works directly (privileged run, so the
    # environment is emptied too): its own Date:, queue dir as configured
    cp = priv.run(ps.SVC, ["-odq", "root"], b"Subject: env3\n\nbody\n",
                  env=dict(hostile, RELAYQ_QUEUE_DIR=svc_dir + "/spool",
                           RELAYQ_CONFIG=""), timeout=20)
    assert cp.returncode == 0, fmt(cp)
    assert len(queue_ids()) == 1
    for out in (c.stderr for c in priv.runs[-3:]):
        assert not re.search(rb"Fehler|Warteschlange", out)       # LANG ignored
    assert not os.path.exists(marker), "LD_PRELOAD/LD_AUDIT library was loaded"
    assert sorted(os.listdir(h)) == ["evil.ini", "fifo"]
    assert os.listdir(svc_dir) == []
    run_queue(priv)
    msgs = r.wait_for_messages(3)
    assert settle(r) == msgs and evil.connections == 0
    for m in msgs:
        assert m["rcpt_tos"] == ["admin@example.com"], m["rcpt_tos"]
        assert m["mail_from"] in (USER1_ADDR, "%s@%s" % (ps.SVC, SENDER_DOMAIN))
        assert b"evil" not in m["data"]
        (date,) = header_values(m["data"], "date")
        assert not date.rstrip().endswith(b"+0517"), date
    assert not os.path.exists(marker)


# ---- P5: argc == 0 --------------------------------------------------------------------------

ARGC0 = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
/* argv[1]: program; argv[2], argv[3]: two more environment strings.  Runs the program
 * with an empty argument vector and an environment aimed at code that
 * would read argv[1] when argc is 0 (CVE-2021-4034 class). */
int main(int argc, char **argv)
{
    char *args[] = { NULL };
    char *env[] = { "bob@example.com", "-Cevil.ini", "PATH=GCONV_PATH=.",
        "GCONV_PATH=.", "CHARSET=EVIL", NULL, NULL, NULL };
    if (argc < 4)
        return 2;
    env[5] = argv[2];
    env[6] = argv[3];
    execve(argv[1], args, env);
    perror("execve");
    return 127;
}
"""


@pytest.mark.parametrize("user", [ps.USER1, None], ids=["setgid-unprivileged", "root"])
def test_P5_argc_zero_exec_refused(priv, user):
    helper = ps.compile_c(ARGC0, os.path.join(HELPERS, "argc0"))
    os.chmod(helper, 0o755)
    so, marker = _marker_so()
    os.chmod(SCRATCH, 0o1777)
    fifo = home(ps.USER1) + "/fifo"
    os.mkfifo(fifo, 0o666)
    os.chmod(home(ps.USER1), 0o755)
    # root's environment applies (relayq(8) SECURITY): give it no FIFO
    extra = ["RELAYQ_CONFIG=" + fifo, "LD_PRELOAD=" + so] if user else [
        "X_UNUSED=1", "LD_PRELOAD=" + so]
    cmd = [*ps.as_user(user), helper, ps.SBIN, *extra]
    cp = subprocess.run(cmd, input=b"To: victim@example.com\n\nbody\n",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20,
                        cwd=home(ps.USER1))
    ps.check_no_secret(cp)
    assert cp.returncode == 64, fmt(cp)
    assert cp.stderr.startswith(b"relayq: ") and cp.stdout == b"", fmt(cp)
    assert not os.path.exists(marker)
    assert not os.path.exists(home(ps.USER1) + "/evil.ini")
    assert_nothing_submitted(priv, cp)


# ---- P6: what an ordinary user cannot see ---------------------------------------------------

DENIED = ("EACCES", "EPERM")


def test_P6_unprivileged_cannot_read_ini_queue_or_mail(priv):
    r = priv.relay
    # user2's mail: B in queue/ (the relay defers it), A in the maildrop
    r.data_reply = (451, "4.3.0 later")
    b = drop_id(submit(priv, ps.USER2, [RCPT], b"Subject: secret-B\n\nuser2 private B\n"))
    run_queue(priv)
    assert b in queue_ids()
    a = drop_id(submit(priv, ps.USER2, [RCPT], b"Subject: secret-A\n\nuser2 private A\n"))
    assert maildrop() == [a]
    sp = ps.SPOOL
    targets = [("read", ps.INI), ("list", sp), ("list", sp + "/maildrop"),
               ("list", sp + "/queue"), ("list", sp + "/tmp"), ("list", sp + "/failed"),
               ("list", sp + "/corrupt"), ("read", sp + "/queue/" + b),
               ("read", sp + "/queue/" + b + ".state"), ("read", sp + "/maildrop/" + a),
               ("stat", sp + "/maildrop/" + a), ("read", sp + "/lock")]
    got = priv.probe(ps.USER1, targets)
    assert all(g in DENIED for g in got), list(zip(targets, got))
    # with the submission group itself (a set-group-ID escape): still nothing
    # but creating a file in maildrop/
    # (stat of a name it knows works then: the group may search maildrop/)
    targets = [t for t in targets if t[0] != "stat"]
    got = priv.probe(ps.USER1, targets + [("create", sp + "/maildrop/probe")],
                     groups=[ps.GRP])
    assert all(g in DENIED for g in got[:-1]), list(zip(targets, got))
    assert got[-1] == "ok"
    os.unlink(sp + "/maildrop/probe")
    # and through relayq
    for prog, args in [(ps.MAILQ, []), (ps.SBIN, ["-bp"]), (ps.SBIN, ["-q"]),
                       (ps.SBIN, ["-q1m"]), (ps.SBIN, ["queue", "list"]),
                       (ps.SBIN, ["queue", "list", "--json"]),
                       (ps.SBIN, ["queue", "retry", b]), (ps.SBIN, ["queue", "remove", b]),
                       (ps.SBIN, ["check", "--no-dns"]), (ps.SBIN, ["dns-records", "example.com"]),
                       (ps.SBIN, ["-v", "-bp"])]:
        cp = priv.run(ps.USER1, args, prog=prog, timeout=20)
        assert cp.returncode == 77, (prog, args, fmt(cp))
        assert cp.stdout == b"" and b"permission denied" in cp.stderr, fmt(cp)
        assert a.encode() not in cp.stderr and b.encode() not in cp.stderr
        assert b"secret" not in cp.stderr
    assert maildrop() == [a] and b in queue_ids()
    # positive control: root sees both
    cp = priv.run(None, ["-bp"])
    assert cp.returncode == 0 and b.encode() in cp.stdout, fmt(cp)


# ---- P7: planted links -------------------------------------------------------------------------

def _fake_id(n):
    return "%014x%06x" % (int(time.time() * 1e6) - 10**9, n)


def test_P7_links_in_maildrop_quarantined_targets_untouched(priv):
    r = priv.relay
    md = ps.SPOOL + "/maildrop"
    before = {p: ps.Installed.snapshot(p) for p in (ps.INI, "/etc/shadow")}
    legit = drop_id(submit(priv, ps.USER1, [RCPT], b"Subject: mine\n\nmine\n"))
    names = [_fake_id(i) for i in range(1, 6)]
    # as a user holding the submission group: symlinks, a FIFO, a second
    # link to its own finished file
    got = priv.probe(ps.USER1, [("symlink:" + ps.INI, md + "/" + names[0]),
                                ("symlink:/etc/shadow", md + "/" + names[1]),
                                ("mkfifo", md + "/" + names[2]),
                                ("link:" + md + "/" + legit, md + "/" + names[3])],
                     groups=[ps.GRP])
    assert got == ["ok"] * 4, got
    # as root, as if protected_hardlinks were off: a hard link to the ini
    os.link(ps.INI, md + "/" + names[4])
    cp = priv.run_queue(timeout=30)          # a FIFO must not block the runner
    assert cp.returncode == 0, fmt(cp)
    assert maildrop() == [], fmt(cp)
    corrupt = ps.Installed.files("corrupt")
    for n in names + [legit]:
        assert [c for c in corrupt if c.startswith("drop-" + n)], (n, corrupt)
        assert re.search(rb"maildrop/" + n.encode() + rb": .*corrupt", cp.stderr), fmt(cp)
    assert queue_ids() == []
    assert settle(r) == [] and r.connections == 0
    for p, snap in before.items():
        assert ps.Installed.snapshot(p) == snap, p


def _strace_creates(log):
    """[(path, flags)] of every open that may create a file."""
    out = []
    rx = re.compile(r'\b(?:open|openat|creat)\((?:(AT_FDCWD|\d+)(?:<([^>]*)>)?, )?"([^"]*)", ([A-Z_|0-9]+)')
    with open(log) as f:
        for line in f:
            m = rx.search(line)
            if not m or "O_CREAT" not in m.group(4):
                continue
            base, path = m.group(2) or "/", m.group(3)
            out.append((os.path.normpath(os.path.join(base, path)), m.group(4).split("|")))
    return out


def test_P7_message_files_created_exclusive_and_nofollow(priv, tmp_path):
    strace = shutil.which("strace")
    assert strace, "strace is needed for this test (add it to tests/deps.sh)"
    log = str(tmp_path / "strace")
    base = [strace, "-f", "-y", "-qq", "-e", "trace=open,openat,creat", "-o"]
    env = ["/usr/bin/env", "-i", "PATH=" + ps.PATH]
    runs = [
        base + [log + ".drop", "-u", ps.USER1] + env + [ps.SBIN, RCPT],
        base + [log + ".bs", "-u", ps.USER1] + env + [ps.SBIN, "-bs"],
        base + [log + ".svc", "-u", ps.SVC] + env + [ps.SBIN, "-odq", RCPT],
        base + [log + ".root"] + env + [ps.SBIN, "-odq", RCPT],
        base + [log + ".runner"] + env + [ps.SBIN, "-q"],
    ]
    stdin = {1: b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
                b"Subject: bs\r\n\r\nx\r\n.\r\nQUIT\r\n"}
    for i, cmd in enumerate(runs):
        cp = subprocess.run(cmd, input=stdin.get(i, MSG), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=60, cwd="/")
        ps.check_no_secret(cp)
        assert cp.returncode == 0, (cmd, fmt(cp))
    priv.relay.wait_for_messages(4)
    creates = []
    for suffix in (".drop", ".bs", ".svc", ".root", ".runner"):
        creates += _strace_creates(log + suffix)
    in_spool = [(p, f) for p, f in creates if p.startswith(ps.SPOOL + "/")]
    msg_files = [(p, f) for p, f in in_spool
                 if ID_RE.match(os.path.basename(p))
                 and os.path.basename(os.path.dirname(p)) in ("maildrop", "tmp")]
    assert len(msg_files) >= 5, in_spool
    for p, f in in_spool:
        assert "O_NOFOLLOW" in f, (p, f)
    for p, f in msg_files:
        assert "O_EXCL" in f, (p, f)


def _deferred_message(priv):
    priv.relay.data_reply = (451, "4.3.0 later")
    qid = drop_id(submit(priv, ps.USER1))
    run_queue(priv)
    assert qid in queue_ids()
    return qid


def test_P7_symlinks_in_tmp_and_spool_do_not_redirect_runner_writes(priv):
    qid = _deferred_message(priv)
    before = {p: ps.Installed.snapshot(p) for p in (ps.INI, "/etc/shadow")}
    planted = {ps.SPOOL + "/tmp/" + qid + ".state": ps.INI,
               ps.SPOOL + "/tmp/" + qid: "/etc/shadow",
               ps.SPOOL + "/tmp/" + qid + ".wait": "/etc/shadow",
               ps.SPOOL + "/rate": ps.INI}
    for link, target in planted.items():
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)
    cp = priv.run_queue(timeout=30)
    assert cp.returncode == 0, fmt(cp)
    # The runner never writes through them: a link where it writes (the
    # state file in tmp/, rate) is replaced by a file of its own.
    for link in (ps.SPOOL + "/tmp/" + qid + ".state", ps.SPOOL + "/rate"):
        assert not os.path.islink(link), link
    priv.relay.data_reply = None
    for link in planted:
        if os.path.lexists(link):
            os.unlink(link)
    cp = priv.run_queue(timeout=30)
    assert cp.returncode == 0, fmt(cp)
    priv.relay.wait_for_messages(1)
    for p, snap in before.items():
        assert ps.Installed.snapshot(p) == snap, p


@pytest.mark.parametrize("where", ["tmp-state", "tmp-sent", "rate"])
def test_P7_hardlinks_in_tmp_and_spool_do_not_redirect_runner_writes(priv, where):
    qid = _deferred_message(priv)
    if where == "tmp-sent":
        priv.relay.data_reply = None        # tmp/sent is written after a delivery
    victim = ps.ETC + "/svc-owned.conf"
    with open(victim, "w") as f:
        f.write("precious service configuration\n")
    os.chown(victim, ps.uid(ps.SVC), ps.gid(ps.SVC))
    os.chmod(victim, 0o600)
    snap = ps.Installed.snapshot(victim)
    link = ps.SPOOL + {"tmp-state": "/tmp/%s.state" % qid, "tmp-sent": "/tmp/sent",
                       "rate": "/rate"}[where]
    if os.path.lexists(link):
        os.unlink(link)
    os.link(victim, link)
    try:
        cp = priv.run_queue(timeout=30)
        assert cp.returncode == 0, fmt(cp)
        assert ps.Installed.snapshot(victim) == snap, open(victim, "rb").read()
    finally:
        os.unlink(victim)


# ---- P8: the password never shows ------------------------------------------------------------

def _proc_texts():
    """argv and environment of every running installed relayq (other
    sessions' processes may hold the test password legitimately)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.readlink("/proc/%s/exe" % pid) != ps.SBIN:
                continue
        except OSError:
            continue
        for name in ("cmdline", "environ"):
            try:
                with open("/proc/%s/%s" % (pid, name), "rb") as f:
                    out.append(f.read())
            except OSError:
                pass
    return out


def test_P8_password_never_in_ps_logs_verbose_or_dsn(priv, relay):
    r = priv.relay
    r.rcpt_replies = {"gone@example.com": (550, "5.1.1 <gone@example.com>: no such user")}
    r.reply_delay = 1.5                     # keeps the session open while we look
    submit(priv, ps.USER1, ["-F", "P8 User", RCPT, "gone@example.com"],
           b"Subject: p8\n\nbody\n")
    submit(priv, ps.USER1, ["-v", "carol@example.com"], b"Subject: p8b\n\nbody\n")
    seen, procs = [], []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            texts = _proc_texts()
            procs.extend(texts)
            seen.extend(texts)
            for cmd in ([["ps", "-eww", "-o", "pid,args"], ["ps", "eww", "-e", "-o", "pid,args"]]
                        if shutil.which("ps") else []):
                out = subprocess.run(cmd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT).stdout
                seen.extend(l for l in out.split(b"\n") if ps.ROOT.encode() in l)
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    try:
        cp = priv.run_queue(args=("-q", "-v"), timeout=60)
    finally:
        stop.set()
        t.join()
    assert cp.returncode == 0, fmt(cp)
    assert b"AUTH" in cp.stderr and b"<<<" in cp.stderr, fmt(cp)   # a -v transcript
    r.reply_delay = 0
    # the DSN for gone@ goes out through the relay, to the submitter
    deadline = time.monotonic() + 20
    while not dsns_to(r, USER1_ADDR) and time.monotonic() < deadline:
        run_queue(priv)
        time.sleep(0.2)
    (dsn,) = dsns_to(r, USER1_ADDR)
    assert b"gone@example.com" in dsn["data"]
    # the service user's direct, verbose, foreground delivery
    cp = priv.run(ps.SVC, ["-v", "dave@example.com"], b"Subject: p8c\n\nbody\n")
    assert cp.returncode == 0 and b"AUTH" in cp.stderr, fmt(cp)
    # root's relay check, and a relay that refuses the password
    cp = priv.run(None, ["-v", "check", "--no-dns"])
    assert b"auth" in (cp.stderr + cp.stdout).lower(), fmt(cp)
    bad = relay(password="another-password")
    priv.write_ini(relay=bad)
    submit(priv, ps.USER1, ["erin@example.com"])
    cp = priv.run(None, ["-q", "-v"])
    assert b"535" in cp.stderr, fmt(cp)
    texts = [b"\n".join(o for _, so, se in ps.OUTPUTS for o in (so, se))]
    texts += seen + [m["data"] for m in r.messages] + [priv.spool_bytes()]
    for needle in SECRET_FORMS:
        for tx in texts:
            assert needle not in tx, "password form %r found" % needle
    assert [p for p in procs if b"-q" in p], "never saw the runner running"


# ---- I10 / I13 for an unprivileged submitter ---------------------------------------------------



@pytest.mark.parametrize("args,stdin", [
    (["jörg@example.org"], MSG),
    (["-t"], "To: jörg@example.org\nSubject: u\n\nx\n".encode()),
], ids=["argv", "t-header"])
def test_I10_utf8_local_part_unprivileged_refused_or_reported(priv, args, stdin):
    cp = priv.run(ps.USER1, args, stdin)
    if cp.returncode == 65:
        assert b"SMTPUTF8" in cp.stderr
        assert_nothing_submitted(priv, cp)
        return
    assert cp.returncode == 0, fmt(cp)
    run_queue(priv)
    run_queue(priv)
    (dsn,) = dsns_to(priv.relay, USER1_ADDR)
    assert "jörg@example.org".encode() in dsn["data"] or b"SMTPUTF8" in dsn["data"]


def test_I13_oversize_unprivileged_refused_or_reported(priv):
    priv.write_ini(extra={"queue": {"max_size": "25M"}})
    big = b"Subject: big\n\n" + (b"x" * 76 + b"\n") * (30 * 1024 * 1024 // 77)
    cp = priv.run(ps.USER1, [RCPT], big, timeout=60)
    if cp.returncode != 0:
        assert cp.returncode in (65, 69), fmt(cp)
        assert_nothing_submitted(priv, cp)
        return
    run_queue(priv)
    run_queue(priv)
    assert [m for m in priv.relay.messages if m["mail_from"] != ""] == []
    (dsn,) = dsns_to(priv.relay, USER1_ADDR)
    assert b"max_size" in dsn["data"] or b"5.3.4" in dsn["data"]


def test_I14_ten_thousand_recipients_unprivileged_runner_not_stalled(priv):
    rcpts = ["u%05d@example.com" % i for i in range(10000)]
    submit(priv, ps.USER1, rcpts, b"Subject: many\n\nbody\n", timeout=20)
    assert len(maildrop()) == 1
    try:
        run_queue(priv, timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("the runner took more than 20 s over 10 000 recipients")
    (m,) = priv.relay.wait_for_messages(1)
    assert sorted(m["rcpt_tos"]) == rcpts and priv.relay.connections == 1
