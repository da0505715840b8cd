"""Fixtures for the PKI tests: fedwarden's own CAs, and the openssl command (see pki_openssl)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pki_openssl import OPENSSL, OpenSSL

from fedwarden.pki import CertificateAuthority, TrainingRef


@pytest.fixture
def openssl(tmp_path: Path) -> OpenSSL:
    if OPENSSL is None:
        pytest.skip("the openssl command is not installed")
    return OpenSSL(tmp_path / "openssl")


@pytest.fixture
def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture
def training() -> TrainingRef:
    return TrainingRef("team-a", "mnist")


@pytest.fixture
def ca(training: TrainingRef, now: dt.datetime) -> CertificateAuthority:
    return CertificateAuthority.create(training, now=now)


@pytest.fixture
def other_ca(now: dt.datetime) -> CertificateAuthority:
    return CertificateAuthority.create(TrainingRef("team-b", "cifar"), now=now)
