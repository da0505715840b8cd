"""The end-to-end tier: a real node (hack/node.sh) runs the chart and the images.

Bring the node up and load the images first (`make e2e` does both). Without a Ready node these
tests are skipped, except when CI or FEDWARDEN_E2E is set, where they fail: there the node was
supposed to come up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from tests.e2e.node import NODE_IMAGES, NODE_REGION, REGION_LABEL, Node, NodeUnavailable


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def node() -> Node:
    try:
        found = Node.connect()
        found.require_images(NODE_IMAGES)
    except NodeUnavailable as e:
        if os.environ.get("CI") or os.environ.get("FEDWARDEN_E2E"):
            pytest.fail(f"the node tier must run here: {e}")
        pytest.skip(f"no local node ({e}); `make e2e` brings it up")
    # the examples' sites are in eu-west, and a client's pod is scheduled only onto a node of
    # its region
    found.kubectl("label", "node", "localhost", f"{REGION_LABEL}={NODE_REGION}", "--overwrite")
    return found


@pytest.fixture(scope="session")
def operator_release(node: Node) -> Iterator[str]:
    """The chart, installed with the operator running as a pod from its image."""
    namespace = "fedwarden-system"
    node.install_chart(namespace)
    try:
        yield namespace
    finally:
        node.uninstall_chart(namespace)
