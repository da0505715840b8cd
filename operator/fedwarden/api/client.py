"""``FLClient`` (short name ``flc``): one site taking part in a training."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fedwarden import __version__
from fedwarden.api.common import API_VERSION, Condition, Model, ResourceRequirements, cel_rules

#: the image of ``fedwarden client`` with the built-in tasks (images/client/Dockerfile)
DEFAULT_CLIENT_IMAGE = f"ghcr.io/fedwarden/client:{__version__}"


class TrainingRef(Model):
    name: str = Field(
        min_length=1, max_length=253, description="FederatedTraining, same namespace."
    )


class WorkloadSpec(Model):
    """An in-cluster client process (`fedwarden client`) run by the operator as a Job."""

    # no schema default: unset, the training's task decides (its app's image, or the client
    # image with the built-in tasks), which a stored default would hide
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="The client's image. Default: task.app.image for an app, else "
        f"{DEFAULT_CLIENT_IMAGE} (the built-in tasks).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    partition: str = Field(
        default="iid",
        pattern=r"^(iid|dirichlet:[0-9]+(\.[0-9]+)?|shards:[0-9]+)$",
        description="How a built-in task's training set is split: iid, dirichlet:<alpha>, "
        "shards:<n>.",
    )
    client_index: int | None = Field(
        default=None, ge=0, description="This site's shard (an app's node_config partition-id)."
    )
    num_clients: int = Field(
        default=1, ge=1, description="Shards of the split (an app's num-partitions)."
    )
    local_epochs: int = Field(default=1, ge=1, le=1000, description="Built-in tasks only.")
    learning_rate: float = Field(default=0.1, gt=0, le=100, description="Built-in tasks only.")
    batch_size: int = Field(default=16, ge=1, le=100000, description="Built-in tasks only.")
    extra_args: list[str] | None = Field(
        default=None, description="Appended to the `fedwarden client` command line."
    )
    command: list[str] | None = Field(
        default=None,
        description="Replaces the `fedwarden client` command (a custom client); the TLS "
        "directory, server address and TLS name are in $(FEDWARDEN_TLS_DIR), $(FEDWARDEN_SERVER) "
        "and $(FEDWARDEN_SERVER_NAME).",
    )
    resources: ResourceRequirements | None = None
    node_selector: dict[str, str] | None = None


class FLClientSpec(Model):
    """A site. Its identity, in its certificate (``spiffe://.../client/<name>``) and in the
    aggregator's records, is the FLClient's name."""

    model_config = Model.model_config | {
        "json_schema_extra": cel_rules(
            (
                "has(self.csr) != self.issueKey",
                "set exactly one of csr (a remote site's certificate request) and issueKey: true "
                "(the operator makes the key)",
            ),
            (
                "!has(self.workload) || self.issueKey",
                "an in-cluster workload needs issueKey: true (its key lives in a Secret)",
                ".workload",
            ),
            ("self.trainingRef == oldSelf.trainingRef", "trainingRef is immutable", ".trainingRef"),
        )
    }

    training_ref: TrainingRef
    region: str | None = Field(default=None, max_length=63, description="Where the data lives.")
    csr: str | None = Field(
        default=None,
        max_length=16384,
        pattern=r"-----BEGIN CERTIFICATE REQUEST-----",
        description="PEM CSR made at the site (fedwarden pki csr); its key never leaves it.",
    )
    issue_key: bool = Field(default=False, description="The operator makes a key in a Secret.")
    workload: WorkloadSpec | None = None


ClientPhase = Literal["Pending", "Enrolled", "Active", "Banned", "Revoked"]


class FLClientStatus(Model):
    phase: ClientPhase = "Pending"
    certificate_serial: str | None = None
    certificate_secret: str | None = Field(default=None, description="Secret with tls.crt.")
    not_after: str | None = None
    renewal_time: str | None = None
    strikes: int = Field(default=0, ge=0)
    last_score: float | None = Field(default=None, description="Last contribution score.")
    rounds_participated: int = Field(default=0, ge=0)
    epsilon_spent: float | None = Field(
        default=None,
        ge=0,
        description="Record-level DP: the largest ε this site signed into its updates, the "
        "guarantee of its records.",
    )
    ban_reason: str | None = None
    message: str | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


class FLClient(Model):
    api_version: Literal["fedwarden.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["FLClient"] = "FLClient"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FLClientSpec
    status: FLClientStatus | None = None
