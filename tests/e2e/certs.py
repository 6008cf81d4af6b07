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

extra_pair(certs, NAME) makes (once, in the same directory, with
python3-cryptography, since the openssl CLI cannot write a NUL into a
name) more leaves for the TLS attack tests and returns (cert, key):

  selfsigned      self-signed leaf (CA:FALSE) for localhost/127.0.0.1
  expired         signed by ca.pem for localhost/127.0.0.1, valid from
                  3 days ago until 2 days ago
  notyet          signed by ca.pem for localhost/127.0.0.1, valid from
                  tomorrow
  relay-good      signed by ca.pem, SAN relay.example and a.b.example
                  (the positive control for the names below)
  nul-cn          CN "relay.example\0.evil", no SAN
  nul-san         SAN DNS "relay.example\0.evil" (CN the same)
  wild-deep       SAN "*.example" (must not match a.b.example)
  wild-partial    SAN "rel*.example" (a partial wildcard)
  wild-middle     SAN "a.*.example" (wildcard not in the leftmost label)
  wild-bare       SAN "*" alone
"""

import datetime
import ipaddress
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


# ---- extra leaves for the TLS attack tests (python3-cryptography) ---------

_LOCAL = ("localhost", "127.0.0.1")
EXTRA = {
    # name: (CN, [SAN entries] or None for no SAN, issuer, not_before_days,
    #        not_after_days)
    "selfsigned": ("localhost", list(_LOCAL), "self", -1, 1),
    "expired": ("localhost", list(_LOCAL), "ca", -3, -2),
    "notyet": ("localhost", list(_LOCAL), "ca", 1, 2),
    "relay-good": ("relay.example", ["relay.example", "a.b.example"], "ca", -1, 1),
    "nul-cn": ("relay.example\0.evil", None, "ca", -1, 1),
    "nul-san": ("relay.example\0.evil", ["relay.example\0.evil"], "ca", -1, 1),
    "wild-deep": ("*.example", ["*.example"], "ca", -1, 1),
    "wild-partial": ("rel*.example", ["rel*.example"], "ca", -1, 1),
    "wild-middle": ("a.*.example", ["a.*.example"], "ca", -1, 1),
    "wild-bare": ("*", ["*"], "ca", -1, 1),
}


def _san_entry(x509, v):
    try:
        return x509.IPAddress(ipaddress.ip_address(v))
    except ValueError:
        return x509.DNSName(v)


def extra_pair(certs, name):
    """(cert, key) paths of the extra leaf NAME (see EXTRA), made on first
    use in certs.dir."""
    cert_path = os.path.join(certs.dir, "x-%s.pem" % name)
    key_path = os.path.join(certs.dir, "x-%s.key" % name)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID

    cn, san, issuer, nb, na = EXTRA[name]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    if issuer == "self":
        issuer_name, signing_key, aki_key = subject, key, key.public_key()
    else:
        with open(certs.ca, "rb") as f:
            ca_cert = x509.load_pem_x509_certificate(f.read())
        with open(certs.ca_key, "rb") as f:
            signing_key = serialization.load_pem_private_key(f.read(), None)
        issuer_name, aki_key = ca_cert.subject, signing_key.public_key()
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer_name)
         .public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now + datetime.timedelta(days=nb))
         .not_valid_after(now + datetime.timedelta(days=na))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                      content_commitment=False, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False,
                                      decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                        critical=False)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(aki_key),
                        critical=False))
    if san is not None:
        b = b.add_extension(x509.SubjectAlternativeName(
            [_san_entry(x509, v) for v in san]), critical=False)
    cert = b.sign(signing_key, hashes.SHA256())
    with open(key_path + ".tmp", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(key_path + ".tmp", 0o600)
    with open(cert_path + ".tmp", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.rename(key_path + ".tmp", key_path)
    os.rename(cert_path + ".tmp", cert_path)
    return cert_path, key_path


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
