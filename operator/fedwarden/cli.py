"""The ``fedwarden`` command. Subcommands live in :mod:`fedwarden.commands`, one module each.

A subcommand's module is imported only when that subcommand runs (click's lazy group): the
commands that train import numpy, dp-accounting and gRPC, which ``fedwarden operator`` never
uses, and a command whose extra is not installed must say which extra to install rather than
stop every other command, or itself, with a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click

from fedwarden import __version__


@dataclass(frozen=True)
class Subcommand:
    target: str
    """``"module:attribute"`` of the click command."""
    short_help: str
    """The first sentence of its help, for ``fedwarden --help`` without importing it (a test
    keeps the two equal)."""
    extra: str | None
    """The extra of ``pyproject.toml`` it needs beyond the core; None: the core is enough."""


SUBCOMMANDS: dict[str, Subcommand] = {
    "aggregator": Subcommand(
        "fedwarden.commands.aggregator:aggregator",
        "Run a training's aggregator: mutual-TLS gRPC server, rounds, checkpoints.",
        "aggregator",
    ),
    "bench": Subcommand(
        "fedwarden.commands.bench:bench",
        "Benchmarks of fedwarden side by side with Flower, in one run on the same inputs.",
        "all",
    ),
    "client": Subcommand(
        "fedwarden.commands.client:client",
        "Take part in a training: dial out to the aggregator over mutual TLS, train, sign, send.",
        "client",
    ),
    "crds": Subcommand(
        "fedwarden.commands.crds:crds",
        "Print the CRDs of FederatedTraining and FLClient (apply them with kubectl).",
        None,
    ),
    "demo": Subcommand(
        "fedwarden.commands.demo:demo",
        "Run a secure federated training between processes on 127.0.0.1, under attack.",
        "all",
    ),
    "model": Subcommand(
        "fedwarden.commands.model:model",
        "The trained model and its signed provenance: fetch it from a cluster, verify it.",
        "model",
    ),
    "operator": Subcommand(
        "fedwarden.commands.operator:operator",
        "Run the fedwarden operator: reconcile FederatedTrainings and FLClients.",
        "operator",
    ),
    "pki": Subcommand(
        "fedwarden.commands.pki:pki",
        "A training's CA and certificates; CSR enrolment; revocation; `check` names TLS problems.",
        None,
    ),
    "privacy": Subcommand(
        "fedwarden.commands.privacy:privacy",
        "Privacy calculator: ε for a noise multiplier, or the noise for a target ε.",
        "pipeline",
    ),
    "simulate": Subcommand(
        "fedwarden.commands.simulate:simulate",
        "Simulate a federated training with attackers, free riders and fedwarden's defences.",
        "tasks",
    ),
}

OPTIONAL_MODULES = frozenset(
    {
        "dp_accounting",
        "google",
        "grpc",
        "kopf",
        "kubernetes",
        "mnist1d",
        "numpy",
        "prometheus_client",
        "safetensors",
        "sklearn",
        "threadpoolctl",
    }
)
"""The top-level modules (import names: scikit-learn's is sklearn, protobuf's google) of the
packages the extras bring and fedwarden imports; a test keeps the list complete. A subcommand
stopped because one is missing needs its extra; a module outside this list and
:data:`MODULE_EXTRAS` is a bug or a broken install, and keeps its traceback."""

MODULE_EXTRAS = {"flwr": "flower"}
"""Modules whose extra is theirs whatever the subcommand: only the comparisons with Flower import
flwr (``fedwarden bench``), and no subcommand's own extra brings it."""


def missing_extra(command: str, error: ModuleNotFoundError) -> click.ClickException | None:
    """The one-line error for ``command`` stopped by ``error``, naming the extra to install; None
    when no extra brings the missing module."""
    module = (error.name or "").partition(".")[0]
    extra = MODULE_EXTRAS.get(module)
    if extra is None and module in OPTIONAL_MODULES:
        extra = SUBCOMMANDS[command].extra
    if extra is None:
        return None
    return click.ClickException(
        f"fedwarden {command} needs the '{extra}' extra (no module named '{module}'): "
        f"pip install 'fedwarden[{extra}]'"
    )


class LazyGroup(click.Group):
    """A group that imports a subcommand's module when it is resolved (click's documented
    lazy-loading pattern), and lists the subcommands from :data:`SUBCOMMANDS` without importing
    them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        subcommand = SUBCOMMANDS.get(cmd_name)
        if subcommand is None:
            return None
        module_name, _, attribute = subcommand.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            error = missing_extra(cmd_name, exc)
            if error is None:
                raise
            raise error from exc
        command = getattr(module, attribute)
        assert isinstance(command, click.Command), subcommand.target
        return command

    def invoke(self, ctx: click.Context) -> object:
        # the modules a subcommand imports as it runs: most import their packages there
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            command = ctx.invoked_subcommand
            error = missing_extra(command, exc) if command else None
            if error is None:
                raise
            raise error from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # as click.Group formats them; a stand-in command with the table's sentence as its help
        # shortens it to the width as click shortens the loaded command's
        limit = formatter.width - 6 - max(len(name) for name in SUBCOMMANDS)
        rows = [
            (name, click.Command(name, help=SUBCOMMANDS[name].short_help).get_short_help_str(limit))
            for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fedwarden")
def main() -> None:
    """fedwarden: secure federated-learning rounds (robust aggregation, DP, mTLS)."""


if __name__ == "__main__":  # `python -m fedwarden.cli`, as the demo starts its processes
    main()
