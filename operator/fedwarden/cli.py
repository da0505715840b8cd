"""The ``fedwarden`` command. Subcommands live in :mod:`fedwarden.commands`, one module each."""

from __future__ import annotations

import click

from fedwarden import __version__
from fedwarden.commands import bench, crds, demo, pki, privacy, simulate
from fedwarden.commands.aggregator import aggregator
from fedwarden.commands.client import client
from fedwarden.commands.operator import operator


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fedwarden")
def main() -> None:
    """fedwarden: secure federated-learning rounds (robust aggregation, DP, mTLS)."""


main.add_command(privacy.privacy)
main.add_command(simulate.simulate)
main.add_command(bench.bench)
main.add_command(pki.pki)
main.add_command(aggregator)
main.add_command(client)
main.add_command(demo.demo)
main.add_command(crds.crds)
main.add_command(operator)

if __name__ == "__main__":  # `python -m fedwarden.cli`, as the demo starts its processes
    main()
