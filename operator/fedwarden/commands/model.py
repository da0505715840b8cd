"""``fedwarden model``: the trained model and its signed provenance, out of a cluster; checked.

``verify`` checks an export (``model.safetensors`` + ``provenance.json``) against the training's
CA certificate; ``fetch`` retrieves the export of a FederatedTraining from its aggregator over
mutual TLS with the operator-issued reader identity, then verifies it. See docs/apps.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from fedwarden.commands._common import emit_json, json_option, stdout_console

EXIT_NOT_VERIFIED = 1


@click.group()
def model() -> None:
    """The trained model and its signed provenance: fetch it from a cluster, verify it."""


def _describe(summary: dict[str, Any]) -> str:
    epsilon = summary.get("epsilon")
    privacy = (
        "no differential privacy"
        if epsilon is None
        else f"ε = {epsilon:.4g}, δ = {summary.get('delta'):.3g}"
    )
    return (
        f"verified {summary['directory']}: round {summary['rounds_completed']} "
        f"({summary.get('status')}) of {summary['training']}, {summary['num_parameters']} "
        f"parameters, {privacy}; sha256 {summary['sha256']}; signed by {summary['signer']} "
        f"at {summary['signed_at']}"
    )


def verify_and_report(directory: Path, ca_pem: bytes, as_json: bool, **extra: Any) -> None:
    """Verify ``directory``; print the outcome; exit 1 with the reason when it fails."""
    from fedwarden.model import ModelVerificationError, verify_model
    from fedwarden.pki import PKIError, TrustBundle

    try:
        bundle = TrustBundle.from_pem(ca_pem, "the CA certificate")
    except PKIError as exc:
        raise click.UsageError(f"--ca: {exc.message}") from None
    try:
        verified = verify_model(directory, bundle)
    except ModelVerificationError as exc:
        if as_json:
            emit_json({"verified": False, "reason": exc.reason, "message": exc.message, **extra})
        else:
            stdout_console.print(
                f"[red]not verified[/red]: {escape(exc.message)} ({exc.reason})", soft_wrap=True
            )
        sys.exit(EXIT_NOT_VERIFIED)
    summary = {**verified.summary(), **extra}
    if as_json:
        emit_json(summary)
    else:
        stdout_console.print(escape(_describe(summary)), soft_wrap=True)


@model.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--ca",
    "ca_cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="The training's CA certificate (or bundle, PEM): the one thing trusted.",
)
@json_option
def verify(directory: Path, ca_cert: Path, as_json: bool) -> None:
    """Check an exported model against the training's CA; exit 1 with the reason otherwise.

    Checks, in order: provenance.json is a signed provenance; the signer's certificate chains
    to the CA (at the signing time) and names the training's aggregator, not a client; the
    signature over the provenance; the SHA-256 of model.safetensors; that it parses to the
    recorded layout.

    \b
    Example:
      fedwarden model verify ./digits-model --ca ca.crt
    """
    verify_and_report(directory, ca_cert.read_bytes(), as_json)
