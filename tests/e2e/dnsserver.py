"""A throwaway authoritative DNS server (dnsmasq) for relayq's DNS tests.

    srv = DnsServer({"example.com": [["v=spf1 include:elastx.email -all"],
                                     ["elastx-mrs=..."]],
                     "sel._domainkey.example.com": [split255(dkim_value)]},
                    workdir=str(tmp_path))
    srv.start()           # 127.0.0.1, a free port (UDP and TCP) -> srv.port
    srv.addr              # "127.0.0.1:PORT", for [dns] server
    ...
    srv.stop()

A zone is {owner name: [record, ...]}; a record is a list of
character-strings (each <= 255 octets) and becomes one TXT RR; a plain str
is taken as a record of one string.  Owner names are case-insensitive, a
trailing dot is optional.  dnsmasq answers every name locally (local=/#/):
names not in the zone get NXDOMAIN, other types of a zone name NODATA;
nothing is ever forwarded.  The query log is srv.log_path.

zone_from_records(text) reads the zone-file lines `relayq dns-records`
prints (`name. TTL IN TXT "s1" "s2"`, `;` comments, blank lines) into such
a zone; records_from_text(text) gives the parsed lines themselves.
"""

import os
import pwd
import socket
import subprocess
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype

DNSMASQ = "/usr/sbin/dnsmasq"


def split255(value):
    """value (str) as a record of <= 255-octet character-strings."""
    b = value.encode()
    parts = [b[i:i + 255] for i in range(0, len(b), 255)] or [b""]
    return [p.decode() for p in parts]


def _norm_name(name):
    return name.rstrip(".").lower()


def normalize_zone(zone):
    """{name: [[str, ...], ...]} with names lower case, no trailing dot."""
    out = {}
    for name, records in zone.items():
        recs = out.setdefault(_norm_name(name), [])
        for rec in records:
            if isinstance(rec, (str, bytes)):
                rec = [rec]
            recs.append([s.decode() if isinstance(s, bytes) else s for s in rec])
    return out


def merge_zones(*zones):
    out = {}
    for z in zones:
        for name, recs in normalize_zone(z).items():
            out.setdefault(name, []).extend(recs)
    return out


def _quote(s):
    b = s.encode()
    if len(b) > 255:
        raise ValueError("TXT character-string over 255 octets (%d): split it "
                         "with split255()" % len(b))
    if any(c < 0x20 or c == 0x7f for c in b):
        raise ValueError("control character in TXT string %r" % s)
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def _free_port():
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free UDP+TCP port")


class DnsServer:
    def __init__(self, zone=None, workdir="/tmp", name="dns"):
        self.zone = normalize_zone(zone or {})
        self.workdir = workdir
        self.name = name
        self.conf_path = os.path.join(workdir, name + ".conf")
        self.log_path = os.path.join(workdir, name + ".log")
        self.port = None
        self.proc = None

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def conf_text(self):
        lines = ["local=/#/"]
        for name, records in sorted(self.zone.items()):
            if not name:
                raise ValueError("empty owner name")
            for rec in records:
                if not rec:
                    raise ValueError("TXT record with no string at %s" % name)
                lines.append("txt-record=%s,%s" % (name, ",".join(_quote(s) for s in rec)))
        return "\n".join(lines) + "\n"

    def start(self, timeout=10.0):
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.conf_path, "w") as f:
            f.write(self.conf_text())
        last = ""
        for _ in range(5):
            self.port = _free_port()
            cmd = [DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts",
                   "--no-poll", "--bind-interfaces", "--listen-address=127.0.0.1",
                   "--port=%d" % self.port, "--conf-file=" + self.conf_path,
                   "--pid-file", "--log-queries=extra",
                   "--log-facility=" + self.log_path,
                   "--user=" + pwd.getpwuid(os.geteuid()).pw_name]
            errf = open(os.path.join(self.workdir, self.name + ".stderr"), "wb")
            try:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                             stdout=errf, stderr=errf)
            finally:
                errf.close()
            if self._wait_ready(timeout):
                return self
            last = self._stderr()
            self.stop()
        raise RuntimeError("dnsmasq did not start: %s\nlog: %s" % (last, self.log()))

    def _stderr(self):
        try:
            with open(os.path.join(self.workdir, self.name + ".stderr"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                q = dns.message.make_query("ready.relayq-test.invalid", "TXT")
                dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.3)
                dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=0.3)
                return True
            except (dns.exception.DNSException, OSError):
                time.sleep(0.05)
        return False

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.proc = None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def query(self, name, rdtype="TXT", tcp=False):
        """(rcode text, [[str, ...] per RR]) as the server answers."""
        q = dns.message.make_query(name, rdtype)
        if tcp:
            r = dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=3)
        else:
            r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=3)
        out = []
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rr in rrset:
                    out.append([s.decode() for s in rr.strings])
        return dns.rcode.to_text(r.rcode()), out, r

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---- relayq dns-records output ---------------------------------------------

class RecordLine:
    def __init__(self, owner, ttl, rclass, rdtype, strings, line):
        self.owner, self.ttl, self.rclass, self.rdtype = owner, ttl, rclass, rdtype
        self.strings = strings          # [str, ...], each <= 255 octets
        self.line = line

    @property
    def name(self):
        return _norm_name(self.owner)

    @property
    def value(self):
        return "".join(self.strings)

    def __repr__(self):
        return "RecordLine(%r)" % self.line


def records_from_text(text):
    """Parses zone-file lines: `;` comments and blank lines skipped, every
    other line must be `owner. [TTL] [IN] TXT "s" ...` with an absolute
    owner; raises ValueError on anything else.  Returns [RecordLine]."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith(";"):
            continue
        fields = s.split(None, 1)
        owner = fields[0]
        rest = fields[1] if len(fields) > 1 else ""
        if not owner.endswith("."):
            raise ValueError("owner name not absolute (no final dot): %r" % line)
        ttl, rclass = None, None
        while True:
            parts = rest.split(None, 1)
            if not parts:
                raise ValueError("no record type: %r" % line)
            tok = parts[0]
            rest = parts[1] if len(parts) > 1 else ""
            if tok.isdigit() and ttl is None:
                ttl = int(tok)
            elif tok.upper() == "IN" and rclass is None:
                rclass = "IN"
            else:
                rdtype = tok.upper()
                break
        if rdtype != "TXT":
            raise ValueError("not a TXT record: %r" % line)
        try:
            rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, rest)
        except dns.exception.DNSException as e:
            raise ValueError("bad TXT data (%s): %r" % (e, line))
        strings = [x.decode("utf-8") for x in rd.strings]
        for x in rd.strings:
            if len(x) > 255:
                raise ValueError("string over 255 octets: %r" % line)
        out.append(RecordLine(owner, ttl, rclass, rdtype, strings, line))
    return out


def zone_from_records(text):
    """The zone (for DnsServer) that the records in text describe."""
    zone = {}
    for r in records_from_text(text):
        zone.setdefault(r.name, []).append(r.strings)
    return zone
