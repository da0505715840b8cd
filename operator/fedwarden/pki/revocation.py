"""Revocation: X.509 CRLs signed by the training's CA, reloaded by the aggregator.

The CA keeps ``crl.pem``: one CRL per CA in the trust bundle (two during a CA rotation), each with
a CRL number that only grows, the reason of each revocation (RFC 5280 reason codes; "unspecified"
is written by leaving the reason out, as RFC 5280 asks) and a nextUpdate, by which the CA must
have published a fresh list (a stale list is reported by ``pki check``). A banned client's
certificate is revoked with reason ``privilege-withdrawn``.

What must never go back, the revoked serials and the last CRL number of each CA, is also kept
as the CA's own state (:meth:`RevocationList.state`, ``revocations.json`` in the CA directory,
``revocations.json`` in the operator's CA Secret): a CRL file that is lost or replaced by an
older copy is rebuilt from it (:meth:`RevocationList.restore`) with every revocation and a
higher number, never a fresh list numbered 1.

The aggregator holds a :class:`RevocationList` and calls :meth:`RevocationList.reload_if_changed`
before authorising a peer (it costs one ``stat`` when nothing changed). A reload verifies each
CRL's signature against the trust bundle and refuses a list whose CRL number went backwards, so
an old copy cannot silently un-revoke a certificate; when a reload fails the previous list stays
in force and the error says why.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedwarden.pki.bundle import TrustBundle
from fedwarden.pki.ca import CertificateAuthority, hash_for, utcnow
from fedwarden.pki.errors import CertificateProblem, InvalidInputError
from fedwarden.pki.files import crl_blocks, read_bytes, write_atomic

DEFAULT_CRL_VALIDITY = dt.timedelta(days=7)

REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "ca-compromise": x509.ReasonFlags.ca_compromise,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "privilege-withdrawn": x509.ReasonFlags.privilege_withdrawn,
}
"""The reasons fedwarden writes, by their command-line names (RFC 5280 section 5.3.1)."""


def parse_reason(name: str | x509.ReasonFlags) -> x509.ReasonFlags:
    if isinstance(name, x509.ReasonFlags):
        return name
    try:
        return REASONS[name]
    except KeyError:
        raise InvalidInputError(
            "invalid-reason",
            f"unknown revocation reason {name!r}; use one of {', '.join(REASONS)}",
        ) from None


def reason_name(flag: x509.ReasonFlags | None) -> str:
    if flag is None:
        return "unspecified"
    return flag.name.replace("_", "-")


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate: its serial, when and why, and the CA that revoked it."""

    serial: int
    revoked_at: dt.datetime
    reason: str
    issuer: str

    def describe(self) -> str:
        return (
            f"serial {self.serial:x} was revoked on {self.revoked_at:%Y-%m-%d %H:%M:%S} UTC "
            f"(reason: {self.reason}) by {self.issuer!r}"
        )


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def _entry(crl: x509.CertificateRevocationList, revoked: x509.RevokedCertificate) -> RevokedEntry:
    try:
        flag: x509.ReasonFlags | None = revoked.extensions.get_extension_for_class(
            x509.CRLReason
        ).value.reason
    except x509.ExtensionNotFound:
        flag = None
    return RevokedEntry(
        revoked.serial_number,
        revoked.revocation_date_utc,
        reason_name(flag),
        crl.issuer.rfc4514_string(),
    )


class RevocationList:
    """The CRLs of a training's CAs; answers whether a certificate is revoked."""

    def __init__(
        self,
        crls: Iterable[x509.CertificateRevocationList] = (),
        *,
        trusted: TrustBundle | Iterable[x509.Certificate] | None = None,
    ) -> None:
        self.trusted = None if trusted is None else TrustBundle.of(trusted)
        self._crls: dict[x509.Name, x509.CertificateRevocationList] = {}
        for crl in crls:
            if self.trusted is not None:
                self._check_signature(crl, self.trusted)
            self._crls[crl.issuer] = crl
        self._stat: tuple[int, int, int] | None = None
        self._digest: bytes | None = None
        self._numbers_used: dict[x509.Name, int] = {}
        """CRL numbers a CA already signed (from its recorded state): the next one is above."""

    @staticmethod
    def _check_signature(crl: x509.CertificateRevocationList, trusted: TrustBundle) -> None:
        for ca in trusted:
            if ca.subject == crl.issuer and crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                return
        raise CertificateProblem(
            "crl-untrusted",
            f"the CRL issued by {crl.issuer.rfc4514_string()!r} is not signed by a CA in the "
            f"bundle ({'; '.join(trusted.subjects())})",
        )

    # --- making and storing ------------------------------------------------------------

    @classmethod
    def empty(
        cls,
        ca: CertificateAuthority,
        *,
        now: dt.datetime | None = None,
        validity: dt.timedelta = DEFAULT_CRL_VALIDITY,
    ) -> RevocationList:
        rl = cls(trusted=[ca.certificate])
        rl._sign(ca, [], now=now, validity=validity)
        return rl

    @classmethod
    def from_pem(
        cls,
        data: bytes,
        *,
        trusted: TrustBundle | Iterable[x509.Certificate] | None = None,
        source: str = "CRL",
    ) -> RevocationList:
        blocks = crl_blocks(data)
        crls: list[x509.CertificateRevocationList] = []
        try:
            if blocks:
                crls = [x509.load_pem_x509_crl(block) for block in blocks]
            elif data.strip():
                crls = [x509.load_der_x509_crl(data)]
        except ValueError as exc:
            raise InvalidInputError("bad-pem", f"{source}: a CRL cannot be read ({exc})") from exc
        if not crls and data.strip():
            raise InvalidInputError("bad-pem", f"{source}: no X509 CRL block found")
        rl = cls(crls, trusted=trusted)
        rl._digest = hashlib.sha256(data).digest()
        return rl

    @classmethod
    def load(
        cls, path: Path | str, *, trusted: TrustBundle | Iterable[x509.Certificate] | None = None
    ) -> RevocationList:
        path = Path(path)
        data = read_bytes(path, "CRL file")
        rl = cls.from_pem(data, trusted=trusted, source=str(path))
        st = os.stat(path)
        rl._stat = (st.st_mtime_ns, st.st_size, st.st_ino)
        return rl

    def to_pem(self) -> bytes:
        return b"".join(crl.public_bytes(serialization.Encoding.PEM) for crl in self._crls.values())

    def save(self, path: Path | str) -> Path:
        data = self.to_pem()
        written = write_atomic(path, data, 0o644)
        st = os.stat(written)
        self._stat = (st.st_mtime_ns, st.st_size, st.st_ino)
        self._digest = hashlib.sha256(data).digest()
        return written

    # --- revoking ----------------------------------------------------------------------

    def revoke(
        self,
        serial: int | x509.Certificate,
        reason: str | x509.ReasonFlags = "unspecified",
        *,
        ca: CertificateAuthority,
        now: dt.datetime | None = None,
        validity: dt.timedelta = DEFAULT_CRL_VALIDITY,
    ) -> RevokedEntry:
        """Revoke ``serial`` (or a certificate of ``ca``) and re-sign ``ca``'s CRL.

        Revoking a serial twice keeps the first revocation (its date and reason).
        """
        flag = parse_reason(reason)
        if isinstance(serial, x509.Certificate):
            if serial.issuer != ca.certificate.subject:
                raise InvalidInputError(
                    "wrong-issuer",
                    f"the certificate was issued by {serial.issuer.rfc4514_string()!r}, "
                    f"not by this CA ({ca.subject!r}); revoke it with its own CA",
                )
            serial = serial.serial_number
        current = self._crls.get(ca.certificate.subject)
        revoked = list(current) if current is not None else []
        for entry in revoked:
            if entry.serial_number == serial:
                assert current is not None
                return _entry(current, entry)
        when = (now or utcnow()).astimezone(dt.UTC).replace(microsecond=0)
        builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        if flag is not x509.ReasonFlags.unspecified:
            builder = builder.add_extension(x509.CRLReason(flag), critical=False)
        revoked.append(builder.build())
        crl = self._sign(ca, revoked, now=when, validity=validity)
        signed = crl.get_revoked_certificate_by_serial_number(serial)
        assert signed is not None
        return _entry(crl, signed)

    def refresh(
        self,
        ca: CertificateAuthority,
        *,
        now: dt.datetime | None = None,
        validity: dt.timedelta = DEFAULT_CRL_VALIDITY,
    ) -> None:
        """Re-sign ``ca``'s CRL with a new nextUpdate (the operator does this periodically)."""
        current = self._crls.get(ca.certificate.subject)
        self._sign(ca, list(current) if current is not None else [], now=now, validity=validity)

    def state(self) -> dict[str, Any]:
        """What must never go back, per CA (by subject): the CRL number and every revocation.
        JSON-serialisable; the CA keeps it beside its key (see the module docstring)."""
        return {
            crl.issuer.rfc4514_string(): {
                "crl_number": _crl_number(crl),
                "revoked": [
                    {
                        "serial": f"{entry.serial:x}",
                        "revoked_at": entry.revoked_at.isoformat(),
                        "reason": entry.reason,
                    }
                    for entry in sorted(
                        (_entry(crl, revoked) for revoked in crl), key=lambda e: e.serial
                    )
                ],
            }
            for crl in self._crls.values()
        }

    def restore(
        self,
        state: Mapping[str, Any],
        ca: CertificateAuthority,
        *,
        now: dt.datetime | None = None,
        validity: dt.timedelta = DEFAULT_CRL_VALIDITY,
    ) -> bool:
        """Bring ``ca``'s CRL up to its recorded ``state`` (from :meth:`state`): re-signed with
        every recorded revocation it lacks and a number above the recorded one, when the CRL in
        hand is missing, older or incomplete. True when it was re-signed."""
        subject = ca.certificate.subject
        recorded = state.get(subject.rfc4514_string())
        if not recorded:
            return False
        used = int(recorded.get("crl_number") or 0)
        self._numbers_used[subject] = max(self._numbers_used.get(subject, 0), used)
        current = self._crls.get(subject)
        revoked = list(current) if current is not None else []
        present = {entry.serial_number for entry in revoked}
        missing = [r for r in recorded.get("revoked") or () if int(r["serial"], 16) not in present]
        if not missing and current is not None and _crl_number(current) >= used:
            return False
        for record in missing:
            builder = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(record["serial"], 16))
                .revocation_date(dt.datetime.fromisoformat(record["revoked_at"]))
            )
            flag = parse_reason(record.get("reason") or "unspecified")
            if flag is not x509.ReasonFlags.unspecified:
                builder = builder.add_extension(x509.CRLReason(flag), critical=False)
            revoked.append(builder.build())
        self._sign(ca, revoked, now=now, validity=validity)
        return True

    def drop_issuer(self, issuer: x509.Name) -> None:
        """Forget the CRL of a CA that has left the trust bundle (the end of a rotation)."""
        self._crls.pop(issuer, None)

    def _sign(
        self,
        ca: CertificateAuthority,
        revoked: list[x509.RevokedCertificate],
        *,
        now: dt.datetime | None,
        validity: dt.timedelta,
    ) -> x509.CertificateRevocationList:
        when = (now or utcnow()).astimezone(dt.UTC).replace(microsecond=0)
        current = self._crls.get(ca.certificate.subject)
        in_hand = _crl_number(current) if current is not None else 0
        number = max(in_hand, self._numbers_used.get(ca.certificate.subject, 0)) + 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.certificate.subject)
            .last_update(when)
            .next_update(when + validity)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                critical=False,
            )
        )
        for entry in revoked:
            builder = builder.add_revoked_certificate(entry)
        crl = builder.sign(ca.key, hash_for(ca.key))
        self._crls[ca.certificate.subject] = crl
        if self.trusted is None:
            self.trusted = TrustBundle([ca.certificate])
        elif ca.certificate not in self.trusted:
            self.trusted = self.trusted.with_ca(ca.certificate)
        return crl

    # --- checking ----------------------------------------------------------------------

    @property
    def crls(self) -> list[x509.CertificateRevocationList]:
        return list(self._crls.values())

    def crl_for(self, issuer: x509.Name) -> x509.CertificateRevocationList | None:
        return self._crls.get(issuer)

    def is_revoked(self, cert: x509.Certificate) -> RevokedEntry | None:
        """The revocation of ``cert`` by its issuer's CRL, or ``None`` when it is not revoked."""
        crl = self._crls.get(cert.issuer)
        if crl is None:
            return None
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        return None if entry is None else _entry(crl, entry)

    def entries(self) -> list[RevokedEntry]:
        return [_entry(crl, revoked) for crl in self._crls.values() for revoked in crl]

    def next_update(self, issuer: x509.Name) -> dt.datetime | None:
        crl = self._crls.get(issuer)
        return None if crl is None else crl.next_update_utc

    def stale(self, now: dt.datetime | None = None) -> list[str]:
        """A sentence for each CRL whose nextUpdate has passed."""
        now = now or utcnow()
        out: list[str] = []
        for crl in self._crls.values():
            next_update = crl.next_update_utc
            if next_update is not None and now > next_update:
                out.append(
                    f"the CRL of {crl.issuer.rfc4514_string()!r} was due to be replaced on "
                    f"{next_update:%Y-%m-%d %H:%M:%S} UTC (nextUpdate)"
                )
        return out

    def reload_if_changed(self, path: Path | str) -> bool:
        """Re-read ``path`` if it changed (stat, then content hash); True when the list changed.

        Raises (and keeps the current list) when the new file cannot be read, is not signed by
        a trusted CA, or goes back to an older CRL number.
        """
        path = Path(path)
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:
            raise InvalidInputError("missing-file", f"CRL file {path} does not exist") from exc
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature == self._stat:
            return False
        data = read_bytes(path, "CRL file")
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            self._stat = signature
            return False
        fresh = RevocationList.from_pem(data, trusted=self.trusted, source=str(path))
        for issuer, crl in self._crls.items():
            new = fresh._crls.get(issuer)
            if new is not None and _crl_number(new) < _crl_number(crl):
                raise CertificateProblem(
                    "crl-rollback",
                    f"{path}: the CRL of {issuer.rfc4514_string()!r} has number "
                    f"{_crl_number(new)}, older than the one in force ({_crl_number(crl)}); "
                    "keeping the newer list",
                )
        self._crls = fresh._crls
        self._stat, self._digest = signature, digest
        return True
