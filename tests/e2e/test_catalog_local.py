"""The local-fault part of the fault/attack catalog (notes/reliability.md
section 5, cases L1-L12) and the kill test, end to end against the fake
relay on 127.0.0.1.  Helpers: localfaults.py.

Scaled to a test suite's budget (the catalog's numbers in brackets):
  L1         RELAYQ_L1_RUNS runs (default 150) of 2-5 MB [1000 of 20 MB]
  kill test  RELAYQ_KILL_ITERATIONS iterations (default 500)
Mount tricks (tmpfs, read-only bind, loop-mounted ext4) happen in private
mount namespaces (unshare -m) that die with the test; the host is never
changed.
"""

import os
import random
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import SECRET_FORMS, fmt, header_values
import localfaults as lf

RCPT = "rcpt@example.com"
SENDER = "sender@example.com"


# ---- helpers ----------------------------------------------------------------

def configure(relayq, r, queue=None, relay_cfg=None, **sections):
    relayq.port = r.port
    cfg = dict(sections)
    if queue:
        cfg["queue"] = queue
    if relay_cfg:
        cfg["relay"] = relay_cfg
    return relayq.write_config(cfg)


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


def settle(r, seconds=0.5):
    time.sleep(seconds)
    return r.messages


def no_secret_sent(r):
    """The relay password (in any form) is in no message the relay saw."""
    for kind in ("messages", "rejected", "dropped"):
        for m in getattr(r, kind):
            for needle in SECRET_FORMS:
                assert needle not in m["data"], "password sent in a message (%s)" % kind


def log_text(cp):
    return cp.stderr.decode("utf-8", "replace")


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(0.02)


def runners_done(relayq, spool=None, timeout=30):
    """Waits until no runner holds <spool>/lock: a foreground submitter that
    ran the queue may have left the rest to a detached child."""
    lock = os.path.join(spool or relayq.spool, "lock")
    wait_until(lambda: lf.flock_free(lock), timeout, "the runner lock to be free")


@pytest.fixture
def mountns():
    made = []

    def make():
        ns = lf.MountNS()
        made.append(ns)
        return ns

    yield make
    for ns in made:
        ns.close()


# ---- L1: kill -9 the submitter while it reads a large message ---------------

def _deliver_and_check(relayq, r, expect_sha, counts):
    """Runs the queue, checks every message the relay got is complete and
    ours, counts it per Message-ID, and forgets the relay's records."""
    cp = run(relayq, ["-q"], timeout=120, check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    for m in r.messages:
        mid = lf.wire_mid(m["data"])
        assert mid in expect_sha, "unknown message at the relay: %r" % m["data"][:300]
        assert lf.wire_body_sha(m["data"]) == expect_sha[mid], \
            "torn or altered message sent: %s (%d octets)" % (mid, len(m["data"]))
        counts[mid] = counts.get(mid, 0) + 1
    assert r.rejected == [] and r.dropped == []
    r.reset()


def test_L1_kill_submitter_while_piping_large_message(relayq, relay):
    """RELAYQ_L1_RUNS (default 150; the catalog says 1000 of 20 MB) runs of
    `relayq -odq` fed a 2-5 MB message through a pipe and SIGKILLed at a
    random instant (half uniform over the time a complete run of that size
    takes, as calibrated, half in 60-110 % of it, around the commit), so
    kills land while reading, writing, fsyncing, renaming and after exit.
    After each run queue/ holds either nothing new or one complete file;
    every ~25 runs `relayq -q` sends what was committed.  Exit 0 => sent
    exactly once; killed => sent once if its file reached queue/, never
    otherwise; every message the relay gets is byte for byte one of the
    complete originals (unique per-line markers, sha256 of the body)."""
    runs = lf.env_int("RELAYQ_L1_RUNS", 150)
    seed = lf.env_int("RELAYQ_SEED", random.randrange(1 << 30))
    rng = random.Random(seed)
    r = relay()
    configure(relayq, r, {"rate": 0})
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    cmd, env = relayq._prepare(["-odq", RCPT], None, None, None, None, False, (), None)

    def submit(raw, delay):
        errf = open(os.path.join(str(relayq.tmp_path), "l1.err"), "wb")
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=errf, env=env)
        errf.close()
        t0 = time.monotonic()
        w = lf.feed(p, raw)
        killed = lf.kill9_after(p, delay) if delay is not None else False
        p.wait(60)
        w.join(10)
        return p.returncode, killed, time.monotonic() - t0

    # calibration: a complete run's time, linear in the size (2 and 5 MB)
    took = {2000000: [], 5000000: []}
    expect_sha, counts, fate = {}, {}, {}
    for i, size in enumerate((2000000, 5000000, 2000000, 5000000)):
        raw, mid, sha = lf.big_message("l1-cal%d" % i, size)
        expect_sha[mid] = sha
        rc, _, t = submit(raw, None)
        assert rc == 0, open(os.path.join(str(relayq.tmp_path), "l1.err"), "rb").read()
        fate[mid] = "exit0"
        took[size].append(t)
    t2, t5 = min(took[2000000]), min(took[5000000])

    def full(size):
        return t2 + max(0.0, t5 - t2) * (size - 2000000) / 3000000.0

    stats = {"exit0": 0, "killed-before-commit": 0, "killed-after-commit": 0}
    t_start = time.monotonic()
    for i in range(runs):
        size = rng.randrange(2000000, 5000001)
        raw, mid, sha = lf.big_message("l1-%04d-s%d" % (i, seed), size)
        expect_sha[mid] = sha
        before = set(lf.spool_ids(relayq.spool))
        # half the kills anywhere in a run, half near its end (the commit)
        delay = full(size) * (rng.uniform(0, 1) if rng.random() < 0.5
                              else rng.uniform(0.6, 1.1))
        rc, killed, _ = submit(raw, delay)
        new = set(lf.spool_ids(relayq.spool)) - before
        assert len(new) <= 1, new
        assert rc == 0 or killed, "run %d: exit %s without a kill: %r" % (
            i, rc, open(os.path.join(str(relayq.tmp_path), "l1.err"), "rb").read())
        for qid in new:
            with open(os.path.join(relayq.spool, "queue", qid), "rb") as f:
                data = f.read()
            assert lf.spool_complete(data), "torn file in queue/: %s (run %d)" % (qid, i)
            assert lf.spool_mid(os.path.join(relayq.spool, "queue", qid)) == mid
        if rc == 0 and not killed:
            assert new, "run %d exited 0 but nothing is in queue/" % i
            fate[mid] = "exit0"
        else:
            fate[mid] = "committed" if new else "lost"
        stats["exit0" if fate[mid] == "exit0" else "killed-after-commit"
              if new else "killed-before-commit"] += 1
        if i % 25 == 24:
            _deliver_and_check(relayq, r, expect_sha, counts)
    _deliver_and_check(relayq, r, expect_sha, counts)
    elapsed = time.monotonic() - t_start
    print("L1: seed=%d runs=%d %r tmp leftovers=%d in %.1fs" % (
        seed, runs, stats, len(relayq.tmp_files()), elapsed))
    for mid, f in fate.items():
        want = 0 if f == "lost" else 1
        assert counts.get(mid, 0) == want, "seed %d: %s (%s) sent %d times" % (
            seed, mid, f, counts.get(mid, 0))
    assert relayq.queue_files() == [] and lf.spool_dir_list(relayq.spool, "corrupt") == []
    # leftovers of killed submitters are never sent, and never in queue/
    for name in relayq.tmp_files():
        assert lf.spool_mid(os.path.join(relayq.spool, "tmp", name)) not in counts
    assert stats["killed-before-commit"] > 0 and stats["exit0"] > 0, stats


# ---- L2: power cut after exit 0 ---------------------------------------------

def _commit_order(events, spool, pid):
    """Checks, in the syscalls of process pid, that the message file was
    written, fsynced and closed in tmp/, then renamed (or linked) into
    queue/, then queue/ was fsynced, then the process exited 0.  Returns the
    queue ID."""
    ev = [(i, e) for i, e in enumerate(events) if e[0] == pid]
    tmp_re = re.compile(r'"%s/tmp/([0-9a-f]{20})"' % re.escape(spool))
    opens = [(i, e) for i, e in ev if e[1] == "openat" and tmp_re.search(e[2])
             and "O_CREAT" in e[2] and "O_EXCL" in e[2] and e[3] is not None and e[3] >= 0]
    assert len(opens) == 1, "no single O_CREAT|O_EXCL open of tmp/ID: %r" % opens
    i_open, (_, _, args, fd) = opens[0]
    qid = tmp_re.search(args).group(1)
    writes = [i for i, e in ev if e[1] in ("write", "pwrite64", "writev", "pwritev")
              and e[2].startswith("%d," % fd) and i > i_open]
    closes = [i for i, e in ev if e[1] == "close" and e[2] == str(fd) and i > i_open]
    i_close = closes[0]
    writes = [i for i in writes if i < i_close]
    assert writes, "nothing written to tmp/%s" % qid
    syncs = [i for i, e in ev if e[1] in ("fsync", "fdatasync") and e[2] == str(fd)
             and i_open < i < i_close and e[3] == 0]
    assert syncs and syncs[-1] > writes[-1], "tmp/%s not fsynced after its last write" % qid
    assert events[i_close][3] == 0
    moves = [i for i, e in ev if e[1] in ("rename", "renameat", "renameat2", "link", "linkat")
             and "tmp/%s" % qid in e[2] and "queue/%s" % qid in e[2] and e[3] == 0]
    assert len(moves) == 1, "no single rename/link of tmp/%s into queue/" % qid
    i_move = moves[0]
    assert i_move > syncs[-1]
    dir_opens = [(i, e[3]) for i, e in ev if e[1] == "openat" and i > i_move
                 and e[2].split(",")[1].strip() == '"%s/queue"' % spool
                 and "O_DIRECTORY" in e[2] and e[3] is not None and e[3] >= 0]
    assert dir_opens, "queue/ not opened after the rename"
    dsyncs = [i for i, e in ev for (j, dfd) in dir_opens[:1]
              if e[1] in ("fsync", "fdatasync") and e[2] == str(dfd) and i > j and e[3] == 0]
    assert dsyncs, "queue/ not fsynced after the rename"
    exits = [i for i, e in ev if e[1] in ("exit_group", "+++exit")]
    assert exits and exits[0] > dsyncs[0], "exited before the directory fsync"
    return qid


@pytest.mark.parametrize("mode", ["-odq", "-odb", "-t"])
def test_L2_durability_order_before_exit_0(relayq, relay, tmp_path, mode):
    """What a power cut after exit 0 needs, seen in the system calls
    (strace): the message is written to tmp/ID, fsynced and closed, renamed
    (RENAME_NOREPLACE) or linked into queue/ID, queue/ is fsynced, and only
    then does the submitter exit 0.  -t is a foreground submission (the
    relay takes it, so only the order up to the rename is required before
    delivery).  Not simulated here: the disk itself -- that fsync reaches
    stable storage is the kernel's and the device's promise; see the
    loop-device test below for an actual image taken at the instant of
    exit 0."""
    r = relay()
    configure(relayq, r, {"rate": 0})
    cp = run(relayq, ["-q"])                      # spool directories exist
    assert cp.returncode == 0, fmt(cp)
    log = str(tmp_path / "strace.log")
    wrap = [lf.STRACE, "-f", "-q", "-o", log, "-e",
            "trace=openat,write,pwrite64,writev,fsync,fdatasync,close,rename,renameat,"
            "renameat2,link,linkat,unlink,unlinkat,exit_group"]
    args = ["-t"] if mode == "-t" else [mode, RCPT]
    stdin = msg("l2-order")
    cp = run(relayq, args, stdin, wrap=wrap, check_tmp=False, env=lf.no_lsan_env())
    assert cp.returncode == 0, fmt(cp)
    with open(log) as f:
        events = lf.parse_strace(f.read())
    pid = events[0][0]
    qid = _commit_order(events, relayq.spool, pid)
    if mode == "-odq":
        assert relayq.queued_ids() == [qid]
    else:
        r.wait_for_messages(1, timeout=10)
        wait_until(lambda: relayq.queue_files() == [], 5, "delivery")
        assert mids(r.messages) == ["<l2-order@example.com>"]


def test_L2_power_cut_image_after_exit_0_keeps_message(relayq, relay, mountns, tmp_path):
    """A power cut at the instant relayq exits 0, simulated at the block
    layer: the spool is an ext4 filesystem on a loop device (journal commit
    interval 600 s, so nothing reaches the device unless something forces
    it), in a private mount namespace.  Right after exit 0 the backing file
    is copied -- that copy is exactly what the "disk" holds at that moment,
    page cache excluded -- and mounted (journal replay, as after a crash).
    The message must be in queue/ there, byte for byte, and not in tmp/.
    Two controls written after exit 0 prove the image drops what was not
    made durable: a plain file, and a file written, fsynced and renamed
    into queue/ WITHOUT a directory fsync (what relayq would do without
    its directory fsync) -- both must be missing from the image.
    Not simulated: a disk write cache that lies about flushes, torn
    sectors, reordering below the filesystem, other filesystems than ext4."""
    if not os.path.exists("/dev/loop-control"):
        pytest.fail("no loop device support (/dev/loop-control)")
    r = relay()
    configure(relayq, r, {"rate": 0})
    img, snap = str(tmp_path / "spool.img"), str(tmp_path / "snap.img")
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", img], check=True)
    ns = mountns()
    ns.sh('mount -o loop,commit=600 "$1" "$2"', img, relayq.spool)
    cp = run(relayq, ["-q"], wrap=ns.wrap, check_tmp=False)      # spool directories
    assert cp.returncode == 0, fmt(cp)
    ns.sh('sync -f "$1"', relayq.spool)
    raw, mid, sha = lf.big_message("l2-powercut", 300000)
    cp = run(relayq, ["-odq", RCPT], raw, wrap=ns.wrap, check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    # -- the power cut: controls first, then the image
    spool = ns.outside(relayq.spool)
    # (the fsync of the second control commits the journal, so it goes
    # first: the plain file then sits in the next, never committed, one)
    ctl_tmp = os.path.join(spool, "tmp", "control-renamed")
    with open(ctl_tmp, "wb") as f:
        f.write(b"synced, renamed, directory not synced\n" * 100)
        f.flush()
        os.fsync(f.fileno())
    os.rename(ctl_tmp, os.path.join(spool, "queue", "control-renamed"))
    with open(os.path.join(spool, "control-plain"), "wb") as f:
        f.write(b"never synced\n" * 1000)
    shutil.copyfile(img, snap)
    (qid,) = lf.spool_ids(spool)
    with open(os.path.join(spool, "queue", qid), "rb") as f:
        original = f.read()
    # -- after the "reboot"
    mnt = str(tmp_path / "after")
    os.makedirs(mnt)
    ns.sh('mount -o loop "$1" "$2"', snap, mnt)
    after = ns.outside(mnt)
    assert not os.path.exists(os.path.join(after, "control-plain")), \
        "the image kept an unsynced file: this is not a power-cut image"
    assert not os.path.exists(os.path.join(after, "queue", "control-renamed")), \
        "the image kept a rename whose directory was not synced: not a power-cut image"
    assert lf.spool_ids(after) == [qid], (lf.spool_dir_list(after, "queue"),
                                          lf.spool_dir_list(after, "tmp"))
    with open(os.path.join(after, "queue", qid), "rb") as f:
        assert f.read() == original, "the message file differs after the power cut"
    assert qid not in lf.spool_dir_list(after, "tmp")
    # and the runner sends it from the image
    ini2 = str(tmp_path / "after.ini")
    relayq.write_config({"queue": {"dir": mnt}}, path=ini2)
    cp = run(relayq, ["-q"], wrap=ns.wrap, ini=ini2, check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    (m,) = settle(r, 0.3)
    assert mid_of(m) == mid and lf.wire_body_sha(m["data"]) == sha


# ---- L3: spool filesystem full ----------------------------------------------

def test_L3_spool_filesystem_full_exits_75_and_leaves_nothing(relayq, relay, mountns):
    """A 1 MiB tmpfs mounted as the spool (private mount namespace): a
    1.5 MB message cannot be spooled (-odq, foreground, -t) -> exit 75
    with one clear line, no
    temporary file and no queue file left; a message queued before and a
    small one submitted after are unaffected and delivered once."""
    r = relay()
    configure(relayq, r, {"rate": 0})
    ns = mountns()
    ns.sh('mount -t tmpfs -o size=1m,mode=0700 relayq-l3 "$1"', relayq.spool)
    spool = ns.outside(relayq.spool)
    cp = run(relayq, ["-odq", RCPT], msg("l3-before"), wrap=ns.wrap, check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    before = lf.spool_ids(spool)
    assert len(before) == 1, fmt(cp)
    with open(os.path.join(spool, "queue", before[0]), "rb") as f:
        before_data = f.read()
    raw, big_mid, _ = lf.big_message("l3-big", 1500000)
    for mode in (["-odq"], [], ["-t"]):
        cp = run(relayq, [*mode, RCPT] if mode != ["-t"] else mode, raw, wrap=ns.wrap,
                 check_tmp=False)
        assert cp.returncode == 75, "%r: %s" % (mode, fmt(cp))
        err = [ln for ln in log_text(cp).splitlines() if ln.strip()]
        assert len(err) == 1 and re.search(r"(?i)no space", err[0]), fmt(cp)
        assert lf.spool_dir_list(spool, "tmp") == [], lf.spool_dir_list(spool, "tmp")
        assert lf.spool_ids(spool) == before
    with open(os.path.join(spool, "queue", before[0]), "rb") as f:
        assert f.read() == before_data
    # the spool is usable again at once: a small foreground submission goes
    # through, and the runner sends the one queued before
    cp = run(relayq, [RCPT], msg("l3-after"), wrap=ns.wrap, check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    runners_done(relayq, spool)
    cp = run(relayq, ["-q"], wrap=ns.wrap, check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    got = mids(settle(r, 0.3))
    assert sorted(got) == ["<l3-after@example.com>", "<l3-before@example.com>"], got
    assert big_mid not in got
    assert lf.spool_dir_list(spool, "queue") == [] and lf.spool_dir_list(spool, "tmp") == []
    assert lf.spool_dir_list(spool, "corrupt") == []


# ---- L4: spool read-only ----------------------------------------------------

def test_L4_spool_read_only_submit_fails_cleanly_runner_keeps_running(relayq, relay, mountns):
    """The spool made read-only under a running daemon (relayq -q1m), in a
    private mount namespace.  (Linux refuses to make a mount read-only
    while a file on it is open for writing, and the daemon holds its lock
    file so; the lock file is therefore a bind mount of its own, and the
    rest of the spool -- tmp/, queue/, failed/ -- goes read-only.)
    A submission is refused with the exit status relayq.8 documents for a
    read-only spool, 73 (the catalog says 75), and one clear line naming the
    cause, in every delivery mode; the daemon keeps running and, once the
    spool is writable again, delivers new mail at once."""
    r = relay()
    configure(relayq, r, {"rate": 0})
    cp = run(relayq, ["-q"])                 # creates the spool and its lock
    assert cp.returncode == 0, fmt(cp)
    ns = mountns()
    ns.sh('mount --bind "$1" "$1"; mount --bind "$1/lock" "$1/lock"', relayq.spool)
    d = relayq.popen(["-q1m"], write=False, wrap=ns.wrap)
    cp = run(relayq, ["-odq", RCPT], msg("l4-rw"), wrap=ns.wrap, check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    r.wait_for_messages(1, timeout=5)
    ns.sh('mount -o remount,bind,ro "$1"', relayq.spool)
    for args in (["-odq", RCPT], [RCPT], ["-odb", RCPT], ["-t"]):
        cp = run(relayq, args, msg("l4-ro"), wrap=ns.wrap, check_tmp=False)
        assert cp.returncode == 73, "%r: %s" % (args, fmt(cp))
        lines = [ln for ln in log_text(cp).splitlines() if ln.strip()]
        assert len(lines) == 1 and "read-only" in lines[0].lower(), fmt(cp)
    time.sleep(0.5)
    assert d.proc.poll() is None, "daemon died with a read-only spool: %r" % d.stderr()
    ns.sh('mount -o remount,bind,rw "$1"', relayq.spool)
    cp = run(relayq, ["-odq", RCPT], msg("l4-again"), wrap=ns.wrap, check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    r.wait_for_messages(2, timeout=5)
    assert mids(settle(r, 0.3)) == ["<l4-rw@example.com>", "<l4-again@example.com>"]
    assert d.proc.poll() is None, d.stderr()
    d.proc.send_signal(signal.SIGTERM)
    assert d.finish(10).returncode == 0


def test_L4_read_only_spool_queued_mail_not_resent_every_pass(relayq, relay, mountns):
    """A message queued before the spool went read-only: the runner cannot
    mark it done, so it must not send it on every pass -- three `relayq -q`
    runs deliver it at most once (it goes out once the spool is writable
    again, if not before), and each run exits 0."""
    r = relay()
    configure(relayq, r, {"rate": 0})
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    ns = mountns()
    ns.sh('mount --bind "$1" "$1"; mount --bind "$1/lock" "$1/lock"', relayq.spool)
    cp = run(relayq, ["-odq", RCPT], msg("l4-queued"), wrap=ns.wrap, check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    ns.sh('mount -o remount,bind,ro "$1"', relayq.spool)
    for _ in range(3):
        cp = run(relayq, ["-q"], wrap=ns.wrap, check_tmp=False)
        assert cp.returncode == 0, fmt(cp)
    got = mids(settle(r, 0.3))
    assert len(got) <= 1, "sent %d times from a read-only spool: %r" % (len(got), got)
    ns.sh('mount -o remount,bind,rw "$1"', relayq.spool)
    cp = run(relayq, ["-q"], wrap=ns.wrap, check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    assert mids(settle(r, 0.3)) == ["<l4-queued@example.com>"]


# ---- L5: junk in the spool --------------------------------------------------

def _junk_victim(relayq, tag):
    """Queues a message with -odq and returns (its queue id, path)."""
    before = set(relayq.queued_ids())
    cp = run(relayq, ["-odq", RCPT], msg(tag))
    assert cp.returncode == 0, fmt(cp)
    (qid,) = set(relayq.queued_ids()) - before
    return qid, os.path.join(relayq.spool, "queue", qid)


JUNK_ID = "0000000000000000dead"


def _make_junk(kind, relayq, tmp_path):
    """Creates one kind of junk in queue/; returns (its name, the Message-ID
    that must never be sent or None)."""
    q = os.path.join(relayq.spool, "queue")
    path = os.path.join(q, JUNK_ID)
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "symlink-to-config":
        os.symlink(relayq.ini, path)
    elif kind == "directory":
        os.mkdir(path, 0o700)
        with open(os.path.join(path, "x"), "w") as f:
            f.write("x")
    elif kind == "hardlink-to-config":
        os.link(relayq.ini, path)
    elif kind == "hardlink":
        qid, p = _junk_victim(relayq, "l5-hardlink")
        os.link(p, str(tmp_path / "second-name"))
        return qid, "<l5-hardlink@example.com>"
    elif kind == "wrong-owner":
        qid, p = _junk_victim(relayq, "l5-owner")
        os.chown(p, 65534, 65534)
        return qid, "<l5-owner@example.com>"
    elif kind == "bad-name":
        # a complete, valid spool file under a name that is not an ID
        qid, p = _junk_victim(relayq, "l5-badname")
        os.rename(p, os.path.join(q, "message.eml"))
        return "message.eml", "<l5-badname@example.com>"
    elif kind == "torn":
        qid, p = _junk_victim(relayq, "l5-torn")
        with open(p, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            f.truncate(size - 20)            # END and the end of the data gone
        return qid, "<l5-torn@example.com>"
    else:
        raise ValueError(kind)
    return JUNK_ID, None


@pytest.mark.parametrize("kind", [
    "fifo", "symlink-to-config", "directory", "hardlink", "hardlink-to-config",
    "wrong-owner", "torn",
    "bad-name",
])
def test_L5_spool_junk_quarantined_with_one_log_line(relayq, relay, tmp_path, kind):
    """Junk in queue/ beside a good message: the runner never blocks on it
    (a FIFO), never follows it (a symlink to the config), never sends it;
    it is moved to corrupt/ or left alone, with exactly one log line naming
    it over two runs; the config (with the relay password) is never sent
    and stays intact; the good message goes out once."""
    r = relay()
    configure(relayq, r, {"rate": 0})
    with open(relayq.ini, "rb") as f:
        ini_before = f.read()
    cp = run(relayq, ["-odq", RCPT], msg("l5-good"))
    assert cp.returncode == 0, fmt(cp)
    name, victim = _make_junk(kind, relayq, tmp_path)
    logs = ""
    for _ in range(2):
        cp = run(relayq, ["-q"], timeout=20)
        assert cp.returncode == 0, fmt(cp)
        logs += log_text(cp)
    got = mids(settle(r, 0.3))
    assert got == ["<l5-good@example.com>"], got
    no_secret_sent(r)
    corrupt = lf.spool_dir_list(relayq.spool, "corrupt")
    lines = [ln for ln in logs.splitlines() if name in ln]
    assert len(lines) == 1, "want one log line naming %s, got %r (corrupt/=%r)" % (
        name, lines, corrupt)
    with open(relayq.ini, "rb") as f:
        assert f.read() == ini_before, "the config file was changed"
    assert os.path.isfile(relayq.ini) and not os.path.islink(relayq.ini)
    if victim is not None:
        assert victim not in got


# ---- L6: two runners and a foreground submission at once --------------------

def test_L6_two_runners_and_foreground_submission_each_message_once(relayq, relay):
    """Three rounds: 30 queued messages, then two `relayq -q` and one
    foreground submission started together (in varying order): all three
    exit 0, and every message reaches the relay exactly once (once the
    queue is empty: a `-q` that finds another runner active exits 0 and
    leaves the queue to it, and the foreground submitter may hand the rest
    to a detached runner)."""
    r = relay(reply_delay=0.01)
    configure(relayq, r, {"rate": 0})
    expected = []
    for rnd in range(3):
        expected += _queue_round(relayq, rnd, 30)
        procs = []
        order = [("q",), ("q",), ("fg",)]
        random.Random(rnd).shuffle(order)
        for (what,) in order:
            if what == "q":
                procs.append(relayq.popen(["-q"], write=False))
            else:
                procs.append(relayq.popen([RCPT], msg("l6-fg-%d" % rnd), write=False))
                expected.append("<l6-fg-%d@example.com>" % rnd)
        logs = []
        for (what,), p in zip(order, procs):
            cp = p.finish(60)
            assert cp.returncode == 0, fmt(cp)
            logs.append("%s: %s" % (what, log_text(cp)))
        # a runner that exits while another holds the lock leaves the rest
        # to it, and the foreground submitter's runner may go on detached
        wait_until(lambda: relayq.queue_files() == [], 15, "the queue to empty")
        got = mids(settle(r, 0.3))
        dups = sorted({m for m in got if got.count(m) > 1})
        assert dups == [], "sent more than once: %r" % dups
        assert sorted(got) == sorted(expected), "round %d: missing %r\n%s" % (
            rnd, sorted(set(expected) - set(got)), "\n".join(logs))
        assert relayq.queue_files() == [] and relayq.tmp_files() == []


def _queue_round(relayq, rnd, n):
    out = []
    for i in range(n):
        tag = "l6-%d-%02d" % (rnd, i)
        cp = run(relayq, ["-odq", RCPT], msg(tag))
        assert cp.returncode == 0, fmt(cp)
        out.append("<%s@example.com>" % tag)
    return out


# ---- L7: runner SIGKILLed while holding its lock ----------------------------

def test_L7_runner_killed_holding_lock_next_runner_proceeds_at_once(relayq, relay):
    """(a) The daemon (relayq -q1m) holds <spool>/lock for good: SIGKILLed,
    the lock is free at once and `relayq -q` delivers the queue within a
    second.  (b) A `relayq -q` SIGKILLed in the middle of a session (holding
    the runner lock and a message lock): the next runner delivers its first
    message within a second; nothing is lost, at most the message in flight
    goes twice."""
    r = relay(mode="none", user=None, password=None)
    configure(relayq, r, {"rate": 0}, lf.NO_TLS)
    lock = os.path.join(relayq.spool, "lock")
    d = relayq.popen(["-q1m"], write=False)
    wait_until(lambda: os.path.exists(lock) and not lf.flock_free(lock), 5,
               "the daemon to take the runner lock")
    os.kill(d.pid, signal.SIGKILL)
    d.proc.wait(5)
    assert lf.flock_free(lock), "runner lock still held after the daemon died"
    sent = relayq.queue_messages(5, subject="l7a-%d")
    t0 = time.time()
    cp = run(relayq, ["-q"], timeout=20)
    assert cp.returncode == 0, fmt(cp)
    msgs = r.wait_for_messages(5, timeout=5)
    assert msgs[0]["time"] - t0 < 1.0, "first delivery %.2fs after start" % (
        msgs[0]["time"] - t0)
    assert sorted(mids(msgs)) == sorted(sent)

    r.reset()
    r.reply_delay = 0.2
    sent = relayq.queue_messages(8)             # the same Message-IDs again
    p = relayq.popen(["-q"], write=False)
    r.wait_for_messages(2, timeout=10)
    assert not lf.flock_free(lock)
    os.kill(p.pid, signal.SIGKILL)
    p.proc.wait(5)
    lf.wait_relay_idle(r.port)
    n_before = len(r.messages)
    r.reply_delay = 0
    t0 = time.time()
    cp = run(relayq, ["-q"], timeout=20)
    assert cp.returncode == 0, fmt(cp)
    later = r.messages[n_before:]
    assert later and later[0]["time"] - t0 < 1.0, "second runner blocked"
    got = mids(r.messages)
    assert set(got) == set(sent), "lost: %r" % (set(sent) - set(got))
    dups = [x for x in set(got) if got.count(x) > 1]
    assert len(dups) <= 1 and all(got.count(x) == 2 for x in dups), got
    assert relayq.queue_files() == []


# ---- L8: submitter stopped mid-write ----------------------------------------

def _piped(relayq, args, tag):
    """Starts relayq reading its message from a pipe we hold."""
    cmd, env = relayq._prepare(args, None, None, None, None, False, (), None)
    errf = open(os.path.join(str(relayq.tmp_path), "%s.err" % tag), "wb")
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=errf, env=env)
    errf.close()
    return p


def test_L8_submitter_stopped_mid_write_others_unaffected(relayq, relay):
    """Two submitters SIGSTOPped halfway through their input (their
    temporary files exist): foreground submissions, -odq submissions, a
    `relayq -q` and the daemon all go on as usual; nothing of the stopped
    ones is sent.  One is then continued and finishes: exit 0, delivered
    once, intact.  The other is SIGKILLed: never sent."""
    r = relay()
    configure(relayq, r, {"rate": 0})
    raw_a, mid_a, sha_a = lf.big_message("l8-stopped-a", 400000)
    raw_b, mid_b, _ = lf.big_message("l8-stopped-b", 400000)
    cp = run(relayq, ["-q"])                     # spool directories
    assert cp.returncode == 0, fmt(cp)
    stopped = []
    for tag, raw in (("a", raw_a), ("b", raw_b)):
        before = set(relayq.tmp_files())
        p = _piped(relayq, [RCPT], "l8-" + tag)
        p.stdin.write(raw[:200000])
        p.stdin.flush()
        wait_until(lambda: set(relayq.tmp_files()) - before, 5,
                   "the submitter's temporary file")
        os.kill(p.pid, signal.SIGSTOP)
        stopped.append(p)
    try:
        t0 = time.monotonic()
        for i in range(3):
            cp = run(relayq, [RCPT], msg("l8-fg-%d" % i), check_tmp=False, timeout=10)
            assert cp.returncode == 0, fmt(cp)
        for i in range(3):
            cp = run(relayq, ["-odq", RCPT], msg("l8-q-%d" % i), check_tmp=False, timeout=10)
            assert cp.returncode == 0, fmt(cp)
        cp = run(relayq, ["-q"], check_tmp=False, timeout=10)
        assert cp.returncode == 0, fmt(cp)
        d = relayq.popen(["-q1m"], write=False)
        cp = run(relayq, ["-odq", RCPT], msg("l8-daemon"), check_tmp=False, timeout=10)
        assert cp.returncode == 0, fmt(cp)
        r.wait_for_messages(7, timeout=5)
        assert time.monotonic() - t0 < 10
        d.proc.send_signal(signal.SIGTERM)
        assert d.finish(10).returncode == 0
        got = mids(r.messages)
        assert sorted(got) == sorted(
            ["<l8-fg-%d@example.com>" % i for i in range(3)] +
            ["<l8-q-%d@example.com>" % i for i in range(3)] + ["<l8-daemon@example.com>"]), got
        assert all(p.poll() is None for p in stopped)
    finally:
        a, b = stopped
        os.kill(b.pid, signal.SIGKILL)
        b.wait(5)
        os.kill(a.pid, signal.SIGCONT)
    a.stdin.write(raw_a[200000:])
    a.stdin.close()
    assert a.wait(20) == 0, open(os.path.join(str(relayq.tmp_path), "l8-a.err"), "rb").read()
    cp = run(relayq, ["-q"], check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    got = settle(r, 0.3)
    ours = [m for m in got if mid_of(m) == mid_a]
    assert len(ours) == 1 and lf.wire_body_sha(ours[0]["data"]) == sha_a
    assert mid_b not in mids(got)
    assert relayq.queue_files() == []


# ---- L9 / L10: the wall clock jumps -----------------------------------------

class Clock:
    """A wall clock that can jump under running processes: libfaketime
    reads its offset from a file at every call (FAKETIME_NO_CACHE); the
    monotonic clock stays real (FAKETIME_DONT_FAKE_MONOTONIC)."""

    def __init__(self, tmp_path):
        self.path = os.path.join(str(tmp_path), "faketime.rc")
        self.set("+0")
        self.env = {"LD_PRELOAD": lf.FAKETIME_LIB, "FAKETIME_TIMESTAMP_FILE": self.path,
                    "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def set(self, offset):
        tmp = self.path + ".new"
        with open(tmp, "w") as f:
            f.write(offset + "\n")
        os.rename(tmp, self.path)


def _attempts(relayq):
    return {e["id"]: e["attempts"] for e in relayq.queue_list()}


def _assert_rate(times, rate):
    ts = sorted(times)
    j = 0
    for i in range(len(ts)):
        while ts[i] - ts[j] >= 1.0:
            j += 1
        assert i - j + 1 <= rate, "%d arrivals within one second (rate %d)" % (
            i - j + 1, rate)


def test_L9_clock_jumps_ten_days_forward_no_mass_expiry(relayq, relay, tmp_path):
    """20 messages queued; a first `relayq -q` on the real clock delivers 5
    and has 15 deferred by the relay (451).  Then the wall clock is 10 days
    ahead (lifetime 5d, min_attempts 3) for two more `relayq -q` runs right
    after (-q sends whatever is queued, due or not, like a cron job after
    the jump): nothing expires and no DSN goes out while messages have fewer
    than 3 attempts -- the 8 accepted at the 2nd attempt and the 7 refused
    again and accepted at the 3rd are each delivered once -- and the rate
    limit (5/s, kept on the monotonic clock) holds across the jump: never
    more than 5 arrivals in any second, before and after it together."""
    rcpts = ["l9-%02d@example.com" % i for i in range(20)]
    deferred, later = rcpts[5:], rcpts[13:]
    replies = {a: [(451, "4.3.0 Try again later")] * (2 if a in later else 1)
               for a in deferred}
    # plain SMTP: a test certificate is not valid ten days ahead
    r = relay(mode="none", user=None, password=None, rcpt_replies=replies)
    configure(relayq, r, {"rate": 5, "retry_min": "1h", "retry_max": "1h",
                          "lifetime": "5d", "min_attempts": 3}, lf.NO_TLS)
    for a in rcpts:
        cp = run(relayq, ["-odq", "-f", SENDER, a], msg(a.split("@")[0], a))
        assert cp.returncode == 0, fmt(cp)
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert sorted(_attempts(relayq).values()) == [1] * 15, relayq.queue_list()
    assert len(r.messages) == 5
    clock = Clock(tmp_path)
    clock.set("+10d")
    logs = ""
    for attempt in (2, 3):
        cp = run(relayq, ["-q"], env=clock.env)
        assert cp.returncode == 0, fmt(cp)
        logs += log_text(cp)
        left = _attempts(relayq)
        if attempt == 2:
            assert sorted(left.values()) == [2] * 7, relayq.queue_list()
            assert relayq.failed_ids() == [], "expired before min_attempts"
    msgs = settle(r, 0.3)
    assert "expired" not in logs, logs
    assert [m for m in msgs if m["mail_from"] == ""] == [], "a DSN went out"
    assert sorted(a for m in msgs for a in m["rcpt_tos"]) == rcpts
    assert len(msgs) == 20
    assert relayq.failed_ids() == [] and relayq.queue_files() == []
    _assert_rate([m["time"] for m in msgs], 5)


@pytest.mark.parametrize("offset", [
    "+0",
    "-1d",
])
def test_L10_clock_jumps_one_day_back_retries_stay_on_schedule(relayq, relay, tmp_path,
                                                                offset):
    """A foreground submission deferred by the relay (451, retry_min 2 s);
    right after, the wall clock jumps one day back ("-1d"; "+0" is the
    control without a jump) and the daemon (relayq -q10m) starts.  The
    retry must still come about 2 s after the deferral -- not a day later,
    not at the daemon's next 10-minute pass -- and new mail is still sent
    at once."""
    # plain SMTP: a test certificate is not valid a day back
    r = relay(mode="none", user=None, password=None,
              rcpt_replies={RCPT: [(451, "4.3.0 Try again later")]})
    configure(relayq, r, {"rate": 0, "retry_min": "2s", "retry_max": "4s"}, lf.NO_TLS)
    cp = run(relayq, [RCPT], msg("l10-deferred"))
    assert cp.returncode == 0 and b"deferred" in cp.stderr, fmt(cp)
    t_defer = time.time()
    clock = Clock(tmp_path)
    clock.set(offset)
    d = relayq.popen(["-q10m"], write=False, env=clock.env)
    try:
        cp = run(relayq, ["-odq", "new@example.com"], msg("l10-new", "new@example.com"),
                 check_tmp=False, env=clock.env)
        assert cp.returncode == 0, fmt(cp)
        t_new = time.time()
        try:
            msgs = r.wait_for_messages(2, timeout=8)
        except AssertionError:
            raise AssertionError("the deferred message was not retried within %.0fs of "
                                 "its deferral (retry_min 2s), clock %s; queue: %r\n%s" % (
                                     time.time() - t_defer, offset, relayq.queue_list(),
                                     d.stderr().decode(errors="replace")[-2000:]))
        by_mid = {mid_of(m): m for m in msgs}
        assert set(by_mid) == {"<l10-new@example.com>", "<l10-deferred@example.com>"}
        # New mail at once; the retry on schedule (or sooner), never a day on.
        assert by_mid["<l10-new@example.com>"]["time"] - t_new < 5
        assert by_mid["<l10-deferred@example.com>"]["time"] - t_defer < 6
    finally:
        d.proc.send_signal(signal.SIGTERM)
        d.finish(15)


# ---- L11: hostile resource limits and closed descriptors --------------------

CLOSE_012 = 'exec 0<&- 1>&- 2>&- "$@"'
CLOSE_12 = 'exec 1>&- 2>&- "$@"'


def _no_log_text(data):
    assert b"relayq[" not in data and b"relayq:" not in data, \
        "log text written into a message: %r" % data[:600]


@pytest.mark.parametrize("mode", [["-odq"], []], ids=["odq", "foreground"])
def test_L11_fsize_limit_exits_75_not_sigxfsz(relayq, relay, mode):
    """RLIMIT_FSIZE = 1 MiB and a 2 MB message: exit 75 with one line on
    stderr (no death by SIGXFSZ), no temporary or queue file left, nothing
    sent; a small message under the same limit is queued and sent."""
    r = relay()
    configure(relayq, r, {"rate": 0})
    raw, mid, _ = lf.big_message("l11-fsize", 2000000)
    wrap = [lf.PRLIMIT, "--fsize=1048576", "--"]
    cp = run(relayq, [*mode, RCPT], raw, wrap=wrap)
    assert cp.returncode != -signal.SIGXFSZ, "killed by SIGXFSZ"
    assert cp.returncode == 75, fmt(cp)
    lines = [ln for ln in log_text(cp).splitlines() if ln.strip()]
    assert len(lines) == 1 and "large" in lines[0].lower(), fmt(cp)
    assert relayq.queue_files() == [] and relayq.tmp_files() == []
    cp = run(relayq, [*mode, RCPT], msg("l11-small"), wrap=wrap)
    assert cp.returncode == 0, fmt(cp)
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    assert mids(settle(r, 0.3)) == ["<l11-small@example.com>"]


@pytest.mark.parametrize("mode,nofile", [
    (["-odq"], 4), (["-odq"], 5), ([], 5), (["-q"], 4), (["-q"], 5),
    ([], 4),
], ids=["odq-4", "odq-5", "foreground-5", "queue-run-4", "queue-run-5", "foreground-4"])
def test_L11_nofile_limit_clean_exit(relayq, relay, mode, nofile):
    """RLIMIT_NOFILE = 4 or 5 (0/1/2 open, one or two descriptors left;
    with 3 the dynamic loader itself cannot start the program):
    relayq exits promptly (within 8 s) either 0 with the message queued
    intact, or 73/75 with one line on stderr and nothing left behind; no
    crash, nothing quarantined; a normal run afterwards delivers every
    accepted message exactly once."""
    r = relay()
    configure(relayq, r, {"rate": 0})
    if mode == ["-q"]:
        cp = run(relayq, ["-odq", RCPT], msg("l11-nofile"))
        assert cp.returncode == 0, fmt(cp)
    wrap = [lf.PRLIMIT, "--nofile=%d" % nofile, "--"]
    args = mode if mode == ["-q"] else [*mode, RCPT]
    try:
        cp = run(relayq, args, b"" if mode == ["-q"] else msg("l11-nofile"),
                 wrap=wrap, timeout=8)
    except subprocess.TimeoutExpired:
        raise AssertionError("relayq %r with RLIMIT_NOFILE=%d still running after 8 s"
                             % (args, nofile))
    assert cp.returncode in (0, 73, 75), fmt(cp)
    if cp.returncode != 0:
        lines = [ln for ln in log_text(cp).splitlines() if ln.strip()]
        assert len(lines) >= 1 and re.search(r"(?i)open files|descriptor", lines[-1]), fmt(cp)
        if mode != ["-q"]:
            assert relayq.queue_files() == []
    for qid in relayq.queued_ids():
        assert lf.spool_complete(relayq.read_queued(qid)), qid
    cp2 = run(relayq, ["-q"])
    assert cp2.returncode == 0, fmt(cp2)
    got = mids(settle(r, 0.3))
    if cp.returncode == 0 or mode == ["-q"]:
        assert got == ["<l11-nofile@example.com>"], (got, fmt(cp))
    else:
        assert got == []
    assert lf.spool_dir_list(relayq.spool, "corrupt") == []


def test_L11_closed_std_descriptors_nothing_written_to_a_wrong_fd(relayq, relay):
    """Started with 0, 1 and 2 closed (exec 0<&- 1>&- 2>&-), relayq must
    not let a spool file become descriptor 1 or 2: it queues an (empty)
    message, exit 0, whose spool file is complete and holds no log text.
    With 1 and 2 closed and the message on stdin, foreground delivery
    works and the message arrives byte for byte without log text; an error
    (a 2 MB message over RLIMIT_FSIZE) still exits 75 and leaves nothing."""
    r = relay()
    configure(relayq, r, {"rate": 0})
    cp = run(relayq, ["-odq", RCPT], b"", wrap=["sh", "-c", CLOSE_012, "sh"])
    assert cp.returncode == 0, fmt(cp)
    (qid,) = relayq.queued_ids()
    data = relayq.read_queued(qid)
    assert lf.spool_complete(data), data
    _no_log_text(data)
    raw, mid, sha = lf.big_message("l11-closed12", 200000)
    cp = run(relayq, [RCPT], raw, wrap=["sh", "-c", CLOSE_12, "sh"])
    assert cp.returncode == 0, fmt(cp)
    assert cp.stdout == b"" and cp.stderr == b""
    big, _, _ = lf.big_message("l11-closed-big", 2000000)
    cp = run(relayq, ["-odq", RCPT], big,
             wrap=[lf.PRLIMIT, "--fsize=1048576", "--", "sh", "-c", CLOSE_12, "sh"])
    assert cp.returncode == 75, fmt(cp)
    assert relayq.tmp_files() == []
    runners_done(relayq)
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    msgs = settle(r, 0.3)
    assert sorted(mids(msgs)) == sorted([mid, "<%s.relayq@host.example>" % qid]), mids(msgs)
    for m in msgs:
        _no_log_text(m["data"])
    (ours,) = [m for m in msgs if mid_of(m) == mid]
    assert lf.wire_body_sha(ours["data"]) == sha
    assert relayq.queue_files() == []


# ---- L12: crash between the relay's 250 and the done-mark -------------------

@pytest.mark.parametrize("how", ["runner-at-unlink", "runner-at-reply", "foreground-at-reply"])
def test_L12_crash_after_relay_accepted_at_most_one_duplicate(relayq, relay, how):
    """Five queued messages (two for the foreground case); the process
    delivering them is SIGKILLed after the relay took one of them:
      runner-at-unlink     `relayq -q` under strace, which delivers SIGKILL
                           on entry to unlink(2) of that message's queue
                           file -- after the 250, before the done-mark;
      runner-at-reply      `relayq -q` killed by the relay as it records
                           the message, before its 250 is read;
      foreground-at-reply  a foreground submission killed the same way.
    The message file survives; a clean `relayq -q` sends it again: every
    message arrives, exactly one twice, both copies byte-identical with the
    same Message-ID; nothing else is duplicated; no DSN."""
    victim = {}

    def on_message(n, rec):
        if victim.get("mid") and victim.get("pid") and \
                victim["mid"].encode() in rec["data"] and not victim.get("done"):
            victim["done"] = True
            os.kill(victim["pid"], signal.SIGKILL)

    r = relay(on_message=on_message)
    configure(relayq, r, {"rate": 0})
    sent = relayq.queue_messages(5 if how != "foreground-at-reply" else 2)
    ids = relayq.queued_ids()
    if how == "runner-at-unlink":
        target = os.path.join(relayq.spool, "queue", ids[2])
        wrap = [lf.STRACE, "-f", "-o", os.path.join(str(relayq.tmp_path), "l12.strace"),
                "-P", target, "-e", "trace=unlink,unlinkat",
                "-e", "inject=unlink,unlinkat:signal=SIGKILL"]
        dup = lf.spool_mid(target)             # ids sort by arrival: the 3rd
        cp = run(relayq, ["-q"], wrap=wrap, check_tmp=False, env=lf.no_lsan_env())
        assert cp.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), fmt(cp)
    elif how == "runner-at-reply":
        victim["mid"] = sent[2]
        p = relayq.popen(["-q"], write=False)
        victim["pid"] = p.pid
        cp = p.finish(20)
        assert cp.returncode == -signal.SIGKILL, fmt(cp)
        dup = sent[2]
    else:
        victim["mid"] = "<l12-fg@example.com>"
        # the submission runs the queue first (2 queued), then its own
        p = relayq.popen([RCPT], msg("l12-fg"), write=False)
        victim["pid"] = p.pid
        cp = p.finish(20)
        assert cp.returncode == -signal.SIGKILL, fmt(cp)
        sent = sent + ["<l12-fg@example.com>"]
        dup = "<l12-fg@example.com>"
    lf.wait_relay_idle(r.port)
    assert dup in mids(r.messages)
    assert any(lf.spool_mid(os.path.join(relayq.spool, "queue", q)) == dup
               for q in relayq.queued_ids()), "the spool file did not survive: %r" % (
                   relayq.queue_files(),)
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    msgs = settle(r, 0.3)
    got = mids(msgs)
    assert set(got) == set(sent), "lost: %r" % (set(sent) - set(got))
    twice = sorted({m for m in got if got.count(m) > 1})
    assert twice == [dup] and got.count(dup) == 2, got
    a, b = [m["data"] for m in msgs if mid_of(m) == dup]
    assert a == b, "the resent copy differs"
    assert [m for m in msgs if m["mail_from"] == ""] == []
    assert relayq.queue_files() == []


# ---- the kill test ----------------------------------------------------------

_POSSIBLE_DUP_RE = re.compile(r"([0-9a-f]{20}): .*possible duplicate")
_QUEUED_RE = re.compile(r"([0-9a-f]{20}): queued from=")


def test_kill_test_500(relayq, relay):
    """RELAYQ_KILL_ITERATIONS (default 500) iterations, one process at a
    time: a `relayq -odq` submission (55 %), a foreground submission
    (10 %) or a `relayq -q` run (35 %), each SIGKILLed at a random instant
    0-RELAYQ_KILL_MAX_MS ms after its start (or finishing before that);
    then a clean `relayq -q`.  RELAYQ_KILL_MAX_MS defaults to 30, or 130 %
    of a complete foreground submission when that is longer (ASan).  Plain
    SMTP to the fake relay, rate 0, so a run gets far within 30 ms.
    RELAYQ_SEED replays a run (the seed is printed and in failures).
      - every submission that exited 0 is delivered;
      - a killed submission is delivered iff its file reached queue/ (or
        the relay already had it), never torn;
      - nothing arrives more than once, except a message the relay had
        taken while a killed process still had it in queue/ (crash between
        the 250 and the done-mark, L12) or one the log called a "possible
        duplicate" -- one extra copy per such event, all byte-identical;
      - queue/, corrupt/ and failed/ end empty."""
    iterations = lf.env_int("RELAYQ_KILL_ITERATIONS", 500)
    seed = lf.env_int("RELAYQ_SEED", random.randrange(1 << 30))
    rng = random.Random(seed)
    r = relay(mode="none", user=None, password=None)
    configure(relayq, r, {"rate": 0}, lf.NO_TLS)
    cp = run(relayq, ["-q"])
    assert cp.returncode == 0, fmt(cp)
    queue_dir = os.path.join(relayq.spool, "queue")
    # A slower build (ASan) takes longer than 30 ms to start: kill within
    # 130 % of the slowest complete run instead, so that kills still land
    # everywhere and some runs still finish.
    took = []
    for j in range(3):
        t0 = time.monotonic()
        cp = run(relayq, [RCPT], lf.small_message("kt-cal-%d" % j)[0], check_tmp=False)
        took.append(time.monotonic() - t0)
        assert cp.returncode == 0, fmt(cp)
    max_ms = lf.env_int("RELAYQ_KILL_MAX_MS", max(30, int(1300 * sorted(took)[1])))
    r.reset()
    expect_sha, fate = {}, {}          # mid -> body sha / "exit0" | "killed"
    qid_mid = {}                       # queue id -> Message-ID
    extra = {}                         # mid -> allowed extra copies
    received = []                      # (mid, body sha) in arrival order
    seen = 0                           # relay messages looked at
    stats = {"sub": 0, "fg": 0, "run": 0, "killed": 0, "inflight-at-crash": 0,
             "possible-duplicate": 0}

    def scan_queue():
        for name in os.listdir(queue_dir):
            if lf.ID_RE.match(name) and name not in qid_mid:
                mid = lf.spool_mid(os.path.join(queue_dir, name))
                if mid is not None:
                    qid_mid[name] = mid

    def queued_mids():
        out = set()
        for name in os.listdir(queue_dir):
            if lf.ID_RE.match(name):
                mid = qid_mid.get(name) or lf.spool_mid(os.path.join(queue_dir, name))
                if mid:
                    out.add(mid)
        return out

    t_start = time.monotonic()
    for i in range(iterations):
        x = rng.random()
        kind = "sub" if x < 0.55 else "fg" if x < 0.65 else "run"
        stats[kind] += 1
        delay = rng.uniform(0, max_ms / 1000.0)
        mid = None
        if kind == "run":
            p = relayq.popen(["-q"], write=False)
        else:
            raw, mid, sha = lf.small_message("kt-%04d-s%d" % (i, seed))
            expect_sha[mid] = sha
            p = relayq.popen(["-odq", RCPT] if kind == "sub" else [RCPT], raw, write=False)
        killed = lf.kill9_after(p.proc, delay)
        cp = p.finish(30)
        # what a foreground submitter left to a detached runner belongs to
        # this iteration too
        runners_done(relayq)
        if killed:
            stats["killed"] += 1
            lf.wait_relay_idle(r.port)
        else:
            assert cp.returncode == 0, "iteration %d (%s, seed %d): %s" % (
                i, kind, seed, fmt(cp))
        scan_queue()
        log = p.stderr().decode("utf-8", "replace")     # the detached child's too
        for q in _QUEUED_RE.findall(log):
            if mid is not None:
                qid_mid.setdefault(q, mid)
        new_msgs = r.messages[seen:]
        seen += len(new_msgs)
        new_mids = []
        for m in new_msgs:
            nm = lf.wire_mid(m["data"])
            assert nm in expect_sha, "unknown message at the relay: %r" % m["data"][:300]
            assert lf.wire_body_sha(m["data"]) == expect_sha[nm], "torn message sent: %s" % nm
            received.append(nm)
            new_mids.append(nm)
        if killed and new_mids:
            # the relay has these; still in queue/ => they go again (L12)
            still = queued_mids()
            for nm in new_mids:
                if nm in still:
                    extra[nm] = extra.get(nm, 0) + 1
                    stats["inflight-at-crash"] += 1
        for q in _POSSIBLE_DUP_RE.findall(log):
            nm = qid_mid.get(q)
            assert nm is not None, "possible duplicate of an unknown queue id %s" % q
            extra[nm] = extra.get(nm, 0) + 1
            stats["possible-duplicate"] += 1
        if mid is not None:
            if not killed:
                fate[mid] = "exit0"
            else:
                committed = mid in queued_mids() or mid in new_mids
                fate[mid] = "committed" if committed else "lost"
    runners_done(relayq)
    cp = run(relayq, ["-q"], timeout=120, check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    for q in _POSSIBLE_DUP_RE.findall(log_text(cp)):
        extra[qid_mid[q]] = extra.get(qid_mid[q], 0) + 1
    for m in settle(r, 0.3)[seen:]:
        nm = lf.wire_mid(m["data"])
        assert nm in expect_sha and lf.wire_body_sha(m["data"]) == expect_sha[nm], nm
        received.append(nm)
    elapsed = time.monotonic() - t_start
    counts = {}
    for nm in received:
        counts[nm] = counts.get(nm, 0) + 1
    print("kill test: seed=%d iterations=%d max_ms=%d %r, %d messages sent, %d tmp "
          "leftovers, %.1fs" % (seed, iterations, max_ms, stats, len(received),
                                len(relayq.tmp_files()), elapsed))
    problems = []
    for nm, f in sorted(fate.items()):
        n = counts.get(nm, 0)
        if f == "lost":
            if n:
                problems.append("%s: killed before its commit, sent %d times" % (nm, n))
        elif n < 1:
            problems.append("%s (%s): never sent" % (nm, f))
        elif n > 1 + extra.get(nm, 0):
            problems.append("%s (%s): sent %d times, %d extra copies explained" % (
                nm, f, n, extra.get(nm, 0)))
    assert problems == [], "seed %d:\n%s" % (seed, "\n".join(problems[:20]))
    assert 0 < stats["killed"] < iterations, "no mix of killed and finished runs: %r" % stats
    assert relayq.queue_files() == [], relayq.queue_files()
    assert lf.spool_dir_list(relayq.spool, "corrupt") == []
    assert relayq.failed_ids() == []
