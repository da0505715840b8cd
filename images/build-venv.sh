#!/bin/sh
# The builder stage of the three images: /opt/fedwarden, a virtualenv with fedwarden[ROLE] and
# nothing else, from the wheels in /wheels (no index: the build has no network).
#
# Usage (in images/<role>/Dockerfile): sh /build-venv.sh operator|aggregator|client
#
# Each role installs only its extra of pyproject.toml (the core, plus kopf, kubernetes and
# prometheus-client for the operator; the pipeline, the tasks' data sets, gRPC, kubernetes and
# prometheus-client for the aggregator; the pipeline, the data sets and gRPC for a client); then
# what no role runs is deleted, the byte code compiled, pip removed, and the role's modules
# imported once, so that a missing package fails the build rather than a pod.
set -eu
role="$1"
venv=/opt/fedwarden
case "$role" in
    operator) check='import kopf, kubernetes.client, fedwarden.cli, fedwarden.controller.handlers' ;;
    aggregator) check='import kubernetes.client, sklearn.datasets, mnist1d.data, fedwarden.cli, fedwarden.aggregator.server, fedwarden.aggregator.kubernetes, fedwarden.client.tasks' ;;
    client) check='import sklearn.datasets, mnist1d.data, fedwarden.cli, fedwarden.client.runtime, fedwarden.client.tasks' ;;
    *) echo "build-venv.sh: unknown role '$role' (operator|aggregator|client)" >&2; exit 2 ;;
esac

python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --no-index --find-links /wheels "fedwarden[$role]"
"$venv/bin/pip" check
"$venv/bin/pip" uninstall --quiet --yes pip setuptools

# Not run by any role (measured in docs/install.md): the packages' own test suites, C headers,
# Cython sources and type stubs, and kubernetes.aio, the client's asyncio twin (kubernetes >= 35
# ships both; fedwarden uses the synchronous client, kopf its own aiohttp one).
site="$(echo "$venv"/lib/python3*/site-packages)"
find "$site" -depth -type d \( -name tests -o -name test \) -exec rm -rf {} +
find "$site" -type f \( -name '*.pyi' -o -name '*.pxd' -o -name '*.pyx' -o -name '*.h' \
    -o -name '*.c' -o -name '*.cpp' -o -name '*.hpp' \) -delete
rm -rf "$site/kubernetes/aio"
find "$venv" -depth -type d -name __pycache__ -exec rm -rf {} +

# The byte code, compiled now: a read-only root file system never could, and every start would
# recompile in memory. unchecked-hash: the sources never change in an image, so Python need not
# compare their time stamps (which layer copies are free to change) or hashes.
"$venv/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$venv/lib"

# the role's modules import (a package the role needs but its extra lacks fails here)
"$venv/bin/python" -c "$check"
"$venv/bin/fedwarden" "$role" --help >/dev/null
