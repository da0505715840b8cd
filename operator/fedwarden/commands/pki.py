"""``fedwarden pki``: a training's CA and certificates, CSR enrolment, revocation, diagnosis.

In-cluster sites get a key and certificate from the CA (``issue``); remote sites make their key
and a CSR (``csr``), send the CSR, and get back a certificate signed under the policy (``sign``):
their key never leaves the site. ``check`` names what is wrong with a certificate or a live
endpoint, each problem with a code and a one-line fix. See docs/pki.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from cryptography import x509
from rich.markup import escape

from fedwarden.commands._common import (
    emit_json,
    json_option,
    parse_host_port,
    stdout_console,
)
from fedwarden.pki import (
    DEFAULT_TRUST_DOMAIN,
    KEY_ALGORITHMS,
    REASONS,
    PKIError,
    Problem,
    Purpose,
    RevocationList,
    SigningPolicy,
    TrainingPKI,
    TrainingRef,
    TrustBundle,
    create_csr,
    diagnose,
    diagnose_endpoint,
    load_certificate,
    read_certificate,
    read_private_key,
    renewal_time,
    write_certificates,
    write_private_key,
)
from fedwarden.pki.files import key_file_mode_problem, read_bytes, write_atomic
from fedwarden.pki.keys import KeyAlgorithm

F = TypeVar("F", bound=Callable[..., Any])


class InputError(click.ClickException):
    """A user mistake (missing file, bad PEM, a refused request): message, exit code 2."""

    exit_code = 2


@contextmanager
def pki_errors() -> Iterator[None]:
    """Report the PKI's refusals and unreadable input as clean errors, never tracebacks."""
    try:
        yield
    except PKIError as exc:
        raise InputError(f"{exc.message} [{exc.reason}]") from exc
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    except OSError as exc:
        raise InputError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from exc


def _days(value: int) -> dt.timedelta:
    return dt.timedelta(days=value)


def _cert_summary(cert: x509.Certificate) -> dict[str, str]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:x}",
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "renewal_time": renewal_time(cert).isoformat(),
    }


def _say(as_json: bool, payload: dict[str, Any], lines: list[str]) -> None:
    if as_json:
        emit_json(payload)
        return
    for line in lines:
        stdout_console.print(line, highlight=False, soft_wrap=True, markup=False)


ca_dir_option: Callable[[F], F] = click.option(
    "--ca-dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The training's CA directory (made by `fedwarden pki init-ca`).",
)


@click.group(name="pki")
def pki() -> None:
    """A training's CA and certificates; CSR enrolment; revocation; `check` names TLS problems."""


@pki.command("init-ca")
@click.option("--training", required=True, help="The FederatedTraining's name.")
@click.option("--namespace", required=True, help="Its Kubernetes namespace.")
@click.option(
    "--trust-domain",
    default=DEFAULT_TRUST_DOMAIN,
    show_default=True,
    help="The SPIFFE trust domain of the identities.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="The CA directory to create (mode 0700).",
)
@click.option("--days", default=365, show_default=True, type=click.IntRange(1), help="CA lifetime.")
@click.option("--force", is_flag=True, help="Replace an existing CA (every certificate dies).")
@json_option
def init_ca(
    training: str,
    namespace: str,
    trust_domain: str,
    out: Path,
    days: int,
    force: bool,
    as_json: bool,
) -> None:
    """Create the CA of a training: ECDSA P-256, self-signed, plus an empty CRL."""
    with pki_errors():
        ref = TrainingRef(namespace, training, trust_domain)
        store = TrainingPKI.init(out, ref, duration=_days(days), overwrite=force)
        ca = store.ca
        summary = _cert_summary(ca.certificate)
    _say(
        as_json,
        {"ca_dir": str(out), "training": ref.uri, "ca": summary},
        [
            f"CA for training {ref} created in {out}/",
            f"  subject   {summary['subject']}",
            f"  identity  {ref.uri}",
            f"  valid to  {summary['not_after']}",
            "  files     ca.crt, ca.key (0600), ca-bundle.crt, crl.pem",
        ],
    )


@pki.command("server")
@ca_dir_option
@click.option("--dns", "dns_names", multiple=True, help="A DNS name of the aggregator (repeat).")
@click.option("--ip", "ips", multiple=True, help="An IP address of the aggregator (repeat).")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory to write tls.crt, tls.key (0600) and ca.crt into.",
)
@click.option("--days", default=90, show_default=True, type=click.IntRange(1))
@json_option
def server(
    ca_dir: Path,
    dns_names: tuple[str, ...],
    ips: tuple[str, ...],
    out: Path,
    days: int,
    as_json: bool,
) -> None:
    """Issue the aggregator's key and certificate (EKU serverAuth) for its DNS names and IPs."""
    if not dns_names and not ips:
        raise click.UsageError("give at least one --dns NAME or --ip ADDRESS")
    with pki_errors():
        store = TrainingPKI(ca_dir)
        issued = store.issue_server(list(dns_names), list(ips), duration=_days(days))
        store.write_tls_directory(out, issued)
        summary = _cert_summary(issued.certificate)
    names = ", ".join([*dns_names, *ips])
    _say(
        as_json,
        {"out": str(out), "names": [*dns_names, *ips], "certificate": summary},
        [
            f"server certificate for {names} written to {out}/ (tls.crt, tls.key, ca.crt)",
            f"  serial {summary['serial']}, valid to {summary['not_after']}, "
            f"renew after {summary['renewal_time']}",
        ],
    )


@pki.command("issue")
@ca_dir_option
@click.option("--client", required=True, help="The client's name (its FLClient).")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory to write tls.crt, tls.key (0600) and ca.crt into.",
)
@click.option("--days", default=90, show_default=True, type=click.IntRange(1))
@json_option
def issue(ca_dir: Path, client: str, out: Path, days: int, as_json: bool) -> None:
    """Issue a client's key and certificate (in-cluster sites: the CA makes the key)."""
    with pki_errors():
        store = TrainingPKI(ca_dir)
        issued = store.issue_client(client, duration=_days(days))
        store.write_tls_directory(out, issued)
        identity = store.training.client(client).uri
        summary = _cert_summary(issued.certificate)
    _say(
        as_json,
        {"out": str(out), "identity": identity, "certificate": summary},
        [
            f"client certificate for {identity} written to {out}/ (tls.crt, tls.key, ca.crt)",
            f"  serial {summary['serial']}, valid to {summary['not_after']}, "
            f"renew after {summary['renewal_time']}",
        ],
    )


@pki.command("csr")
@click.option("--client", required=True, help="This site's client name (its FLClient).")
@click.option("--training", required=True, help="The training to join.")
@click.option("--namespace", required=True, help="The training's namespace.")
@click.option("--trust-domain", default=DEFAULT_TRUST_DOMAIN, show_default=True)
@click.option(
    "--key-algorithm",
    type=click.Choice(KEY_ALGORITHMS),
    default="ecdsa-p256",
    show_default=True,
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory to write tls.key (0600, stays here) and tls.csr (send it to the CA) into.",
)
@click.option("--force", is_flag=True, help="Replace an existing key in --out.")
@json_option
def csr(
    client: str,
    training: str,
    namespace: str,
    trust_domain: str,
    key_algorithm: str,
    out: Path,
    force: bool,
    as_json: bool,
) -> None:
    """Make this site's key and a CSR (remote sites: the key never leaves this machine)."""
    with pki_errors():
        identity = TrainingRef(namespace, training, trust_domain).client(client)
        key_path, csr_path = out / "tls.key", out / "tls.csr"
        if key_path.exists() and not force:
            raise InputError(
                f"{key_path} already exists; it may be this site's enrolled key "
                "(use --force to replace it, which makes its certificate useless)"
            )
        key_pem, csr_pem = create_csr(identity, algorithm=cast(KeyAlgorithm, key_algorithm))
        out.mkdir(parents=True, exist_ok=True)
        write_private_key(key_path, key_pem)
        write_atomic(csr_path, csr_pem, 0o644)
    _say(
        as_json,
        {"key": str(key_path), "csr": str(csr_path), "identity": identity.uri},
        [
            f"key written to {key_path} (0600; it never leaves this site)",
            f"CSR for {identity.uri} written to {csr_path}",
            "send the CSR to the training's operator; put the signed certificate in "
            f"{out / 'tls.crt'} and the CA bundle in {out / 'ca.crt'}",
        ],
    )


@pki.command("sign")
@ca_dir_option
@click.option(
    "--csr",
    "csr_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The site's CSR.",
)
@click.option("--client", required=True, help="The client the CSR must name.")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the signed certificate.",
)
@click.option(
    "--days", default=90, show_default=True, type=click.IntRange(1), help="Lifetime (CA decides)."
)
@click.option(
    "--max-days",
    default=90,
    show_default=True,
    type=click.IntRange(1),
    help="The policy's longest lifetime.",
)
@json_option
def sign(
    ca_dir: Path, csr_file: Path, client: str, out: Path, days: int, max_days: int, as_json: bool
) -> None:
    """Sign a remote site's CSR, enforcing the policy (name, key, no CA bit, lifetime)."""
    with pki_errors():
        store = TrainingPKI(ca_dir)
        policy = SigningPolicy(
            max_duration=_days(max_days), default_duration=_days(min(90, max_days))
        )
        cert_pem = store.sign(
            read_bytes(csr_file, "CSR file"), client, policy=policy, duration=_days(days)
        )
        write_certificates(out, cert_pem)
        summary = _cert_summary(load_certificate(cert_pem))
    _say(
        as_json,
        {"out": str(out), "certificate": summary, "bundle": str(store.dir.bundle)},
        [
            f"certificate for client {client!r} written to {out}",
            f"  serial {summary['serial']}, valid to {summary['not_after']}, "
            f"renew after {summary['renewal_time']}",
            f"send it back with the CA bundle {store.dir.bundle} (the site's tls.crt and ca.crt)",
        ],
    )


@pki.command("revoke")
@ca_dir_option
@click.option(
    "--cert",
    "cert_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The certificate to revoke.",
)
@click.option("--client", help="Revoke the certificate recorded for this client instead.")
@click.option(
    "--reason", type=click.Choice(list(REASONS)), default="unspecified", show_default=True
)
@json_option
def revoke(
    ca_dir: Path, cert_file: Path | None, client: str | None, reason: str, as_json: bool
) -> None:
    """Revoke a certificate: add it to the CA's CRL and re-sign crl.pem."""
    if (cert_file is None) == (client is None):
        raise click.UsageError("give exactly one of --cert FILE or --client NAME")
    with pki_errors():
        store = TrainingPKI(ca_dir)
        if cert_file is not None:
            entry = store.revoke(read_certificate(cert_file), reason)
        else:
            assert client is not None
            entry = store.revoke_client(client, reason)
    _say(
        as_json,
        {
            "serial": f"{entry.serial:x}",
            "revoked_at": entry.revoked_at.isoformat(),
            "reason": entry.reason,
            "crl": str(store.dir.crl),
        },
        [f"revoked: {entry.describe()}", f"{store.dir.crl} updated; aggregators reload it"],
    )


@pki.command("refresh-crl")
@ca_dir_option
@click.option(
    "--days", default=7, show_default=True, type=click.IntRange(1), help="Until nextUpdate."
)
@json_option
def refresh_crl(ca_dir: Path, days: int, as_json: bool) -> None:
    """Re-sign crl.pem with a new nextUpdate (the operator does this before it falls due)."""
    with pki_errors():
        store = TrainingPKI(ca_dir)
        revocations = store.refresh_crl(validity=_days(days))
        due = [c.next_update_utc for c in revocations.crls if c.next_update_utc is not None]
    next_update = min(due).isoformat() if due else None
    _say(
        as_json,
        {"crl": str(store.dir.crl), "next_update": next_update},
        [f"{store.dir.crl} re-signed; next update due {next_update}"],
    )


@pki.command("rotate-ca")
@ca_dir_option
@click.option("--finish", is_flag=True, help="End the rotation: drop the previous CA.")
@click.option(
    "--days", default=365, show_default=True, type=click.IntRange(1), help="New CA lifetime."
)
@json_option
def rotate_ca(ca_dir: Path, finish: bool, days: int, as_json: bool) -> None:
    """Rotate the CA in two steps: start (bundle = new + old CA), then --finish."""
    with pki_errors():
        store = TrainingPKI(ca_dir)
        if finish:
            store.finish_rotation()
            _say(
                as_json,
                {"bundle": store.bundle().subjects(), "finished": True},
                [f"rotation finished; {store.dir.bundle} holds {store.ca.subject} only"],
            )
            return
        new = store.start_rotation(duration=_days(days))
        subjects = store.bundle().subjects()
    _say(
        as_json,
        {"bundle": subjects, "finished": False, "ca": new.subject},
        [
            f"new CA {new.subject}; the previous CA is kept in {store.dir.previous}/",
            f"{store.dir.bundle} holds both: hand it to every party as ca.crt, reissue the "
            "server and client certificates, then run `fedwarden pki rotate-ca --finish`",
        ],
    )


def _parse_endpoint(value: str) -> tuple[str, int]:
    try:
        return parse_host_port(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--endpoint") from exc


@pki.command("check")
@click.option(
    "--cert",
    "cert_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The certificate (with --endpoint: the client certificate to present).",
)
@click.option(
    "--key",
    "key_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Its private key (checked to match, and to be readable by its owner only).",
)
@click.option(
    "--ca", "ca_file", type=click.Path(path_type=Path, dir_okay=False), help="The CA bundle."
)
@click.option(
    "--crl",
    "crl_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A CRL file (crl.pem) to check revocation against [default: the crl.pem beside "
    "--ca, if there is one].",
)
@click.option(
    "--name", help="The name expected: the server's DNS name or IP, or the client's name."
)
@click.option(
    "--purpose",
    type=click.Choice(["client", "server"]),
    help="What --cert is for (default: client). With --endpoint, --cert is the client "
    "certificate and the server's certificate is checked for server use.",
)
@click.option("--endpoint", help="HOST:PORT of a live TLS endpoint to connect to.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for the endpoint.")
@json_option
def check(
    cert_file: Path | None,
    key_file: Path | None,
    ca_file: Path | None,
    crl_file: Path | None,
    name: str | None,
    purpose: str | None,
    endpoint: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Name what is wrong with a certificate, its key, or a live endpoint; exit 1 if anything is.

    Each problem is printed with its code and a one-line fix (codes: docs/pki.md).
    """
    if endpoint is None and cert_file is None:
        raise click.UsageError("give --cert FILE, or --endpoint HOST:PORT with --ca FILE")
    if endpoint is not None and ca_file is None:
        raise click.UsageError("--endpoint needs --ca FILE (the bundle to verify the server with)")
    payload: dict[str, Any] = {}
    problems: list[Problem] = []
    lines: list[str] = []
    if crl_file is None and ca_file is not None and (ca_file.parent / "crl.pem").exists():
        crl_file = ca_file.parent / "crl.pem"  # the layout of `fedwarden pki init-ca`
    payload["revocation"] = {"checked": crl_file is not None, "crl": _str_or_none(crl_file)}
    if crl_file is not None:
        lines.append(f"revocation checked against {crl_file}")
    else:
        lines.append("revocation NOT checked: no --crl, and no crl.pem beside the CA bundle")
    with pki_errors():
        bundle = None if ca_file is None else TrustBundle.load(ca_file)
        revocations = (
            None
            if crl_file is None
            else RevocationList.from_pem(read_bytes(crl_file, "CRL file"), source=str(crl_file))
        )
        if cert_file is not None:
            cert = read_certificate(cert_file)
            key = None if key_file is None else read_private_key(key_file)
            cert_purpose = purpose or "client"
            if endpoint is not None:
                cert_purpose = "client"
            found = diagnose(
                cert,
                key,
                bundle,
                revocations,
                expected_name=None if endpoint is not None else name,
                purpose=cast(Purpose, cert_purpose),
            )
            if key_file is not None:
                loose = key_file_mode_problem(key_file)
                if loose is not None:
                    found.append(Problem("key-permissions", loose))
            summary = _cert_summary(cert)
            payload["certificate"] = {**summary, "file": str(cert_file), "purpose": cert_purpose}
            lines.append(
                f"certificate {summary['subject']} ({cert_file}; {cert_purpose}), issued by "
                f"{summary['issuer']}, valid to {summary['not_after']}"
            )
            problems += found
        elif key_file is not None:
            raise click.UsageError("--key needs --cert")
        if endpoint is not None:
            host, port = _parse_endpoint(endpoint)
            assert bundle is not None
            report = diagnose_endpoint(
                host,
                port,
                bundle,
                client_cert=cert_file,
                client_key=key_file,
                server_name=name,
                crl=revocations,
                timeout=timeout,
            )
            payload["endpoint"] = report.to_dict()
            if report.handshake:
                lines.append(
                    f"endpoint {host}:{port}: handshake ok ({report.tls_version}, {report.cipher})"
                )
            else:
                lines.append(f"endpoint {host}:{port}: handshake FAILED")
            seen = {(p.code, p.message) for p in problems}
            problems += [p for p in report.problems if (p.code, p.message) not in seen]
    payload["ok"] = not problems
    payload["problems"] = [p.to_dict() for p in problems]
    if as_json:
        emit_json(payload)
    else:
        for line in lines:
            stdout_console.print(line, highlight=False, soft_wrap=True, markup=False)
        if not problems:
            unchecked = "" if crl_file is not None else " (revocation not checked)"
            stdout_console.print(
                f"[green]OK[/green]: no problems found{unchecked}", highlight=False
            )
        for p in problems:
            stdout_console.print(
                f"[red]✗ {escape(p.code)}[/red]: {escape(p.message)}",
                highlight=False,
                soft_wrap=True,
            )
            if p.hint:
                stdout_console.print(
                    f"    fix: {p.hint}", highlight=False, soft_wrap=True, markup=False
                )
    if problems:
        click.get_current_context().exit(1)


def _str_or_none(path: Path | None) -> str | None:
    return None if path is None else str(path)
