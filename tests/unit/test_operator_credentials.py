"""The operator's and the aggregator's in-cluster credentials (fedwarden.k8s.credentials) and
the operator's login handler, without a cluster."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from fedwarden.k8s import credentials
from fedwarden.k8s.credentials import NoServiceAccount, ServiceAccount

ENV = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}


@pytest.fixture
def account_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text("token-1\n")
    (directory / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (directory / "namespace").write_text("team-a")
    return directory


def test_read_gives_server_token_ca_and_namespace(account_dir: Path) -> None:
    assert ServiceAccount.present(account_dir)
    account = ServiceAccount.read(account_dir, ENV)
    assert account.server == "https://10.0.0.1:443"
    assert account.token == "token-1"
    assert account.ca_path == account_dir / "ca.crt"
    assert account.namespace == "team-a"
    ipv6 = ServiceAccount.read(account_dir, {**ENV, "KUBERNETES_SERVICE_HOST": "fd00::1"})
    assert ipv6.server == "https://[fd00::1]:443"
    (account_dir / "namespace").unlink()
    assert ServiceAccount.read(account_dir, ENV).namespace is None


def test_what_is_missing_is_named(account_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(NoServiceAccount, match="KUBERNETES_SERVICE_HOST"):
        ServiceAccount.read(account_dir, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert not ServiceAccount.present(tmp_path / "none")
    with pytest.raises(NoServiceAccount, match=r"no service account token at .*none/token"):
        ServiceAccount.read(tmp_path / "none", ENV)
    (account_dir / "ca.crt").write_text("")
    with pytest.raises(NoServiceAccount, match="no CA certificate"):
        ServiceAccount.read(account_dir, ENV)
    (account_dir / "token").write_text("")
    with pytest.raises(NoServiceAccount, match="is empty"):
        ServiceAccount.read(account_dir, ENV)


def test_configuration_reads_the_rotated_token_again(
    account_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(credentials.time, "monotonic", lambda: clock[0])
    configuration = ServiceAccount.read(account_dir, ENV).configuration()
    assert configuration.host == "https://10.0.0.1:443"
    assert configuration.ssl_ca_cert == str(account_dir / "ca.crt")
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer token-1"
    (account_dir / "token").write_text("token-2")
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer token-1"
    clock[0] += credentials.TOKEN_REFRESH_SECONDS
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer token-2"
    # a failed read keeps the token it has
    (account_dir / "token").unlink()
    clock[0] += credentials.TOKEN_REFRESH_SECONDS
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer token-2"


def _login(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Any:
    import kopf

    from fedwarden.controller import handlers

    monkeypatch.setattr(handlers, "SETTINGS", dataclasses.replace(handlers.SETTINGS, **settings))
    return handlers.login(settings=kopf.OperatorSettings(), logger=None)


def test_the_login_uses_the_given_service_account_dir(
    account_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    info = _login(monkeypatch, kubeconfig=None, service_account_dir=account_dir)
    assert info.server == "https://10.0.0.1:443"
    assert info.token == "token-1"
    assert info.ca_path == str(account_dir / "ca.crt")
    assert info.default_namespace == "team-a"


def test_the_login_prefers_kubeconfig_then_falls_back_to_it(
    account_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: u, user: {token: from-kubeconfig}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    # KUBECONFIG set: it wins over a service account
    info = _login(monkeypatch, kubeconfig=str(kubeconfig), service_account_dir=account_dir)
    assert (info.server, info.token) == ("https://127.0.0.1:6443", "from-kubeconfig")
    # no token in the directory (outside a pod): the kubeconfig kopf finds
    info = _login(monkeypatch, kubeconfig=None, service_account_dir=tmp_path / "none")
    assert info.token == "from-kubeconfig"
