"""The PKI's exceptions.

Every error the PKI raises on purpose is a :class:`PKIError` with a machine-readable ``reason``
(a short kebab-case code, the same vocabulary as :mod:`fedwarden.pki.diagnose`) and a message a
human can act on. Callers catch :class:`PKIError`, or a subclass when they act on the kind:

- :class:`InvalidInputError` — unreadable input (not PEM, not a certificate, a bad name); also a
  :class:`ValueError`, so the command line reports it as a user mistake.
- :class:`PolicyViolationError` — the CA refuses to sign a CSR; ``violations`` lists every
  broken rule, ``reason`` is the first.
- :class:`CertificateProblem` — a certificate fails verification or authorisation (expired,
  unknown issuer, revoked, foreign identity, ...).
- :class:`SignatureError` — a signed payload does not verify.
"""

from __future__ import annotations

from collections.abc import Sequence


class PKIError(Exception):
    """Base of every error the PKI raises on purpose."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class InvalidInputError(PKIError, ValueError):
    """Input that cannot be read: not PEM, not a certificate or key, a malformed name."""


class PolicyViolationError(PKIError):
    """The CA refuses a certificate signing request; each broken rule is in ``violations``."""

    def __init__(self, violations: Sequence[tuple[str, str]]) -> None:
        if not violations:
            raise ValueError("a PolicyViolationError needs at least one violation")
        self.violations: list[tuple[str, str]] = list(violations)
        reason, _ = self.violations[0]
        message = "CSR refused: " + "; ".join(text for _, text in self.violations)
        super().__init__(reason, message)


class CertificateProblem(PKIError):
    """A certificate failed verification or authorisation, for the stated ``reason``."""


class SignatureError(PKIError):
    """A payload signature does not verify with the signer's certificate."""
