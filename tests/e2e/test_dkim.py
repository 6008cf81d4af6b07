"""relayq end to end: DKIM signing (spec capability 7; RFC 6376 relaxed/relaxed
with rsa-sha256, RFC 8463 ed25519-sha256), checked with python3-dkim.

The keys are made here with openssl, and the DNS key records handed to the
verifier are computed here from them, independently of relayq (RSA: p= is
the DER SubjectPublicKeyInfo; Ed25519: p= is the raw 32-byte key).  Nothing
in these tests asks relayq for a public key or a record.

The [dkim] contract under test:
  domain   = one or more domains (commas and/or spaces)
  selector = one per key_file, same order
  key_file = one or two PEM keys: RSA >= 2048 -> a=rsa-sha256, Ed25519 ->
             a=ed25519-sha256; two keys -> two DKIM-Signature fields
Signing happens at delivery, the fields go in front of the header block,
c=relaxed/relaxed, t= present, From over-signed; only mail whose From
domain is a [dkim] domain is signed; a retry sends the very same bytes; a
key others may read or write, a missing, unparsable, non-RSA/Ed25519 or
short RSA key keeps the message queued with an error naming the file.
"""

import base64
import logging
import os
import re
import shlex
import subprocess
import time

import dkim
import pytest

from conftest import (FIXTURES, assert_crlf_only, body_of, faketime, fmt,
                      header_values, headers, normalize_lines, split_message)

RCPT = "rcpt@example.net"
DOMAIN = "example.com"
# The fixtures' own From domain is example.com; local senders are rewritten
# to [sender] address (noreply@example.com below), or else qualified with
# conftest's SENDER_DOMAIN: both domains are signed.
FIXTURE_DOMAINS = "example.com, host.example"
# Header fields the signature must cover whenever they are present.
SIGNED = ("from", "to", "cc", "subject", "date", "message-id", "reply-to",
          "in-reply-to", "references", "mime-version", "content-type",
          "content-transfer-encoding")
# Fields relayq may legitimately rewrite (addresses), see test_clients.py.
ADDRESS_HEADERS = {"from", "to", "cc", "bcc", "sender", "reply-to"}
ALGO = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256",
        "rsa4096": b"rsa-sha256"}


# ---- keys and the verifier's DNS -------------------------------------------------

def _openssl(*args, stdin=None):
    cp = subprocess.run(["openssl", *args], input=stdin, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, timeout=120)
    assert cp.returncode == 0, "openssl %r: %r" % (args, cp.stderr)
    return cp.stdout


class Key:
    def __init__(self, kind, path):
        self.kind, self.path = kind, path
        with open(path, "rb") as f:
            self.pem = f.read()
        if kind.startswith(("rsa", "ed25519")) and kind != "rsa1024":
            der = _openssl("pkey", "-in", path, "-pubout", "-outform", "DER")
            if kind.startswith("ed25519"):
                assert len(der) == 44, len(der)
                self.record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(der[-32:])
            else:
                self.record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    def copy(self, dest, mode=0o600):
        """A private copy (tests change modes or replace it)."""
        with open(dest, "wb") as f:
            f.write(self.pem)
        os.chmod(dest, mode)
        return Key(self.kind, dest)


class KeyStore:
    """Keys made once per session, on first use."""
    GEN = {
        "rsa": ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "rsa4096": ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
        "rsa1024": ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
        "ed25519": ["genpkey", "-algorithm", "ed25519"],
        "rsa-other": ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "ed25519-other": ["genpkey", "-algorithm", "ed25519"],
        "ec": ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    }

    def __init__(self, d):
        self.d = d
        self._keys = {}

    def __getitem__(self, kind):
        if kind not in self._keys:
            path = os.path.join(self.d, kind + ".pem")
            _openssl(*self.GEN[kind], "-out", path)
            os.chmod(path, 0o600)
            self._keys[kind] = Key(kind, path)
        return self._keys[kind]


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    return KeyStore(str(tmp_path_factory.mktemp("dkimkeys")))


class Dns:
    """dnsfunc for python3-dkim: TXT of <selector>._domainkey.<domain>."""

    def __init__(self, entries):
        # entries: [(selector, domain, Key)]
        self.records = {("%s._domainkey.%s." % (s, d)).lower().encode(): k.record
                        for s, d, k in entries}
        self.asked = []

    def __call__(self, name, timeout=5):
        self.asked.append(name)
        return self.records.get(name.lower())


class _PathOnly:
    """A key file that may not exist (or hold no key) for dkim_config."""

    def __init__(self, path):
        self.path = path


def dkim_config(keylist, selectors, domain=DOMAIN, sep=", "):
    return {"dkim": {"domain": domain, "selector": sep.join(selectors),
                     "key_file": sep.join(k.path for k in keylist)}}


# ---- checking a received message -------------------------------------------------

def sig_tags(value):
    """Tags of a DKIM-Signature value: {name: value without whitespace}."""
    out = {}
    for part in re.sub(rb"\r\n[ \t]", b" ", value).split(b";"):
        name, eq, v = part.partition(b"=")
        if eq:
            out[name.strip()] = re.sub(rb"\s+", b"", v)
    return out


def verify(data, dns, idx=0):
    """(result, diagnostics) of python3-dkim for signature idx."""
    log = logging.getLogger("test_dkim.verify")
    log.setLevel(logging.DEBUG)
    lines = []

    class H(logging.Handler):
        def emit(self, rec):
            lines.append(self.format(rec))

    h = H()
    log.addHandler(h)
    try:
        try:
            ok = dkim.DKIM(data, logger=log).verify(idx=idx, dnsfunc=dns)
        except Exception as e:      # e.g. nacl's ValueError for a wrong key type
            ok = False
            lines.append("exception: %r" % (e,))
    finally:
        log.removeHandler(h)
    return ok, "\n".join(lines[-8:])


def dkim_fields(data):
    return header_values(data, "dkim-signature")


def check_signed(data, dns, expect, domain=DOMAIN, t_window=(None, None),
                 upstream=0):
    """The received data carries one DKIM-Signature per (kind, selector) of
    expect, in that order, in front of the header block, each well-formed and
    verifying (upstream: how many the input carried itself, further down).
    Returns the signature tags."""
    assert_crlf_only(data)
    hs = headers(data)
    names = [n for n, _ in hs]
    n = len(expect)
    assert names[:n] == ["dkim-signature"] * n, (
        "want %d DKIM-Signature field(s) first, got fields %r\n%r"
        % (n, names[:n + 3], data[:1500]))
    assert names[n:].count("dkim-signature") == upstream, names
    present = {}
    for name in names[n:]:
        present[name] = present.get(name, 0) + 1
    out = []
    for i, (kind, selector) in enumerate(expect):
        tags = sig_tags(hs[i][1])
        what = "signature %d (%s): %r" % (i, kind, hs[i][1][:600])
        assert tags.get(b"v") == b"1", what
        assert tags.get(b"a") == ALGO[kind], what
        assert tags.get(b"c") == b"relaxed/relaxed", what
        assert tags.get(b"d", b"").lower() == domain.lower().encode(), what
        assert tags.get(b"s") == selector.encode(), what
        assert re.fullmatch(rb"[0-9]+", tags.get(b"t", b"")), "no t=: " + what
        t = int(tags[b"t"])
        lo, hi = t_window
        now = time.time()
        lo = now - 600 if lo is None else lo
        hi = now + 5 if hi is None else hi
        assert lo <= t <= hi, "t=%d outside [%d, %d]: %s" % (t, lo, hi, what)
        h = [x.strip().lower() for x in tags.get(b"h", b"").decode().split(":")]
        assert h.count("from") == present.get("from", 0) + 1, (
            "From not over-signed (%d From field(s)): h=%r" % (present.get("from", 0), h))
        for name, cnt in present.items():
            if name in SIGNED or name.startswith("list-"):
                assert h.count(name) >= cnt, (
                    "%d %s field(s) not all covered by h=%r" % (cnt, name, h))
        ok, diag = verify(data, dns, i)
        assert ok, "python3-dkim: %s does not verify\n%s\nasked=%r\n%r" % (
            what, diag, dns.asked, data[:3000])
        out.append(tags)
    return out


def assert_content_kept(raw, data):
    """Signing changed nothing else: non-address input fields arrive
    unchanged and in order after the signatures, and so does the body."""
    norm = normalize_lines(raw)
    head, sep, body = norm.partition(b"\r\n\r\n")
    if not sep:
        head = head[:-2]
    want = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and want:
            want[-1] = (want[-1][0], want[-1][1] + b"\r\n" + line)
        else:
            name, _, value = line.partition(b":")
            want.append((name.strip().lower().decode("latin-1"), value))
    want = [(n, v) for n, v in want if n not in ADDRESS_HEADERS]
    got = [(n, v) for n, v in headers(data) if n not in ADDRESS_HEADERS]
    it = iter(got)
    assert all(w in it for w in want), "headers changed:\nwant %r\ngot %r" % (want, got)
    if sep:
        assert body_of(data) == body, "body changed:\nwant %r\ngot %r" % (
            body[:500], body_of(data)[:500])


def submit(relayq, r, stdin, args=("-i", RCPT), config=None):
    """Foreground submission that must deliver exactly one message."""
    cp = relayq(list(args), stdin, relay=r, config=config)
    assert cp.returncode == 0, fmt(cp)
    msgs = r.wait_for_messages(1, timeout=15)
    assert len(msgs) == 1, msgs
    assert relayq.queue_files() == [] and relayq.failed_ids() == [], fmt(cp)
    return cp, msgs[0]["data"]


# ---- the corpus ---------------------------------------------------------------------

def fixture_names():
    if not os.path.isdir(FIXTURES):
        return []
    return sorted(f[:-5] for f in os.listdir(FIXTURES) if f.endswith(".argv"))


def read_argv(name):
    """argv[1:] from NAME.argv (argN=value, bash %q quoting)."""
    args = {}
    with open(os.path.join(FIXTURES, name + ".argv"), "rb") as f:
        for line in f.read().decode("utf-8", "surrogateescape").splitlines():
            m = re.match(r"arg(\d+)=(.*)$", line)
            if m:
                words = shlex.split(m.group(2)) if m.group(2) else [""]
                args[int(m.group(1))] = words[0]
    return [args[i] for i in sorted(args)]


def read_eml(name):
    with open(os.path.join(FIXTURES, name + ".eml"), "rb") as f:
        return f.read()


def from_domain(data):
    """Domain of the (first) From field's address, as the test sees it."""
    v = header_values(data, "from")
    assert v, data[:800]
    addrs = re.findall(rb"[^\s<>(),\"]+@([A-Za-z0-9.-]+)", v[0])
    assert addrs, v
    return addrs[0].decode().lower()


FROM = b"From: Alice <alice@example.com>\n"
TO = b"To: Bob <bob@example.net>\n"
DATE = b"Date: Mon, 23 Nov 2026 10:00:00 +0000\n"


def _mid(tag):
    return b"Message-ID: <%s@example.com>\n" % tag.encode()


def _lf(tag, rest_head, body):
    return FROM + TO + DATE + _mid(tag) + rest_head + b"\n" + body


_BIG = b"".join(b"%07d %s\n" % (i, b"x" * 70) for i in range(2 * 1024 * 1024 // 79 + 1))

# name -> (stdin, options); options: content=False skips assert_content_kept
# (relayq changes the input there on purpose: long lines, duplicate From),
# one_from=True: relayq must keep a single From.
NASTY = {
    "folded": (FROM + b"To: Bob <bob@example.net>,\n  Carol <carol@example.net>,\n"
               b"\tDave <dave@example.net>\n" + DATE + _mid("folded")
               + b"Subject: a subject that is\n folded over\n\tthree  lines\n"
               b"X-Folded: one\n    two\n\n" b"body\n", {}),
    "trailing-ws": (_lf("trailing-ws", b"Subject: trailing  \t \nX-Trail: x \t\n",
                        b"line one   \nline two\t\t\n \t \n\t\nend  \n"), {}),
    "empty-body": (_lf("empty-body", b"Subject: empty body\n", b""), {}),
    "headers-only-no-blank-line": (FROM + TO + DATE + _mid("nobl")
                                   + b"Subject: no separator\n", {}),
    "only-empty-lines": (_lf("only-empty", b"Subject: only empty lines\n",
                             b"\n\n\n\n\n"), {}),
    "many-trailing-empty-lines": (_lf("trailing-empty", b"Subject: trailing empty\n",
                                      b"text\n" + b"\n" * 300), {}),
    "trailing-ws-only-lines": (_lf("ws-lines", b"Subject: ws lines at the end\n",
                                   b"text\n  \n\t\n \t \n\n"), {}),
    "utf8-8bit-body": (_lf("utf8", b"MIME-Version: 1.0\n"
                           b"Content-Type: text/plain; charset=utf-8\n"
                           b"Content-Transfer-Encoding: 8bit\n"
                           b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n",
                           "Grüße aus Malmö — ✓ ünïcödé\n日本語のテキスト\n"
                           "\u00a0non-breaking\u00a0spaces \n".encode()), {}),
    "utf8-raw-header": (_lf("utf8h", "Subject: Räksmörgås ✓ 日本\n".encode(),
                            b"body\n"), {}),
    "long-lines": (_lf("long", b"Subject: long lines\nX-Long: " + b"B" * 2000 + b"\n"
                       b"X-Long-Words: " + b"word " * 400 + b"\n",
                       b"first\n" + b"A" * 5000 + b"\n" + b"w  " * 700 + b"\nlast\n"),
                   {"content": False}),
    "lf-only": (_lf("lf", b"Subject: LF only\n", b"one\ntwo\n\nthree\n"), {}),
    "crlf-only": (_lf("crlf", b"Subject: CRLF only\n", b"one\ntwo\n\nthree\n")
                  .replace(b"\n", b"\r\n"), {}),
    "crlf-lf-mixed": (FROM + b"To: bob@example.net\r\n" + DATE + _mid("mixed")
                      + b"Subject: mixed\r\n  endings\n\r\nline1\r\nline2\nline3\r\n"
                      b"\r\n\nend\n", {}),
    "tabs-and-space-runs": (_lf("tabs", b"Subject: many    spaces\tand\t\ttabs \t x\n"
                                b"X-Tab:\tvalue\t with  \t runs\nX-Lead:      lead\n",
                                b"  leading spaces\n\tleading tab\n"
                                b"in  the   middle\t\tof\t line\n \t mixed \t\n"), {}),
    "duplicate-from": (b"From: first@example.com\nFrom: Other <second@example.com>\n"
                       + TO + DATE + _mid("dupfrom") + b"Subject: two From\n\nbody\n",
                       {"content": False, "one_from": True}),
    "odd-case-names": (b"FROM: Odd <odd@example.com>\nsubject: lower case\n"
                       b"TO: bob@example.net\nmime-VERSION: 1.0\n"
                       b"content-TYPE: text/plain\nmEsSaGe-Id: <odd@example.com>\n"
                       b"DATE: Mon, 23 Nov 2026 10:00:00 +0000\nCc: c@example.net\n"
                       b"\nbody\n", {}),
    "no-date-no-message-id": (FROM + TO + b"Subject: bare\n\nbody\n", {}),
    "no-from-date-message-id": (TO + b"Subject: relayq adds From too\n\nbody\n",
                                {"domain": "host.example"}),
    "display-name-and-comments": (b'From: "Doe, Jane" (the boss) <jane@example.com>'
                                  b' (work)\n' + TO + DATE + _mid("comments")
                                  + b"Subject: comments\n\nbody\n", {}),
    "two-mb-body": (_lf("big", b"Subject: 2 MB\n", _BIG), {}),
    "dot-lines": (_lf("dots", b"Subject: dots\n", b".\n..\n.leading\n. \nend\n.\n"), {}),
    "no-final-newline": (_lf("nofinal", b"Subject: no final newline\n",
                             b"line\nlast line"), {}),
    "empty-header-values": (_lf("emptyval", b"Subject:\nX-Empty:\nX-Space: \n",
                                b"body\n"), {}),
    "whitespace-only-continuation": (_lf("wscont", b"Subject: a\n \n b\n",
                                         b"body\n"), {}),
    "stray-cr": (_lf("cr", b"Subject: stray\rcr\n", b"a\rb\nc\r\n"), {}),
    "two-cc-fields": (_lf("twocc", b"Cc: c1@example.net\nSubject: two Cc\n"
                          b"Cc: c2@example.net\n", b"body\n"), {}),
    "many-fields": (_lf("many", b"".join(b"Received: from h%d by h%d; "
                                         b"Mon, 23 Nov 2026 10:00:00 +0000\n" % (i, i + 1)
                                         for i in range(150))
                        + b"Subject: many fields\n", b"body\n"), {}),
    "all-signed-fields": (FROM + TO + b"Cc: Carol <carol@example.net>\n" + DATE
                          + _mid("all") + b"Subject: everything\n"
                          b"Reply-To: replies@example.com\n"
                          b"In-Reply-To: <parent@example.com>\n"
                          b"References: <grand@example.com>\n <parent@example.com>\n"
                          b"MIME-Version: 1.0\n"
                          b"Content-Type: multipart/alternative;\n boundary=\"b1\"\n"
                          b"Content-Transfer-Encoding: 7bit\n"
                          b"List-Id: Test list <test.example.com>\n"
                          b"List-Unsubscribe: <mailto:unsub@example.com>\n"
                          b"List-Post: <mailto:test@example.com>\n"
                          b"X-Mailer: test\n\n"
                          b"--b1\nContent-Type: text/plain\n\nplain\n--b1--\n", {}),
}


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@pytest.mark.parametrize("name", sorted(NASTY))
def test_sign_nasty_messages(relayq, relay, keys, kind, name):
    raw, opt = NASTY[name]
    key = keys[kind]
    domain = opt.get("domain", DOMAIN)
    r = relay()
    cfg = dkim_config([key], ["sel1"], domain="%s %s" % (DOMAIN, "host.example"))
    _, data = submit(relayq, r, raw, config=cfg)
    tags = check_signed(data, Dns([("sel1", domain, key)]), [(kind, "sel1")],
                        domain=domain)
    assert from_domain(data) == domain
    if opt.get("content", True):
        assert_content_kept(raw, data)
    if opt.get("one_from"):
        assert len(header_values(data, "from")) == 1, data[:1000]
    # relayq's own Date / Message-ID (added at spool time) are signed too
    for h in ("date", "message-id"):
        assert len(header_values(data, h)) == 1, (h, data[:1000])
        assert h_count(tags[0], h) >= 1, (h, tags[0][b"h"])


def test_nasty_long_lines_are_broken_and_signed(relayq, relay, keys):
    """The long-lines case above again: the signed message keeps every line
    within 998 octets and its text (modulo the breaks)."""
    raw, _ = NASTY["long-lines"]
    key = keys["ed25519"]
    r = relay()
    _, data = submit(relayq, r, raw, config=dkim_config([key], ["sel1"]))
    check_signed(data, Dns([("sel1", DOMAIN, key)]), [("ed25519", "sel1")])
    for line in data.split(b"\r\n"):
        assert len(line) <= 998, len(line)
    assert body_of(data).replace(b"\r\n ", b"").replace(b"\r\n", b"\n") \
        .startswith(b"first\n" + b"A" * 5000 + b"\n")


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@pytest.mark.parametrize("name", fixture_names())
def test_sign_client_fixtures(relayq, relay, keys, kind, name):
    """Every captured real client (cron, PHP mail(), bsd-mailx, Symfony,
    including the -bs SMTP dialogue), signed and verified."""
    key = keys[kind]
    raw, argv = read_eml(name), read_argv(name)
    r = relay()
    cfg = dkim_config([key], ["sel1"], domain=FIXTURE_DOMAINS)
    # local senders (root, www-data) become noreply@example.com, as deployed
    cfg["sender"] = {"address": "noreply@example.com"}
    _, data = submit(relayq, r, raw, args=argv, config=cfg)
    domain = from_domain(data)
    assert domain in ("example.com", "host.example"), data[:800]
    dns = Dns([("sel1", "example.com", key), ("sel1", "host.example", key)])
    check_signed(data, dns, [(kind, "sel1")], domain=domain)
    if argv != ["-bs"]:
        assert_content_kept(raw, data)


def test_fixture_corpus_is_there():
    assert len(fixture_names()) >= 20, "client fixtures missing from %s" % FIXTURES


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_queued_then_flushed_is_signed(relayq, relay, keys, kind):
    """-odq then -q: the queue runner signs, same checks as foreground."""
    key = keys[kind]
    r = relay()
    relayq.port = r.port
    relayq.write_config(dkim_config([key], ["qsel"]))
    raws = [NASTY[n][0] for n in ("folded", "trailing-ws", "utf8-8bit-body",
                                  "no-date-no-message-id", "many-trailing-empty-lines")]
    for raw in raws:
        cp = relayq(["-odq", "-i", RCPT], raw, write=False)
        assert cp.returncode == 0, fmt(cp)
    assert r.connections == 0 and len(relayq.queued_ids()) == len(raws)
    cp = relayq(["-q"], write=False)
    assert cp.returncode == 0, fmt(cp)
    msgs = r.wait_for_messages(len(raws), timeout=15)
    assert relayq.queue_files() == [], fmt(cp)
    dns = Dns([("qsel", DOMAIN, key)])
    for m in msgs:
        check_signed(m["data"], dns, [(kind, "qsel")])


def spool_bytes(relayq):
    out = b""
    for dirpath, _, files in os.walk(relayq.spool):
        for f in files:
            try:
                with open(os.path.join(dirpath, f), "rb") as fh:
                    out += fh.read()
            except OSError:
                pass
    return out


def test_signed_at_delivery_not_at_submission(relayq, relay, keys):
    """Queued with [dkim] configured: the spool holds no signature yet, and a
    runner without [dkim] sends it unsigned.  Queued without [dkim]: a runner
    with [dkim] signs it."""
    key = keys["rsa"]
    r = relay()
    relayq.port = r.port
    relayq.write_config(dkim_config([key], ["sel1"]))
    cp = relayq(["-odq", "-i", RCPT], NASTY["lf-only"][0], write=False)
    assert cp.returncode == 0, fmt(cp)
    assert len(relayq.queued_ids()) == 1 and r.connections == 0
    assert b"dkim-signature" not in spool_bytes(relayq).lower()
    relayq.write_config({})
    cp = relayq(["-q"], write=False)
    assert cp.returncode == 0, fmt(cp)
    data = r.wait_for_messages(1)[0]["data"]
    assert dkim_fields(data) == [], data[:1500]

    cp = relayq(["-odq", "-i", RCPT], NASTY["crlf-only"][0], write=False)
    assert cp.returncode == 0, fmt(cp)
    relayq.write_config(dkim_config([key], ["later"]))
    cp = relayq(["-q"], write=False)
    assert cp.returncode == 0, fmt(cp)
    data = r.wait_for_messages(2)[1]["data"]
    check_signed(data, Dns([("later", DOMAIN, key)]), [("rsa", "later")])


# ---- 2. tampering ------------------------------------------------------------------

def _flip(data, start, end):
    """data with the first ASCII letter in data[start:end] changed (bit 0)."""
    for i in range(start, end):
        c = data[i]
        if 0x41 <= c <= 0x5a or 0x61 <= c <= 0x7a:
            return data[:i] + bytes([c ^ 0x01]) + data[i + 1:]
    raise AssertionError("no letter to flip in %r" % data[start:end])


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_tampered_subject_or_body_fails(relayq, relay, keys, kind):
    key = keys[kind]
    r = relay()
    raw = _lf("tamper", b"Subject: tamper proof\n", b"the body text\nsecond line\n")
    _, data = submit(relayq, r, raw, config=dkim_config([key], ["sel1"]))
    dns = Dns([("sel1", DOMAIN, key)])
    check_signed(data, dns, [(kind, "sel1")])
    assert verify(data, dns)[0] is True

    m = re.search(rb"\r\nSubject: tamper proof\r\n", data)
    assert m, data[:1500]
    bad_subject = _flip(data, m.start() + len(b"\r\nSubject: "), m.end())
    assert bad_subject != data and b"Subject: tamper proof" not in bad_subject
    ok, diag = verify(bad_subject, dns)
    assert ok is False, "tampered Subject still verifies\n%s" % diag

    head_end = data.index(b"\r\n\r\n") + 4
    bad_body = _flip(data, head_end, len(data))
    assert bad_body[:head_end] == data[:head_end] and bad_body != data
    ok, diag = verify(bad_body, dns)
    assert ok is False, "tampered body still verifies\n%s" % diag

    # and the verifier really uses the key: another key of the same type
    # published under the selector fails
    other = keys[kind + "-other"]
    assert verify(data, Dns([("sel1", DOMAIN, other)]))[0] is False


# ---- 3. two keys -------------------------------------------------------------------

@pytest.mark.parametrize("sep", [", ", " ", ","])
def test_two_keys_two_signatures(relayq, relay, keys, sep):
    rsa, ed = keys["rsa"], keys["ed25519"]
    r = relay()
    cfg = dkim_config([rsa, ed], ["rsasel", "edsel"], sep=sep)
    raw = NASTY["all-signed-fields"][0]
    _, data = submit(relayq, r, raw, config=cfg)
    dns = Dns([("rsasel", DOMAIN, rsa), ("edsel", DOMAIN, ed)])
    tags = check_signed(data, dns, [("rsa", "rsasel"), ("ed25519", "edsel")])
    assert tags[0][b"b"] != tags[1][b"b"]
    assert tags[0][b"bh"] == tags[1][b"bh"]      # same body, same hash
    # each verifies only with its own key
    swapped = Dns([("rsasel", DOMAIN, ed), ("edsel", DOMAIN, rsa)])
    assert verify(data, swapped, 0)[0] is False
    assert verify(data, swapped, 1)[0] is False
    assert_content_kept(raw, data)


def test_two_keys_ed25519_first(relayq, relay, keys):
    rsa, ed = keys["rsa"], keys["ed25519"]
    r = relay()
    _, data = submit(relayq, r, NASTY["folded"][0],
                     config=dkim_config([ed, rsa], ["e", "r"]))
    check_signed(data, Dns([("r", DOMAIN, rsa), ("e", DOMAIN, ed)]),
                 [("ed25519", "e"), ("rsa", "r")])


# ---- 4. which mail is signed ------------------------------------------------------

@pytest.mark.parametrize("from_hdr,args", [
    (b"From: a@other.example", ("-i", RCPT)),
    (b"From: a@sub.example.com", ("-i", RCPT)),
    (b"From: a@notexample.com", ("-i", RCPT)),
    (b"From: a@example.com.evil.test", ("-i", RCPT)),
    (b"From: \"a@example.com\" <a@other.example>", ("-i", RCPT)),
    # the envelope sender does not matter, the From field does
    (b"From: a@other.example", ("-i", "-f", "bounce@example.com", RCPT)),
], ids=["other", "subdomain", "suffix", "domain-as-prefix", "display-name-lies",
        "envelope"])
def test_other_from_domain_not_signed(relayq, relay, keys, from_hdr, args):
    r = relay()
    raw = from_hdr + b"\nTo: bob@example.net\nSubject: not ours\n\nbody\n"
    cp, data = submit(relayq, r, raw, args=args,
                      config=dkim_config([keys["rsa"]], ["sel1"]))
    assert dkim_fields(data) == [], data[:2000]
    assert_crlf_only(data)
    assert header_values(data, "subject") == [b" not ours"]


@pytest.mark.parametrize("from_hdr", [
    b"From: BOSS@EXAMPLE.COM",
    b"From: Boss <boss@Example.Com>",
    b"From: boss@example.COM (Upper Case)",
])
def test_from_domain_case_insensitive(relayq, relay, keys, from_hdr):
    key = keys["ed25519"]
    r = relay()
    raw = from_hdr + b"\nTo: bob@example.net\nSubject: upper\n\nbody\n"
    _, data = submit(relayq, r, raw, config=dkim_config([key], ["sel1"]))
    check_signed(data, Dns([("sel1", DOMAIN, key)]), [("ed25519", "sel1")])


@pytest.mark.parametrize("domains", ["example.org, example.com example.net",
                                     "example.org,example.com,example.net",
                                     "  example.org   example.com\texample.net  ",
                                     "EXAMPLE.ORG, Example.Com, example.NET"])
def test_domain_list(relayq, relay, keys, domains):
    """Each listed domain is signed with d= that domain."""
    key = keys["rsa"]
    r = relay()
    relayq.port = r.port
    relayq.write_config(dkim_config([key], ["sel1"], domain=domains))
    sent = ["example.org", "example.com", "example.net", "example.edu"]
    for d in sent:
        raw = b"From: x@%s\nTo: bob@example.net\nSubject: %s\n\nbody\n" % (
            d.upper().encode(), d.encode())
        cp = relayq(["-i", RCPT], raw, write=False)
        assert cp.returncode == 0, fmt(cp)
    msgs = r.wait_for_messages(len(sent))
    by_subject = {header_values(m["data"], "subject")[0].strip().decode(): m["data"]
                  for m in msgs}
    for d in sent[:3]:
        check_signed(by_subject[d], Dns([("sel1", d, key)]), [("rsa", "sel1")],
                     domain=d)
    assert dkim_fields(by_subject["example.edu"]) == []


# ---- 5. retries send the same bytes ------------------------------------------------

def _defer_then_flush(relayq, r, wrap=(), between=None):
    cp = relayq(["-i", RCPT], NASTY["all-signed-fields"][0], write=False)
    assert cp.returncode == 0, fmt(cp)
    assert b"deferred" in cp.stderr.lower(), fmt(cp)
    assert len(relayq.queued_ids()) == 1 and r.messages == [], fmt(cp)
    assert len(r.rejected) == 1, r.rejected
    if between:
        between()
    cp = relayq(["-q"], write=False, wrap=wrap[0] if wrap else (),
                env=wrap[1] if wrap else None)
    assert cp.returncode == 0, fmt(cp)
    acc = r.wait_for_messages(1)[0]["data"]
    assert relayq.queue_files() == [], fmt(cp)
    return r.rejected[0]["data"], acc


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_retry_sends_same_signature(relayq, relay, keys, kind):
    """451 at DATA, then `relayq -q` an hour later (libfaketime): a fresh
    signature would carry another t=; the stored one is sent again."""
    key = keys[kind]
    r = relay(data_replies=["451 4.3.0 try again"])
    relayq.port = r.port
    relayq.write_config(dkim_config([key], ["sel1"]))
    first, second = _defer_then_flush(relayq, r, wrap=faketime("+1h"))
    dns = Dns([("sel1", DOMAIN, key)])
    t0 = time.time()
    check_signed(first, dns, [(kind, "sel1")], t_window=(t0 - 120, t0 + 5))
    assert dkim_fields(second) == dkim_fields(first)
    assert second == first, "the retry sent other bytes"
    check_signed(second, dns, [(kind, "sel1")], t_window=(t0 - 120, t0 + 5))


def test_retry_reuses_stored_signature_after_key_change(relayq, relay, keys):
    """The signature is made once and stored with the entry: a changed key
    and selector before the retry do not change what is sent."""
    rsa, ed = keys["rsa"], keys["ed25519"]
    r = relay(data_replies=["451 4.3.0 try again"])
    relayq.port = r.port
    relayq.write_config(dkim_config([rsa], ["old"]))
    first, second = _defer_then_flush(
        relayq, r, between=lambda: relayq.write_config(dkim_config([ed], ["new"])))
    assert second == first
    check_signed(second, Dns([("old", DOMAIN, rsa)]), [("rsa", "old")])


# ---- 6 and 7. unusable keys ------------------------------------------------------

def _bad_key(keys, kind, path):
    """Makes the unusable key at path; returns how to repair it."""
    if kind.startswith("mode"):
        keys["rsa"].copy(path, int(kind[4:], 8))
        return lambda: os.chmod(path, 0o600)
    if kind == "missing":
        pass
    elif kind == "garbage":
        with open(path, "wb") as f:
            f.write(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
        os.chmod(path, 0o600)
    elif kind == "empty":
        open(path, "wb").close()
        os.chmod(path, 0o600)
    elif kind == "encrypted":
        _openssl("pkey", "-in", keys["rsa"].path, "-aes256", "-passout",
                 "pass:secret", "-out", path)
        os.chmod(path, 0o600)
    elif kind == "public-key":
        with open(path, "wb") as f:
            f.write(_openssl("pkey", "-in", keys["rsa"].path, "-pubout"))
        os.chmod(path, 0o600)
    else:                               # rsa1024, ec: parsable, not allowed
        keys[kind].copy(path, 0o600)

    def repair():
        if os.path.exists(path):
            os.unlink(path)
        keys["rsa"].copy(path, 0o600)
    return repair


BAD_KEYS = ["mode644", "mode604", "mode602", "mode606", "missing", "garbage",
            "empty", "public-key", "encrypted", "rsa1024", "ec"]
# what the error must say beside the path, where the reason is clear-cut
BAD_REASON = {"mode": rb"(?i)mode|permission|chmod|others|readable|writable",
              "missing": rb"(?i)no such file|not found|missing|does not exist",
              "rsa1024": rb"1024|2048",
              "ec": rb"(?i)rsa|ed25519|key type|unsupported"}


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_unusable_key_keeps_message_queued(relayq, relay, keys, tmp_path, bad):
    path = str(tmp_path / "dkim-key.pem")
    repair = _bad_key(keys, bad, path)
    r = relay()
    relayq.port = r.port
    relayq.write_config(dkim_config([_PathOnly(path)], ["sel1"]))
    raw = _lf("badkey", b"Subject: bad key %s\n" % bad.encode(), b"body\n")
    cp = relayq(["-i", RCPT], raw, write=False)
    assert cp.returncode == 0, fmt(cp)
    assert b"deferred" in cp.stderr.lower(), fmt(cp)
    assert path.encode() in cp.stderr, "key path not named\n%s" % fmt(cp)
    why = BAD_REASON.get(bad[:4] if bad.startswith("mode") else bad)
    if why:
        line = [x for x in cp.stderr.splitlines() if path.encode() in x][0]
        assert re.search(why, line), "unclear error: %r" % line
    assert len(relayq.queued_ids()) == 1 and relayq.failed_ids() == [], fmt(cp)
    assert r.messages == [] and r.rejected == [] and "DATA" not in r.verbs(), fmt(cp)

    # a queue run with the key still unusable: same, and says so
    cp = relayq(["-q"], write=False)
    assert path.encode() in cp.stderr, "key path not named on -q\n%s" % fmt(cp)
    assert len(relayq.queued_ids()) == 1 and relayq.failed_ids() == [], fmt(cp)
    assert r.messages == [] and "DATA" not in r.verbs(), fmt(cp)

    repair()
    cp = relayq(["-q"], write=False)
    assert cp.returncode == 0, fmt(cp)
    data = r.wait_for_messages(1)[0]["data"]
    assert relayq.queue_files() == [], fmt(cp)
    check_signed(data, Dns([("sel1", DOMAIN, keys["rsa"])]), [("rsa", "sel1")])


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640])
def test_private_key_modes_accepted(relayq, relay, keys, tmp_path, mode):
    """Owner access, and group read, are fine."""
    key = keys["ed25519"].copy(str(tmp_path / "k.pem"), mode)
    r = relay()
    _, data = submit(relayq, r, NASTY["lf-only"][0], config=dkim_config([key], ["m"]))
    check_signed(data, Dns([("m", DOMAIN, key)]), [("ed25519", "m")])


def test_second_key_unusable_keeps_message_queued(relayq, relay, keys, tmp_path):
    """With two keys, one bad key is enough to hold the message (it must not
    go out with half its signatures)."""
    bad = keys["rsa"].copy(str(tmp_path / "bad.pem"), 0o644)
    r = relay()
    relayq.port = r.port
    relayq.write_config(dkim_config([keys["ed25519"], bad], ["e", "r"]))
    cp = relayq(["-i", RCPT], NASTY["lf-only"][0], write=False)
    assert cp.returncode == 0, fmt(cp)
    assert b"deferred" in cp.stderr.lower(), fmt(cp)
    assert bad.path.encode() in cp.stderr, fmt(cp)
    assert len(relayq.queued_ids()) == 1 and r.messages == [] and r.rejected == []
    os.chmod(bad.path, 0o600)
    cp = relayq(["-q"], write=False)
    assert cp.returncode == 0, fmt(cp)
    data = r.wait_for_messages(1)[0]["data"]
    check_signed(data, Dns([("e", DOMAIN, keys["ed25519"]), ("r", DOMAIN, bad)]),
                 [("ed25519", "e"), ("rsa", "r")])


# ---- 8. line lengths and CRLF on the wire ------------------------------------------

def test_signature_lines_within_998_and_crlf(relayq, relay, keys):
    """A 4096-bit RSA signature (684 base64 octets of b=) plus an Ed25519 one,
    with a long d= and s=, over a message with every signed field present (a
    long h=) and 41 To addresses: every line on the wire is <= 998 octets and
    ends in CRLF."""
    big, ed = keys["rsa4096"], keys["ed25519"]
    r = relay()
    many_to = b"".join(b"To: recipient-number-%02d@example.net\n" % i for i in range(40))
    lists = b"".join(b"List-%s: <mailto:%s@example.com>\n" % (n, n.lower()) for n in (
        b"Help", b"Subscribe", b"Owner", b"Archive", b"Unsubscribe-Post"))
    # a long d= and s= too: unfolded, this signature would not fit in 998
    d = "a-rather-long-signing-domain-name-to-stretch-the-line.example.com"
    s1 = "selector-number-one-with-a-name-of-sixty-three-characters-xxxxx"
    s2 = "selector-number-two-with-a-name-of-sixty-three-characters-xxxxx"
    raw = many_to + lists + NASTY["all-signed-fields"][0].replace(
        b"@example.com>\nTo", b"@%s>\nTo" % d.encode(), 1)
    assert from_domain(raw.replace(b"\n", b"\r\n")) == d
    _, data = submit(relayq, r, raw, config=dkim_config([big, ed], [s1, s2], domain=d))
    assert_crlf_only(data)
    for line in data.split(b"\r\n"):
        assert len(line) <= 998, (len(line), line[:120])
    dns = Dns([(s1, d, big), (s2, d, ed)])
    tags = check_signed(data, dns, [("rsa4096", s1), ("ed25519", s2)], domain=d)
    assert h_count(tags[0], "list-owner") == 1
    assert len(base64.b64decode(tags[0][b"b"])) == 512
    # relayq merges the To fields into one; the signature covers it
    assert len(header_values(data, "to")) == 1
    assert h_count(tags[0], "to") == h_count(tags[1], "to") == 1
    assert header_values(data, "to")[0].count(b"@example.net") == 41
    head, _ = split_message(data)
    for line in head:
        assert len(line) <= 998, len(line)
        assert b"\r" not in line and b"\n" not in line


def h_count(tags, name):
    return [x.strip().lower() for x in tags[b"h"].decode().split(":")].count(name)


# ---- more delivery paths and inputs ------------------------------------------------

def test_background_delivery_is_signed(relayq, relay, keys):
    """-odb: the detached runner signs."""
    key = keys["ed25519"]
    r = relay()
    cp = relayq(["-odb", "-i", RCPT], NASTY["folded"][0], relay=r,
                config=dkim_config([key], ["bg"]), check_tmp=False)
    assert cp.returncode == 0, fmt(cp)
    data = r.wait_for_messages(1, timeout=15)[0]["data"]
    check_signed(data, Dns([("bg", DOMAIN, key)]), [("ed25519", "bg")])


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_upstream_signature_kept_and_ours_in_front(relayq, relay, keys, kind):
    """Mail the application signed itself (its own selector): relayq's
    signature goes in front, the application's stays and still verifies."""
    app = keys["rsa-other"]
    raw = _lf("presigned", b"Subject: signed by the app\n",
              b"Hello,\n  signed   twice\n").replace(b"\n", b"\r\n")
    upstream = dkim.sign(raw, b"app", DOMAIN.encode(), app.pem,
                         canonicalize=(b"relaxed", b"relaxed"),
                         include_headers=[b"from", b"to", b"subject", b"date",
                                          b"message-id"])
    stdin = (upstream + raw).replace(b"\r\n", b"\n")       # as PHP would pipe it
    key = keys[kind]
    r = relay()
    _, data = submit(relayq, r, stdin, config=dkim_config([key], ["sel1"]))
    dns = Dns([("sel1", DOMAIN, key), ("app", DOMAIN, app)])
    check_signed(data, dns, [(kind, "sel1")], upstream=1)
    assert header_values(data, "dkim-signature")[1] == \
        upstream.split(b":", 1)[1].rstrip(b"\r\n")
    ok, diag = verify(data, dns, 1)
    assert ok, "the application's signature broke\n%s" % diag


def test_big_header_block_is_signed(relayq, relay, keys):
    """A header block relayq accepts (just under its 1 MiB limit of header
    content) must also be signable: 16000 fields of 65 octets, 1 040 000
    octets of content, 1 072 000 once spooled with CRLFs."""
    key = keys["ed25519"]
    raw = (FROM + TO + b"Subject: big header block\n"
           + b"X-A: %s\n" % (b"0123456789" * 6) * 16000 + b"\nbody\n")
    assert len(raw) - raw.count(b"\n") < 1024 * 1024
    r = relay()
    # without [dkim] relayq takes and sends it
    submit(relayq, r, raw)
    r.reset()
    cp = relayq(["-i", RCPT], raw, relay=r, config=dkim_config([key], ["sel1"]))
    assert cp.returncode == 0, fmt(cp)
    assert b"deferred" not in cp.stderr, fmt(cp)
    data = r.wait_for_messages(1, timeout=15)[0]["data"]
    check_signed(data, Dns([("sel1", DOMAIN, key)]), [("ed25519", "sel1")])


@pytest.mark.parametrize("dk", [
    {"selector": "only-one"},                       # two keys, one selector
    {"selector": "a b c"},                          # two keys, three selectors
    {"selector": "a b c", "key_file": "K1 K2 K1"},  # three keys
], ids=["too-few-selectors", "too-many-selectors", "three-keys"])
def test_selector_and_key_counts_checked(relayq, relay, keys, dk):
    """One selector per key, one or two keys: otherwise a configuration
    error (exit 78) naming the key."""
    r = relay()
    k1, k2 = keys["rsa"].path, keys["ed25519"].path
    cfg = dkim_config([keys["rsa"], keys["ed25519"]], ["a", "b"])
    cfg["dkim"].update({k: v.replace("K1", k1).replace("K2", k2) for k, v in dk.items()})
    cp = relayq(["-i", RCPT], NASTY["lf-only"][0], relay=r, config=cfg)
    assert cp.returncode == 78, fmt(cp)
    assert (b"key_file" if "key_file" in dk else b"selector") in cp.stderr, fmt(cp)
    assert r.messages == [] and relayq.queued_ids() == [], fmt(cp)
