"""Tests against a real control plane (etcd + kube-apiserver + kube-controller-manager).

Build the binaries first: `bash hack/control-plane.sh`. Without them these tests are skipped,
except under CI (env CI set), where they fail.
"""

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/k8s/" in str(item.path):
            item.add_marker(pytest.mark.k8s)
