import numpy as np
import pytest

from fedwarden.pipeline.freeriders import (
    FreeRiderConfig,
    FreeRiderDetector,
    leave_one_out_median_products,
)

D = 2000


def _honest(rng: np.random.Generator, n: int, common: np.ndarray) -> np.ndarray:
    # heterogeneous clients: a shared direction plus individual parts as large as it
    return (common + rng.normal(size=(n, D)) * np.linalg.norm(common) / np.sqrt(D)).astype(
        np.float32
    )


def _rounds(riders: dict[str, callable], seed: int = 0, rounds: int = 3):
    """Honest clients and the given free riders over a few rounds; the last round's verdicts.

    Riders are judged from their second participation on, as a real free rider would be; with
    nothing to replay yet, a replaying rider sends zeros in the first round.
    """
    rng = np.random.default_rng(seed)
    detector = FreeRiderDetector(FreeRiderConfig(), D)
    honest_ids = [f"h{i}" for i in range(10)]
    global_update = np.zeros(D)
    common = rng.normal(size=D)
    for _ in range(rounds):
        honest = _honest(rng, 10, common)
        context = {"global": global_update, "rng": rng, "norm": np.linalg.norm(honest[0])}
        extra = np.stack([make(context) for make in riders.values()]).astype(np.float32)
        verdicts = detector.assess(np.concatenate([honest, extra]), honest_ids + list(riders))
        assert all(verdicts[c].reason is None for c in honest_ids), verdicts
        global_update = np.median(honest, axis=0)
        detector.record_global_update(global_update)
        # the next round keeps part of the old direction and adds a new one
        common = 0.5 * global_update + rng.normal(size=D)
    return verdicts


RIDERS = {
    "zero": lambda c: np.zeros(D),
    "noise": lambda c: c["rng"].normal(size=D) * c["norm"] / np.sqrt(D),
    "replay": lambda c: c["global"],
    "replay+noise": lambda c: (
        c["global"] + c["rng"].normal(size=D) * 2 * np.linalg.norm(c["global"]) / np.sqrt(D)
    ),
}


@pytest.mark.parametrize("kind", sorted(RIDERS))
def test_each_kind_of_free_rider_is_caught_and_no_honest_client_is(kind):
    verdicts = _rounds({kind: RIDERS[kind]}, seed=1)
    flagged = {c for c, v in verdicts.items() if v.reason}
    assert flagged == {kind}, {c: v.reason for c, v in verdicts.items() if v.reason}


def test_replay_of_own_update_is_caught():
    rng = np.random.default_rng(3)
    detector = FreeRiderDetector(FreeRiderConfig(), D)
    ids = [f"h{i}" for i in range(8)]
    first = _honest(rng, 8, rng.normal(size=D))
    detector.assess(first, ids)
    detector.record_global_update(np.median(first, axis=0))
    second = _honest(rng, 8, rng.normal(size=D))
    second[5] = first[5]
    verdicts = detector.assess(second, ids)
    assert "own previous update" in verdicts["h5"].reason
    assert [c for c, v in verdicts.items() if v.reason] == ["h5"]


def test_an_update_that_keeps_its_direction_but_shrinks_is_not_a_replay():
    # issue 19: a site training deterministically on separable data sends updates whose
    # cosine to the previous one is above 0.99999 while their length shrinks every round
    rng = np.random.default_rng(4)
    detector = FreeRiderDetector(FreeRiderConfig(), D)
    ids = [f"h{i}" for i in range(6)]
    first = _honest(rng, 6, rng.normal(size=D))
    detector.assess(first, ids)
    detector.record_global_update(np.median(first, axis=0))
    second = _honest(rng, 6, rng.normal(size=D))
    second[2] = 0.99 * first[2]
    assert detector.assess(second, ids)["h2"].reason is None


def test_an_update_against_an_agreeing_cohort_is_poisoning():
    # two attackers among five sites whose individual parts are half the shared direction
    rng = np.random.default_rng(5)
    common = rng.normal(size=D)
    cohort = (common + 0.5 * rng.normal(size=(5, D))).astype(np.float32)
    cohort[1] = -4 * cohort[1]  # sign flip (Li et al. 2019)
    cohort[3] = -0.1 * cohort[[0, 2, 4]].mean(0)  # inner-product manipulation (Xie et al.)
    verdicts = FreeRiderDetector(FreeRiderConfig(), D).assess(cohort, list("abcde"))
    assert {c for c, v in verdicts.items() if v.poisoning} == {"b", "d"}
    assert verdicts["b"].reason.startswith("opposes the cohort: cosine -")
    assert not any(v.reason for c, v in verdicts.items() if c not in "bd")


def test_opposition_is_not_judged_when_the_cohort_does_not_agree():
    # late in a non-IID training honest updates pull towards their own optima and may oppose
    # each other; with no common direction there is nothing to oppose
    rng = np.random.default_rng(6)
    cohort = rng.normal(size=(5, D)).astype(np.float32)
    cohort[1] = -cohort[[0, 2, 3, 4]].mean(0)
    verdicts = FreeRiderDetector(FreeRiderConfig(), D).assess(cohort, list("abcde"))
    assert not any(v.poisoning for v in verdicts.values())


def test_reasons_name_what_was_seen():
    verdicts = _rounds(RIDERS)
    assert verdicts["zero"].reason.startswith("zero update")
    assert verdicts["noise"].reason.startswith("no contribution")
    assert verdicts["replay"].reason.startswith("replay of the previous global update")
    assert "fresh" in verdicts["replay+noise"].reason


def test_an_honest_client_unlike_the_others_but_like_itself_is_not_a_free_rider():
    rng = np.random.default_rng(4)
    detector = FreeRiderDetector(FreeRiderConfig(), D)
    ids = [f"c{i}" for i in range(9)]
    own_direction = rng.normal(size=D)  # rare labels: its own, steady direction
    for _ in range(3):
        cohort = _honest(rng, 9, rng.normal(size=D))
        cohort[0] = _honest(rng, 1, own_direction)[0]
        verdicts = detector.assess(cohort, ids)
        detector.record_global_update(np.median(cohort, axis=0))
        assert verdicts["c0"].reason is None


def test_leave_one_out_median_products_match_brute_force():
    rng = np.random.default_rng(5)
    for n in (3, 4, 7, 10):
        x = rng.normal(size=(n, 50))
        x[1] = x[0]  # ties
        g = rng.normal(size=50)
        g /= np.linalg.norm(g)
        products = leave_one_out_median_products(x.astype(np.float32), g)
        for i in range(n):
            loo = np.median(np.delete(x.astype(np.float32).astype(np.float64), i, axis=0), axis=0)
            u = x[i].astype(np.float32).astype(np.float64)
            np.testing.assert_allclose(products["ul"][i], u @ loo, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(products["ll"][i], loo @ loo, rtol=1e-9)
            np.testing.assert_allclose(products["ug"][i], u @ g, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(products["lg"][i], loo @ g, rtol=1e-9, atol=1e-12)
            median = np.median(x.astype(np.float32).astype(np.float64), axis=0)
            np.testing.assert_allclose(products["um"][i], u @ median, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(products["mm"][i], median @ median, rtol=1e-9)


def test_noise_tests_abstain_when_the_cohort_has_no_common_direction():
    # late in a non-IID training honest updates stop agreeing; nobody is called a free rider
    rng = np.random.default_rng(8)
    detector = FreeRiderDetector(FreeRiderConfig(), D)
    cohort = rng.normal(size=(8, D)).astype(np.float32)
    assert all(v.reason is None for v in detector.assess(cohort, list("abcdefgh")).values())


def test_an_honest_update_that_barely_changed_is_not_an_own_replay():
    rng = np.random.default_rng(9)
    detector = FreeRiderDetector(FreeRiderConfig(), D)
    ids = [f"h{i}" for i in range(8)]
    direction = rng.normal(size=D)  # a slowly moving model: the same direction two rounds running
    first = _honest(rng, 8, direction)
    detector.assess(first, ids)
    second = _honest(rng, 8, direction)
    second[2] = first[2] + 0.01 * np.linalg.norm(first[2]) / np.sqrt(D) * rng.normal(size=D)
    assert detector.assess(second, ids)["h2"].reason is None


def test_noise_tests_can_be_switched_off_for_local_dp():
    rng = np.random.default_rng(6)
    detector = FreeRiderDetector(FreeRiderConfig(detect_noise=False), D)
    cohort = rng.normal(size=(6, D)).astype(
        np.float32
    )  # locally noised honest updates look like this
    assert all(v.reason is None for v in detector.assess(cohort, list("abcdef")).values())


def test_state_round_trips():
    rng = np.random.default_rng(7)
    detector = FreeRiderDetector(FreeRiderConfig(), D)
    first = _honest(rng, 5, rng.normal(size=D))
    detector.assess(first, list("abcde"))
    detector.record_global_update(first.mean(0))
    restored = FreeRiderDetector(FreeRiderConfig(), D, seed=99)
    restored.load_state_dict(detector.state_dict())
    replayed = _honest(rng, 5, rng.normal(size=D))
    replayed[2] = first[2]
    assert "own previous update" in restored.assess(replayed, list("abcde"))["c"].reason


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_band": 0},
        {"zero_norm_ratio": 1.5},
        {"global_replay_cosine": 0},
        {"own_replay_distance": 1.0},
        {"opposition_cosine": 0.5},
        {"opposition_agreement": 0},
        {"sketch_size": 2},
    ],
)
def test_absurd_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="must be"):
        FreeRiderConfig(**kwargs)
