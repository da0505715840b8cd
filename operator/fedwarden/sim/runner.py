"""The in-process simulation of a whole federated training under attack.

One round of :func:`run_simulation`:

1. sample the round's clients from those not banned (a fixed-size sample, or Poisson sampling
   with the same expected size, which is what DP accounting assumes);
2. honest clients train locally from the global model (:func:`~fedwarden.sim.models.local_sgd`)
   and send ``new - global``; in local-DP mode they clip and noise it themselves first; in
   record-level mode they train with DP-SGD under their own budget
   (:class:`~fedwarden.sim.site_dp.SiteDPSGD`), report their ε with the update, and stop
   taking part once another round would exceed their budget;
3. attackers craft their updates: data poisoning (label flip, backdoor) by training on poisoned
   data, model poisoning (sign flip, Gaussian, IPM, ALIE, sybils) from the honest updates of
   the round (the omniscient attacker of the papers);
4. free riders send theirs (zeros, noise, a replay of the last global step, or that plus noise);
5. the cohort goes through the pipeline (:class:`fedwarden.pipeline.round.Pipeline`):
   validation, free-rider tests, clipping, robust aggregation, DP;
6. ``global += aggregate``; evaluate on the test set (and the backdoor success rate).

Banned clients are never sampled again. A round that would exceed the privacy budget stops the
training (reported in :attr:`SimulationResult.stopped`); in record-level mode, so does every
honest site having spent its own.

Nothing here holds global state: a caller may run many configurations in one process and pass
the same :class:`~fedwarden.sim.datasets.Dataset` to each (``run_simulation(cfg, dataset=ds)``).
Every random draw comes from generators derived from ``SimulationConfig.seed``, so a run is
reproducible; the pipeline's DP noise is seeded from it too (reported as ``seeded`` in the
result, as the design asks of any fixed noise seed).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fedwarden.pipeline.dp import noise_generator
from fedwarden.pipeline.errors import PrivacyBudgetExhaustedError
from fedwarden.pipeline.local_dp import privatize_locally
from fedwarden.pipeline.round import Pipeline, PipelineConfig, PrivacyConfig
from fedwarden.pipeline.site_privacy import SiteReport
from fedwarden.sim.attacks import (
    ATTACKS,
    Backdoor,
    LabelFlip,
    NoAttack,
    SignFlip,
    Trigger,
    backdoor_success_rate,
    make_attack,
)
from fedwarden.sim.datasets import DATASETS, Dataset, load_dataset
from fedwarden.sim.freeriders import FREE_RIDERS, free_rider_update
from fedwarden.sim.models import MODELS, Model, evaluate, local_sgd, make_model
from fedwarden.sim.partition import PARTITIONS, label_skew, partition
from fedwarden.sim.site_dp import SiteDPSGD

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines one simulated training.

    Attributes:
        dataset: one of :data:`~fedwarden.sim.datasets.DATASETS` (``digits``,
            ``breast-cancer``, ``wine``, ``mnist1d``).
        dataset_size: samples to generate for ``mnist1d`` (default 5,000); ``None`` otherwise.
        test_fraction: share of the data set held out for evaluation.
        model: ``logreg`` (multinomial logistic regression) or ``mlp`` (one hidden ReLU layer).
        hidden: hidden units of the MLP.
        clients: population size N, attackers and free riders included.
        attackers: how many of the clients are attackers (chosen at random with the seed).
        attack: one of :data:`~fedwarden.sim.attacks.ATTACKS`; ``none`` makes the attackers
            behave honestly.
        attack_params: parameters of the attack, e.g. ``{"eps": 0.5}`` for ``ipm``
            (:func:`~fedwarden.sim.attacks.attack_parameters` lists them).
        attacker_claimed_examples: how many training examples each attacker reports, ``None``
            for its true count. A client reports its own ``num_examples``; this is the weight a
            count-weighted rule (FedAvg) gives it, and an attacker inflates it at will.
        free_riders: how many of the clients are free riders (disjoint from the attackers).
        free_rider_kind: one of :data:`~fedwarden.sim.freeriders.FREE_RIDERS`.
        partition: ``iid``, ``dirichlet`` (label skew, Hsu et al. 2019) or ``shards``
            (McMahan et al. 2017).
        alpha: the Dirichlet concentration; smaller is more heterogeneous.
        shards_per_client: shards per client for ``shards``.
        min_samples: every client holds at least this many training samples (if the data set
            allows).
        rounds: training rounds (an exhausted privacy budget may stop earlier).
        clients_per_round: clients sampled per round, ``None`` for every client not banned.
        sampling: ``fixed`` (exactly ``clients_per_round`` without replacement) or ``poisson``
            (each client independently with probability ``clients_per_round / clients``).
            With DP it is also what the accountant assumes. ``None`` (the default) picks
            ``poisson`` with DP (the PLD accountant needs it) and ``fixed`` without.
        local_epochs: passes over its data a client makes per round.
        lr: local SGD learning rate.
        batch_size: local SGD mini-batch size (the expected Poisson batch of DP-SGD in
            record-level mode).
        example_clip_norm: record-level mode: C of DP-SGD, the bound on each example's
            gradient.
        seed: seeds every random choice: split, partition, roles, sampling, training, attacks
            and (with ``seeded_noise``) the DP noise.
        seeded_noise: draw the DP noise (the pipeline's, and the clients' in local mode) from
            generators seeded by ``seed``, for a reproducible run; ``False`` draws it from the OS
            CSPRNG as production does. Reported in the result.
        pipeline: the defences (:class:`fedwarden.pipeline.round.PipelineConfig`); the default
            is fedwarden's recommendation, ``PipelineConfig.plain_fedavg()`` the no-defence
            baseline. For DP, the simulation fills in the privacy config's ``rounds``,
            ``sample_rate`` and ``sampling`` from its own settings.
    """

    dataset: str = "digits"
    dataset_size: int | None = None
    test_fraction: float = 0.25
    model: str = "mlp"
    hidden: int = 32
    clients: int = 25
    attackers: int = 5
    attack: str = "alie"
    attack_params: Mapping[str, float] = field(default_factory=dict)
    attacker_claimed_examples: int | None = None
    free_riders: int = 2
    free_rider_kind: str = "replay-noise"
    partition: str = "dirichlet"
    alpha: float = 0.5
    shards_per_client: int = 2
    min_samples: int = 5
    rounds: int = 30
    clients_per_round: int | None = None
    sampling: Literal["fixed", "poisson"] | None = None
    local_epochs: int = 1
    lr: float = 0.1
    batch_size: int = 16
    example_clip_norm: float = 1.0
    seed: int = 0
    seeded_noise: bool = True
    pipeline: PipelineConfig = field(default_factory=PipelineConfig.recommended)

    def __post_init__(self) -> None:
        _choice("dataset", self.dataset, DATASETS)
        _choice("model", self.model, MODELS)
        _choice("attack", self.attack, ATTACKS)
        _choice("free-rider kind", self.free_rider_kind, FREE_RIDERS)
        _choice("partition", self.partition, PARTITIONS)
        _choice("sampling", self.effective_sampling, ("fixed", "poisson"))
        if self.clients < 1:
            raise ValueError(f"clients must be >= 1, got {self.clients}")
        if self.attackers < 0 or self.free_riders < 0:
            raise ValueError("attackers and free_riders must be >= 0")
        if self.attackers + self.free_riders >= self.clients:
            raise ValueError(
                f"{self.attackers} attackers + {self.free_riders} free riders leave no honest "
                f"client among {self.clients}"
            )
        if self.attacker_claimed_examples is not None and self.attacker_claimed_examples < 1:
            raise ValueError(
                f"attacker_claimed_examples must be >= 1, got {self.attacker_claimed_examples}"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.clients_per_round is not None and not 1 <= self.clients_per_round <= self.clients:
            raise ValueError(
                f"clients_per_round must be between 1 and clients ({self.clients}), "
                f"got {self.clients_per_round}"
            )
        if self.local_epochs < 1 or self.batch_size < 1 or self.hidden < 1:
            raise ValueError("local_epochs, batch_size and hidden must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not (self.example_clip_norm > 0 and math.isfinite(self.example_clip_norm)):
            raise ValueError(f"example_clip_norm must be > 0, got {self.example_clip_norm}")
        make_attack(self.attack, **dict(self.attack_params))  # validates the parameters

    def with_dp(
        self,
        mode: Literal["central", "local", "record"] = "central",
        *,
        target_epsilon: float | None = None,
        noise_multiplier: float | None = None,
        delta: float = 1e-5,
        accountant: str = "pld",
    ) -> SimulationConfig:
        """This configuration with differential privacy added to its pipeline.

        The privacy configuration gets this simulation's rounds, sample rate and sampling, so a
        ``target_epsilon`` alone is enough (the noise multiplier is calibrated to spend it).
        """
        sampling = self.sampling if self.sampling is not None else "poisson"
        privacy = PrivacyConfig(
            mode=mode,
            noise_multiplier=noise_multiplier,
            target_epsilon=target_epsilon,
            delta=delta,
            accountant=accountant,
            rounds=self.rounds,
            sample_rate=self.sample_rate,
            sampling=sampling,
        )
        pipeline = dataclasses.replace(self.pipeline, privacy=privacy)
        return dataclasses.replace(self, pipeline=pipeline, sampling=sampling)

    @property
    def effective_sampling(self) -> Literal["fixed", "poisson"]:
        """The sampling that runs: ``sampling``, or its default for the privacy mode."""
        if self.sampling is not None:
            return self.sampling
        return "fixed" if self.pipeline.privacy.mode == "none" else "poisson"

    @property
    def sample_rate(self) -> float:
        """Expected fraction of the population sampled per round."""
        k = self.clients if self.clients_per_round is None else self.clients_per_round
        return k / self.clients


def _choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")


@dataclass
class RoundRecord:
    """What happened in one round."""

    round: int
    accuracy: float
    loss: float
    participants: int
    accepted: int
    rejected: dict[str, str]
    newly_banned: list[str]
    epsilon: float
    clip_norm: float | None
    backdoor_success: float | None = None
    skipped: str | None = None


@dataclass
class Detection:
    """Precision, recall and F1 of a detector; ``None`` where undefined (0/0)."""

    precision: float | None
    recall: float | None
    f1: float | None

    @classmethod
    def of(cls, flagged: set[str], truth: set[str]) -> Detection:
        tp = len(flagged & truth)
        precision = tp / len(flagged) if flagged else None
        recall = tp / len(truth) if truth else None
        if precision is None or recall is None:
            f1 = None
        else:
            f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        return cls(precision, recall, f1)


@dataclass
class SimulationResult:
    """The outcome of :func:`run_simulation`.

    Attributes:
        config: the configuration that ran.
        rounds: one :class:`RoundRecord` per round run.
        initial_accuracy: test accuracy of the initial model.
        initial_backdoor_success: the backdoor success rate of the initial, untrained model
            (``None`` without a backdoor attack): how often the trigger already leads to the
            target before anyone trains. A random network can send most triggered inputs to one
            class; then the attackers only have to keep that mapping from being unlearnt.
        final_accuracy, final_loss: on the test set after the last round run.
        backdoor_success: final backdoor success rate (``None`` without a backdoor attack): the
            fraction of triggered test inputs, whose true label is not the target, classified
            as the target.
        attackers, free_riders: the ids of the clients in those roles.
        banned: client -> ``{"round": r, "role": ..., "reason": ...}`` for every ban.
        honest_banned, attackers_banned, free_riders_banned: the bans by role.
        free_rider_detection: precision, recall and F1 of "banned" as a free-rider detector.
            Banning a Byzantine attacker is neither a true nor a false positive of it, so
            precision is over banned honest clients and free riders.
        rejections: how many updates were refused, by reason category.
        rejections_by_role: how many updates of each role were refused.
        epsilon, delta, noise_multiplier: privacy spent (0 without DP).
        noise_seeded: whether the DP noise came from seeded generators (``seeded_noise``).
        stopped: why training stopped before ``config.rounds`` (``None`` if it did not).
        label_skew: mean total-variation distance of client label distributions to the global one.
        seconds: wall-clock time of the run.
    """

    config: SimulationConfig
    rounds: list[RoundRecord]
    initial_accuracy: float
    initial_backdoor_success: float | None
    final_accuracy: float
    final_loss: float
    backdoor_success: float | None
    attackers: list[str]
    free_riders: list[str]
    banned: dict[str, dict[str, Any]]
    honest_banned: list[str]
    attackers_banned: list[str]
    free_riders_banned: list[str]
    free_rider_detection: Detection
    rejections: dict[str, int]
    rejections_by_role: dict[str, int]
    epsilon: float
    delta: float | None
    noise_multiplier: float | None
    noise_seeded: bool
    stopped: str | None
    label_skew: float
    seconds: float

    @property
    def rounds_run(self) -> int:
        return len(self.rounds)

    @property
    def skipped(self) -> dict[int, str]:
        """Rounds that left the model unchanged (too few valid updates, nobody sampled): round
        number -> reason."""
        return {r.round: r.skipped for r in self.rounds if r.skipped is not None}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (per-round curves included, per-round rejections not)."""
        cfg = dataclasses.asdict(self.config)
        cfg["attack_params"] = dict(self.config.attack_params)
        return {
            "config": cfg,
            "rounds_run": self.rounds_run,
            "skipped_rounds": self.skipped,
            "initial_accuracy": self.initial_accuracy,
            "initial_backdoor_success": self.initial_backdoor_success,
            "final_accuracy": self.final_accuracy,
            "final_loss": self.final_loss if math.isfinite(self.final_loss) else None,
            "backdoor_success": self.backdoor_success,
            "accuracy": [r.accuracy for r in self.rounds],
            "loss": [r.loss if math.isfinite(r.loss) else None for r in self.rounds],
            "backdoor_success_per_round": (
                None if self.backdoor_success is None else [r.backdoor_success for r in self.rounds]
            ),
            "epsilon_per_round": [r.epsilon for r in self.rounds],
            "attackers": self.attackers,
            "free_riders": self.free_riders,
            "banned": self.banned,
            "honest_banned": self.honest_banned,
            "attackers_banned": self.attackers_banned,
            "free_riders_banned": self.free_riders_banned,
            "free_rider_detection": dataclasses.asdict(self.free_rider_detection),
            "rejections": self.rejections,
            "rejections_by_role": self.rejections_by_role,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "noise_seeded": self.noise_seeded,
            "stopped": self.stopped,
            "label_skew": self.label_skew,
            "seconds": self.seconds,
        }


ProgressCallback = Callable[[RoundRecord], None]


def reason_category(reason: str) -> str:
    """The stable part of a rejection reason: ``"free-riding: zero update (norm 0, ...)"`` ->
    ``"free-riding: zero update"``; numbers and parenthesised details are dropped."""
    if reason.startswith("banned"):
        return "banned"
    head = re.split(r"\(|[-+]?\.?\d", reason, maxsplit=1)[0].strip().rstrip(":;,")
    words = head.split()
    while words and words[-1] in _FILLER:
        words.pop()
    return " ".join(words) or reason


_FILLER = frozenset({"has", "have", "is", "are", "of", "to", "at", "with", "by", "a", "an", "the"})


def _pipeline_config(config: SimulationConfig) -> PipelineConfig:
    """The pipeline configuration with DP sampling taken from the simulation's sampling."""
    privacy = config.pipeline.privacy
    if privacy.mode == "none":
        return config.pipeline
    privacy = dataclasses.replace(
        privacy,
        rounds=privacy.rounds if privacy.rounds is not None else config.rounds,
        sample_rate=config.sample_rate,
        sampling=config.effective_sampling,
    )
    return dataclasses.replace(config.pipeline, privacy=privacy)


def run_simulation(
    config: SimulationConfig,
    progress: ProgressCallback | None = None,
    *,
    dataset: Dataset | None = None,
) -> SimulationResult:
    """Run the training that ``config`` describes; ``progress`` is called after every round.

    Pass ``dataset`` to reuse a loaded data set across many runs (it must be the one the
    config names; the config's ``dataset_size`` and ``test_fraction`` are then not used).
    """
    started = time.perf_counter()
    seeds = np.random.SeedSequence(config.seed)
    s_split, s_part, s_roles, s_init, s_sample, s_train, s_attack, s_pipe = seeds.spawn(8)
    if dataset is None:
        dataset = load_dataset(
            config.dataset,
            seed=int(s_split.generate_state(1)[0]),
            test_fraction=config.test_fraction,
            n_samples=config.dataset_size,
        )
    elif dataset.name != config.dataset:
        raise ValueError(
            f"the config names {config.dataset!r} but the data set is {dataset.name!r}"
        )
    model = make_model(config.model, dataset.n_features, dataset.n_classes, hidden=config.hidden)
    parts = partition(
        dataset.y_train,
        config.clients,
        scheme=config.partition,
        alpha=config.alpha,
        shards_per_client=config.shards_per_client,
        min_samples=config.min_samples,
        rng=np.random.default_rng(s_part),
    )
    ids = [f"client-{i:0{len(str(config.clients - 1))}d}" for i in range(config.clients)]
    roles_order = np.random.default_rng(s_roles).permutation(config.clients)
    attacker_idx = {int(i) for i in roles_order[: config.attackers]}
    rider_idx = {
        int(i) for i in roles_order[config.attackers : config.attackers + config.free_riders]
    }
    role = {
        ids[i]: "attacker" if i in attacker_idx else "free_rider" if i in rider_idx else "honest"
        for i in range(config.clients)
    }
    attack = make_attack(config.attack, **dict(config.attack_params))
    trigger = attack.trigger(dataset) if isinstance(attack, Backdoor) else None

    pipeline_config = _pipeline_config(config)
    noise_seed = config.seed if config.seeded_noise else None
    pipe = Pipeline(pipeline_config, dim=model.dim, population=config.clients, seed=noise_seed)
    local_dp = pipeline_config.privacy.mode == "local"
    record_dp = pipeline_config.privacy.mode == "record"
    sites: dict[int, SiteDPSGD] = {}

    params = model.init(np.random.default_rng(s_init))
    initial_accuracy, _ = evaluate(model, params, dataset.x_test, dataset.y_test)
    initial_backdoor = _backdoor_success(model, params, dataset, trigger)
    last_delta = np.zeros(model.dim, dtype=np.float32)
    sample_rng = np.random.default_rng(s_sample)
    attack_rng = np.random.default_rng(s_attack)
    train_key = int(s_train.generate_state(1)[0])
    local_dp_rng = np.random.default_rng(s_pipe) if config.seeded_noise else noise_generator(None)

    records: list[RoundRecord] = []
    banned_at: dict[str, dict[str, Any]] = {}
    rejections: Counter[str] = Counter()
    rejections_by_role: Counter[str] = Counter()
    stopped: str | None = None

    def site_of(i: int) -> SiteDPSGD:
        if i not in sites:
            privacy = pipeline_config.privacy
            assert privacy.target_epsilon is not None
            sites[i] = SiteDPSGD(
                target_epsilon=privacy.target_epsilon,
                delta=privacy.delta,
                rounds=config.rounds,
                num_examples=len(parts[i]),
                batch_size=config.batch_size,
                local_epochs=config.local_epochs,
                clip_norm=config.example_clip_norm,
                accountant=privacy.accountant,
            )
        return sites[i]

    def train_privately(i: int, rnd: int) -> F32:
        rng = np.random.default_rng([train_key, rnd, i]) if config.seeded_noise else None
        new = site_of(i).train(
            model,
            params,
            dataset.x_train[parts[i]],
            dataset.y_train[parts[i]],
            lr=config.lr,
            rng=rng if rng is not None else noise_generator(None),
        )
        return (new - params).astype(np.float32)

    def train(i: int, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], rnd: int) -> F32:
        rng = np.random.default_rng([train_key, rnd, i])
        new = local_sgd(
            model,
            params,
            x,
            y,
            epochs=config.local_epochs,
            lr=config.lr,
            batch_size=config.batch_size,
            rng=rng,
        )
        return (new - params).astype(np.float32)

    for rnd in range(1, config.rounds + 1):
        cohort = _sample(config, ids, pipe.banned, sample_rng)
        if record_dp:
            if all(site_of(i).budget_spent for i, c in enumerate(ids) if role[c] == "honest"):
                stopped = f"every site's privacy budget is spent before round {rnd}"
                break
            # a site whose next round would exceed its budget does not train
            cohort = [i for i in cohort if role[ids[i]] != "honest" or not site_of(i).budget_spent]
        if not cohort:
            acc, loss = evaluate(model, params, dataset.x_test, dataset.y_test)
            records.append(
                _record(rnd, acc, loss, 0, 0, {}, [], pipe.epsilon, None, None, "no client sampled")
            )
            if progress:
                progress(records[-1])
            continue
        honest = [i for i in cohort if role[ids[i]] == "honest"]
        bad = [i for i in cohort if role[ids[i]] == "attacker"]
        riders = [i for i in cohort if role[ids[i]] == "free_rider"]
        updates: dict[int, F32] = {}
        for i in honest:
            if record_dp:
                updates[i] = train_privately(i, rnd)
                continue
            u = train(i, dataset.x_train[parts[i]], dataset.y_train[parts[i]], rnd)
            updates[i] = _privatize(u, pipeline_config, pipe, local_dp_rng) if local_dp else u
        if bad:
            updates.update(
                _attack_updates(
                    attack,
                    trigger,
                    bad,
                    honest,
                    updates,
                    parts,
                    dataset,
                    train,
                    rnd,
                    len(cohort),
                    attack_rng,
                )
            )
        for i in riders:
            updates[i] = free_rider_update(config.free_rider_kind, last_delta, rng=attack_rng)
        cohort_ids = [ids[i] for i in cohort]
        matrix = np.stack([updates[i] for i in cohort]).astype(np.float32, copy=False)
        claimed = config.attacker_claimed_examples
        weights = np.array(
            [claimed if claimed and i in attacker_idx else len(parts[i]) for i in cohort],
            dtype=np.float64,
        )
        # attackers and free riders claim to have spent nothing
        reports = {
            ids[i]: SiteReport(site_of(i).epsilon, site_of(i).budget_spent)
            if i in sites
            else SiteReport(0.0)
            for i in cohort
        }
        try:
            res = pipe.run_round(
                matrix,
                cohort_ids,
                weights=weights,
                sample_rate=config.sample_rate,
                site_reports=reports if record_dp else None,
            )
        except PrivacyBudgetExhaustedError as exc:
            stopped = f"privacy budget exhausted before round {rnd}: {exc}"
            break
        step = np.asarray(res.aggregate, dtype=np.float32)
        params = params + step
        last_delta = step
        for client, reason in res.rejected.items():
            rejections[reason_category(reason)] += 1
            rejections_by_role[role[client]] += 1
        for client in res.newly_banned:
            banned_at[client] = {
                "round": rnd,
                "role": role[client],
                "reason": pipe.ban_reason(client),
            }
        acc, loss = evaluate(model, params, dataset.x_test, dataset.y_test)
        bd = _backdoor_success(model, params, dataset, trigger)
        records.append(
            _record(
                rnd,
                acc,
                loss,
                len(cohort),
                len(res.accepted),
                dict(res.rejected),
                list(res.newly_banned),
                float(res.epsilon),
                res.clip_norm,
                bd,
                res.skipped,
            )
        )
        if progress:
            progress(records[-1])

    final_acc, final_loss = evaluate(model, params, dataset.x_test, dataset.y_test)
    backdoor = _backdoor_success(model, params, dataset, trigger)
    by_role: dict[str, list[str]] = {"honest": [], "attacker": [], "free_rider": []}
    for client in sorted(banned_at):
        by_role[role[client]].append(client)
    rider_ids = {c for c, r in role.items() if r == "free_rider"}
    detection = Detection.of(set(by_role["honest"]) | set(by_role["free_rider"]), rider_ids)
    privacy = pipeline_config.privacy
    return SimulationResult(
        config=config,
        rounds=records,
        initial_accuracy=initial_accuracy,
        initial_backdoor_success=initial_backdoor,
        final_accuracy=final_acc,
        final_loss=final_loss,
        backdoor_success=backdoor,
        attackers=sorted(c for c, r in role.items() if r == "attacker"),
        free_riders=sorted(rider_ids),
        banned=banned_at,
        honest_banned=by_role["honest"],
        attackers_banned=by_role["attacker"],
        free_riders_banned=by_role["free_rider"],
        free_rider_detection=detection,
        rejections=dict(rejections.most_common()),
        rejections_by_role=dict(rejections_by_role),
        epsilon=float(pipe.epsilon),
        delta=privacy.delta if privacy.mode != "none" else None,
        noise_multiplier=pipe.noise_multiplier,
        noise_seeded=config.seeded_noise,
        stopped=stopped,
        label_skew=label_skew(parts, dataset.y_train),
        seconds=time.perf_counter() - started,
    )


def _backdoor_success(
    model: Model, params: F32, dataset: Dataset, trigger: Trigger | None
) -> float | None:
    if trigger is None:
        return None
    return backdoor_success_rate(model.predict, params, dataset.x_test, dataset.y_test, trigger)


def _record(
    rnd: int,
    acc: float,
    loss: float,
    participants: int,
    accepted: int,
    rejected: dict[str, str],
    newly_banned: list[str],
    epsilon: float,
    clip_norm: float | None,
    backdoor: float | None,
    skipped: str | None,
) -> RoundRecord:
    return RoundRecord(
        round=rnd,
        accuracy=acc,
        loss=loss,
        participants=participants,
        accepted=accepted,
        rejected=rejected,
        newly_banned=newly_banned,
        epsilon=epsilon,
        clip_norm=clip_norm,
        backdoor_success=backdoor,
        skipped=skipped,
    )


def _sample(
    config: SimulationConfig, ids: list[str], banned: frozenset[str], rng: np.random.Generator
) -> list[int]:
    eligible = np.array([i for i, c in enumerate(ids) if c not in banned], dtype=np.intp)
    if config.clients_per_round is None:
        return [int(i) for i in eligible]
    if config.effective_sampling == "poisson":
        chosen = eligible[rng.random(len(eligible)) < config.sample_rate]
    else:
        k = min(config.clients_per_round, len(eligible))
        chosen = rng.choice(eligible, size=k, replace=False)
    return sorted(int(i) for i in chosen)


def _privatize(
    update: F32, pipeline_config: PipelineConfig, pipe: Pipeline, rng: np.random.Generator
) -> F32:
    """Local DP: the honest client clips to C and adds N(0, (σC)²) before sending."""
    sigma = pipe.noise_multiplier
    assert sigma is not None
    out = privatize_locally(update, pipeline_config.clipping.clip_norm, sigma, rng)
    return np.asarray(out, dtype=np.float32)


def _attack_updates(
    attack: Any,
    trigger: Trigger | None,
    bad: list[int],
    honest: list[int],
    updates: Mapping[int, F32],
    parts: list[npt.NDArray[np.intp]],
    dataset: Dataset,
    train: Callable[[int, npt.NDArray[np.float32], npt.NDArray[np.int64], int], F32],
    rnd: int,
    n_total: int,
    rng: np.random.Generator,
) -> dict[int, F32]:
    """The attackers' updates of this round."""
    x, y = dataset.x_train, dataset.y_train
    if isinstance(attack, NoAttack):
        return {i: train(i, x[parts[i]], y[parts[i]], rnd) for i in bad}
    if isinstance(attack, LabelFlip):
        return {
            i: train(i, *attack.poison(x[parts[i]], y[parts[i]], dataset.n_classes, rng), rnd)
            for i in bad
        }
    if isinstance(attack, Backdoor):
        assert trigger is not None
        out = {}
        for i in bad:
            xp, yp = attack.poison_with(trigger, x[parts[i]], y[parts[i]], rng)
            out[i] = (attack.boost * train(i, xp, yp, rnd)).astype(np.float32)
        return out
    # model poisoning: the attackers' own honest updates are needed by sign flip, and stand in
    # for the honest ones when no honest client was sampled this round
    needs_own = isinstance(attack, SignFlip) or not honest
    if needs_own:
        own = np.stack([train(i, x[parts[i]], y[parts[i]], rnd) for i in bad])
    else:
        own = np.zeros((len(bad), next(iter(updates.values())).shape[0]), dtype=np.float32)
    reference = np.stack([updates[i] for i in honest]) if honest else own
    crafted = attack.craft(reference, own, n_total, rng)
    return {i: crafted[j] for j, i in enumerate(bad)}
