"""The ``openssl`` command as a test helper: CAs, certificates, CSRs and CRLs made by another tool.

Certificates made by ``openssl`` (not by fedwarden) show that the diagnosis and the policy work on
what other tools produce. Every subprocess runs with a timeout, stdin closed, and a minimal
OpenSSL config of our own (so the machine's openssl.cnf does not change what is made). A module
with a unique name rather than conftest, so that test files can import it unambiguously.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

OPENSSL = shutil.which("openssl")

_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
default_ca = testca
[testca]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
crlnumber = {dir}/crlnumber
default_md = sha256
default_crl_days = 7
policy = anything
[anything]
commonName = supplied
"""

CA_EXTENSIONS = (
    "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
    "subjectKeyIdentifier=hash\n"
)
SERVER_EXTENSIONS = (
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
)
CLIENT_EXTENSIONS = (
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    "extendedKeyUsage=clientAuth\n"
)


class OpenSSL:
    """A thin wrapper over the ``openssl`` command, working in one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "openssl.cnf"
        self.config.write_text(_CONFIG.format(dir=self.dir))
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")
        (self.dir / "crlnumber").write_text("01\n")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert OPENSSL is not None
        env = {**os.environ, "OPENSSL_CONF": str(self.config)}
        result = subprocess.run(
            [OPENSSL, *args],
            cwd=self.dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"openssl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def path(self, name: str) -> Path:
        return self.dir / name

    def ec_key(self, name: str) -> Path:
        out = self.path(f"{name}.key")
        self.run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(out))
        return out

    def rsa_key(self, name: str, bits: int) -> Path:
        out = self.path(f"{name}.key")
        self.run(
            "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}", "-out", str(out)
        )
        return out

    def ed25519_key(self, name: str) -> Path:
        out = self.path(f"{name}.key")
        self.run("genpkey", "-algorithm", "ed25519", "-out", str(out))
        return out

    def self_signed(
        self, name: str, subject: str, extensions: str, *, key: Path | None = None, days: int = 30
    ) -> tuple[Path, Path]:
        """``openssl req -x509``: a self-signed certificate with the given extensions."""
        key = key or self.ec_key(name)
        config = self.path(f"{name}.cnf")  # `req` reads extensions from its config only
        config.write_text(self.config.read_text() + "[ext]\n" + extensions)
        out = self.path(f"{name}.crt")
        self.run(
            "req", "-x509", "-new", "-key", str(key), "-subj", subject, "-days", str(days),
            "-config", str(config), "-extensions", "ext", "-out", str(out),
        )  # fmt: skip
        return out, key

    def ca(self, name: str, subject: str, *, days: int = 365) -> tuple[Path, Path]:
        return self.self_signed(name, subject, CA_EXTENSIONS, days=days)

    def csr(self, name: str, subject: str, *, key: Path | None = None, addext: str = "") -> Path:
        key = key or self.ec_key(name)
        out = self.path(f"{name}.csr")
        args = ["req", "-new", "-key", str(key), "-subj", subject, "-out", str(out)]
        if addext:
            args += ["-addext", addext]
        self.run(*args)
        return out

    def leaf(
        self,
        name: str,
        subject: str,
        ca: tuple[Path, Path],
        extensions: str,
        *,
        key: Path | None = None,
        days: int = 30,
        digest: str = "sha256",
    ) -> tuple[Path, Path]:
        """``openssl x509 -req``: a certificate signed by ``ca`` (its cert and key files)."""
        key = key or self.ec_key(name)
        csr = self.csr(name, subject, key=key)
        ext = self.path(f"{name}.ext")
        ext.write_text(extensions)
        out = self.path(f"{name}.crt")
        self.run(
            "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
            "-CAserial", str(self.path("serial")), "-days", str(days), f"-{digest}",
            "-extfile", str(ext), "-out", str(out),
        )  # fmt: skip
        return out, key

    def revoke_and_gencrl(self, ca: tuple[Path, Path], cert: Path, reason: str) -> Path:
        """``openssl ca -revoke`` then ``-gencrl``: a CRL made by openssl."""
        common = ["-config", str(self.config), "-cert", str(ca[0]), "-keyfile", str(ca[1])]
        self.run("ca", *common, "-revoke", str(cert), "-crl_reason", reason)
        out = self.path("openssl-crl.pem")
        self.run("ca", *common, "-gencrl", "-out", str(out))
        return out
