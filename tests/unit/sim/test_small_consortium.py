"""Small consortia (3 to 10 sites) under the recommended defences: honest sites are never banned.

Issue 19: with five honest sites, the cohort outlier test's robust scale (the MAD of five log
norms) collapsed as the sites converged, and the own-replay free-rider test took a converging
site's nearly unchanged update for a replay; honest sites were struck and banned.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import datasets as sklearn_datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from fedwarden.pipeline.round import Pipeline, PipelineConfig
from fedwarden.sim.models import make_model
from fedwarden.sim.runner import SimulationConfig, run_simulation

_LOADERS = {
    "wine": sklearn_datasets.load_wine,
    "breast-cancer": sklearn_datasets.load_breast_cancer,
}


def _train_sites_as_a_user_would(name: str, sites: int, rounds: int) -> Pipeline:
    """The report's recipe: softmax regression, standardised features, the training split
    dealt to the sites by stride, 20 full-batch gradient steps at learning rate 0.5 per round."""
    data = _LOADERS[name]()
    x_train, _, y_train, _ = train_test_split(
        data.data, data.target, test_size=0.3, random_state=0, stratify=data.target
    )
    x_train = StandardScaler().fit_transform(x_train).astype(np.float32)
    model = make_model("logreg", x_train.shape[1], int(data.target.max()) + 1)
    site_ids = [f"s{i}" for i in range(sites)]
    pipeline = Pipeline(PipelineConfig.recommended(), dim=model.dim)
    params = model.init(np.random.default_rng(0))
    for _ in range(rounds):
        updates = []
        for site in range(sites):
            x, y = x_train[site::sites], y_train[site::sites]
            local = params.copy()
            for _ in range(20):
                local -= np.float32(0.5) * model.loss_and_grad(local, x, y)[1]
            updates.append(local - params)
        params = params + pipeline.run_round(np.stack(updates), site_ids).aggregate
    return pipeline


@pytest.mark.parametrize("name", ["wine", "breast-cancer"])
def test_the_reported_five_site_training_bans_nobody(name: str) -> None:
    pipeline = _train_sites_as_a_user_would(name, sites=5, rounds=20)
    assert pipeline.banned == frozenset(), {c: pipeline.ban_reason(c) for c in pipeline.banned}


@pytest.mark.parametrize(
    ("task", "partition", "seed"),
    [
        ("wine-logreg", "dirichlet", 0),
        ("wine-logreg", "iid", 1),
        ("breast-cancer-logreg", "dirichlet", 1),
        ("digits-logreg", "dirichlet", 0),
    ],
)
def test_five_honest_sites_train_fifty_rounds_without_a_ban(
    task: str, partition: str, seed: int
) -> None:
    dataset, model = task.rsplit("-", 1)
    config = SimulationConfig(
        dataset=dataset,
        model=model,
        clients=5,
        attackers=0,
        attack="none",
        free_riders=0,
        partition=partition,
        rounds=50,
        seed=seed,
        pipeline=PipelineConfig.recommended(),
    )
    result = run_simulation(config)
    assert result.banned == {}
