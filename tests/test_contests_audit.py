"""The audits of Theorems 2 and 4 (crowdlib.contests_audit): they pass the paper's rules and
reject each wrong rule for the property it breaks."""
import numpy as np
import pytest

from crowdlib import contests, contests_audit as ca
from crowdlib.quality import UniformQuality

FAST = dict(points=512, replicates=8, seed=11)


@pytest.mark.parametrize("v, n, quality", [(5.0, 2, "uniform"), (14.0, 5, "uniform"),
                                           (0.7, 3, "uniform"), (30.0, 3, "truncnorm")])
def test_the_paper_csec_passes_its_audit(v, n, quality):
    audit = ca.audit_csec(v, n, quality, **FAST)
    assert audit.holds, audit.table()
    exact = ca.exact_csec_audit(v, n, quality, effort_grid=np.linspace(0, 1, 6),
                                report_grid=np.linspace(0, 2 * v, 9))
    assert exact.holds, exact.table()


@pytest.mark.parametrize("name", list(ca.csec_mutations("uniform")))
def test_every_wrong_csec_rule_breaks_the_property_it_targets(name):
    rule, target = ca.csec_mutations("uniform")[name]
    audit = ca.audit_csec(9.5, 4, rule=rule, **FAST)     # m* = 2 of 4, not a tie
    assert target in audit.failed(), audit.table()


def _env(n=3, prior=None, v_low=3.0):
    return contests.PSECModel(n=n, skill_prior=prior or {0.5: 0.4, 1.0: 0.6}, v_low=v_low,
                              quality=UniformQuality())


def test_the_paper_psec_passes_its_audit():
    env = _env()
    audit = ca.audit_psec(11.0, env, **FAST)
    assert audit.holds, audit.table()
    assert ca.exact_psec_audit(11.0, env).holds


@pytest.mark.parametrize("name", list(ca.psec_mutations(_env())))
def test_every_wrong_psec_rule_breaks_the_property_it_targets(name):
    """As in the chapter, a wrong rule must be rejected for its property in some environment."""
    failed = []
    for v, env in ((10.0, _env(n=2, prior={0.0: 0.5, 1.0: 0.5}, v_low=5.0)), (11.0, _env())):
        rule, target = ca.psec_mutations(env)[name]
        failed += ca.audit_psec(v, env, rule=rule, **FAST).failed()
    assert target in failed, failed


def test_audits_depend_only_on_the_seed():
    a = ca.audit_csec(9.5, 3, **FAST).table()
    b = ca.audit_csec(9.5, 3, **FAST).table()
    assert a.equals(b)
    c = ca.audit_csec(9.5, 3, points=512, replicates=8, seed=12).table()
    assert not a["statistic"].equals(c["statistic"])


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="points"):
        ca.audit_csec(8.0, 3, points=100)
    with pytest.raises(ValueError, match="replicates"):
        ca.audit_csec(8.0, 3, replicates=1)
    with pytest.raises(ValueError, match="n must be an integer in"):
        ca.audit_csec(8.0, 13)
    with pytest.raises(ValueError, match="v must be"):
        ca.audit_csec(0.0, 3)
    with pytest.raises(TypeError, match="rule"):
        ca.audit_csec(8.0, 3, rule="csec")
    with pytest.raises(TypeError, match="environment"):
        ca.audit_psec(8.0, {"n": 2})
    with pytest.raises(ValueError, match="environment.n"):
        ca.audit_psec(8.0, _env(n=5))
    with pytest.raises(KeyError, match="no audit item"):
        ca.audit_csec(8.0, 2, **FAST)["IR (principal)"]


def test_quantiles_invert_the_cdf():
    from crowdlib.quality import QualityModel, TruncNormQuality

    u = np.linspace(0.01, 0.99, 7)
    for model in (UniformQuality(), TruncNormQuality()):
        x = model.quantile(u, 10.0, 0.6)
        assert np.allclose(model.cdf(x, 10.0, 0.6), u)
        # the generic bisection of the base class agrees with the closed forms
        assert np.allclose(QualityModel.quantile(model, u, 10.0, 0.6), x, atol=1e-9)


def test_truncnorm_spreads_never_crash_and_warn_where_csec_fails():
    import warnings

    from crowdlib import CrowdlibWarning
    from crowdlib.quality import TruncNormQuality

    for ratio in (0.005, 0.25, 0.5, 1.0, 3.0):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CrowdlibWarning)
            contests.csec(1000.0, 2, [900.0, 0.0], TruncNormQuality(ratio))
            contests.csec_expected_outcome(30.0, 5, TruncNormQuality(ratio))
        if ratio >= 0.5:   # a non-participant's free lottery ticket is worth 0.1 and more there
            assert caught and all(c.category is CrowdlibWarning for c in caught)
            assert caught[0].filename == __file__     # attributed to the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error", CrowdlibWarning)
        contests.csec_expected_outcome(40.0, 4, "truncnorm")     # sigma = v/8 above v*: silent


def test_huge_values_and_validation():
    assert contests.optimal_participants_uniform(1e300) > 0   # returns at once (integer sqrt)
    assert contests.optimal_participants_uniform(6.0) == 2 and contests.optimal_participants_uniform(5.99) == 1
    assert contests.surplus_guarantee(2.0, 4) >= 0.0
    with pytest.raises(ValueError, match="skill_prior"):
        contests.PSECModel(n=2, skill_prior={0.5: 0.6, 1.0: 0.5}, v_low=1.0, quality="uniform")
    with pytest.raises(ValueError, match="v_low"):
        contests.PSECModel(n=2, skill_prior={1.0: 1.0}, v_low=-5.0, quality="uniform")
    env = contests.PSECModel(n=2, skill_prior={0.0: 0.5, 1.0: 0.5}, v_low=5.0, quality="uniform")
    with pytest.raises(ValueError, match="model does not match"):
        contests.psec(10, [0, 1], [0, 6], {0.0: 0.2, 1.0: 0.8}, 5, model=env)
    with pytest.raises(ValueError, match="model does not match"):
        contests.psec_expected_outcome(10, [0, 1, 1], {0.0: 0.5, 1.0: 0.5}, 5, model=env)
    with pytest.raises(ValueError, match="v_low"):
        contests.csec_expected_outcome(8.0, 3, v_low=20.0)
    with pytest.raises(ValueError, match="effort_grid"):
        ca.audit_csec(8.0, 3, effort_grid=[], **FAST)
    with pytest.raises(TypeError, match="seed"):
        ca.audit_csec(8.0, 3, points=512, replicates=8, seed="x")
    with pytest.raises(ValueError, match="seed"):
        ca.audit_csec(8.0, 3, points=512, replicates=8, seed=-1)
    with pytest.raises(TypeError, match="rng"):
        contests.simulate_csec(8.0, 3, rng="a")
    with pytest.raises(ValueError, match="u must"):
        UniformQuality().quantile(1.5, 10.0, 1.0)
    with pytest.raises(ValueError, match="level"):
        UniformQuality().quantile(0.5, 10.0, -1.0)


def test_transfer_census():
    base = ca.csec_transfer_census(33.0, 6, "uniform", runs=500, rng=1)
    assert base.max_positive == 1 and base.all_nonzero == 1.0 and base.others_zero
    tie = ca.csec_transfer_census(6.0, 3, "uniform", runs=500, rng=1)
    assert tie.all_nonzero < 1.0                       # at v = k(k+1) a losing participant gets 0
    rich = ca.csec_transfer_census(40.0, 6, "uniform", runs=500, rng=1, v_low=20.0)
    assert rich.all_positive == 1.0
    env = contests.PSECModel(n=3, skill_prior={0.3: 0.2, 0.6: 0.5, 1.0: 0.3}, v_low=9.0,
                             quality="uniform")
    assert 0.0 < ca.psec_transfer_census(25.0, env, runs=300, rng=2).all_positive < 1.0


def test_redistributed_rule_passes_its_audit():
    rule = ca.csec_rule("uniform", v_low=5.0)
    assert ca.audit_csec(9.5, 4, rule=rule, **FAST).holds
