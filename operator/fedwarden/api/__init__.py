"""The custom resources' models (pydantic v2): the single source of the CRD schemas.

``fedwarden crds`` turns them into structural OpenAPI v3 CRDs (:mod:`fedwarden.api.crd`);
the operator parses resources with them. Field names are the Kubernetes camelCase names.
:class:`AggregatorSettings` is the other contract the operator keeps: the aggregator's
``--config`` file, keyed by the command's option names.
"""

from fedwarden.api.aggregator_config import AggregatorSettings
from fedwarden.api.client import FLClient, FLClientSpec, FLClientStatus
from fedwarden.api.common import GROUP, VERSION, Condition
from fedwarden.api.training import FederatedTraining, FederatedTrainingSpec, FederatedTrainingStatus

__all__ = [
    "GROUP",
    "VERSION",
    "AggregatorSettings",
    "Condition",
    "FLClient",
    "FLClientSpec",
    "FLClientStatus",
    "FederatedTraining",
    "FederatedTrainingSpec",
    "FederatedTrainingStatus",
]
