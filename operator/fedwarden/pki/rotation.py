"""Certificate lifetimes and when to renew, as cert-manager computes them.

A certificate is renewed ``renew_before`` ahead of its notAfter. Unset (or not shorter than the
certificate's actual lifetime), ``renew_before`` is one third of that lifetime, so renewal comes
at two thirds of the way through, cert-manager's default (its ``RenewalTime``); the renewal time
is truncated to the second. Durations are written as in Kubernetes and cert-manager, in Go's
duration syntax (``2160h``, ``1h30m``, ``90m``), which :func:`parse_duration` reads.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from cryptography import x509

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")

MINIMUM_DURATION = dt.timedelta(hours=1)
"""cert-manager refuses certificates shorter than an hour; so does fedwarden's policy."""
MINIMUM_RENEW_BEFORE = dt.timedelta(minutes=5)


def parse_duration(text: str) -> dt.timedelta:
    """Parse a Go duration (``"2160h"``, ``"1h30m"``, ``"45m"``) into a positive timedelta."""
    value = text.strip()
    if value == "0":
        return dt.timedelta(0)
    position, seconds = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if not value or position != len(value):
        raise ValueError(
            f"{text!r} is not a duration; write it as Go does, e.g. '2160h', '1h30m' or '45m' "
            "(units h, m, s, ms)"
        )
    return dt.timedelta(seconds=seconds)


def format_duration(value: dt.timedelta) -> str:
    """The Go spelling of ``value`` (``2160h0m0s``), as Kubernetes prints durations."""
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s"


def describe_duration(value: dt.timedelta) -> str:
    """``90 days`` for whole days, the Go spelling otherwise."""
    if value.total_seconds() % 86400 == 0 and value.days > 0:
        return f"{value.days} day{'s' if value.days != 1 else ''}"
    return format_duration(value)


@dataclass(frozen=True)
class RenewalPolicy:
    """How long certificates live and how long before expiry they are renewed."""

    duration: dt.timedelta = dt.timedelta(days=90)
    renew_before: dt.timedelta | None = None
    """``None``: one third of the certificate's lifetime (cert-manager's default)."""

    def __post_init__(self) -> None:
        if self.duration < MINIMUM_DURATION:
            raise ValueError(
                f"certificate duration {format_duration(self.duration)} is shorter than the "
                f"minimum of {format_duration(MINIMUM_DURATION)}"
            )
        if self.renew_before is not None:
            if self.renew_before < MINIMUM_RENEW_BEFORE:
                raise ValueError(
                    f"renew-before {format_duration(self.renew_before)} is shorter than the "
                    f"minimum of {format_duration(MINIMUM_RENEW_BEFORE)}"
                )
            if self.renew_before >= self.duration:
                raise ValueError(
                    f"renew-before {format_duration(self.renew_before)} must be shorter than the "
                    f"duration {format_duration(self.duration)}"
                )

    @classmethod
    def parse(cls, duration: str, renew_before: str | None = None) -> RenewalPolicy:
        return cls(
            parse_duration(duration), None if renew_before is None else parse_duration(renew_before)
        )

    def renewal_time(self, cert: x509.Certificate) -> dt.datetime:
        return renewal_time(cert, self.renew_before)

    def needs_renewal(self, cert: x509.Certificate, now: dt.datetime | None = None) -> bool:
        return needs_renewal(cert, now, self.renew_before)


def renewal_time(cert: x509.Certificate, renew_before: dt.timedelta | None = None) -> dt.datetime:
    """When ``cert`` should be renewed: ``renew_before`` ahead of notAfter, by default at 2/3."""
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    lifetime = not_after - not_before
    if renew_before is None or not dt.timedelta(0) < renew_before < lifetime:
        renew_before = lifetime / 3
    return (not_after - renew_before).replace(microsecond=0)


def needs_renewal(
    cert: x509.Certificate,
    now: dt.datetime | None = None,
    renew_before: dt.timedelta | None = None,
) -> bool:
    now = dt.datetime.now(dt.UTC) if now is None else now
    return now >= renewal_time(cert, renew_before)
