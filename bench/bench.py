#!/usr/bin/python3
"""relayq benchmarks beside msmtp and the physical floor (make bench).

Run through bench/run, which installs the packages and builds the floor
programs.  Everything happens under one temporary directory with a loopback
relay (bench/relay.py around tests/e2e/fakerelay.py: STARTTLS + AUTH) and a
CA made for the run.  Prints one table and writes bench/results.json.

Environment (all optional):
  BENCH_ONLY=1,3,fixture  run only these measures
  BENCH_SCALE_N=N         queued messages for measure 6 (default 100000)
  BENCH_MSMTP_N=N         messages msmtp sends in measure 3 (default 1000)
  BENCH_REPS=N            repetitions of the latency measures (default 200)
  BENCH_WINDOW=S          measure 6 delivers for at most S seconds (default 20)
  BENCH_KEEP=1            keep the temporary directory
"""
import concurrent.futures
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
PY = "/usr/bin/python3"
RELAYQ = os.environ.get("RELAYQ_BIN", os.path.join(TOP, "relayq"))
MSMTP = shutil.which("msmtp") or "/usr/bin/msmtp"
USER, PASSWORD = "bench@bench.example", "bench-password"
RCPT = "rcpt@example.com"

ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
SCALE_N = int(os.environ.get("BENCH_SCALE_N", "100000"))
MSMTP_N = int(os.environ.get("BENCH_MSMTP_N", "1000"))
REPS = int(os.environ.get("BENCH_REPS", "200"))
WINDOW = float(os.environ.get("BENCH_WINDOW", "20"))
DEVNULL = os.open(os.devnull, os.O_RDWR)
FILL_PAR = 2 * (os.cpu_count() or 2)


def want(key):
    return not ONLY or key in ONLY


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def summary(xs, scale=1.0):
    xs = [x * scale for x in xs]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs),
            "n": len(xs)}


# ---- processes -------------------------------------------------------------

def spawn(argv, stdin=None, stderr=None, env=None):
    """posix_spawn argv with stdin from a file; returns the pid."""
    fa = [(os.POSIX_SPAWN_OPEN, 0, stdin or os.devnull, os.O_RDONLY, 0),
          (os.POSIX_SPAWN_DUP2, DEVNULL, 1)]
    if stderr:
        fa.append((os.POSIX_SPAWN_OPEN, 2, stderr,
                   os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    else:
        fa.append((os.POSIX_SPAWN_DUP2, DEVNULL, 2))
    return os.posix_spawn(argv[0], argv, env if env is not None else os.environ,
                          file_actions=fa)


def timed(argv, stdin=None, stderr=None, check=True):
    """Wall time of one run, from spawn to exit."""
    t0 = time.perf_counter()
    pid = spawn(argv, stdin, stderr)
    _, st = os.waitpid(pid, 0)
    dt = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(st)
    if check and rc != 0:
        raise RuntimeError("%s exited %d (see %s)" % (" ".join(argv), rc, stderr))
    return dt


class Relay:
    """bench/relay.py in a process of its own, steered over a pipe."""

    def __init__(self, certs, errlog):
        self.p = subprocess.Popen(
            [PY, os.path.join(HERE, "relay.py"), certs + "/server.pem",
             certs + "/server.key", USER, PASSWORD],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(errlog, "a"), text=True, bufsize=1)
        self.port = self._read()["port"]
        self.lock = threading.Lock()

    def _read(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("relay died")
        return json.loads(line)

    def ask(self, cmd):
        with self.lock:
            self.p.stdin.write(cmd + "\n")
            self.p.stdin.flush()
            return self._read()

    def stats(self):
        return self.ask("stats")

    def wait_for(self, n, timeout):
        end = time.time() + timeout
        while True:
            s = self.stats()
            if s["n"] >= n:
                return s
            if time.time() > end:
                raise RuntimeError("relay got %d of %d messages" % (s["n"], n))
            time.sleep(0.02)

    def close(self):
        try:
            self.ask("quit")
        except Exception:
            pass
        self.p.wait(timeout=10)


# ---- memory sampling ---------------------------------------------------------

MEASURES = ["1", "2", "fixture", "3", "4", "5", "6"]
MEM_PROGS = ("relayq -odq (submit)", "relayq -q (deliver)",
             "msmtp (submit+deliver)", "floor-linked (exec only)")
SMAPS_FIELDS = {b"Rss": "rss", b"Pss": "pss", b"Shared_Clean": "shared_clean",
                b"Shared_Dirty": "shared_dirty", b"Private_Clean": "private_clean",
                b"Private_Dirty": "private_dirty"}


def _smaps_rollup(pid):
    """The fields of /proc/PID/smaps_rollup we use, in KB; None once gone."""
    try:
        with open("/proc/%d/smaps_rollup" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    out = {}
    for line in data.split(b"\n")[1:]:
        k, _, v = line.partition(b":")
        name = SMAPS_FIELDS.get(k)
        if name:
            out[name] = int(v.split()[0])
    return out or None


def _smaps_split(pid, exe):
    """/proc/PID/smaps summed by kind of mapping: shared libraries (.so
    files), the executable, anything else (heap, stack, anonymous, vdso)."""
    try:
        with open("/proc/%d/smaps" % pid, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    split = {}
    cur = None
    for line in data.split("\n"):
        head = line.split(None, 5)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
            path = head[5].strip() if len(head) > 5 else ""
            if path.startswith("/") and ".so" in os.path.basename(path):
                kind = "libraries"
            elif path and path == exe:
                kind = "executable"
            elif path.startswith("/"):
                kind = "other files"
            else:
                kind = "anonymous, heap, stack"
            cur = split.setdefault(kind, {"rss": 0, "shared_clean": 0,
                                          "shared_dirty": 0, "private": 0})
        elif cur is not None and line[:1].isupper() and ":" in line:
            k, _, v = line.partition(":")
            if k == "Rss":
                cur["rss"] += int(v.split()[0])
            elif k == "Shared_Clean":
                cur["shared_clean"] += int(v.split()[0])
            elif k == "Shared_Dirty":
                cur["shared_dirty"] += int(v.split()[0])
            elif k in ("Private_Clean", "Private_Dirty"):
                cur["private"] += int(v.split()[0])
    return split


class MemSampler:
    """Samples /proc/PID/smaps_rollup of the descendants of one process
    (not the process itself: it is /usr/bin/time) every ~1 ms, summed at
    each instant, and keeps the peaks.  Children are found by their parent
    in /proc/PID/stat; one seen once stays counted while it lives.  At
    each new high of RSS (at most every 20 ms) /proc/PID/smaps is read
    too, to split the RSS by mapping."""

    PERIOD = 0.001

    def __init__(self):
        self.ppid = {}
        self._scan()                  # what runs already is not ours
        self.stopping = threading.Event()

    def _scan(self):
        new = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            if pid in self.ppid:
                continue
            try:
                with open("/proc/%d/stat" % pid, "rb") as f:
                    st = f.read()
                self.ppid[pid] = int(st[st.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                self.ppid[pid] = -1
            new.append(pid)
        return new

    def start(self, root):
        self.root = root
        self.tree = {root}
        self.pids = []                # descendants seen, in order
        self.res = {"rss_kb": None, "pss_kb": None, "private_kb": None,
                    "samples": 0, "processes": 0, "at_peak_rss": None,
                    "split": None}
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        res = self.res
        i = 0
        last_split, split_rss = 0.0, 0
        while True:
            done = self.stopping.is_set()
            if not self.pids or i % 5 == 0 or done:
                for pid in self._scan():
                    if self.ppid[pid] in self.tree:
                        self.tree.add(pid)
                        self.pids.append(pid)
            i += 1
            tot = {}
            live = []
            for pid in self.pids:
                r = _smaps_rollup(pid)
                if r:
                    live.append(pid)
                    for k, v in r.items():
                        tot[k] = tot.get(k, 0) + v
            if tot:
                res["samples"] += 1
                priv = tot.get("private_clean", 0) + tot.get("private_dirty", 0)
                if res["private_kb"] is None or priv > res["private_kb"]:
                    res["private_kb"] = priv
                if res["pss_kb"] is None or tot["pss"] > res["pss_kb"]:
                    res["pss_kb"] = tot["pss"]
                if res["rss_kb"] is None or tot["rss"] > res["rss_kb"]:
                    res["rss_kb"] = tot["rss"]
                    res["at_peak_rss"] = tot
                    now = time.monotonic()
                    if tot["rss"] > split_rss and now - last_split > 0.02:
                        split = self._split(live)
                        if split and split["total"]["rss"] > split_rss:
                            res["split"] = split
                            split_rss = split["total"]["rss"]
                        last_split = now
            if done:
                break
            time.sleep(self.PERIOD)
        res["processes"] = len(self.pids)

    def _split(self, pids):
        out = {}
        for pid in pids:
            try:
                exe = os.readlink("/proc/%d/exe" % pid)
            except OSError:
                exe = None
            s = _smaps_split(pid, exe)
            for kind, v in (s or {}).items():
                o = out.setdefault(kind, dict.fromkeys(v, 0))
                for k in v:
                    o[k] += v[k]
        if not out:
            return None
        out["total"] = {k: sum(v[k] for v in out.values())
                        for k in ("rss", "shared_clean", "shared_dirty",
                                  "private")}
        return out

    def stop(self):
        self.stopping.set()
        self.t.join()
        return self.res


# ---- the run ---------------------------------------------------------------

class Bench:
    def __init__(self):
        self.d = tempfile.mkdtemp(prefix="relayq-bench.", dir="/var/tmp")
        self.errlog = os.path.join(self.d, "stderr.log")
        # a copy: a rebuild during the run (make in src/) must not change
        # or break the binary half way through
        self.relayq = os.path.join(self.d, "relayq")
        shutil.copy2(RELAYQ, self.relayq)
        self.results = {}
        subprocess.run([PY, os.path.join(TOP, "tests/e2e/certs.py"),
                        self.d + "/certs"], check=True, stdout=subprocess.DEVNULL)
        self.ca = self.d + "/certs/ca.pem"
        self.relay = Relay(self.d + "/certs", self.errlog)
        self.msg4k = self.message("4k.eml", 4096)
        conf = os.path.join(self.d, "msmtprc")
        with open(conf, "w") as f:
            f.write("account default\nhost 127.0.0.1\nport %d\nauth on\n"
                    "user %s\npassword %s\ntls on\ntls_starttls on\n"
                    "tls_trust_file %s\nfrom %s\ndomain bench.example\n"
                    % (self.relay.port, USER, PASSWORD, self.ca, USER))
        os.chmod(conf, 0o600)
        self.msmtp = [MSMTP, "-C", conf, RCPT]

    def message(self, name, size):
        path = os.path.join(self.d, name)
        head = ("From: bench@bench.example\nTo: %s\nSubject: bench %d bytes\n"
                "Message-ID: <bench-%s@bench.example>\nDate: Thu, 1 Jan 2026 "
                "00:00:00 +0000\n\n" % (RCPT, size, name))
        line = "x" * 75 + "\n"
        with open(path, "w") as f:
            f.write(head)
            left = size - len(head)
            while left > 0:
                chunk = line * max(1, min(left // 76, 100000))
                chunk = chunk[:left] if len(chunk) > left else chunk
                if left < 76:
                    chunk = "y" * (left - 1) + "\n"
                f.write(chunk)
                left -= len(chunk)
        return path

    def ini(self, name, rate=0, domain=True, extra=""):
        spool = os.path.join(self.d, "spool-" + name)
        path = os.path.join(self.d, name + ".ini")
        with open(path, "w") as f:
            f.write("[relay]\nhost = 127.0.0.1\nport = %d\ntls = starttls\n"
                    "ca_file = %s\nuser = %s\npassword = %s\ntimeout = 60\n"
                    "[queue]\ndir = %s\n%s%s\n[log]\ntarget = stderr\n"
                    % (self.relay.port, self.ca, USER, PASSWORD, spool,
                       "" if rate is None else "rate = %d\n" % rate, extra))
            if domain:
                f.write("[sender]\ndomain = bench.example\n")
        return path

    def rq(self, ini, *args):
        return [self.relayq, "-C", ini, *args]

    def queued(self, ini):
        out = subprocess.run(self.rq(ini, "queue", "list", "--json"),
                             check=True, capture_output=True).stdout
        return len(json.loads(out))

    # ---- 1. submission latency --------------------------------------------
    def m1_submit(self):
        log("1: submission latency, %d runs each" % REPS)
        ini = self.ini("submit")
        ini_fqdn = self.ini("submit-fqdn", domain=False)
        floordir = os.path.join(self.d, "floor")
        os.makedirs(floordir)
        # warm up every binary once: page cache, spool directories
        timed(self.rq(ini, "-odq", RCPT), self.msg4k, self.errlog)
        timed(self.rq(ini_fqdn, "-odq", RCPT), self.msg4k, self.errlog)
        cmds = {
            "relayq -odq": self.rq(ini, "-odq", RCPT),
            "relayq -odq, [sender] domain unset": self.rq(ini_fqdn, "-odq", RCPT),
            "floor (linked exec + 4K durable write)":
                [os.path.join(HERE, "floor-linked"), floordir],
            "exec, linked, no I/O": [os.path.join(HERE, "floor-linked")],
            "exec, libc only, no I/O": [os.path.join(HERE, "floor-bare")],
            "4K durable write, libc only": [os.path.join(HERE, "floor-bare"), floordir],
        }
        res = {k: [] for k in cmds}
        for i in range(REPS):
            for k, argv in cmds.items():
                res[k].append(timed(argv, self.msg4k, self.errlog))
            if i % 50 == 49:
                for f in os.listdir(floordir):
                    os.unlink(os.path.join(floordir, f))
        out = {k: summary(v, 1000) for k, v in res.items()}
        ratio = (out["relayq -odq"]["median"]
                 / out["floor (linked exec + 4K durable write)"]["median"])
        # where the time goes: the dynamic loader and the system calls
        env = dict(os.environ, LD_DEBUG="statistics")
        ld = {}
        for k, argv in (("relayq", self.rq(ini, "-odq", RCPT)),
                        ("floor-linked", [os.path.join(HERE, "floor-linked")])):
            r = subprocess.run(argv, stdin=open(self.msg4k), env=env,
                               capture_output=True, text=True)
            m = re.search(r"total startup time in dynamic loader:\s*([\d,]+) cycles"
                          r"|total startup time in dynamic loader:\s*([\d.]+) ?(\w+)",
                          r.stderr)
            ld[k] = m.group(0).split(":", 1)[1].strip() if m else None
        out["dynamic loader startup"] = ld
        out["strace -c relayq -odq"] = self.strace(self.rq(ini, "-odq", RCPT))
        out["strace -c relayq -odq, domain unset"] = self.strace(
            self.rq(ini_fqdn, "-odq", RCPT))
        out["ratio relayq/floor"] = ratio
        self.results["1_submission_ms"] = out

    def strace(self, argv, stdin=None):
        f = os.path.join(self.d, "strace.out")
        subprocess.run(["strace", "-f", "-c", "-w", "-o", f, *argv],
                       stdin=open(stdin or self.msg4k), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        rows = []
        for line in open(f):
            p = line.split()
            if len(p) >= 5 and re.match(r"^[\d.]+$", p[0]) and p[-1] != "total":
                rows.append({"syscall": p[-1], "pct": float(p[0]),
                             "seconds": float(p[1]), "calls": int(p[3])})
        return rows[:8]

    # ---- 2. foreground delivery latency -------------------------------------
    def m2_foreground(self):
        reps = max(5, REPS // 10)
        log("2: foreground delivery latency, %d runs each" % reps)
        ini_a = self.ini("fg")
        ini_b = self.ini("fg-runner")
        rq_a = self.rq(ini_a, RCPT)
        rq_b = self.rq(ini_b, RCPT)
        timed(rq_a, self.msg4k, self.errlog)          # creates spool A
        timed(rq_b, self.msg4k, self.errlog)          # creates spool B
        daemon = spawn(self.rq(ini_b, "-q1m"), None, self.errlog)
        time.sleep(0.5)
        res = {"relayq, no runner": [], "relayq, -q1m runner active": [],
               "msmtp": []}
        early = {}
        try:
            timed(rq_b, self.msg4k, self.errlog)      # warm the runner
            timed(self.msmtp, self.msg4k, self.errlog)
            for _ in range(reps):
                for k, argv in (("relayq, no runner", rq_a),
                                ("relayq, -q1m runner active", rq_b),
                                ("msmtp", self.msmtp)):
                    n0 = self.relay.stats()["n"]
                    res[k].append(timed(argv, self.msg4k, self.errlog))
                    if self.relay.stats()["n"] != n0 + 1:
                        # exit 0 without the relay's 250: a relayq bug,
                        # counted, not fatal (see corrupt/ in the spool)
                        early[k] = early.get(k, 0) + 1
        finally:
            os.kill(daemon, 15)
            os.waitpid(daemon, 0)
        out = {k: summary(v, 1000) for k, v in res.items()}
        m = out["msmtp"]["median"]
        out["ratio no runner/msmtp"] = out["relayq, no runner"]["median"] / m
        out["ratio runner/msmtp"] = out["relayq, -q1m runner active"]["median"] / m
        out["exited 0 before the relay had the message"] = early
        out["moved to corrupt/ by the runner"] = sum(
            1 for f in ("fg", "fg-runner")
            for _ in _listdir(os.path.join(self.d, "spool-" + f, "corrupt")))
        out["strace -c relayq foreground, no runner"] = self.strace(rq_a)
        self.results["2_foreground_ms"] = out

    # ---- 3. drain ----------------------------------------------------------
    def relayq_drain(self, n, ini, tag):
        for _ in range(n):
            timed(self.rq(ini, "-odq", RCPT), self.msg4k, self.errlog)
        self.relay.ask("reset")
        t0 = time.time()
        dt = timed(self.rq(ini, "-q"), None, self.errlog)
        st = self.relay.wait_for(n, 60)
        last = max(self.relay.ask("times 0"))
        left = self.queued(ini)
        return {"seconds": last - t0, "exit_s": dt, "per_s": n / (last - t0),
                "connections": st["connections"], "tls_handshakes": st["tls"],
                "auth": st["auth"], "left_in_queue": left, "n": st["n"]}

    def m3_drain(self):
        n = 1000
        log("3: drain of %d messages (relayq x3) and %d by msmtp" % (n, MSMTP_N))
        ini = self.ini("drain")
        runs = []
        msmtp = None
        for i in range(3):
            r = self.relayq_drain(n, ini, i)
            runs.append(r)
            log("  relayq drain %d: %.2fs, %d conns" % (i + 1, r["seconds"],
                                                         r["connections"]))
            if i == 0:
                self.relay.ask("reset")
                lat = []
                t0 = time.time()
                for _ in range(MSMTP_N):
                    lat.append(timed(self.msmtp, self.msg4k, self.errlog))
                st = self.relay.wait_for(MSMTP_N, 30)
                last = max(self.relay.ask("times 0"))
                msmtp = {"seconds": last - t0, "per_s": MSMTP_N / (last - t0),
                         "n": MSMTP_N, "connections": st["connections"],
                         "tls_handshakes": st["tls"], "auth": st["auth"],
                         "per_message_ms": summary(lat, 1000)}
                log("  msmtp: %.1fs" % msmtp["seconds"])
        out = {"relayq": {
            "per_s": summary([r["per_s"] for r in runs]),
            "seconds": summary([r["seconds"] for r in runs]),
            "runs": runs}, "msmtp": msmtp}
        out["throughput ratio relayq/msmtp"] = (out["relayq"]["per_s"]["median"]
                                                / msmtp["per_s"])
        self.results["3_drain"] = out

    # ---- fixture capacity --------------------------------------------------
    def fixture(self):
        log("fixture: pipelined load, no relayq")
        self.relay.ask("reset")
        runs = []
        for _ in range(3):
            r = subprocess.run([PY, os.path.join(HERE, "fixture_load.py"),
                                str(self.relay.port), self.ca, USER, PASSWORD,
                                "2000", "4096"], check=True, capture_output=True,
                               text=True)
            runs.append(json.loads(r.stdout))
        self.results["fixture"] = {"per_s": summary([r["per_s"] for r in runs]),
                                   "messages_per_run": 2000}

    # ---- 4. rate -------------------------------------------------------------
    def m4_rate(self):
        subs, each = 50, 20
        log("4: rate, %d submitters x %d messages, default rate" % (subs, each))
        ini = self.ini("rate", rate=None)
        self.relay.ask("reset")
        fails = []

        def submitter(_):
            for _ in range(each):
                try:
                    timed(self.rq(ini, RCPT), self.msg4k, self.errlog)
                except Exception as e:
                    fails.append(str(e))
        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(subs) as ex:
            list(ex.map(submitter, range(subs)))
        total = subs * each
        # submitters may leave messages to the runner after [queue] wait;
        # stop waiting once all arrived or were moved to corrupt/, or
        # nothing arrived for 15 s
        corrupt = os.path.join(self.d, "spool-rate", "corrupt")
        last_n, last_t = -1, time.time()
        while True:
            n = self.relay.stats()["n"]
            lost = len(_listdir(corrupt))
            if n + lost >= total:
                break
            if n != last_n:
                last_n, last_t = n, time.time()
            elif time.time() - last_t > 15:
                fails.append("only %d of %d arrived" % (n, total))
                break
            time.sleep(0.2)
        times = sorted(self.relay.ask("times 0"))
        first = times[0]
        bins = {}
        for t in times:
            k = int(t - first)
            bins[k] = bins.get(k, 0) + 1
        # sliding: the most arrivals in any interval [t, t + 1s)
        sliding, j = 0, 0
        for i in range(len(times)):
            while times[i] - times[j] >= 1.0:
                j += 1
            sliding = max(sliding, i - j + 1)
        full = [bins.get(k, 0) for k in range(int(times[-1] - first))]
        self.results["4_rate"] = {
            "messages": len(times), "expected": total,
            "seconds_first_to_last": times[-1] - first,
            "since_start_s": times[-1] - t0,
            "max_per_1s_window_fixed": max(bins.values()),
            "max_per_1s_window_sliding": sliding,
            "mean_per_s": (len(times) - 1) / (times[-1] - first),
            "per_window": summary(full) if full else None,
            "moved to corrupt/": len(_listdir(corrupt)),
            "failures": fails[:5], "failure_count": len(fails)}

    # ---- 5. memory -------------------------------------------------------------
    def memory(self, argv, stdin=None):
        """One run under /usr/bin/time -v: its maxrss, and the peaks of
        smaps_rollup summed over what time started (the program and any
        children), sampled every ~1 ms."""
        sampler = MemSampler()
        p = subprocess.Popen(["/usr/bin/time", "-v", *argv],
                             stdin=open(stdin) if stdin else subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
        sampler.start(p.pid)
        try:
            err = p.communicate()[1]
        finally:
            mem = sampler.stop()
        if p.returncode != 0:
            raise RuntimeError("%s: %s" % (argv, err[-2000:]))
        mem["maxrss_kb"] = int(re.search(
            r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
        mem["elapsed"] = re.search(r"Elapsed \(wall clock\) time.*: (\S+)",
                                   err).group(1)
        return mem

    def m5_memory(self):
        log("5: memory, 50 MB and 1 KB messages")
        sizes = {"50MB": (self.message("50m.eml", 50 * 1000 * 1000), 2),
                 "1KB": (self.message("1k.eml", 1000), 5)}
        ini = self.ini("mem")
        progs, floor = MEM_PROGS[:3], MEM_PROGS[3]
        runs = {sz: {k: [] for k in progs + (floor,)} for sz in sizes}
        for sz, (msg, reps) in sizes.items():
            for _ in range(reps):
                self.relay.ask("reset")
                runs[sz][progs[0]].append(
                    self.memory(self.rq(ini, "-odq", RCPT), msg))
                runs[sz][progs[1]].append(self.memory(self.rq(ini, "-q")))
                self.relay.wait_for(1, 60)
                runs[sz][progs[2]].append(self.memory(self.msmtp, msg))
                self.relay.wait_for(2, 60)
                runs[sz][floor].append(
                    self.memory([os.path.join(HERE, "floor-linked")]))
        os.unlink(sizes["50MB"][0])
        out = {"method": "maxrss: /usr/bin/time -v (ru_maxrss); pss, private "
               "(Private_Clean + Private_Dirty), rss: peaks of "
               "/proc/PID/smaps_rollup summed over the process and its "
               "children, sampled every ~1 ms; split: /proc/PID/smaps at "
               "the highest sampled RSS, by mapping",
               "runs": runs}
        for sz in sizes:
            out[sz] = {k: {f: summary([r[f] for r in v if r[f] is not None])
                           for f in ("maxrss_kb", "rss_kb", "pss_kb",
                                     "private_kb", "samples")}
                       for k, v in runs[sz].items()}
        # the split of the highest RSS seen, per program, on 50 MB
        out["split_50MB"] = {k: max((r for r in v if r["split"]),
                                    key=lambda r: r["split"]["total"]["rss"],
                                    default={"split": None})["split"]
                             for k, v in runs["50MB"].items()}
        out["private ratio 50MB/1KB"] = {
            k: out["50MB"][k]["private_kb"]["median"]
            / out["1KB"][k]["private_kb"]["median"]
            for k in progs
            if out["50MB"][k]["private_kb"] and out["1KB"][k]["private_kb"]}
        self.results["5_memory"] = out
        # the key of earlier runs: maxrss on 50 MB
        self.results["5_memory_peak_rss_kb"] = {
            k: v["maxrss_kb"] for k, v in out["50MB"].items()}

    # ---- 6. scale --------------------------------------------------------------
    def fill(self, ini, n):
        """n submissions by relayq -odq, FILL_PAR at a time: the real path
        (relayq's own ids and files), CPU-bound on exec + library loading."""
        fails = []
        t0 = time.perf_counter()

        def one(i):
            try:
                timed(self.rq(ini, "-odq", RCPT), self.msg4k, self.errlog)
            except Exception as e:
                fails.append(e)
            if i % 10000 == 9999:
                log("  queued %d of %d (%.0f/s)" % (
                    i + 1, n, (i + 1) / (time.perf_counter() - t0)))
        with concurrent.futures.ThreadPoolExecutor(FILL_PAR) as ex:
            list(ex.map(one, range(n), chunksize=64))
        if fails:
            raise fails[0]

    def scale_fill(self, name, n):
        ini = self.ini("scale-%s" % name)
        t0 = time.perf_counter()
        self.fill(ini, n)
        fill_s = time.perf_counter() - t0
        queued = self.queued(ini)
        if queued != n:
            raise RuntimeError("%d of %d queued" % (queued, n))
        return {"ini": ini, "n": n, "fill_s": fill_s, "fill_per_s": n / fill_s}

    def scale_down(self, p):
        """The relay is down: mailq, and a -q pass that finds it down."""
        ini = p["ini"]
        p["bp_s"] = summary([timed(self.rq(ini, "-bp"), None, self.errlog)
                             for _ in range(3)])
        p["q_pass_relay_down_s"] = summary(
            [timed(self.rq(ini, "-q"), None, self.errlog, check=False)
             for _ in range(2)])

    def scale_up(self, ini, n):
        """The relay is up: one -q pass, stopped by SIGTERM after WINDOW
        seconds if it has not sent everything by then."""
        self.relay.ask("reset")
        t0 = time.time()
        pid = spawn(self.rq(ini, "-q"), None, self.errlog)
        end = t0 + WINDOW
        st = self.relay.stats()
        while st["n"] < n and time.time() < end:
            time.sleep(0.1)
            st = self.relay.stats()
        stopped = st["n"] < n
        if stopped:
            os.kill(pid, 15)
        for _ in range(300):
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        times = self.relay.ask("times 0")
        conns = self.relay.ask("conns 0")
        st = self.relay.stats()
        # the gaps between messages of one session: the runner's own cost
        # per message, without the session setups (one per session_max)
        sess = {}
        for t, c in zip(times, conns):
            sess.setdefault(c, []).append(t)
        gaps, first = [], None
        for c, ts in sess.items():
            g = [y - x for x, y in zip(ts, ts[1:])]
            gaps += g
            if first is None and g:
                first = sum(g) / len(g) * 1000
        times.sort()
        k = len(times)
        return {"delivered": k, "stopped_after_window": stopped,
                "first_arrival_s": times[0] - t0 if times else None,
                "per_message_ms": ((times[-1] - times[0]) / (k - 1) * 1000
                                   if k > 1 else None),
                "in_session_gap_ms": summary(gaps, 1000),
                "in_session_mean_ms": (sum(gaps) / len(gaps) * 1000
                                       if gaps else None),
                "first_session_mean_ms": first,
                "connections": st["connections"], "tls_handshakes": st["tls"],
                "seconds": time.time() - t0}

    def m6_scale(self):
        """100 and SCALE_N queued.  The relay-up runs go small, big, small
        (the small queue filled again), back to back, so that the load of
        the machine is alike for the two sizes."""
        log("6: scale, 100 and %d queued" % SCALE_N)
        small = self.scale_fill("small", 100)
        big = self.scale_fill("big", SCALE_N)
        self.relay.ask("down")
        try:
            for p in (small, big):
                self.scale_down(p)
        finally:
            self.relay.ask("up")
        up_small = [self.scale_up(small["ini"], 100)]
        big.update(self.scale_up(big["ini"], SCALE_N))
        self.fill(small["ini"], 100)
        up_small.append(self.scale_up(small["ini"], 100))
        small["runs"] = up_small
        for k in ("per_message_ms", "in_session_mean_ms", "first_arrival_s",
                  "first_session_mean_ms"):
            small[k] = statistics.mean(r[k] for r in up_small)
        for k in ("delivered", "connections", "tls_handshakes"):
            small[k] = up_small[0][k]
        small["stopped_after_window"] = any(r["stopped_after_window"]
                                            for r in up_small)
        for p in (small, big):
            del p["ini"]
        self.results["6_scale"] = {
            "small": small, "big": big,
            "per_message_cost_ratio_big/small":
                big["per_message_ms"] / small["per_message_ms"],
            "in_session_cost_ratio_big/small":
                big["in_session_mean_ms"] / small["in_session_mean_ms"],
            "first_session_cost_ratio_big/small":
                big["first_session_mean_ms"] / small["first_session_mean_ms"]}

    def run(self):
        info = {"cpu": _cpu(), "cores": os.cpu_count(),
                "kernel": platform.release(), "python": platform.python_version(),
                "msmtp": _first_line([MSMTP, "--version"]),
                "relayq": RELAYQ, "relayq_sha256": _sha256(self.relayq),
                "git": _first_line(["git", "-C", TOP, "describe", "--always",
                                    "--dirty"]),
                "relay_port": self.relay.port, "fill_parallel": FILL_PAR,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.results["machine"] = info
        t0 = time.time()
        try:
            for key, f in (("1", self.m1_submit), ("2", self.m2_foreground),
                           ("fixture", self.fixture), ("3", self.m3_drain),
                           ("4", self.m4_rate), ("5", self.m5_memory),
                           ("6", self.m6_scale)):
                if want(key):
                    t = time.time()
                    busy0 = _cpu_busy()
                    try:
                        f()
                    except Exception as e:   # report what we have
                        log("measure %s failed: %r" % (key, e))
                        self.results.setdefault("errors", {})[key] = repr(e)
                    took = time.time() - t
                    self.results.setdefault("measure_s", {})[key] = took
                    self.results.setdefault("machine_busy", {})[key] = {
                        "cpu_busy_pct": _cpu_busy_pct(busy0, _cpu_busy()),
                        "loadavg_end": _loadavg()}
                    log("  (%s took %.0fs)" % (key, took))
        finally:
            self.relay.close()
            info["total_s"] = time.time() - t0
            if not os.environ.get("BENCH_KEEP"):
                t = time.time()
                shutil.rmtree(self.d, ignore_errors=True)
                info["cleanup_s"] = time.time() - t
                info["total_s"] = time.time() - t0
            else:
                log("kept", self.d)
        return self.results


def _listdir(d):
    try:
        return os.listdir(d)
    except OSError:
        return []


def _cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _cpu_busy():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def _cpu_busy_pct(a, b):
    return 100.0 * (b[0] - a[0]) / max(1, b[1] - a[1])


def _loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def _sha256(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _first_line(argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        return None


# ---- the table ---------------------------------------------------------------

def table(r):
    rows = []

    def row(measure, what, value, target=""):
        rows.append((measure, what, value, target))

    def mm(s, unit="ms", fmt="%.2f"):
        if not s:
            return "-"
        return ("%s %s (%s-%s)" % (fmt, unit, fmt, fmt)) % (s["median"], s["min"], s["max"])

    s = r.get("1_submission_ms")
    if s:
        for k in ("relayq -odq", "floor (linked exec + 4K durable write)",
                  "relayq -odq, [sender] domain unset", "exec, linked, no I/O",
                  "exec, libc only, no I/O", "4K durable write, libc only"):
            row("1 submit 4K", k, mm(s[k]))
        row("1 submit 4K", "ratio relayq/floor", "%.2fx" % s["ratio relayq/floor"],
            "<= 1.3x")
    s = r.get("2_foreground_ms")
    if s:
        for k in ("relayq, no runner", "relayq, -q1m runner active", "msmtp"):
            row("2 foreground", k, mm(s[k]))
        row("2 foreground", "ratio no runner/msmtp", "%.2fx" % s["ratio no runner/msmtp"])
        row("2 foreground", "ratio runner/msmtp", "%.2fx" % s["ratio runner/msmtp"],
            "<= 0.2x")
        row("2 foreground", "exit 0 before relay had it / to corrupt/",
            "%s / %d" % (sum(s["exited 0 before the relay had the message"].values()),
                         s["moved to corrupt/ by the runner"]), "0 / 0")
    s = r.get("3_drain")
    if s:
        rq = s["relayq"]
        row("3 drain 1000", "relayq -odq x1000 then -q", mm(rq["per_s"], "msg/s", "%.0f"))
        r0 = rq["runs"][0]
        row("3 drain 1000", "relayq conns / TLS handshakes / AUTH",
            "%d / %d / %d" % (r0["connections"], r0["tls_handshakes"], r0["auth"]),
            "<= 1 per session_max")
        m = s["msmtp"]
        row("3 drain %d" % m["n"], "msmtp back to back", "%.1f msg/s (%.1f s)"
            % (m["per_s"], m["seconds"]))
        row("3 drain", "msmtp conns / TLS handshakes",
            "%d / %d" % (m["connections"], m["tls_handshakes"]))
        row("3 drain", "throughput ratio relayq/msmtp",
            "%.1fx" % s["throughput ratio relayq/msmtp"], ">= 20x")
    s = r.get("fixture")
    if s:
        row("fixture", "pipelined load, 1 session, no relayq",
            mm(s["per_s"], "msg/s", "%.0f"))
    s = r.get("4_rate")
    if s:
        row("4 rate 50x20", "arrived", "%d of %d in %.1f s" % (
            s["messages"], s["expected"], s["seconds_first_to_last"]))
        row("4 rate 50x20", "max per 1 s window (fixed / sliding)",
            "%d / %d" % (s["max_per_1s_window_fixed"], s["max_per_1s_window_sliding"]),
            "<= 10")
        row("4 rate 50x20", "mean rate", "%.2f msg/s" % s["mean_per_s"], ">= 9.8/s")
        row("4 rate 50x20", "moved to corrupt/ / failed submissions",
            "%d / %d" % (s["moved to corrupt/"], s["failure_count"]), "0 / 0")
    s = r.get("5_memory")
    if s:
        for k in MEM_PROGS:
            v = s["50MB"].get(k)
            if not v:
                continue
            rq = k.startswith("relayq")
            row("5 memory 50MB", k + ": maxrss", mm(v["maxrss_kb"], "KB", "%.0f"),
                "<= 5 MB" if rq else "")
            if k.startswith("floor"):
                continue
            row("5 memory 50MB", k + ": peak Pss", mm(v["pss_kb"], "KB", "%.0f"))
            row("5 memory 50MB", k + ": peak private",
                mm(v["private_kb"], "KB", "%.0f"))
        for k in MEM_PROGS:
            sp = s["split_50MB"].get(k)
            if not sp or k.startswith("floor"):
                continue
            lib = sp.get("libraries", {})
            other = sp.get("other files", {}).get("rss", 0)
            row("5 memory 50MB", k + ": sampled RSS, split",
                "%d KB = %d shared libraries (%d Shared_Clean) + %d binary"
                " + %d heap/stack/anon%s" % (
                    sp["total"]["rss"], lib.get("rss", 0),
                    lib.get("shared_clean", 0),
                    sp.get("executable", {}).get("rss", 0),
                    sp.get("anonymous, heap, stack", {}).get("rss", 0),
                    " + %d other files" % other if other else ""))
        for k in MEM_PROGS:
            ratio = s["private ratio 50MB/1KB"].get(k)
            if ratio is None:
                continue
            a = s["1KB"][k]["private_kb"]["median"]
            b = s["50MB"][k]["private_kb"]["median"]
            row("5 memory 1KB/50MB", k + ": peak private",
                "%.0f -> %.0f KB (%+.0f KB, %.2fx)" % (a, b, b - a, ratio),
                "~1x (streamed)" if k.startswith("relayq") else "")
    elif r.get("5_memory_peak_rss_kb"):
        for k, v in r["5_memory_peak_rss_kb"].items():
            row("5 memory 50MB", k, mm(v, "KB", "%.0f"),
                "<= 5 MB" if k.startswith("relayq") else "")
    s = r.get("6_scale")
    if s:
        for k in ("small", "big"):
            p = s[k]
            m = "6 scale N=%d" % p["n"]
            row(m, "relayq -bp, relay down", mm(p["bp_s"], "s", "%.3f"),
                "< 1 s" if k == "big" else "")
            row(m, "-q pass, relay down", mm(p["q_pass_relay_down_s"], "s", "%.3f"))
            row(m, "relay up: first arrival after", "%.3f s" % p["first_arrival_s"])
            row(m, "relay up: per message (first-last)",
                "%.2f ms (%d sent%s, %d conns)" % (
                    p["per_message_ms"], p["delivered"],
                    " in %.0f s window" % WINDOW if p["stopped_after_window"] else "",
                    p["connections"]))
            if p.get("in_session_mean_ms"):
                row(m, "relay up: per message in a session",
                    "%.2f ms mean (first session %.2f)" % (
                        p["in_session_mean_ms"], p["first_session_mean_ms"]))
            row(m, "filling with %s parallel -odq" % r.get("machine", {}).get(
                "fill_parallel", "4"), "%.0f msg/s (%.0f s)" % (
                    p["fill_per_s"], p["fill_s"]))
        row("6 scale", "per-message cost ratio big/small",
            "%.2fx" % s["per_message_cost_ratio_big/small"], "flat (~1x)")
        if s.get("in_session_cost_ratio_big/small"):
            row("6 scale", "same, within sessions / first session only",
                "%.2fx / %.2fx" % (s["in_session_cost_ratio_big/small"],
                                   s["first_session_cost_ratio_big/small"]),
                "flat (~1x)")
    for k, v in r.get("errors", {}).items():
        row("error", k, v)
    w = [max(len(x[i]) for x in rows + [("measure", "what", "median (min-max)", "target")])
         for i in range(4)]
    fmt = "%%-%ds  %%-%ds  %%-%ds  %%s" % (w[0], w[1], w[2])
    lines = [fmt % ("measure", "what", "median (min-max)", "target"),
             fmt % ("-" * w[0], "-" * w[1], "-" * w[2], "-" * w[3])]
    lines += [fmt % x for x in rows]
    if r.get("measure_s"):
        busy = r.get("machine_busy", {})
        lines.append("\ntime per measure (CPU busy % of the whole machine, "
                     "bench included): " + ", ".join(
                         "%s %.0f s (%.0f%%)" % (k, v, busy.get(k, {}).get(
                             "cpu_busy_pct", float("nan")))
                         for k, v in sorted(r["measure_s"].items(),
                                            key=lambda kv: MEASURES.index(kv[0])
                                            if kv[0] in MEASURES else 99)))
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--table":
        print(table(json.load(open(sys.argv[2]))))
        return 0
    b = Bench()
    r = b.run()
    out = os.path.join(HERE, "results.json")
    with open(out, "w") as f:
        json.dump(r, f, indent=1, sort_keys=True)
    m = r["machine"]
    print("\nrelayq bench: %s, %d cores, kernel %s, %s; %.0f s%s" % (
        m["cpu"], m["cores"], m["kernel"], m["msmtp"], m["total_s"],
        " (removing the spools: %.0f s)" % m["cleanup_s"]
        if "cleanup_s" in m else ""))
    print(table(r))
    print("\nwritten: %s" % out)
    return 1 if r.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
