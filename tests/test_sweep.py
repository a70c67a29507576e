"""crowdlib.experiments.sweep and the book's seeding convention: results depend on the seed and
the parameters only, never on the order of the points, the executor or the number of workers."""
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pytest

from crowdlib import CrowdlibWarning
from crowdlib import bandits as Bd
from crowdlib import experiments as X
from crowdlib import procurement as Pr


def noisy_sum(a, b, rng):
    """A module-level function, so a process pool can pickle it."""
    return {"x": a + b + rng.random(), "tag": f"{a}-{b}"}


def scalar(a, rng):
    return float(a * rng.standard_normal())


def test_sweep_is_a_tidy_table_in_grid_order():
    df = X.sweep(noisy_sum, {"a": [1, 2], "b": [10, 20]}, seed=3, progress=False)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["a", "b", "x", "tag"]
    assert df[["a", "b"]].values.tolist() == [[1, 10], [1, 20], [2, 10], [2, 20]]
    assert df["tag"].tolist() == ["1-10", "1-20", "2-10", "2-20"]
    one = X.sweep(scalar, {"a": [1.0, 2.0]}, seed=0, progress=False)
    assert list(one.columns) == ["a", "value"]


def test_points_are_seeded_by_their_parameters_not_their_position():
    full = X.sweep(noisy_sum, {"a": [1, 2, 3], "b": [10, 20]}, seed=11, progress=False)
    some = X.sweep(noisy_sum, [{"b": 20, "a": 3}, {"a": 1, "b": 10}], seed=11, progress=False)
    key = lambda d: {(r.a, r.b): r.x for r in d.itertuples()}
    assert all(key(full)[k] == v for k, v in key(some).items())
    other = X.sweep(noisy_sum, {"a": [1], "b": [10]}, seed=12, progress=False)
    assert other["x"][0] != key(full)[(1, 10)]


def test_seed_conventions_agree():
    ints = X.sweep(noisy_sum, {"a": [1], "b": [2]}, seed=5, progress=False)
    seq = X.sweep(noisy_sum, {"a": [1], "b": [2]}, seed=np.random.SeedSequence(5), progress=False)
    assert ints.equals(seq)
    g1 = X.sweep(noisy_sum, {"a": [1], "b": [2]}, seed=np.random.default_rng(9), progress=False)
    g2 = X.sweep(noisy_sum, {"a": [1], "b": [2]}, seed=np.random.default_rng(9), progress=False)
    assert g1.equals(g2)
    with pytest.raises(TypeError, match="seed"):
        X.sweep(noisy_sum, {"a": [1], "b": [2]}, seed=1.5, progress=False)
    with pytest.raises(ValueError, match="seed"):
        X.sweep(noisy_sum, {"a": [1], "b": [2]}, seed=-1, progress=False)


def test_spawn_has_no_side_effect():
    ss = np.random.SeedSequence(7)
    a, b = X.spawn(ss, 3), X.spawn(ss, 3)
    assert [c.spawn_key for c in a] == [c.spawn_key for c in b] == [(0,), (1,), (2,)]
    fresh = np.random.SeedSequence(7).spawn(3)
    assert all(np.random.default_rng(x).random() == np.random.default_rng(y).random() for x, y in zip(a, fresh))


def test_process_pool_gives_the_serial_table():
    grid = {"a": [1, 2, 3], "b": [0.5, 1.5]}
    serial = X.sweep(noisy_sum, grid, seed=1, progress=False)
    with ProcessPoolExecutor(2) as pool:
        assert X.sweep(noisy_sum, grid, seed=1, executor=pool, progress=False).equals(serial)


def test_dask_local_cluster_gives_the_serial_results():
    import logging

    import distributed      # pinned in requirements.txt: CI must run this test, never skip it

    grid = {"a": [1, 2, 3], "b": [0.5, 1.5]}
    serial = X.sweep(noisy_sum, grid, seed=1, progress=False)
    inst = Bd.instance_family("C", 5)
    small = dict(runs=2 * 500 + 7, seed=np.random.SeedSequence(2))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:
        ex = client.get_executor()
        assert X.sweep(noisy_sum, grid, seed=1, executor=ex, progress=False).equals(serial)
        old = Bd.CHUNK
        Bd.CHUNK = 500      # several chunks at a size CI can afford
        try:
            on_dask = Bd.simulate(inst, "hais", 500, 5, executor=ex, **small)
        finally:
            Bd.CHUNK = old
    Bd.CHUNK = 500
    try:
        assert np.array_equal(on_dask, Bd.simulate(inst, "hais", 500, 5, **small))
    finally:
        Bd.CHUNK = old


def test_grid_validation_names_the_problem():
    with pytest.raises(ValueError, match="twice"):
        X.sweep(noisy_sum, [{"a": 1, "b": 2}, {"b": 2, "a": 1}], seed=0, progress=False)
    with pytest.raises(ValueError, match="rng"):
        X.sweep(noisy_sum, {"rng": [1]}, seed=0, progress=False)
    with pytest.raises(TypeError, match="grid"):
        X.sweep(noisy_sum, 3, seed=0, progress=False)
    with pytest.raises(ValueError, match=r"grid\['a'\]"):
        X.sweep(noisy_sum, {"a": [], "b": [1]}, seed=0, progress=False)
    with pytest.raises(TypeError, match="grid value"):
        X.sweep(noisy_sum, {"a": [object()], "b": [1]}, seed=0, progress=False)
    with pytest.raises(TypeError, match="executor"):
        X.sweep(noisy_sum, {"a": [1], "b": [1]}, seed=0, executor="pool", progress=False)
    with pytest.raises(TypeError, match="scalar"):
        X.sweep(lambda a, rng: np.zeros(3), {"a": [1]}, seed=0, progress=False)


def test_mean_ci_unpacks_as_mean_and_half_width():
    x = np.arange(30.0)
    m, h = X.mean_ci(x, 0.99)
    assert m == pytest.approx(14.5) and h == pytest.approx(X.mean_ci(x, 0.99).half_width)


def test_simulate_chunks_depend_on_the_seed_only():
    inst = Bd.instance_family("C", 5)
    old = Bd.CHUNK
    Bd.CHUNK = 300
    try:
        a = Bd.simulate(inst, "epsilon_first", 500, 5, 1000, np.random.SeedSequence(4))
        b = Bd.simulate(inst, "epsilon_first", 500, 5, 1000, np.random.SeedSequence(4))
        with ProcessPoolExecutor(2) as pool:
            c = Bd.simulate(inst, "epsilon_first", 500, 5, 1000, np.random.SeedSequence(4), executor=pool)
    finally:
        Bd.CHUNK = old
    assert np.array_equal(a, b) and np.array_equal(a, c)
    # one chunk: the stream of the seed itself, so int seeds keep their results
    assert np.array_equal(Bd.simulate(inst, "hais", 500, 5, 50, 3),
                          Bd.simulate(inst, "hais", 500, 5, 50, np.random.SeedSequence(3)))
    g = Bd.simulate(inst, "hais", 500, 5, 50, np.random.default_rng(1))
    assert g.shape == (50,)


@pytest.mark.filterwarnings("ignore:.*round robin")
def test_run_grid_takes_a_user_instance_and_ignores_order():
    mine = Bd.ISPInstance(costs=[10, 20, 30], group_sizes=[1, 3, 5], mean_tasks=[5, 6, 7])
    settings = [Bd.Setting(mine, 300, 5, name="mine"), Bd.Setting("C", 300, 5, 5)]
    pols = [Bd.HAIS(10, 0.5), Bd.EpsilonFirst(0.1)]
    a = Bd.run_grid(settings, pols, 20, 8, progress=False)
    b = Bd.run_grid(settings[::-1], pols[::-1], 20, 8, progress=False)
    assert np.array_equal(a["pct_runs"], b["pct_runs"][::-1, ::-1])
    with pytest.raises(TypeError, match="setting must be a Setting"):
        Bd.percent_of_optimal(mine, pols, 20, 1)
    with pytest.raises(ValueError, match="family"):
        Bd.Setting("Z", 300, 5)
    with pytest.raises(ValueError, match="budget"):
        Bd.Setting("A", -1, 5)
    twice = Bd.percent_of_optimal(settings[0], [Bd.HAIS(), Bd.HAIS()], 20, 1)["pct"]
    assert np.array_equal(twice[0], twice[1])          # one name, one stream


def test_silent_degradations_warn():
    inst = Bd.ISPInstance(costs=[10, 20], group_sizes=[1, 5], mean_tasks=[3, 4])
    with pytest.warns(CrowdlibWarning, match="below every arm's cost"):
        assert Bd.simulate(inst, "epsilon_first", 5, 3, 10, 1).sum() == 0
    with pytest.warns(CrowdlibWarning, match="round robin"):
        Bd.simulate(inst, Bd.HAIS(20, 0.5), 100, 3, 10, 1)
    c = np.random.default_rng(0).uniform(0, 1, 1200)
    B = 0.25 * c.sum()
    many, u_many = c.copy(), np.ones(c.size)
    many[:100], u_many[:100] = 0.5 * B, 1e4              # 100 sellers beyond the fast path's limit
    with pytest.warns(CrowdlibWarning, match="O\\(n\\^2\\)"):
        out = Pr.mechanism2(many, u_many, B)
    assert out.path == "fast"          # each wide seller by its own exact search, the rest fast
    assert np.allclose(out.rates, Pr.mechanism2_naive(many, u_many, B).rates, rtol=1e-12, atol=0)
    assert Pr.mechanism2(c, np.ones(c.size), B, Pr.three_level_rule(0.5, 0.5)).path == "steps"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Pr.mechanism2(c, np.ones(c.size), 0.25 * c.sum()).path == "fast"
        assert Pr.mechanism2(c, np.ones(c.size), 0.25 * c.sum(), "uniform").path == "uniform"


def test_market_and_samplers_take_every_seed_form():
    a = Pr.market("uniform", 8, 3)
    b = Pr.market("uniform", 8, np.random.SeedSequence(3))
    c = Pr.market("uniform", 8, np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[0], c[0])
    assert Pr.sample_hardness_costs(5, 1).shape == (5,)
    with pytest.raises(TypeError, match="rng"):
        Pr.market("uniform", 8, None)


def test_large_market_limit_against_mechanism1_on_a_big_market():
    from scipy import stats

    dist = stats.expon()
    lim = Pr.large_market_limit("optimal", dist, 0.2)
    n = 200_000
    c = dist.rvs(size=n, random_state=np.random.default_rng(5))
    m1 = Pr.mechanism1(c, np.ones(n), 0.2 * n)
    assert m1.rate == pytest.approx(lim.rate, rel=5e-3)
    assert m1.value / Pr.fractional_optimum(c, np.ones(n), 0.2 * n) == pytest.approx(lim.ratio, abs=3e-3)
    assert lim.ratio >= 1 - 1 / np.e
    # uniform costs on [0, 1], b = 1/8: OPT buys c <= t with t^2 / 2 = 1/8, t = 1/2
    u = Pr.large_market_limit("uniform", stats.uniform(), 0.125)
    assert u.threshold == pytest.approx(0.5) and u.optimum == pytest.approx(0.5)
    # uniform rule: every seller below r is paid r, so r F(r) = r^2 = b
    assert u.rate == pytest.approx(np.sqrt(0.125)) and u.value == pytest.approx(np.sqrt(0.125))
    with pytest.raises(ValueError, match="budget_per_seller"):
        Pr.large_market_limit("optimal", dist, 1.5)
    with pytest.raises(TypeError, match="costs"):
        Pr.large_market_limit("optimal", [1, 2], 0.1)


def test_policies_and_settings_are_keyed_by_content():
    assert X.point_key({"p": Bd.SOAAv(0.0)}) != X.point_key({"p": Bd.SOAAv(1.0)})
    assert Bd.SOAAv(1.0).name != Bd.SOAAv(0.0).name and Bd.SOAAv(0.0).name == "soaav"
    assert Bd.EpsilonFirst(0.1).name != Bd.EpsilonFirst(0.1000001).name
    one = Bd.ISPInstance([10, 20], [1, 5], [3, 4])
    two = Bd.ISPInstance([10, 20], [1, 5], [3, 5])
    assert (X.point_key({"s": Bd.Setting(one, 100, 5, name="a")})
            != X.point_key({"s": Bd.Setting(two, 100, 5, name="a")}))
    table = X.sweep(lambda s, rng: 1.0, {"s": [Bd.Setting(one, 100, 5, name="a")]}, seed=0, progress=False)
    assert table["s"].tolist() == ["a 100/5"]        # shown by its label


def test_warnings_of_workers_reach_the_caller():
    inst = Bd.ISPInstance(costs=[10, 20], group_sizes=[1, 5], mean_tasks=[3, 4])

    def point(budget, rng):
        return float(Bd.simulate(inst, Bd.HAIS(20, 0.5), budget, 3, 10, 1).mean())

    with ProcessPoolExecutor(2) as pool, pytest.warns(CrowdlibWarning, match="round robin"):
        X.sweep(_hais_point, {"budget": [100.0, 200.0]}, seed=0, executor=pool, progress=False)
    with pytest.warns(CrowdlibWarning, match="round robin"):
        X.sweep(point, {"budget": [100.0]}, seed=0, progress=False)


def _hais_point(budget, rng):
    inst = Bd.ISPInstance(costs=[10, 20], group_sizes=[1, 5], mean_tasks=[3, 4])
    return float(Bd.simulate(inst, Bd.HAIS(20, 0.5), budget, 3, 10, 1).mean())


def test_seeded_helpers_are_named_not_positional():
    a = Pr.ratio_sweep(["uniform", "exponential"], [16], lambda n: 2, 5, progress=False)
    b = Pr.ratio_sweep(["exponential", "uniform"], [16], lambda n: 2, 5, progress=False)
    assert np.array_equal(a["optimal"][a["family"] == 0], b["optimal"][b["family"] == 1])
    ss = np.random.SeedSequence(3)
    h1 = Pr.hardness_experiment([20, 40], 2, ss)
    h2 = Pr.hardness_experiment([40, 20], 2, ss)
    assert h1["mech2"][0] == h2["mech2"][1] and h1["mech2"][1] == h2["mech2"][0]
    from crowdlib import contests_audit as CA
    r1 = CA.audit_csec(9.5, 3, points=64, replicates=4, seed=ss)
    r2 = CA.audit_csec(9.5, 3, points=64, replicates=4, seed=ss)
    assert r1 == r2
    inst = Bd.instance_family("C", 5)
    assert np.array_equal(Bd.simulate_loop(inst, "hais", 500, 5, 3, ss), Bd.simulate_loop(inst, "hais", 500, 5, 3, ss))
