"""relayq end to end: the queue runner, retries, rate limit, DSNs, the
foreground daemon and queue inspection (spec capabilities 5, 6 and 9;
notes/reliability.md sections 1 and 5), against the fake relay.

The [queue] keys under test: rate, lifetime, min_attempts, retry_min,
retry_max, session_max, wait, delivery.  Helpers here write the ini file once
(`configure`) and then run relayq with write=False, because many runs overlap.
"""

import email
import email.policy
import email.utils
import os
import re
import signal
import threading
import time

import pytest

from conftest import default_sender, faketime, fmt, header_values

RCPT = "rcpt@example.com"
SENDER = "sender@example.com"
# plain SMTP on loopback: no certificate, so faketime cannot make one expire
NO_TLS = {"tls": "none", "user": None, "password": None, "ca_file": None}


# ---- helpers ------------------------------------------------------------------

def configure(relayq, r, queue=None, relay_cfg=None):
    """Writes the ini file for relay r with [queue] / [relay] overrides."""
    relayq.port = r.port
    cfg = {}
    if queue:
        cfg["queue"] = queue
    if relay_cfg:
        cfg["relay"] = relay_cfg
    relayq.write_config(cfg)


def run(relayq, args, stdin=b"", **kw):
    kw.setdefault("write", False)
    return relayq(args, stdin, **kw)


def msg(tag, rcpt=RCPT):
    return ("To: %s\nSubject: %s\nMessage-ID: <%s@example.com>\n\nbody of %s\n"
            % (rcpt, tag, tag, tag)).encode()


def mid_of(m):
    v = header_values(m["data"], "message-id")
    assert len(v) == 1, m["data"][:500]
    return v[0].strip().decode()


def mids(msgs):
    return [mid_of(m) for m in msgs]


def originals(r):
    return [m for m in r.messages if m["mail_from"] != ""]


def dsns(r):
    """Messages with the null envelope sender (MAIL FROM:<>)."""
    return [m for m in r.messages if m["mail_from"] == ""]


def assert_rate(times, rate):
    """No window [t, t + 1) holds more than rate arrivals; the failure
    message shows the densest window (offsets from its first arrival)."""
    ts = sorted(times)
    best, at, j = 0, 0, 0
    for i in range(len(ts)):
        while ts[i] - ts[j] >= 1.0:
            j += 1
        if i - j + 1 > best:
            best, at = i - j + 1, j
    assert best <= rate, "%d arrivals within one second (rate %d): %s" % (
        best, rate, ["%.3f" % (t - ts[at]) for t in ts[at:at + best]])


def settle(r, seconds=1.0):
    """Gives a late (unwanted) message time to arrive; returns r.messages."""
    time.sleep(seconds)
    return r.messages


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(0.05)


def by_id(entries):
    return {e["id"]: e for e in entries}


def assert_deferred_run(relayq, cp):
    """A foreground submission that ended queued for retry."""
    assert cp.returncode == 0, fmt(cp)
    assert b"deferred" in cp.stderr.lower(), fmt(cp)
    ids = relayq.queued_ids()
    assert len(ids) == 1, fmt(cp)
    assert relayq.failed_ids() == [], fmt(cp)
    return ids[0]


class Dsn:
    """An RFC 3464 delivery status notification as received by the relay."""

    def __init__(self, m):
        self.rec = m
        self.msg = email.message_from_bytes(m["data"], policy=email.policy.default)
        msg = self.msg
        assert msg.get_content_type() == "multipart/report", m["data"][:800]
        assert (msg.get_param("report-type") or "").lower() == "delivery-status", \
            msg["content-type"]
        parts = msg.get_payload()
        self.types = [p.get_content_type() for p in parts]
        assert self.types == ["text/plain", "message/delivery-status",
                              "text/rfc822-headers"], self.types
        self.text = parts[0].get_content()
        blocks = parts[1].get_payload()
        assert isinstance(blocks, list) and len(blocks) >= 2, parts[1]
        self.per_message = {k.lower(): str(v) for k, v in blocks[0].items()}
        self.recipients = [{k.lower(): str(v).strip() for k, v in b.items()}
                           for b in blocks[1:]]
        hp = parts[2]
        self.orig_headers = hp.get_payload(decode=True) or hp.get_payload().encode()
        for h in ("from", "date", "message-id"):
            assert len(header_values(m["data"], h)) == 1, (h, m["data"][:800])
        assert "reporting-mta" in self.per_message, self.per_message
        assert "arrival-date" in self.per_message, self.per_message
        assert email.utils.parsedate_tz(self.per_message["arrival-date"]), self.per_message

    def failed(self):
        """{final recipient: per-recipient fields} (Action: failed only)."""
        out = {}
        for b in self.recipients:
            kind, _, addr = b["final-recipient"].partition(";")
            assert kind.strip().lower() == "rfc822", b
            out[addr.strip().strip("<>")] = b
        assert all(b["action"].lower() == "failed" for b in out.values()), out
        return out


# ---- sessions: many messages, few connections ------------------------------------

def test_200_queued_two_sessions_of_100(relayq, relay):
    r = relay()
    configure(relayq, r, {"rate": 0, "session_max": 100})
    sent = relayq.queue_messages(200)
    assert len(relayq.queued_ids()) == 200 and r.connections == 0
    cp = run(relayq, ["-q"], timeout=90)
    assert cp.returncode == 0, fmt(cp)
    got = mids(r.messages)
    assert len(got) == 200 and sorted(got) == sorted(sent), "not exactly once"
    assert r.connections == 2 and r.tls_handshakes == 2 and r.auth_successes == 2, \
        (r.connections, r.tls_handshakes, r.auth_successes)
    assert sorted(r.per_connection().values()) == [100, 100], r.per_connection()
    assert relayq.queue_files() == [] and relayq.failed_ids() == []
    assert r.rejected == [] and r.errors == []


def test_50_queued_one_session_by_default(relayq, relay):
    r = relay()
    configure(relayq, r, {"rate": 0})
    sent = relayq.queue_messages(50)
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert sorted(mids(r.messages)) == sorted(sent)
    assert r.connections == 1 and r.auth_successes == 1
    assert relayq.queue_files() == []


# ---- rate limit ---------------------------------------------------------------------

def test_concurrent_submitters_share_rate_and_runner(relayq, relay):
    """30 foreground submitters x 10 messages at rate=20: every message once,
    never more than 20 arrivals in any one-second window, the full rate used,
    and the submitters hand their mail to one runner instead of connecting.
    (An arrival time is the relay's clock at the final dot, before its
    reply: a limiter that times sends on its own side needs a margin.)"""
    r = relay()
    configure(relayq, r, {"rate": 20})
    nthreads, per = 30, 10
    start = threading.Barrier(nthreads)
    failures = []

    def submitter(i):
        start.wait()
        for j in range(per):
            tag = "c%02d-%02d" % (i, j)
            try:
                cp = run(relayq, [RCPT], msg(tag), check_tmp=False, timeout=60)
                if cp.returncode != 0:
                    failures.append((tag, fmt(cp)))
            except Exception as e:      # reported below
                failures.append((tag, repr(e)))

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(nthreads)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    elapsed = time.monotonic() - t0
    assert failures == [], failures[:3]
    expected = sorted("<c%02d-%02d@example.com>" % (i, j)
                      for i in range(nthreads) for j in range(per))
    got = mids(r.messages)
    assert len(got) == len(set(got)), "duplicates delivered"
    assert sorted(got) == expected
    assert_rate([m["time"] for m in r.messages], 20)
    assert elapsed <= 300 / 20 + 3, "rate not used fully: %.1fs" % elapsed
    assert r.connections <= 30, r.connections
    assert relayq.queue_files() == [] and relayq.tmp_files() == []


def test_backlog_default_rate_10(relayq, relay):
    r = relay()
    configure(relayq, r)                       # rate defaults to 10
    relayq.queue_messages(30)
    t0 = time.monotonic()
    cp = run(relayq, ["-q"])
    elapsed = time.monotonic() - t0
    assert cp.returncode == 0, fmt(cp)
    times = sorted(m["time"] for m in r.messages)
    assert len(times) == 30
    assert_rate(times, 10)
    # 30 messages, at most 10 per second: the arrivals span at least 2 s;
    # with the full rate used, not much more than 3 s
    assert 1.9 <= times[-1] - times[0] <= 4.0, times[-1] - times[0]
    assert elapsed <= 6.5, elapsed


def test_rate_slows_down_after_47_reply(relayq, relay):
    r = relay(data_replies=[(451, "4.7.0 Rate limit exceeded, slow down")])
    configure(relayq, r, {"rate": 10})
    relayq.queue_messages(21)
    cp = run(relayq, ["-q"], timeout=60)
    assert cp.returncode == 0, fmt(cp)
    (rej,) = r.rejected
    after = sorted(m["time"] for m in r.messages if m["time"] > rej["time"])
    assert len(after) == 20, len(after)
    # at the full 10/s the 20 others would all be in by ~2.0 s after the
    # refusal; slowed down, they take clearly longer
    assert after[-1] - rej["time"] >= 2.5, after[-1] - rej["time"]
    assert_rate(after, 10)
    assert len(relayq.queued_ids()) == 1        # the refused one, for later


# ---- temporary failures --------------------------------------------------------------

def test_data_451_first_then_queue_run(relayq, relay):
    r = relay(data_replies=[(451, "4.3.0 Try again later")])
    configure(relayq, r)
    cp = run(relayq, [RCPT], msg("d451"))
    qid = assert_deferred_run(relayq, cp)
    assert r.messages == [] and len(r.rejected) == 1
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert mids(r.messages) == ["<d451@example.com>"]
    assert relayq.queue_files() == [] and relayq.failed_ids() == []
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0 and len(settle(r, 0.3)) == 1
    assert qid not in relayq.queue_files()


def test_421_greeting_then_delivered(relayq, relay):
    r = relay(greeting_reply=(421, "4.3.2 Service not available, try later"))
    configure(relayq, r)
    cp = run(relayq, [RCPT], msg("g421"))
    assert_deferred_run(relayq, cp)
    assert r.connections >= 1 and r.verbs() == []
    r.greeting_reply = None
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert mids(r.messages) == ["<g421@example.com>"]
    assert relayq.queue_files() == []


def test_drop_after_final_dot_is_retried_as_possible_duplicate(relayq, relay):
    r = relay(drop_after_data=1)
    configure(relayq, r)
    cp = run(relayq, [RCPT], msg("drop"))
    assert cp.returncode == 0, fmt(cp)
    assert b"possible duplicate" in cp.stderr, fmt(cp)
    assert len(relayq.queued_ids()) == 1 and relayq.failed_ids() == [], fmt(cp)
    (dropped,) = r.dropped
    assert r.messages == []
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    (m,) = r.messages
    assert mid_of(m) == mid_of(dropped) == "<drop@example.com>"
    assert m["data"] == dropped["data"]
    assert relayq.queue_files() == []


@pytest.mark.parametrize("fault", ["auth-535", "tls-untrusted"])
def test_auth_or_tls_failure_defers_whole_queue(relayq, relay, fault):
    r = relay(auth_fail=True) if fault == "auth-535" else relay(cert="evil")
    configure(relayq, r, {"rate": 0})
    relayq.queue_messages(4)
    before = relayq.queued_ids()
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert r.connections == 1, "the run must stop after the first failure: %d " \
        "connections\n%s" % (r.connections, fmt(cp))
    if fault == "auth-535":
        assert b"535" in cp.stderr, fmt(cp)
        assert r.auth_attempts and r.auth_successes == 0
    else:
        assert r.auth_attempts == []
    assert "MAIL" not in r.verbs() and r.messages == [] and r.rejected == []
    assert relayq.queued_ids() == before and relayq.failed_ids() == []
    cp = run(relayq, ["-q"])              # and again: still never a DSN
    assert cp.returncode == 0, fmt(cp)
    assert r.connections == 2 and settle(r, 0.3) == []
    assert relayq.queued_ids() == before and relayq.failed_ids() == []


# ---- permanent failures and DSNs -----------------------------------------------------

def test_rcpt_mix_one_dsn_then_retry_pending(relayq, relay):
    bad_text = "5.1.1 <bad@example.com>: Recipient address rejected: User unknown"
    r = relay(rcpt_replies={"bad@example.com": (550, bad_text),
                            "later@example.com": (451, "4.3.0 Greylisted, try later")})
    configure(relayq, r, {"rate": 0})
    stdin = (b"From: Sender <sender@example.com>\nTo: good@example.com, bad@example.com,"
             b" later@example.com\nSubject: mixed fate\nMessage-ID: <mix@example.com>\n\nbody\n")
    cp = run(relayq, ["-odq", "-f", SENDER, "good@example.com", "bad@example.com",
                      "later@example.com"], stdin)
    assert cp.returncode == 0, fmt(cp)
    (qid,) = relayq.queued_ids()
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    msgs = r.wait_for_messages(2, timeout=5)
    orig = [m for m in msgs if m["mail_from"] == SENDER]
    assert len(orig) == 1 and orig[0]["rcpt_tos"] == ["good@example.com"], msgs
    assert mid_of(orig[0]) == "<mix@example.com>"
    (d,) = dsns(r)
    assert d["rcpt_tos"] == [SENDER]
    dsn = Dsn(d)
    failed = dsn.failed()
    assert list(failed) == ["bad@example.com"], dsn.recipients
    f = failed["bad@example.com"]
    assert f["status"] == "5.1.1", f
    assert f["diagnostic-code"].lower().startswith("smtp;"), f
    assert bad_text in re.sub(r"\s+", " ", f["diagnostic-code"]), f
    assert b"<mix@example.com>" in dsn.orig_headers
    assert b"Subject: mixed fate" in dsn.orig_headers
    assert mid_of(d) != "<mix@example.com>"
    # the greylisted one is still queued, with per-recipient state
    assert relayq.queued_ids() == [qid] and relayq.failed_ids() == []
    e = by_id(relayq.queue_list())[qid]
    st = {x["address"]: (x["status"], x["code"]) for x in e["recipients"]}
    assert st == {"good@example.com": ("done", 250), "bad@example.com": ("failed", 550),
                  "later@example.com": ("pending", 451)}, e
    # the relay now accepts: the pending recipient alone, once; no 2nd DSN
    r.rcpt_replies = {}
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    msgs = settle(r, 0.5)
    assert len(msgs) == 3, msgs
    assert [(mid_of(m), m["rcpt_tos"]) for m in originals(r)] == [
        ("<mix@example.com>", ["good@example.com"]),
        ("<mix@example.com>", ["later@example.com"])]
    assert len(dsns(r)) == 1
    assert relayq.queue_files() == [] and relayq.failed_ids() == [qid]


def test_foreground_partial_refusal_sends_dsn(relayq, relay):
    r = relay(rcpt_replies={"bad@example.com": (550, "5.1.1 User unknown")})
    configure(relayq, r, {"rate": 0})
    cp = run(relayq, ["good@example.com", "bad@example.com"], msg("partial"))
    assert cp.returncode == 0, fmt(cp)
    r.wait_for_messages(2, timeout=5)
    assert [m["rcpt_tos"] for m in originals(r)] == [["good@example.com"]]
    (d,) = dsns(r)
    assert d["rcpt_tos"] == [default_sender()]
    f = Dsn(d).failed()
    assert list(f) == ["bad@example.com"] and f["bad@example.com"]["status"] == "5.1.1"
    assert len(settle(r, 0.5)) == 2


def test_foreground_all_refused_exit_code_no_dsn(relayq, relay):
    r = relay(rcpt_replies={"bad@example.com": (550, "5.1.1 User unknown")})
    configure(relayq, r, {"rate": 0})
    cp = run(relayq, ["bad@example.com"], msg("allbad"))
    assert cp.returncode == 67, fmt(cp)
    assert len(relayq.failed_ids()) == 1 and relayq.queue_files() == [], fmt(cp)
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert settle(r, 0.5) == [] and r.verbs().count("MAIL") == 1


@pytest.mark.parametrize("null", ["<>", ""], ids=["angle", "empty"])
def test_null_sender_refused_never_bounced(relayq, relay, null):
    r = relay(rcpt_replies={"bad@example.com": (550, "5.1.1 User unknown")})
    configure(relayq, r, {"rate": 0})
    cp = run(relayq, ["-odq", "-f", null, "bad@example.com"], msg("bounce"))
    assert cp.returncode == 0, fmt(cp)
    (qid,) = relayq.queued_ids()
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert relayq.failed_ids() == [qid] and relayq.queue_files() == [], fmt(cp)
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert settle(r, 0.5) == [], "a message to the null sender was sent"
    assert r.verbs().count("MAIL") == 1, r.commands
    (e,) = relayq.queue_list()
    assert e["sender"] == "" and e["queue"] == "failed"


def test_expiry_after_lifetime_and_min_attempts(relayq, relay):
    r = relay(mode="none", user=None, password=None,
              rcpt_replies={RCPT: (451, "4.3.0 Mailbox busy")})
    configure(relayq, r, {"min_attempts": 2, "rate": 0}, NO_TLS)
    cp = run(relayq, ["-f", SENDER, RCPT], msg("expire"))
    qid = assert_deferred_run(relayq, cp)                  # attempt 1
    cp = run(relayq, ["-q"])                               # attempt 2
    assert cp.returncode == 0, fmt(cp)
    (e,) = relayq.queue_list()
    assert e["id"] == qid and e["attempts"] == 2, e
    assert r.messages == []
    wrap, env = faketime("+6d")
    cp = run(relayq, ["-q"], wrap=wrap, env=env)
    assert cp.returncode == 0, fmt(cp)
    (d,) = r.wait_for_messages(1, timeout=5)
    assert d["mail_from"] == "" and d["rcpt_tos"] == [SENDER]
    f = Dsn(d).failed()
    assert list(f) == [RCPT] and f[RCPT]["status"] == "4.4.7", f
    assert relayq.failed_ids() == [qid] and relayq.queue_files() == [], fmt(cp)
    cp = run(relayq, ["-q"], wrap=wrap, env=env)
    assert cp.returncode == 0 and len(settle(r, 0.5)) == 1


def test_no_expiry_before_min_attempts(relayq, relay):
    r = relay(mode="none", user=None, password=None,
              rcpt_replies={RCPT: (451, "4.3.0 Mailbox busy")})
    configure(relayq, r, {"min_attempts": 3, "rate": 0}, NO_TLS)
    cp = run(relayq, ["-odq", "-f", SENDER, RCPT], msg("young"))
    assert cp.returncode == 0, fmt(cp)
    (qid,) = relayq.queued_ids()
    wrap, env = faketime("+30d")
    for attempt in (1, 2):
        cp = run(relayq, ["-q"], wrap=wrap, env=env)
        assert cp.returncode == 0, fmt(cp)
        (e,) = relayq.queue_list()
        assert e["queue"] == "queued" and e["attempts"] == attempt, e
        assert relayq.queued_ids() == [qid] and relayq.failed_ids() == []
    assert settle(r, 0.3) == [], "expired before min_attempts"
    assert r.verbs().count("RCPT") == 2


# ---- one runner per spool ---------------------------------------------------------------

def test_two_runners_deliver_each_message_once(relayq, relay):
    r = relay()
    configure(relayq, r, {"rate": 0})
    sent = relayq.queue_messages(100)
    a = relayq.popen(["-q"], write=False)
    b = relayq.popen(["-q"], write=False)
    for p in (a, b):
        cp = p.finish(60)
        assert cp.returncode == 0, fmt(cp)
    got = mids(r.messages)
    assert len(got) == 100 and sorted(got) == sorted(sent)
    assert relayq.queue_files() == [] and relayq.tmp_files() == []


def test_kill9_runner_leaves_no_stale_lock(relayq, relay):
    r = relay(reply_delay=0.3)
    configure(relayq, r, {"rate": 0})
    sent = relayq.queue_messages(8)
    p = relayq.popen(["-q"], write=False)
    (first,) = r.wait_for_messages(1, timeout=10)[:1]
    os.kill(p.pid, signal.SIGKILL)
    p.proc.wait(10)
    n_before = len(r.messages)
    t0 = time.time()
    cp = run(relayq, ["-q"], timeout=30)
    assert cp.returncode == 0, fmt(cp)
    later = r.messages[n_before:]
    assert later and later[0]["time"] - t0 < 2.0, "second runner blocked"
    got = mids(r.messages)
    assert set(got) == set(sent), "lost messages"
    dups = [x for x in set(got) if got.count(x) > 1]
    assert dups in ([], [mid_of(first)]) and len(got) <= len(sent) + 1, got
    assert relayq.queue_files() == []


def test_kill9_mid_session_resends_only_the_message_in_flight(relayq, relay):
    # Each message is settled right after its 250, not when the session
    # ends: killed after five acknowledged ones, the next run resends at
    # most the one whose reply was pending.
    r = relay(reply_delay=0.1)
    configure(relayq, r, {"rate": 0})
    sent = relayq.queue_messages(20)
    p = relayq.popen(["-q"], write=False)
    r.wait_for_messages(6, timeout=20)
    os.kill(p.pid, signal.SIGKILL)
    p.proc.wait(10)
    cp = run(relayq, ["-q"], timeout=60)
    assert cp.returncode == 0, fmt(cp)
    got = mids(r.messages)
    assert set(got) == set(sent), "lost messages"
    dups = [x for x in set(got) if got.count(x) > 1]
    assert len(dups) <= 1 and len(got) <= len(sent) + 1, dups
    assert relayq.queue_files() == []


def test_foreground_submitter_hands_message_to_active_runner(relayq, relay):
    r = relay(reply_delay=0.15,
              rcpt_replies={"refused@example.com": (550, "5.1.1 No such user")})
    configure(relayq, r, {"rate": 0})
    relayq.queue_messages(12)
    runner = relayq.popen(["-q"], write=False)
    r.wait_for_messages(1, timeout=10)
    results = {}

    def submit(tag, rcpt):
        results[tag] = run(relayq, [rcpt], msg(tag, rcpt), check_tmp=False)

    threads = [threading.Thread(target=submit, args=("late", "late@example.com")),
               threading.Thread(target=submit, args=("refused", "refused@example.com"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    late = results["late"]
    assert late.returncode == 0, fmt(late)
    # delivered (not just queued) when the submitter returns, by the runner
    got = [m for m in r.messages if mid_of(m) == "<late@example.com>"]
    assert len(got) == 1, got
    assert got[0]["conn"] == 1, "delivered on connection %d: the runner must " \
        "carry newly spooled mail in its open session" % got[0]["conn"]
    assert results["refused"].returncode == 67, fmt(results["refused"])
    cp = runner.finish(30)
    assert cp.returncode == 0, fmt(cp)
    assert r.connections == 1, "a submitter connected although a runner was active"
    assert len(r.messages) == 13 and dsns(r) == []
    assert relayq.queue_files() == [] and len(relayq.failed_ids()) == 1


def test_foreground_wait_is_bounded(relayq, relay):
    r = relay(reply_delay=0.8)
    configure(relayq, r, {"rate": 0, "wait": "1s"})
    relayq.queue_messages(5)
    runner = relayq.popen(["-q"], write=False)
    r.wait_for_messages(1, timeout=10)
    t0 = time.monotonic()
    cp = run(relayq, [RCPT], msg("impatient"), check_tmp=False)
    elapsed = time.monotonic() - t0
    assert cp.returncode == 0, fmt(cp)
    assert elapsed < 2.5, "waited %.1fs for the runner with wait = 1s" % elapsed
    assert "<impatient@example.com>" not in mids(r.messages)    # still queued
    cp = runner.finish(30)
    assert cp.returncode == 0, fmt(cp)
    assert mids(r.messages).count("<impatient@example.com>") == 1
    assert len(r.messages) == 6 and relayq.queue_files() == []


# ---- the foreground daemon: relayq -qINTERVAL -----------------------------------------------

def test_daemon_wakes_on_new_mail_and_stops_on_sigterm(relayq, relay):
    r = relay()
    configure(relayq, r, {"rate": 0})
    d = relayq.popen(["-q1m"], write=False)
    ids = []
    for n, tag in enumerate(("wake1", "wake2")):
        time.sleep(1.0)                    # let the daemon go idle
        cp = run(relayq, ["-odq", RCPT], msg(tag), check_tmp=False)
        assert cp.returncode == 0, fmt(cp)
        t0 = time.monotonic()
        r.wait_for_messages(n + 1, timeout=2.0)
        assert time.monotonic() - t0 <= 2.0
        ids += re.findall(r"(?<![0-9a-f])[0-9a-f]{20}(?![0-9a-f])",
                          cp.stderr.decode("utf-8", "replace"))[:1]
    assert mids(r.messages) == ["<wake1@example.com>", "<wake2@example.com>"]
    assert d.proc.poll() is None, d.stderr()
    d.proc.send_signal(signal.SIGTERM)
    cp = d.finish(5)
    assert cp.returncode == 0, fmt(cp)
    log = cp.stderr.decode("utf-8", "replace")
    assert log.count("status=sent") >= 2, log
    for qid in ids:                         # as logged by -odq, if it logs
        assert qid in log, log
    assert relayq.queue_files() == [] and relayq.tmp_files() == []


def test_daemon_retries_on_schedule(relayq, relay):
    r = relay(rcpt_replies={RCPT: [(451, "4.3.0 later")]})
    configure(relayq, r, {"rate": 0, "retry_min": "1s", "retry_max": "10s"})
    d = relayq.popen(["-q2s"], write=False)
    cp = run(relayq, ["-odq", RCPT], msg("sched"), check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    r.wait_for_messages(1, timeout=8)
    assert r.verbs().count("RCPT") == 2, r.commands
    d.proc.send_signal(signal.SIGTERM)
    assert d.finish(5).returncode == 0
    assert relayq.queue_files() == []


def test_daemon_sigterm_finishes_message_in_flight(relayq, relay):
    r = relay(reply_delay=1.5)
    configure(relayq, r, {"rate": 0})
    d = relayq.popen(["-q1m"], write=False)
    cp = run(relayq, ["-odq", RCPT], msg("inflight"), check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    r.wait_for_messages(1, timeout=15)     # final dot sent, reply pending
    d.proc.send_signal(signal.SIGTERM)
    cp = d.finish(5)
    assert cp.returncode == 0, fmt(cp)
    # it waited for the 250: the message is done, not left for a duplicate
    assert relayq.queue_files() == [], "in-flight message abandoned\n%s" % fmt(cp)
    assert len(r.messages) == 1


# ---- delivery modes -------------------------------------------------------------------

@pytest.mark.parametrize("args,queue", [(["-odb"], {}), ([], {"delivery": "background"})],
                         ids=["odb", "delivery-background"])
def test_background_delivery_returns_at_once(relayq, relay, args, queue):
    r = relay(reply_delay=2.5)
    configure(relayq, r, dict(queue, rate=0))
    # measured at the process exit (stdout/stderr are files here: with
    # [log] target=stderr the detached child may keep logging there)
    p = relayq.popen([*args, RCPT], msg("bg"), write=False)
    t0 = time.monotonic()
    try:
        p.proc.wait(5)
    except Exception:
        pass
    elapsed = time.monotonic() - t0
    cp = p.finish(1)
    assert cp.returncode == 0, fmt(cp)
    assert elapsed < 1.5, "did not return right after spooling: %.1fs" % elapsed
    r.wait_for_messages(1, timeout=5)
    wait_until(lambda: relayq.queue_files() == [], 6, "the queue to empty")
    assert mids(r.messages) == ["<bg@example.com>"]
    assert relayq.tmp_files() == [] and relayq.failed_ids() == []


# ---- queue inspection and control ------------------------------------------------------

def _three_states(relayq, r):
    """A: queued (good done, later pending 451); B: failed (550);
    C: queued with -odq, never tried.  Returns (A, B, C) ids."""
    configure(relayq, r, {"rate": 0})
    cp = run(relayq, ["-f", "a-sender@example.com", "good@example.com",
                      "later@example.com"], msg("qa"))
    assert cp.returncode == 0, fmt(cp)
    (a,) = relayq.queued_ids()
    cp = run(relayq, ["-f", "b-sender@example.com", "bad@example.com"], msg("qb"))
    assert cp.returncode == 67, fmt(cp)
    (b,) = relayq.failed_ids()
    cp = run(relayq, ["-odq", "-f", "c-sender@example.com", "c@example.com"], msg("qc"))
    assert cp.returncode == 0, fmt(cp)
    (c,) = set(relayq.queued_ids()) - {a}
    return a, b, c


def _relay_for_states(relay):
    return relay(rcpt_replies={
        "later@example.com": (451, "4.3.0 Greylisted, try later"),
        "bad@example.com": (550, "5.1.1 <bad@example.com>: User unknown")})


def test_queue_list_json(relayq, relay):
    r = _relay_for_states(relay)
    now = time.time()
    a, b, c = _three_states(relayq, r)
    entries = relayq.queue_list()
    assert isinstance(entries, list) and len(entries) == 3, entries
    keys = {"id", "queue", "arrival", "size", "sender", "attempts", "next_try",
            "last_reply", "recipients"}
    for e in entries:
        assert keys <= set(e), e
        assert isinstance(e["arrival"], int) and abs(e["arrival"] - now) < 60, e
        assert isinstance(e["size"], int) and 60 < e["size"] < 1000, e
        for x in e["recipients"]:
            assert {"address", "status", "code", "reply"} <= set(x), x
    es = by_id(entries)
    ea, eb, ec = es[a], es[b], es[c]
    assert (ea["queue"], ea["sender"], ea["attempts"]) == ("queued", "a-sender@example.com", 1)
    assert [(x["address"], x["status"], x["code"]) for x in ea["recipients"]] == [
        ("good@example.com", "done", 250), ("later@example.com", "pending", 451)]
    assert "Greylisted" in ea["recipients"][1]["reply"]
    assert "Greylisted" in ea["last_reply"]
    assert isinstance(ea["next_try"], int)
    assert now + 30 <= ea["next_try"] <= time.time() + 3600 + 60, ea   # retry_min 1m
    assert (eb["queue"], eb["sender"], eb["attempts"]) == ("failed", "b-sender@example.com", 1)
    assert [(x["address"], x["status"], x["code"]) for x in eb["recipients"]] == [
        ("bad@example.com", "failed", 550)]
    assert "User unknown" in eb["recipients"][0]["reply"] and "User unknown" in eb["last_reply"]
    assert (ec["queue"], ec["attempts"]) == ("queued", 0)
    assert [(x["address"], x["status"]) for x in ec["recipients"]] == [
        ("c@example.com", "pending")]
    assert ec["next_try"] <= time.time() + 1


@pytest.mark.parametrize("how", ["mailq", "-bp"])
def test_mailq_human_listing(relayq, relay, how):
    r = _relay_for_states(relay)
    a, b, c = _three_states(relayq, r)
    if how == "mailq":
        cp = run(relayq, [], prog=relayq.link("mailq"))
    else:
        cp = run(relayq, ["-bp"])
    assert cp.returncode == 0, fmt(cp)
    out = cp.stdout.decode("utf-8", "replace")
    for needle in (a, b, c, "a-sender@example.com", "b-sender@example.com",
                   "c-sender@example.com", "good@example.com", "later@example.com",
                   "bad@example.com", "c@example.com", "Greylisted", "User unknown"):
        assert needle in out, "%r missing from:\n%s" % (needle, out)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    last = lines[-1]
    assert not re.search(r"[0-9a-f]{20}", last), "no summary line at the end: %r" % last
    assert {int(n) for n in re.findall(r"\d+", last)} & {2, 3}, \
        "no summary line at the end: %r" % last
    assert r.messages == originals(r)          # listing sends nothing


def test_queue_retry(relayq, relay):
    r = _relay_for_states(relay)
    a, b, c = _three_states(relayq, r)
    r.rcpt_replies = {}                           # the relay accepts everything now
    n0 = len(r.messages)                          # A's delivery to good@
    # a foreground submitter runs the queue: its own message, then every
    # due one (C) -- but not A, whose next try is a minute away
    cp = run(relayq, ["d1@example.com"], msg("d1"))
    assert cp.returncode == 0, fmt(cp)
    new = settle(r, 0.3)[n0:]
    assert sorted(mid_of(m) for m in new) == ["<d1@example.com>", "<qc@example.com>"]
    assert relayq.queued_ids() == [a]
    cp = run(relayq, ["queue", "retry", a])
    assert cp.returncode == 0, fmt(cp)
    assert by_id(relayq.queue_list())[a]["next_try"] <= time.time() + 1
    cp = run(relayq, ["d2@example.com"], msg("d2"))
    assert cp.returncode == 0, fmt(cp)
    new = settle(r, 0.3)[n0 + 2:]
    assert sorted((mid_of(m), tuple(m["rcpt_tos"])) for m in new) == [
        ("<d2@example.com>", ("d2@example.com",)), ("<qa@example.com>", ("later@example.com",))]
    assert relayq.queued_ids() == []
    # a failed message goes back to the queue, its failed recipients pending
    cp = run(relayq, ["queue", "retry", b])
    assert cp.returncode == 0, fmt(cp)
    assert relayq.failed_ids() == [] and relayq.queued_ids() == [b]
    e = by_id(relayq.queue_list())[b]
    assert e["queue"] == "queued" and [x["status"] for x in e["recipients"]] == ["pending"]
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    last = settle(r, 0.3)[n0 + 4:]
    assert [(mid_of(m), m["rcpt_tos"]) for m in last] == [("<qb@example.com>", ["bad@example.com"])]
    assert relayq.queue_files() == [] and relayq.failed_ids() == []
    assert dsns(r) == []


def test_queue_remove_and_unknown_id(relayq, relay):
    r = _relay_for_states(relay)
    a, b, c = _three_states(relayq, r)
    for qid in (a, b):
        cp = run(relayq, ["queue", "remove", qid])
        assert cp.returncode == 0, fmt(cp)
    assert relayq.queued_ids() == [c]
    assert not any(n.startswith(a) for n in relayq.queue_files()), relayq.queue_files()
    assert relayq.failed_ids() == []
    assert not any(n.startswith(b) for n in os.listdir(os.path.join(relayq.spool, "failed")))
    assert [e["id"] for e in relayq.queue_list()] == [c]
    cp = run(relayq, ["queue", "remove", c])
    assert cp.returncode == 0, fmt(cp)
    assert relayq.queue_list() == [] and relayq.queue_files() == []
    cp = run(relayq, [], prog=relayq.link("mailq"))
    assert cp.returncode == 0 and not re.search(rb"[0-9a-f]{20}", cp.stdout), fmt(cp)
    for verb, qid in (("remove", a), ("retry", c), ("retry", "0" * 20),
                      ("remove", "not-an-id")):
        cp = run(relayq, ["queue", verb, qid])
        assert cp.returncode == 65, fmt(cp)
        assert qid.encode() in cp.stderr, fmt(cp)
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0 and settle(r, 0.3) == originals(r)
    assert len(r.messages) == 1               # only A's first delivery to good@


# ---- configuration of the new [queue] keys ------------------------------------------

@pytest.mark.parametrize("key,value", [
    ("rate", "1001"), ("rate", "-1"), ("rate", "fast"), ("lifetime", "5x"),
    ("min_attempts", "many"), ("retry_min", "soon"), ("retry_max", "1y"),
    ("session_max", "lots"), ("wait", "forever")])
def test_bad_queue_values_are_config_errors(relayq, relay, key, value):
    r = relay()
    relayq.port = r.port
    text = relayq.write_config({"queue": {key: value}})
    lineno = text.split("\n").index("%s = %s" % (key, value)) + 1
    cp = run(relayq, [RCPT], msg("cfg"))
    assert cp.returncode == 78, fmt(cp)
    line = [ln for ln in cp.stderr.decode("utf-8", "replace").splitlines()
            if relayq.ini in ln and key in ln]
    assert line and re.search(r"(?<!\d)%d(?!\d)" % lineno, line[0].replace(relayq.ini, "")), \
        "no line naming %s, %s and line %d\n%s" % (relayq.ini, key, lineno, fmt(cp))
    assert relayq.queue_files() == [] and r.connections == 0


def test_good_queue_values_accepted(relayq, relay):
    r = relay()
    configure(relayq, r, {"rate": 1000, "lifetime": "12h", "min_attempts": 1,
                          "retry_min": "30s", "retry_max": "2h", "session_max": 1,
                          "wait": "10s", "delivery": "foreground"})
    cp = run(relayq, [RCPT], msg("cfgok"))
    assert cp.returncode == 0, fmt(cp)
    assert mids(r.messages) == ["<cfgok@example.com>"]
