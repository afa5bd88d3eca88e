#!/usr/bin/python3
"""Make throw-away TLS material for patrol's end-to-end tests.

    /usr/bin/python3 tests/servers/mkca.py DIR

writes into DIR:
    ca.pem          the test CA (give it to patrol as ca_file)
    ca-key.pem      its key
    server.pem      a server certificate for localhost, 127.0.0.1 and ::1, signed by ca.pem
    server-key.pem  its key (mode 0600)
    wrong-ca.pem    an unrelated CA that did not sign server.pem ("wrong CA" tests)

EC P-256 keys: generated in microseconds, accepted by OpenSSL/libcurl.
Importable too: make_ca(dir) returns a dict of the paths above.
"""
import datetime
import ipaddress
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "patrol tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _validity(builder):
    now = datetime.datetime.now(datetime.timezone.utc)
    # Back-dated a day so small clock differences never make the cert "not yet valid".
    return builder.not_valid_before(now - datetime.timedelta(days=1)) \
                  .not_valid_after(now + datetime.timedelta(days=3650))


def make_ca_cert(cn):
    key = _key()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    b = x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
    b = _validity(b.public_key(key.public_key()).serial_number(x509.random_serial_number()))
    b = b.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=True, crl_sign=True,
                                      encipher_only=False, decipher_only=False), critical=True)
    b = b.add_extension(ski, critical=False)
    return key, b.sign(key, hashes.SHA256())


def make_server_cert(ca_key, ca_cert, names=("localhost",), ips=("127.0.0.1", "::1")):
    key = _key()
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    b = x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca_cert.subject)
    b = _validity(b.public_key(key.public_key()).serial_number(x509.random_serial_number()))
    b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False,
                                      key_agreement=True, key_cert_sign=False, crl_sign=False,
                                      encipher_only=False, decipher_only=False), critical=True)
    b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                        critical=False)
    return key, b.sign(ca_key, hashes.SHA256())


def _write(path, data, mode=0o644):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(folder):
    os.makedirs(folder, exist_ok=True)
    ca_key, ca_cert = make_ca_cert("patrol test CA")
    srv_key, srv_cert = make_server_cert(ca_key, ca_cert)
    _wrong_key, wrong_cert = make_ca_cert("patrol unrelated CA")
    paths = {
        "ca": os.path.join(folder, "ca.pem"),
        "ca_key": os.path.join(folder, "ca-key.pem"),
        "cert": os.path.join(folder, "server.pem"),
        "key": os.path.join(folder, "server-key.pem"),
        "wrong_ca": os.path.join(folder, "wrong-ca.pem"),
    }
    _write(paths["ca"], _pem_cert(ca_cert))
    _write(paths["ca_key"], _pem_key(ca_key), 0o600)
    _write(paths["cert"], _pem_cert(srv_cert))
    _write(paths["key"], _pem_key(srv_key), 0o600)
    _write(paths["wrong_ca"], _pem_cert(wrong_cert))
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: mkca.py DIR")
    for k, v in make_ca(sys.argv[1]).items():
        print(f"{k}\t{v}")
