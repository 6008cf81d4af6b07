#!/usr/bin/python3
"""Throwaway TLS material for the end-to-end tests, made with the openssl CLI.

make_certs(DIR) writes, valid for one day, SHA-256, EC P-256 keys:

  ca.pem / ca.key                 the test CA (the one relayq is told to trust)
  server.pem / server.key         leaf signed by ca.pem,
                                  SAN DNS:localhost, IP:127.0.0.1
  evil-ca.pem / evil-ca.key       a second, untrusted CA
  evil-server.pem / .key          leaf for localhost/127.0.0.1 signed by evil-ca
  wrong-name.pem / .key           leaf signed by ca.pem, SAN DNS:wrong.example only

and returns a Certs object holding the paths.  Command line:
  /usr/bin/python3 certs.py DIR
"""

import os
import subprocess
import sys
from dataclasses import dataclass, asdict

_CONF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
subjectAltName = {san}
"""


@dataclass
class Certs:
    dir: str
    ca: str
    ca_key: str
    server_cert: str
    server_key: str
    evil_ca: str
    evil_ca_key: str
    evil_cert: str
    evil_key: str
    wrong_cert: str
    wrong_key: str

    def pair(self, which):
        """(cert, key) for 'good', 'evil' or 'wrong'."""
        return {
            "good": (self.server_cert, self.server_key),
            "evil": (self.evil_cert, self.evil_key),
            "wrong": (self.wrong_cert, self.wrong_key),
        }[which]


def _openssl(*args):
    r = subprocess.run(["openssl", *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError("openssl %s failed: %s"
                           % (" ".join(args), r.stderr.decode(errors="replace")))


def _conf(d, name, san):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(_CONF.format(san=san))
    return path


def _key(path):
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", path)
    os.chmod(path, 0o600)


def _ca(d, base, cn):
    key = os.path.join(d, base + ".key")
    pem = os.path.join(d, base + ".pem")
    conf = _conf(d, base + ".cnf", "DNS:unused.invalid")
    _key(key)
    _openssl("req", "-config", conf, "-new", "-x509", "-sha256", "-days", "1",
             "-key", key, "-subj", "/CN=" + cn, "-extensions", "v3_ca",
             "-set_serial", "1", "-out", pem)
    return pem, key


def _leaf(d, base, cn, san, ca_pem, ca_key, serial):
    key = os.path.join(d, base + ".key")
    pem = os.path.join(d, base + ".pem")
    csr = os.path.join(d, base + ".csr")
    conf = _conf(d, base + ".cnf", san)
    _key(key)
    _openssl("req", "-config", conf, "-new", "-sha256", "-key", key,
             "-subj", "/CN=" + cn, "-out", csr)
    _openssl("x509", "-req", "-sha256", "-days", "1", "-in", csr,
             "-CA", ca_pem, "-CAkey", ca_key, "-set_serial", str(serial),
             "-extfile", conf, "-extensions", "leaf", "-out", pem)
    return pem, key


def make_certs(directory):
    d = os.path.abspath(directory)
    os.makedirs(d, exist_ok=True)
    ca, ca_key = _ca(d, "ca", "relayq test CA")
    server, server_key = _leaf(d, "server", "localhost",
                               "DNS:localhost, IP:127.0.0.1", ca, ca_key, 2)
    evil_ca, evil_ca_key = _ca(d, "evil-ca", "relayq evil CA")
    evil, evil_key = _leaf(d, "evil-server", "localhost",
                           "DNS:localhost, IP:127.0.0.1", evil_ca, evil_ca_key, 3)
    wrong, wrong_key = _leaf(d, "wrong-name", "wrong.example",
                             "DNS:wrong.example", ca, ca_key, 4)
    return Certs(dir=d, ca=ca, ca_key=ca_key, server_cert=server,
                 server_key=server_key, evil_ca=evil_ca, evil_ca_key=evil_ca_key,
                 evil_cert=evil, evil_key=evil_key, wrong_cert=wrong,
                 wrong_key=wrong_key)


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: certs.py DIR\n")
        return 64
    c = make_certs(argv[1])
    for k, v in asdict(c).items():
        print("%s=%s" % (k, v))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
