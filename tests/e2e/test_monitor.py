"""relayq queue check: a monitoring plugin (exit 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN; one status line with perfdata), and the status
line of relayq queue list."""
import os
import re

from conftest import fmt, faketime

RCPT = "rcpt@example.net"
MSG = b"Subject: monitor\n\nbody\n"


def check(relayq, *args):
    cp = relayq(["queue", "check", *args], check_tmp=False)
    out = cp.stdout.decode()
    assert out.count("\n") == 1 and out.startswith("RELAYQ "), fmt(cp)
    status, perf = out.rstrip("\n").split(" | ")
    perfdata = {}
    for item in perf.split():
        k, v = item.split("=", 1)
        perfdata[k] = v.split(";")
    return cp.returncode, status, perfdata


def queue_n(relayq, n):
    for _ in range(n):
        cp = relayq(["-odq", RCPT], stdin=MSG)
        assert cp.returncode == 0, fmt(cp)


def test_empty_queue_is_ok(relayq):
    rc, status, perf = check(relayq)
    assert rc == 0, status
    assert status.startswith("RELAYQ OK: 0 queued")
    assert "last delivery never" in status
    assert perf["queued"] == ["0", "100", "1000", "0"]
    assert perf["failed"][0] == "0"
    assert perf["last_delivery"][0] == "U"


def test_thresholds_on_queue_length(relayq):
    queue_n(relayq, 3)
    rc, status, perf = check(relayq)
    assert rc == 0 and perf["queued"][0] == "3", status
    rc, status, perf = check(relayq, "--warn", "3", "--crit", "5")
    assert rc == 1 and status.startswith("RELAYQ WARNING"), status
    assert perf["queued"][:3] == ["3", "3", "5"]
    rc, status, _ = check(relayq, "--warn", "2", "--crit", "3")
    assert rc == 2 and status.startswith("RELAYQ CRITICAL"), status


def test_oldest_message_age(relayq):
    queue_n(relayq, 1)
    rc, status, perf = check(relayq, "--age", "1h")
    assert rc == 0, status
    assert int(perf["oldest"][0].rstrip("s")) < 60
    # Two hours later the same message is over the age threshold.
    wrap, env = faketime("+2h")
    cp = relayq(["queue", "check", "--age", "1h"], wrap=wrap, env=env,
                check_tmp=False)
    out = cp.stdout.decode()
    assert cp.returncode == 1, fmt(cp)
    assert "oldest is over 3600s" in out
    oldest = int(re.search(r"oldest=(\d+)s", out).group(1))
    assert 7000 < oldest < 7400, out


def test_failed_messages_warn_and_last_delivery(relayq, relay):
    r = relay(rcpt_replies={"bad@example.net": (550, "5.1.1 no such user")})
    cp = relayq(["-f", "sender@example.com", "bad@example.net"], stdin=MSG,
                relay=r)
    assert cp.returncode == 67, fmt(cp)          # refused: to failed/
    rc, status, perf = check(relayq)
    assert rc == 1 and "1 failed" in status, status
    assert perf["failed"][0] == "1"
    assert perf["last_delivery"][0] == "U"     # nothing was delivered yet
    cp = relayq([RCPT], stdin=MSG, relay=r)
    assert cp.returncode == 0, fmt(cp)
    rc, status, perf = check(relayq)
    assert "last delivery " in status and "ago" in status, status
    assert int(perf["last_delivery"][0].rstrip("s")) < 60
    cp = relayq(["queue", "list"], check_tmp=False)
    last = cp.stdout.decode().splitlines()[-1]
    assert re.match(r"-- 0 queued, 1 failed, \d+ bytes; last delivery "
                    r"\d+s ago$", last), last


def test_unreadable_queue_is_unknown(relayq):
    relayq.write_config({"queue": {"dir": "/proc/relayq-nonexistent"}})
    cp = relayq(["queue", "check"], write=False, check_tmp=False)
    assert cp.returncode == 3, fmt(cp)
    assert cp.stdout.decode().startswith("RELAYQ UNKNOWN")


def test_bad_arguments_are_a_usage_error(relayq):
    for args in (["--warn"], ["--warn", "x"], ["--age", "soon"], ["--bogus", "1"]):
        cp = relayq(["queue", "check", *args], check_tmp=False)
        assert cp.returncode == 64, fmt(cp)
    assert os.path.isdir(relayq.spool)


def test_corrupt_files_warn(relayq):
    """A file the runner set aside (never sent) is something to look at."""
    junk = os.path.join(relayq.spool, "queue", "not-a-message")
    os.makedirs(os.path.dirname(junk), exist_ok=True)
    with open(junk, "w") as f:
        f.write("junk\n")
    relayq(["-q"], check_tmp=False)           # moves it to corrupt/
    rc, status, perf = check(relayq)
    assert rc == 1 and "1 corrupt" in status and "corrupt/" in status, status
    assert perf["corrupt"][0] == "1"
    cp = relayq(["queue", "list"], check_tmp=False)
    assert "1 file set aside in" in cp.stdout.decode(), fmt(cp)
