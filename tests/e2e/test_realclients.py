"""relayq driven by REAL clients from Debian packages, end to end to the fake
relay: PHP mail() (php8.2-cli), Symfony Mailer (php-symfony-mailer), Debian
cron, and bsd-mailx.

tests/deps.sh (make deps / make check) installs php8.2-cli,
php-symfony-mailer and cron with --no-install-recommends (never an MTA), and
tests/clients-setup.sh unpacks bsd-mailx, which Depends on an MTA, with
`apt-get download` + `dpkg -x` under /opt/relayq-tests (not installed).  A
missing client is installed by the session fixture below; failing to install
it is a test failure, never a skip.

Every client is pointed at a small recording wrapper (Recorder) that saves the
argv, the uid, the stdin bytes (tee) and relayq's stderr and exit code of each
call, then runs `relayq -C <ini> "$@"`:
  PHP mail()   -d sendmail_path="<wrapper> -t -i"
  Symfony      sendmail://default?command=<wrapper> -bs   and  <wrapper> -t -i
  bsd-mailx    `set sendmail=<wrapper>` in a private $MAILRC
  cron         cron -f in a private mount namespace (unshare -m) in which
               /usr/sbin is a bind-mounted directory of symlinks to the real
               /usr/sbin plus sendmail -> wrapper, /run is a fresh tmpfs (so
               the @reboot job runs at once and the pid file is private), and
               /etc/crontab, /etc/cron.d and the crontabs spool are private.
               The real system is never changed.

The configuration adds to conftest's [relay]/[queue]/[log]:
  [sender] address = noreply@example.com, rewrite = local (no domain key)
  [aliases] root = admin@example.com, default = catchall@example.com
so local senders become noreply@example.com (envelope and From:, display
name kept) and local recipients go through the aliases (envelope only).
"""

import email.utils
import json
import os
import shlex
import socket
import subprocess
import time
import urllib.parse

import pytest

from conftest import (REPO, SECRET_FORMS, assert_crlf_only, body_of,
                      header_values, normalize_lines)

SENDER = "noreply@example.com"
ADMIN = "admin@example.com"
CATCHALL = "catchall@example.com"
CONFIG = {
    "sender": {"domain": None, "address": SENDER, "rewrite": "local"},
    "aliases": {"root": ADMIN, "default": CATCHALL},
}

CLIENTS_DIR = os.environ.get("RELAYQ_CLIENTS_DIR") or "/opt/relayq-tests"
PHP = "/usr/bin/php8.2"
SYMFONY_AUTOLOAD = "/usr/share/php/Symfony/Component/Mailer/autoload.php"
CRON = "/usr/sbin/cron"
UNSHARE = "/usr/bin/unshare"
MAILX = os.path.join(CLIENTS_DIR, "bsd-mailx", "usr", "bin", "bsd-mailx")
REQUIRED = {
    PHP: "php8.2-cli",
    SYMFONY_AUTOLOAD: "php-symfony-mailer",
    CRON: "cron",
    UNSHARE: "util-linux",
    MAILX: "bsd-mailx (unpacked by tests/clients-setup.sh)",
}


# ---- setup ------------------------------------------------------------------

def _missing():
    return ["%s (%s)" % (p, pkg) for p, pkg in REQUIRED.items()
            if not os.access(p, os.R_OK)]


@pytest.fixture(scope="session")
def real_clients():
    """The real clients are there; if not, tests/deps.sh installs them."""
    if _missing():
        cp = subprocess.run(["sh", os.path.join(REPO, "tests", "deps.sh")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=900)
        if _missing():
            pytest.fail("real clients missing after tests/deps.sh (rc=%d): %s\n%s"
                        % (cp.returncode, ", ".join(_missing()),
                           cp.stdout.decode("utf-8", "replace")[-4000:]))


def client_env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith("RELAYQ_")}
    e.update(extra)
    return e


class Recorder:
    """A sendmail stand-in that records each call, then execs relayq."""

    def __init__(self, relayq, tmp_path):
        self.dir = os.path.join(str(tmp_path), "calls")
        os.makedirs(self.dir)
        self.path = os.path.join(str(tmp_path), "sendmail-wrapper")
        q = shlex.quote
        # stdin is copied by a tee in the background, through a fifo, so
        # that when relayq exits the client sees EOF on its stdout at once
        # (as without the wrapper: matters for -bs after an error).
        script = (
            "#!/bin/sh\n"
            "# relayq e2e: records one call by a real client, then runs relayq.\n"
            "n=$(mktemp %(rec)s/call.XXXXXX) || exit 75\n"
            "{ id -u; echo \"$#\"; } > \"$n.uid\"\n"
            "printf '%%s\\0' \"$@\" > \"$n.argv\"\n"
            "mkfifo \"$n.fifo\" || exit 75\n"
            "exec 3<&0\n"
            "{ tee \"$n.in\" > \"$n.fifo\"; : > \"$n.indone\"; } <&3 >/dev/null 2>&1 &\n"
            "%(bin)s -C %(ini)s \"$@\" < \"$n.fifo\" 2> \"$n.err\" 3<&-\n"
            "rc=$?\n"
            "echo \"$rc\" > \"$n.rc.tmp\" && mv \"$n.rc.tmp\" \"$n.rc\"\n"
            "exit \"$rc\"\n"
        ) % {"rec": q(self.dir), "bin": q(os.path.abspath(relayq.bin)),
             "ini": q(relayq.ini)}
        with open(self.path, "w") as f:
            f.write(script)
        os.chmod(self.path, 0o755)

    def calls(self):
        """Finished calls, oldest first: dicts uid, argv, stdin, stderr, rc."""
        out = []
        for name in os.listdir(self.dir):
            base = os.path.join(self.dir, name)
            if "." in name[len("call."):] or not (
                    os.path.exists(base + ".rc") and os.path.exists(base + ".indone")):
                continue

            def rd(ext):
                with open(base + ext, "rb") as f:
                    return f.read()
            uid, argc = rd(".uid").split()
            argv = rd(".argv").split(b"\0")[:-1]
            if int(argc) == 0:
                argv = []
            out.append({"uid": int(uid), "argv": [a.decode() for a in argv],
                        "stdin": rd(".in"), "stderr": rd(".err"),
                        "rc": int(rd(".rc")), "mtime": os.path.getmtime(base)})
        return sorted(out, key=lambda c: c["mtime"])

    def wait(self, n=1, timeout=10.0):
        deadline = time.monotonic() + timeout
        while len(self.calls()) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.calls()


@pytest.fixture
def setup(real_clients, relayq, relay, tmp_path):
    """(relayq, fake relay, recorder) with the ini written for this relay."""
    r = relay()
    relayq.port = r.port
    relayq.write_config(CONFIG)
    return relayq, r, Recorder(relayq, tmp_path)


def diag(rec, extra=""):
    return "calls=%r\n%s" % ([{k: (v[-2000:] if isinstance(v, bytes) else v)
                                for k, v in c.items()} for c in rec.calls()],
                              extra)


def one_call(rec, argv, timeout=10.0, extra=""):
    """The client called sendmail exactly once, with argv, and relayq exited 0
    without leaking the password."""
    calls = rec.wait(1, timeout)
    assert len(calls) == 1, "expected one sendmail call\n" + diag(rec, extra)
    c = calls[0]
    assert c["argv"] == argv, diag(rec, extra)
    assert c["stdin"], "client wrote nothing on stdin\n" + diag(rec, extra)
    for needle in SECRET_FORMS:
        assert needle not in c["stderr"], "relay password leaked\n" + diag(rec)
    assert c["rc"] == 0, "relayq failed\n" + diag(rec, extra)
    return c


def delivered_once(rq, r, rec, sender, rcpts, extra=""):
    """Exactly one message reached the relay, with this envelope; nothing is
    left queued (that could be sent again); standard header checks."""
    msgs = r.wait_for_messages(1, timeout=10)
    assert len(msgs) >= 1, "nothing reached the relay\n" + diag(rec, extra)
    deadline = time.time() + 3
    while (rq.queue_files() or rq.tmp_files()) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    msgs = r.messages
    assert len(msgs) == 1, "%d messages at the relay: %r\n%s" % (
        len(msgs), [(m["mail_from"], m["rcpt_tos"]) for m in msgs], diag(rec, extra))
    assert rq.queue_files() == [] and rq.failed_ids() == [], diag(rec, extra)
    m = msgs[0]
    data = m["data"]
    assert (m["mail_from"], sorted(m["rcpt_tos"])) == (sender, sorted(rcpts)), \
        "envelope\n%r\n%s" % (data[:1500], diag(rec, extra))
    assert_crlf_only(data)
    assert header_values(data, "bcc") == [], data
    for h in ("date", "message-id", "from"):
        assert len(header_values(data, h)) == 1, (h, data)
    return m, data


def from_addr(data):
    """(display name, address) of the single From: header."""
    return email.utils.parseaddr(header_values(data, "from")[0].decode("utf-8"))


def input_body(raw):
    """What the body of a client's raw input must become on the wire."""
    return normalize_lines(raw).split(b"\r\n\r\n", 1)[1]


def input_header(raw, name):
    """Values of header name in a client's raw input (LF or CRLF)."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    return [line.split(b":", 1)[1] for line in head.split(b"\n")
            if line.lower().startswith(name.lower().encode() + b":")]


# ---- 1. PHP mail() -----------------------------------------------------------

PHP_MAIL = r"""<?php
$p = json_decode(file_get_contents($argv[1]), true);
$ok = mail($p["to"], $p["subject"], $p["body"], $p["headers"], $p["params"]);
echo $ok ? "mail() returned true\n" : "mail() returned false\n";
exit($ok ? 0 : 1);
"""


def run_php(tmp_path, source, params, ini=()):
    script = os.path.join(str(tmp_path), "client.php")
    with open(script, "w") as f:
        f.write(source)
    pfile = os.path.join(str(tmp_path), "params.json")
    with open(pfile, "w") as f:
        json.dump(params, f)
    cmd = [PHP, "-d", "display_errors=stderr", "-d", "error_reporting=-1",
           "-d", "log_errors=0", *ini, script, pfile]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=client_env(), cwd=str(tmp_path), timeout=60)


def php_mail(tmp_path, rec, to, subject, body, headers="", params=""):
    cp = run_php(tmp_path, PHP_MAIL,
                 {"to": to, "subject": subject, "body": body, "headers": headers,
                  "params": params},
                 ini=("-d", "sendmail_path=%s -t -i" % rec.path,
                      "-d", "mail.add_x_header=0"))
    return cp, "php rc=%d\nstdout=%r\nstderr=%r" % (cp.returncode, cp.stdout, cp.stderr)


def test_php_mail_plain(setup, tmp_path):
    rq, r, rec = setup
    cp, info = php_mail(tmp_path, rec, "user@example.com", "plain PHP mail()",
                        "Hello from PHP mail()\nsecond line\n")
    c = one_call(rec, ["-t", "-i"], extra=info)
    assert cp.returncode == 0 and b"returned true" in cp.stdout, info
    # PHP writes no From/Date/Message-ID: relayq adds them.
    for h in ("from", "date", "message-id"):
        assert input_header(c["stdin"], h) == [], c["stdin"]
    m, data = delivered_once(rq, r, rec, SENDER, ["user@example.com"], info)
    assert from_addr(data)[1] == SENDER, data
    assert header_values(data, "to") == [b" user@example.com"]
    assert header_values(data, "subject") == [b" plain PHP mail()"]
    # PHP ends the message with its own CRLF, even after a final newline
    assert body_of(data) == input_body(c["stdin"])
    assert body_of(data) == b"Hello from PHP mail()\r\nsecond line\r\n\r\n"


def test_php_mail_cc_bcc_utf8_subject(setup, tmp_path):
    rq, r, rec = setup
    subject = "Grüße ✓ från relayq"
    cp, info = php_mail(
        tmp_path, rec, "Alice Example <alice@example.com>, bob@example.org", subject,
        "Hej\nmed vänliga hälsningar\n",
        headers="From: Web App <app@example.com>\r\nCc: carol@example.net\r\n"
                "Bcc: dave@example.net")
    c = one_call(rec, ["-t", "-i"], extra=info)
    assert cp.returncode == 0 and b"returned true" in cp.stdout, info
    assert input_header(c["stdin"], "bcc") == [b" dave@example.net"], c["stdin"]
    m, data = delivered_once(rq, r, rec, SENDER,
                             ["alice@example.com", "bob@example.org",
                              "carol@example.net", "dave@example.net"], info)
    assert b"dave@example.net" not in data, data          # Bcc stays private
    assert header_values(data, "from") == [b" Web App <app@example.com>"]
    assert header_values(data, "cc") == [b" carol@example.net"]
    assert header_values(data, "subject") == [b" " + subject.encode("utf-8")]
    assert body_of(data) == input_body(c["stdin"])
    assert body_of(data) == "Hej\r\nmed vänliga hälsningar\r\n\r\n".encode("utf-8")


def test_php_mail_f_additional_param(setup, tmp_path):
    rq, r, rec = setup
    cp, info = php_mail(tmp_path, rec, "user@example.com", "with -f",
                        "bounces go elsewhere\n",
                        headers="From: App <app@example.com>",
                        params="-f bounce@example.com")
    one_call(rec, ["-t", "-i", "-f", "bounce@example.com"], extra=info)
    assert cp.returncode == 0 and b"returned true" in cp.stdout, info
    m, data = delivered_once(rq, r, rec, "bounce@example.com",
                             ["user@example.com"], info)
    assert header_values(data, "from") == [b" App <app@example.com>"]


# ---- 2. Symfony Mailer ---------------------------------------------------------

SYMFONY = r"""<?php
require %s;
use Symfony\Component\Mailer\Mailer;
use Symfony\Component\Mailer\Transport;
use Symfony\Component\Mime\Email;

$p = json_decode(file_get_contents($argv[1]), true);
$email = (new Email())
    ->from($p["from"])
    ->to(...$p["to"])
    ->cc(...$p["cc"])
    ->bcc(...$p["bcc"])
    ->subject($p["subject"])
    ->text($p["body"]);
$transport = Transport::fromDsn($p["dsn"]);
(new Mailer($transport))->send($email);
echo "sent with ", get_class($transport), "\n";
""" % json.dumps(SYMFONY_AUTOLOAD)

SYMFONY_RCPTS = ["alice@example.com", "carol@example.net", "dave@example.net"]


def symfony_send(tmp_path, command, sender="Web App <app@example.com>"):
    dsn = "sendmail://default?command=" + urllib.parse.quote(command, safe="")
    cp = run_php(tmp_path, SYMFONY, {
        "dsn": dsn, "from": sender, "to": ["Alice Example <alice@example.com>"],
        "cc": ["carol@example.net"], "bcc": ["dave@example.net"],
        "subject": "Grüße from Symfony", "body": "Hello\n.\nBye\n"})
    info = "php rc=%d\nstdout=%r\nstderr=%r" % (cp.returncode, cp.stdout,
                                                cp.stderr[-3000:])
    return cp, info


def check_symfony_message(data):
    assert header_values(data, "to") == [b" Alice Example <alice@example.com>"]
    assert header_values(data, "cc") == [b" carol@example.net"]
    assert b"dave@example.net" not in data, data
    # a "." line of the body survives (dot-stuffing both ways)
    assert b"Hello\r\n.\r\nBye" in body_of(data), data


def test_symfony_sendmail_bs(setup, tmp_path):
    rq, r, rec = setup
    cp, info = symfony_send(tmp_path, rec.path + " -bs")
    c = one_call(rec, ["-bs"], extra=info)
    assert cp.returncode == 0 and b"SendmailTransport" in cp.stdout, info
    # it really spoke SMTP, Bcc recipient included
    assert c["stdin"].startswith((b"HELO ", b"EHLO ")), c["stdin"][:200]
    assert b"RCPT TO:<dave@example.net>" in c["stdin"], c["stdin"]
    assert c["stdin"].rstrip().endswith(b"QUIT"), c["stdin"][-200:]
    m, data = delivered_once(rq, r, rec, "app@example.com", SYMFONY_RCPTS, info)
    assert header_values(data, "from") == [b" Web App <app@example.com>"]
    check_symfony_message(data)


def test_symfony_sendmail_t_i(setup, tmp_path):
    rq, r, rec = setup
    cp, info = symfony_send(tmp_path, rec.path + " -t -i")
    # Symfony drops -t itself and passes the envelope in argv
    one_call(rec, ["-i", "-fapp@example.com", "--", *SYMFONY_RCPTS], extra=info)
    assert cp.returncode == 0 and b"SendmailTransport" in cp.stdout, info
    m, data = delivered_once(rq, r, rec, "app@example.com", SYMFONY_RCPTS, info)
    assert header_values(data, "from") == [b" Web App <app@example.com>"]
    check_symfony_message(data)


def test_symfony_bs_local_sender_rewritten(setup, tmp_path):
    rq, r, rec = setup
    cp, info = symfony_send(tmp_path, rec.path + " -bs",
                            sender="Web App <www-data@localhost>")
    c = one_call(rec, ["-bs"], extra=info)
    assert cp.returncode == 0, info
    assert b"MAIL FROM:<www-data@localhost>" in c["stdin"], c["stdin"]
    m, data = delivered_once(rq, r, rec, SENDER, SYMFONY_RCPTS, info)
    assert from_addr(data) == ("Web App", SENDER), data
    assert b"localhost" not in header_values(data, "from")[0], data
    check_symfony_message(data)


# ---- 3. Debian cron ------------------------------------------------------------

# Runs in the new mount namespace (propagation private): nothing is visible
# outside it, and it disappears with cron.
CRON_NS = r"""
set -eu
P=$1 WRAPPER=$2
mount -t tmpfs -o mode=0755 relayq-e2e /run
mkdir /run/relayq-sbin.real /run/relayq-sbin
mount --bind /usr/sbin /run/relayq-sbin.real
for f in /run/relayq-sbin.real/* /run/relayq-sbin.real/.[!.]*; do
	[ -e "$f" ] || [ -L "$f" ] || continue
	ln -s "$f" /run/relayq-sbin/
done
rm -f /run/relayq-sbin/sendmail
ln -s "$WRAPPER" /run/relayq-sbin/sendmail
mount --bind /run/relayq-sbin /usr/sbin
mount --bind "$P/crontab" /etc/crontab
mount --bind "$P/cron.d" /etc/cron.d
mount --bind "$P/crontabs" /var/spool/cron/crontabs
test "$(readlink /usr/sbin/sendmail)" = "$WRAPPER"
exec /usr/sbin/cron -f
"""


@pytest.fixture
def cron(real_clients, tmp_path):
    """cron(rec, job) starts Debian cron -f in a private mount namespace with
    /etc/cron.d/relayqtest = job; stopped by pid at teardown."""
    started = []

    def start(rec, job):
        p = os.path.join(str(tmp_path), "cronns")
        for d in ("cron.d", "crontabs"):
            os.makedirs(os.path.join(p, d), mode=0o700)
        with open(os.path.join(p, "crontab"), "w") as f:
            f.write("# empty: the system crontab is not run here\n")
        path = os.path.join(p, "cron.d", "relayqtest")
        with open(path, "w") as f:
            f.write(job)
        os.chmod(path, 0o644)
        for t in ("/etc/crontab", "/etc/cron.d", "/var/spool/cron/crontabs"):
            if not os.path.exists(t):
                pytest.fail("%s missing: is cron (cron-daemon-common) installed?" % t)
        log = open(os.path.join(str(tmp_path), "cron.log"), "wb")
        proc = subprocess.Popen(
            [UNSHARE, "-m", "--propagation", "private", "sh", "-c", CRON_NS,
             "sh", p, rec.path],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=client_env())
        log.close()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_cron_job_output_mailed(setup, cron, tmp_path):
    rq, r, rec = setup
    before = os.path.lexists("/usr/sbin/sendmail") and os.path.realpath(
        "/usr/sbin/sendmail")
    token = "relayq-%d" % os.getpid()
    # @reboot runs when the daemon starts (/run is fresh in the namespace);
    # MAILTO unset: the output goes to the owner, root.
    proc = cron(rec, "SHELL=/bin/sh\nPATH=/usr/bin:/bin\n"
                     "@reboot root echo 'cron output %s'; echo second line\n" % token)
    # @reboot fires within a second; a "* * * * *" job would need up to 60 s
    deadline = time.monotonic() + 65
    while not rec.calls() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    with open(os.path.join(str(tmp_path), "cron.log"), "rb") as f:
        info = "cron alive=%s log=%r" % (proc.poll() is None, f.read()[-2000:])
    c = one_call(rec, ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
                 timeout=1, extra=info)
    assert c["uid"] == 0                   # run as the crontab owner, root
    assert input_header(c["stdin"], "from") == [b" root (Cron Daemon)"], c["stdin"]
    m, data = delivered_once(rq, r, rec, SENDER, [ADMIN], info)
    assert from_addr(data) == ("Cron Daemon", SENDER), header_values(data, "from")
    assert header_values(data, "to") == [b" root"]           # only the envelope
    assert header_values(data, "subject") == input_header(c["stdin"], "subject")
    assert body_of(data) == ("cron output %s\r\nsecond line\r\n" % token).encode()
    # the namespace changed nothing outside
    assert (os.path.lexists("/usr/sbin/sendmail")
            and os.path.realpath("/usr/sbin/sendmail")) == before


# ---- 4. bsd-mailx ----------------------------------------------------------------

def run_mailx(tmp_path, rec, args, body):
    home = os.path.join(str(tmp_path), "home")
    os.makedirs(home, exist_ok=True)
    mailrc = os.path.join(home, "mailrc")
    with open(mailrc, "w") as f:
        f.write("set sendmail=%s\n" % rec.path)
    cp = subprocess.run([MAILX, *args], input=body, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, timeout=60, cwd=home,
                        env=client_env(HOME=home, MAILRC=mailrc))
    return cp, "mailx rc=%d\nstdout=%r\nstderr=%r" % (cp.returncode, cp.stdout,
                                                      cp.stderr)


def test_bsd_mailx_cc_bcc(setup, tmp_path):
    rq, r, rec = setup
    cp, info = run_mailx(tmp_path, rec, ["-s", "subject", "-c", "cc@example.com",
                                         "-b", "bcc@example.com", "to@example.com"],
                         b"hello from bsd-mailx\n.\nlast line\n")
    c = one_call(rec, ["-i", "-t"], extra=info)
    assert cp.returncode == 0, info
    assert input_header(c["stdin"], "bcc") == [b" bcc@example.com"], c["stdin"]
    m, data = delivered_once(rq, r, rec, SENDER, ["to@example.com", "cc@example.com",
                                                  "bcc@example.com"], info)
    assert from_addr(data)[1] == SENDER, data
    assert header_values(data, "to") == [b" to@example.com"]
    assert header_values(data, "cc") == [b" cc@example.com"]
    assert header_values(data, "subject") == [b" subject"]
    assert b"bcc@example.com" not in data, data
    assert body_of(data) == b"hello from bsd-mailx\r\n.\r\nlast line\r\n"


def test_bsd_mailx_local_recipients_aliased(setup, tmp_path):
    rq, r, rec = setup
    local = "crontest@" + socket.gethostname()
    cp, info = run_mailx(tmp_path, rec, ["-s", "to local users", "root", local],
                         b"for the admins\n")
    c = one_call(rec, ["-i", "-t"], extra=info)
    assert cp.returncode == 0, info
    m, data = delivered_once(rq, r, rec, SENDER, [ADMIN, CATCHALL], info)
    # the To: header is left as the client wrote it
    assert header_values(data, "to") == input_header(c["stdin"], "to"), data
    assert from_addr(data)[1] == SENDER, data


# ---- the setup itself ------------------------------------------------------------

def test_client_setup_idempotent_and_no_mta(real_clients):
    cp = subprocess.run(["sh", os.path.join(REPO, "tests", "clients-setup.sh")],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert cp.returncode == 0, cp.stdout
    assert cp.stdout == b"", cp.stdout            # already done: nothing to do
    with open(os.path.join(CLIENTS_DIR, "bsd-mailx", ".version")) as f:
        assert f.read().strip()
    # bsd-mailx is unpacked, not installed; no package providing an MTA is.
    q = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Abbrev}\t"
                        "${Provides}\n"], stdout=subprocess.PIPE, timeout=60)
    installed = [line.split("\t") for line in q.stdout.decode().splitlines()]
    installed = [p for p in installed if p[1].startswith("ii")]
    names = {p[0] for p in installed}
    assert "bsd-mailx" not in names
    mtas = [p[0] for p in installed if "mail-transport-agent" in p[2]
            or p[0] in ("default-mta", "exim4-base", "postfix")]
    assert mtas == [], "an MTA is installed: %r" % mtas
