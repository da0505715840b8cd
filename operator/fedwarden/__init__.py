"""fedwarden: secure federated-learning rounds, run by a Kubernetes operator."""

__version__ = "0.1.0"
