"""fedwarden: secure federated-learning rounds, run by a Kubernetes operator."""

from importlib.metadata import version

#: the one version string: pyproject.toml's, as installed (images, chart and examples follow it;
#: `make generate` rewrites the copies that cannot import it, tests/unit/test_version.py checks)
__version__ = version("fedwarden")
