"""crowdlib.contests: the public API of chapter 1 (Cavallo & Jain 2012)."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from crowdlib import contests as c


def eq20_argmax(v: Fraction) -> int:
    """Largest maximiser of Eq. (20), m v/(m+1) - m, in exact rational arithmetic."""
    values = [m * v / (m + 1) - m for m in range(0, 200)]
    best = max(values)
    return max(m for m, x in enumerate(values) if x == best)


@settings(max_examples=300, deadline=None)
@given(num=st.integers(0, 40_000))
def test_theorem1_closed_form_equals_exact_argmax(num):
    v = Fraction(num, 100)
    assert c.optimal_participants_uniform(float(v)) == eq20_argmax(v)


@pytest.mark.parametrize("k", range(1, 12))
def test_theorem1_ties_choose_larger(k):
    v = k * (k + 1)
    assert c.optimal_participants_uniform(v) == k
    assert c.optimal_participants(v) == k


@settings(max_examples=100, deadline=None)
@given(v=st.floats(0, 400))
def test_eq11_agrees_with_theorem1_for_uniform(v):
    assert c.optimal_participants(v, "uniform") == c.optimal_participants_uniform(v)


@settings(max_examples=50, deadline=None)
@given(v=st.floats(0, 200), n=st.integers(0, 30))
def test_pool_size_caps_participation(v, n):
    assert c.optimal_participants(v, "uniform", n) == min(n, c.optimal_participants_uniform(v))


def test_expected_max_values():
    assert c.expected_max_quality(8, 2) == pytest.approx(16 / 3)
    assert c.expected_max_quality(8, 0) == 0.0
    # truncated normal: scale-free constant c_1 = 1 - (1/8) * phi(0) / (1/2 - Phi(-8))
    from scipy.stats import norm
    c1 = 1 - (1 / 8) * norm.pdf(0) / (0.5 - norm.cdf(-8))
    assert c.expected_max_quality(3.0, 1, "truncnorm") == pytest.approx(3.0 * c1, rel=1e-10)


def test_truncnorm_participation_is_monotone_in_value():
    ms = [c.optimal_participants(v, "truncnorm") for v in np.linspace(0, 100, 201)]
    assert all(a <= b for a, b in zip(ms, ms[1:]))


def test_csec_worked_example():
    r = c.csec(8, 3, [3, 5, 0])
    assert list(r.efforts) == [1, 1, 0]
    assert r.principal_charge == 2
    assert r.agent_payments == pytest.approx([-1 / 3, 5 / 3, 0])
    assert r.revenue == pytest.approx(2 / 3)


def test_psec_worked_example_exact_value():
    r = c.psec(10, [0, 1], [0, 6], {0: 0.5, 1: 0.5}, 5)
    assert r.guarantee == pytest.approx(1.5)
    assert r.ex_ante_term == pytest.approx(125 / 48, abs=1e-12)
    assert r.principal_charge == pytest.approx(2.5)
    assert r.agent_payments == pytest.approx([5 - 125 / 48, 6 - 125 / 48])


def test_efficient_efforts_picks_top_skills():
    e = c.efficient_efforts(30, [0.2, 1.0, 0.9, 0.1])
    assert e[1] == 1 and e[2] == 1 and e[3] == 0


def test_bilateral_trade_reduction_matches_trade_welfare():
    for ts, tb in [(0.3, 0.7), (0.7, 0.3), (0.5, 0.5), (0.0, 1.0)]:
        inst = c.bilateral_trade_reduction(ts, tb)
        trade = tb >= ts
        assert inst.efficient_effort == pytest.approx(ts if trade else 0.0)
        assert inst.welfare(inst.efficient_effort) == pytest.approx(max(tb - ts, 0.0))


@pytest.mark.parametrize("call, name", [
    (lambda: c.optimal_participants_uniform(-1), "v"),
    (lambda: c.optimal_participants_uniform(float("nan")), "v"),
    (lambda: c.expected_max_quality(1, -2), "m"),
    (lambda: c.expected_max_quality(1, 1.5), "m"),
    (lambda: c.expected_max_quality(1, 2, "normal"), "quality"),
    (lambda: c.optimal_participants(1, n=-1), "n"),
    (lambda: c.csec(8, 3, [1, 2]), "qualities"),
    (lambda: c.csec(8, 3, [1, 2, float("nan")]), "qualities"),
    (lambda: c.csec(8, 3, [1, 2, 9]), "qualities"),
    (lambda: c.csec(8, 0, []), "n"),
    (lambda: c.psec(10, [0, 1], [0, 6], {0: 0.5, 1: 0.6}, 5), "skill_prior"),
    (lambda: c.psec(10, [0, 1], [0, 6, 1], {0: 0.5, 1: 0.5}, 5), "qualities"),
    (lambda: c.psec(4, [0, 1], [0, 3], {0: 0.5, 1: 0.5}, 5), "v"),
    (lambda: c.psec(10, [0, 1.5], [0, 6], {0: 0.5, 1: 0.5}, 5), "skills"),
    (lambda: c.psec(10, [0, 1], [0, 6], {0: 0.5, 1: 0.5}, 5, quality="beta"), "quality"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises((ValueError, TypeError), match=name):
        call()


def test_type_errors():
    with pytest.raises(TypeError, match="v"):
        c.optimal_participants_uniform("8")
    with pytest.raises(TypeError, match="skill_prior"):
        c.psec(10, [0, 1], [0, 6], [0.5, 0.5], 5)


def test_simulation_is_deterministic_given_seed():
    a = c.simulate_csec(8, 3, runs=500, rng=7)
    b = c.simulate_csec(8, 3, runs=500, rng=np.random.default_rng(7))
    assert np.array_equal(a["payments"], b["payments"])


def test_monte_carlo_agrees_with_exact_expectations():
    for quality in ("uniform", "truncnorm"):
        sim = c.simulate_csec(30, 4, quality, runs=40_000, rng=11)
        exact = c.csec_expected_outcome(30, 4, quality)
        se = sim["agent_utility"].std(axis=0) / np.sqrt(40_000) + 1e-12
        assert np.all(np.abs(sim["agent_utility"].mean(axis=0) - exact.agents) < 5 * se)
        se_p = sim["principal_utility"].std() / np.sqrt(40_000)
        assert abs(sim["principal_utility"].mean() - exact.principal) < 5 * se_p


def test_deviations_are_validated():
    with pytest.raises(ValueError, match="efforts"):
        c.csec_expected_outcome(8, 3, efforts={5: 0.5})
    with pytest.raises(ValueError, match="efforts"):
        c.simulate_csec(8, 3, runs=10, rng=0, efforts={0: 1.5})
    with pytest.raises(ValueError, match="reported_skills"):
        c.psec_expected_outcome(10, [0, 1], {0: 0.5, 1: 0.5}, 5, reported_skills={0: -0.1})


def test_book_table_checks_row_lengths():
    from crowdlib.book import table

    assert "| a | b |" in table(["a", "b"], [[1, 2]]).data
    with pytest.raises(ValueError, match="rows"):
        table(["a", "b"], [[1]])


def test_welfare_validates_its_input():
    assert c.welfare(8, [1, 1, 0], [1, 1, 1]) == pytest.approx(16 / 3 - 2)
    with pytest.raises(ValueError, match="skills"):
        c.welfare(8, [1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="efforts"):
        c.welfare(8, [1, 2], [1, 1])


def _csec_mean_gap(v, n, quality, runs=100_000, seed=7):
    """Largest |z| between simulated CSEC payments (Eqs. (23)-(25) applied per contest) and the
    exact expected utilities: the chapter's Definition 2 / Theorem 2 simulation check."""
    sim = c.simulate_csec(v, n, quality, runs=runs, rng=seed)
    exact = c.csec_expected_outcome(v, n, quality)
    z = [(sim["agent_utility"][:, i].mean() - exact.agents[i])
         / max(sim["agent_utility"][:, i].std() / np.sqrt(runs), 1e-12) for i in range(n)]
    z.append((sim["revenue"].mean() - exact.revenue) / max(sim["revenue"].std() / np.sqrt(runs), 1e-12))
    return float(np.max(np.abs(z)))


def test_the_ex_post_rule_check_fails_under_a_wrong_winner_bonus(monkeypatch):
    """Mutation test: paying the winner Q_h instead of Q_h - Q^(2) (Eq. (24)) must be caught by
    the same check that passes the correct rule (uniform and truncated-normal quality)."""
    for v, n, q in ((30.0, 6, "uniform"), (40.0, 4, "truncnorm")):
        assert _csec_mean_gap(v, n, q) < 4.5

    right = c.csec_payments

    def wrong(qualities, efforts, expected_marginal):
        pay = right(qualities, efforts, expected_marginal)
        q_ = np.atleast_2d(qualities)
        rows, top = np.arange(q_.shape[0]), np.argmax(q_, axis=1)
        second = -np.partition(-q_, 1, axis=1)[:, 1]
        pay[rows, top] += second  # the winner keeps Q_h, not Q_h - Q^(2)
        return pay

    monkeypatch.setattr(c, "csec_payments", wrong)
    for v, n, q in ((30.0, 6, "uniform"), (40.0, 4, "truncnorm")):
        assert _csec_mean_gap(v, n, q) > 10


def test_csec_below_the_extreme_effort_threshold_warns():
    import warnings

    from crowdlib import CrowdlibWarning

    with pytest.warns(CrowdlibWarning, match="below the extreme-effort threshold"):
        c.csec_expected_outcome(2.0, 2, "truncnorm")
    with pytest.warns(CrowdlibWarning):
        c.simulate_csec(2.5, 3, "truncnorm", runs=10, rng=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CrowdlibWarning)
        c.csec_expected_outcome(40.0, 3, "truncnorm")   # above v*: no warning
        c.csec_expected_outcome(2.0, 2, "uniform")      # uniform quality: extreme effort is efficient


@pytest.mark.filterwarnings("ignore::crowdlib.CrowdlibWarning")  # below v* on purpose
def test_deviation_and_free_ticket_routines():
    gain, effort = c.best_effort_deviation(2.0, 2, "truncnorm", efforts=np.linspace(0.5, 1, 101))
    assert gain > 1e-3 and 0.5 <= effort < 1.0          # below v*: easing off pays
    assert c.best_effort_deviation(30.0, 6, "uniform")[0] <= 1e-9   # CSEC is IC there
    assert 0 < c.free_ticket_gain(40.0) < 1e-7           # sigma = v/8: a tiny free ticket
    with pytest.raises(ValueError, match="agent"):
        c.best_effort_deviation(8.0, 3, agent=3)
    with pytest.raises(ValueError, match="effort"):
        c.free_ticket_gain(40.0, effort=0.0)
