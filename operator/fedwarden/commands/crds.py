"""``fedwarden crds``: the CustomResourceDefinitions, generated from ``fedwarden.api``."""

from __future__ import annotations

from pathlib import Path

import click

from fedwarden.api.crd import crds_yaml


@click.command()
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one file per CRD here (the repository keeps them in crds/) instead of printing.",
)
def crds(output_dir: Path | None) -> None:
    """Print the CRDs of FederatedTraining and FLClient (apply them with kubectl).

    \b
    Examples:
      fedwarden crds | kubectl apply --server-side -f -
      fedwarden crds --output-dir crds/
    """
    files = crds_yaml()
    if output_dir is None:
        click.echo("---\n".join(files.values()), nl=False)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (output_dir / name).write_text(text)
        click.echo(f"wrote {output_dir / name}", err=True)
