"""The thin layer that talks to the API server: server-side apply, status, reads, Events."""

from fedwarden.k8s.cluster import OPERATOR_FIELD_MANAGER, Cluster, connect

__all__ = ["OPERATOR_FIELD_MANAGER", "Cluster", "connect"]
