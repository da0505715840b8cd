"""Test support that ships with fedwarden: a real control plane and a test pod runner.

``fedwarden.testing.controlplane`` starts etcd, kube-apiserver and kube-controller-manager built
by ``hack/control-plane.sh``; ``fedwarden.testing.podrunner`` plays kubelet and scheduler for
one node, running pods as local processes; ``fedwarden.testing.pytest_plugin`` has the pytest
fixtures. Importing this package imports none of them (and nothing of Kubernetes).
"""
