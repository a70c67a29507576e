"""Tests of crowdlib.bandits (Truong et al., adaptive incentive selection)."""

import math

import numpy as np
import pytest

from crowdlib import CrowdlibWarning
from hypothesis import given, settings, strategies as st
from scipy import stats

from crowdlib import bandits as Bd

REQUIRED = ["hais", "stepped_epsilon_first", "epsilon_first", "fkube", "stepped_fkube", "soaav", "optimal"]


class SpendRecorder(Bd.Policy):
    """Wraps a policy and records what every run spends, period by period."""

    def __init__(self, inner):
        self.inner, self.name, self.spent = inner, f"recorded {inner.name}", None

    def decide(self, state):
        n = self.inner.decide(state)
        cost = np.asarray(n) @ state.instance.costs
        self.spent = cost if self.spent is None else self.spent + cost
        return n


def test_policies_have_the_fixed_names():
    assert set(REQUIRED) <= set(Bd.POLICIES)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), budget=st.floats(5.0, 3000.0), periods=st.integers(2, 15),
       name=st.sampled_from(sorted(Bd.POLICIES)), g=st.integers(1, 25))
def test_no_run_ever_spends_more_than_the_budget(seed, budget, periods, name, g):
    rng = np.random.default_rng(seed)
    inst = Bd.ISPInstance(rng.uniform(0.5, 8, 5), g, rng.uniform(0, 20, 5))
    rec = SpendRecorder(Bd.POLICIES[name])
    total = Bd.simulate(inst, rec, budget, periods, 50, seed)
    assert np.all(rec.spent <= budget + 1e-9) and np.all(total >= 0)


@pytest.mark.parametrize("name", sorted(Bd.POLICIES))
def test_same_seed_same_array(name):
    inst = Bd.instance_family("A")
    a = Bd.simulate(inst, name, 500, 5, 200, 42)
    b = Bd.simulate(inst, name, 500, 5, 200, 42)
    c = Bd.simulate(inst, name, 500, 5, 200, 43)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("inst", [Bd.instance_family("C", 5), Bd.instance_family("A"), Bd.instance_family("B")],
                         ids=["C5", "A", "B"])
def test_optimal_beats_every_policy_on_average(inst):
    runs = 400
    opt = Bd.simulate(inst, "optimal", 500, 5, runs, 1)
    for j, name in enumerate(REQUIRED[:-1]):
        x = Bd.simulate(inst, name, 500, 5, runs, [2, j])
        half = Bd.Z99 * math.sqrt(x.var() / runs + opt.var() / runs)
        assert x.mean() <= opt.mean() + half, name


def test_optimal_spends_everything_greedily_on_the_best_arm():
    inst = Bd.instance_family("C", 5)
    rec = SpendRecorder(Bd.Optimal())
    Bd.simulate(inst, rec, 500, 3, 5, 0)
    assert np.all(rec.spent > 500 - inst.costs.min())


def test_an_overspending_policy_is_refused():
    class Greedy(Bd.Policy):
        name = "overspender"

        def decide(self, state):
            return np.full(state.users.shape, 10**6, dtype=int)

    with pytest.raises(RuntimeError, match="more than the residual budget"):
        Bd.simulate(Bd.instance_family("B"), Greedy(), 100, 3, 4, 0)


def test_exact_draws_match_scipy_betabinom():
    inst = Bd.ISPInstance([1.0, 2.0], 1, [3.0, 15.0], max_tasks=20, dispersion=2.0)
    users = np.ones((20000, 2), dtype=int)
    x = inst.draw(users, np.random.default_rng(3), "exact")
    for i, mu in enumerate(inst.mean_tasks):
        law = stats.betabinom(20, 2 * mu / 20, 2 * (1 - mu / 20))
        counts = np.bincount(x[:, i].astype(int), minlength=21)
        expected = law.pmf(np.arange(21)) * x.shape[0]
        keep = expected > 5
        assert stats.chisquare(counts[keep], expected[keep] * counts[keep].sum() / expected[keep].sum()).pvalue > 1e-3


def test_normal_approximation_keeps_mean_and_variance():
    inst = Bd.instance_family("C", 20)
    users = np.full((20000, 5), 200)
    x = inst.draw(users, np.random.default_rng(4))  # 200 users per cell: the normal path
    assert np.allclose(x.mean(axis=0), 200 * inst.mean_tasks, rtol=0.01)
    assert np.allclose(x.var(axis=0), 200 * inst.user_variance(), rtol=0.05)


def test_hais_targets_follow_the_hoeffding_formula():
    inst = Bd.instance_family("C", 5)
    n = np.full((1, 5), 100.0)
    state = Bd.State(inst, 500, 5, np.array([400.0]), n, n * inst.mean_tasks, n / 5)
    rho = state.estimates()[0]
    b = int(np.argmax(rho))
    gaps = rho[b] - rho
    target = Bd.hais_targets(state, 20, 0.5)[0]
    Rp2 = (20 * 5 / inst.costs) ** 2
    for j in range(5):
        gap = gaps[j] if j != b else np.delete(gaps, b).min()
        assert target[j] == max(20, math.ceil(Rp2[j] * math.log(2) / gap**2))


def test_round_robin_and_density_greedy():
    c = np.array([2.0, 3.0, 5.0])
    n = Bd.round_robin(np.array([23.0, 20.0]), np.ones((2, 3), dtype=bool), c)
    assert n.tolist() == [[3, 2, 2], [2, 2, 2]]                # two sweeps of 10, then 3 buys one more 2
    n = Bd.density_greedy(np.array([20.0]), np.array([[1.0, 3.0, 2.0]]), c)
    assert n.tolist() == [[1, 6, 0]]                            # 6 x 3 = 18, then one 2


def test_group_size_may_be_one_int_or_one_per_arm():
    a = Bd.ISPInstance([1, 2], 5, [1, 2])
    b = Bd.ISPInstance([1, 2], [5, 5], [1, 2])
    assert np.array_equal(a.group_sizes, b.group_sizes)
    assert np.allclose(a.effectiveness, [5, 5])


@pytest.mark.parametrize("call, match", [
    (lambda: Bd.ISPInstance([1.0, 0.0], 5, [1, 2]), "costs"),
    (lambda: Bd.ISPInstance([1.0, -2.0], 5, [1, 2]), "costs"),
    (lambda: Bd.ISPInstance([1.0, float("nan")], 5, [1, 2]), "costs"),
    (lambda: Bd.ISPInstance([1.0, 2.0], [5], [1, 2]), "group_sizes"),
    (lambda: Bd.ISPInstance([1.0, 2.0], [5, 0], [1, 2]), "group_sizes"),
    (lambda: Bd.ISPInstance([1.0, 2.0], [5, 2.5], [1, 2]), "group_sizes"),
    (lambda: Bd.ISPInstance([1.0, 2.0], 5, [1]), "mean_tasks"),
    (lambda: Bd.ISPInstance([1.0, 2.0], 5, [1, 21]), "mean_tasks"),
    (lambda: Bd.ISPInstance([1.0, 2.0], 5, [-1, 2]), "mean_tasks"),
    (lambda: Bd.ISPInstance([1.0, 2.0], 5, [1, 2], max_tasks=0), "max_tasks"),
    (lambda: Bd.ISPInstance([1.0, 2.0], 5, [1, 2], dispersion=0), "dispersion"),
    (lambda: Bd.simulate(Bd.instance_family("B"), "ucb", 100, 3, 4, 0), "policy"),
    (lambda: Bd.simulate(Bd.instance_family("B"), "hais", -1, 3, 4, 0), "budget"),
    (lambda: Bd.simulate(Bd.instance_family("B"), "hais", 100, 1, 4, 0), "periods"),
    (lambda: Bd.simulate(Bd.instance_family("B"), "hais", 100, 3, 0, 0), "runs"),
    (lambda: Bd.HAIS(20, 1.0), "p"),
    (lambda: Bd.SteppedEpsilonFirst(1.5), "epsilon"),
])
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("call, match", [
    (lambda: Bd.ISPInstance("1, 2", 5, [1, 2]), "costs"),
    (lambda: Bd.simulate("C", "hais", 100, 3, 4, 0), "instance"),
    (lambda: Bd.simulate(Bd.instance_family("B"), 3, 100, 3, 4, 0), "policy"),
    (lambda: Bd.simulate(Bd.instance_family("B"), "hais", 100, 3.5, 4, 0), "periods"),
])
def test_wrong_types_name_the_parameter(call, match):
    with pytest.raises(TypeError, match=match):
        call()


@pytest.mark.parametrize("name", sorted(Bd.POLICIES))
@pytest.mark.filterwarnings("ignore:.*round robin")
def test_a_budget_below_every_cost_buys_nothing(name):
    # HAIS used to divide -inf by -inf here and return negative counts
    with pytest.warns(CrowdlibWarning, match="below every arm's cost"):
        total = Bd.simulate(Bd.instance_family("C", 5), name, 1.0, 5, 10, 0)
    assert np.all(total == 0)


def test_soaav_pass_runs_one_contest_per_arm_in_period_one():
    inst = Bd.instance_family("C", 5)
    state = Bd.State(inst, 500, 5, np.full(2, 500.0), np.zeros((2, 5)), np.zeros((2, 5)), np.zeros((2, 5)))
    assert Bd.SOAAv(0.0, "pass").decide(state).tolist() == [[1] * 5] * 2


def test_fkube_reward_scale_is_a_parameter():
    inst = Bd.instance_family("C", 5)
    a = Bd.simulate(inst, Bd.FKUBE(), 500, 5, 200, 1)
    b = Bd.simulate(inst, Bd.FKUBE(reward_scale=20.0), 500, 5, 200, 1)
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="reward_scale"):
        Bd.FKUBE(reward_scale=0)


def test_seed_must_be_integers():
    with pytest.raises(TypeError, match="seed"):
        Bd.simulate(Bd.instance_family("B"), "hais", 100, 3, 4, 1.5)


def test_hoeffding_targets_by_hand_and_custom_settings():
    inst = Bd.instance_family("C", 5)
    rho = inst.effectiveness
    t = Bd.hoeffding_targets(inst, rho[None, :], 0.5, m0=0)[0]
    b = int(np.argmax(rho))
    Rp = inst.max_tasks * inst.group_sizes / inst.costs
    gaps = rho[b] - rho
    for j in range(inst.arms):
        g = gaps[j] if j != b else min(gaps[k] for k in range(inst.arms) if k != b)
        assert t[j] == np.ceil(Rp[j] ** 2 * np.log(2.0) / g ** 2)
    assert np.all(Bd.hoeffding_targets(inst, rho[None, :], 0.5, m0=10 ** 9) == 10 ** 9)
    with pytest.raises(ValueError, match="rho"):
        Bd.hoeffding_targets(inst, np.ones((1, 2)), 0.5)
    mixed = Bd.ISPInstance(costs=[1.0, 1.5, 6.0], group_sizes=[1, 1, 5], mean_tasks=[5.0, 8.0, 8.4])
    grid = Bd.run_grid([Bd.Setting("custom", 500, 5, instance=mixed)], ["hais"], 20, 1, progress=False)
    assert grid["pct_runs"].shape == (1, 1, 20) and np.all(grid["clusters"][0] == np.arange(20))
    with pytest.raises(ValueError, match="custom"):
        Bd.Setting("custom", 500, 5)
    with pytest.raises(ValueError, match="custom"):
        Bd.Setting("C", 500, 5, 5, instance=mixed)


def test_grid_results_do_not_depend_on_list_order():
    settings = [Bd.Setting("C", 300, 5, 5), Bd.Setting("random", 300, 5)]
    policies = [Bd.HAIS(20, 0.5), Bd.FKUBE(), Bd.EpsilonFirst(0.1)]
    a = Bd.run_grid(settings, policies, 100, 7, progress=False)      # 10 instances of 10 runs
    b = Bd.run_grid(settings[::-1], policies[::-1], 100, 7, progress=False)
    assert np.array_equal(a["pct_runs"], b["pct_runs"][::-1, ::-1])
