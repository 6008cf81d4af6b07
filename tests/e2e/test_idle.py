"""The daemon keeps its relay session open for [queue] idle after the last
message, so mail spooled meanwhile goes out on the same connection: no new
TLS handshake, no new AUTH.  A relay that drops the idle connection costs a
reconnect, never a deferral."""
import socket
import threading
import time

from conftest import fmt

RCPT = "rcpt@example.net"


def msg(tag):
    return ("From: sender@example.com\nTo: %s\nSubject: %s\n"
            "Message-ID: <%s@example.com>\n\nbody %s\n" % (RCPT, tag, tag, tag)
            ).encode()


def mids(messages):
    out = []
    for m in messages:
        for line in m["data"].split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                out.append(line.split(b":", 1)[1].strip().decode())
    return out


def configure(relayq, port, queue):
    q = {"rate": "0"}
    q.update(queue)
    relayq.port = port
    relayq.write_config({"queue": q})


class CuttingProxy:
    """A TCP proxy in front of the relay whose connections can be cut, as
    a relay (or a NAT box) does with an idle connection."""

    def __init__(self, port):
        self.upstream = port
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.upstream))
            with self.lock:
                self.conns.append((c, u))
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b),
                                 daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for c, u in conns:
            for s in (c, u):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass

    def close(self):
        self.cut()
        self.lsock.close()


def submit_and_wait(relayq, r, tag, n):
    cp = relayq(["-odq", RCPT], stdin=msg(tag), write=False, check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    r.wait_for_messages(n, timeout=10)


def test_idle_session_carries_later_mail(relayq, relay):
    r = relay()
    configure(relayq, r.port, {"idle": "10s"})
    d = relayq.popen(["-q1m"], write=False)
    try:
        for n, tag in enumerate(("idle1", "idle2", "idle3"), 1):
            submit_and_wait(relayq, r, tag, n)
            time.sleep(0.5)             # the session goes idle
        assert mids(r.messages) == ["<idle1@example.com>",
                                    "<idle2@example.com>",
                                    "<idle3@example.com>"]
        assert r.connections == 1, r.connections
        assert r.tls_handshakes == 1
        assert len(r.auth_attempts) == 1
    finally:
        d.proc.terminate()
    cp = d.finish(10)
    assert cp.returncode == 0, fmt(cp)


def test_idle_zero_closes_the_session(relayq, relay):
    r = relay()
    configure(relayq, r.port, {"idle": "0"})
    d = relayq.popen(["-q1m"], write=False)
    try:
        for n, tag in enumerate(("zero1", "zero2"), 1):
            submit_and_wait(relayq, r, tag, n)
            time.sleep(0.5)
        assert r.connections == 2, r.connections
        assert r.verbs().count("QUIT") == 2
    finally:
        d.proc.terminate()
    assert d.finish(10).returncode == 0


def test_idle_connection_dropped_means_reconnect_not_deferral(relayq, relay):
    r = relay()
    proxy = CuttingProxy(r.port)
    try:
        configure(relayq, proxy.port, {"idle": "30s"})
        d = relayq.popen(["-q1m"], write=False)
        try:
            submit_and_wait(relayq, r, "before", 1)
            time.sleep(0.5)
            proxy.cut()                 # the idle connection dies
            time.sleep(0.2)
            t0 = time.monotonic()
            submit_and_wait(relayq, r, "after", 2)
            assert time.monotonic() - t0 < 5, "deferred instead of resent"
            assert mids(r.messages) == ["<before@example.com>",
                                        "<after@example.com>"]
            assert r.connections == 2, r.connections
        finally:
            d.proc.terminate()
        cp = d.finish(10)
        log = cp.stderr.decode("utf-8", "replace")
        assert "status=deferred" not in log, log
        assert log.count("status=sent") == 2, log
        assert relayq.queue_files() == []
    finally:
        proxy.close()


def test_idle_connection_421_means_reconnect_not_deferral(relayq, relay):
    """A relay that times the idle connection out says 421 to the next
    MAIL and closes: the message goes on a new connection, no attempt
    counted, no retry delay."""
    r = relay()
    configure(relayq, r.port, {"idle": "30s"})
    d = relayq.popen(["-q1m"], write=False)
    try:
        submit_and_wait(relayq, r, "first", 1)
        time.sleep(0.5)
        r.mail_replies = [(421, "4.4.2 idle too long, closing")]
        t0 = time.monotonic()
        submit_and_wait(relayq, r, "second", 2)
        assert time.monotonic() - t0 < 5, "deferred instead of resent"
        assert r.connections == 2, r.connections
    finally:
        d.proc.terminate()
    cp = d.finish(10)
    log = cp.stderr.decode("utf-8", "replace")
    assert "status=deferred" not in log, log
    assert log.count("status=sent") == 2, log


def test_sigterm_ends_an_idle_session_at_once(relayq, relay):
    r = relay()
    configure(relayq, r.port, {"idle": "1h"})
    d = relayq.popen(["-q1m"], write=False)
    submit_and_wait(relayq, r, "last", 1)
    time.sleep(0.5)
    t0 = time.monotonic()
    d.proc.terminate()
    cp = d.finish(10)
    assert cp.returncode == 0, fmt(cp)
    assert time.monotonic() - t0 < 3, "SIGTERM waited for the idle period"
    assert "QUIT" in r.verbs()
