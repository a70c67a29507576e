"""Every mechanism of crowdlib through the shared IC / IR / budget checks."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from crowdlib import contests as c
from mechanism_properties import Deviation, MechanismCase, MechanismPropertyTests

EFFORT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def _csec_case(v, n, quality, v_low=None):
    truth = c.csec_expected_outcome(v, n, quality, v_low=v_low)
    devs = []
    for agent in range(n):
        for e in EFFORT_GRID:
            out = c.csec_expected_outcome(v, n, quality, efforts={agent: e}, v_low=v_low)
            devs.append(Deviation(f"agent {agent}", f"effort {e}", truth.agents[agent], out.agents[agent]))
    for rv in np.linspace(max(v_low or 0.0, 0.0), 3 * v, 13):
        out = c.csec_expected_outcome(v, n, quality, reported_v=float(rv), v_low=v_low)
        devs.append(Deviation("principal", f"report {rv:.3g}", truth.principal, out.principal))
    return MechanismCase(f"CSEC v={v} n={n} {quality} v_low={v_low}", truth.principal,
                         truth.agents, truth.revenue, devs)


class TestCSEC(MechanismPropertyTests):
    """Theorem 2: efficient, IC, IR and budget-balanced in expectation."""

    def cases(self):
        yield _csec_case(8.0, 3, "uniform")
        yield _csec_case(30.0, 6, "uniform")
        yield _csec_case(40.0, 3, "truncnorm")


class TestCSECWithRedistribution(MechanismPropertyTests):
    """Eqs. (34)-(37): the amended CSEC keeps IC, IR and budget balance."""

    def cases(self):
        yield _csec_case(8.0, 3, "uniform", v_low=5.0)
        yield _csec_case(30.0, 6, "uniform", v_low=12.0)


PRIOR = {0.0: 0.5, 1.0: 0.5}
PRIOR3 = {0.3: 0.2, 0.6: 0.5, 1.0: 0.3}


def _psec_case(v, n, prior, v_low, quality="uniform"):
    model = c.PSECModel(n=n, skill_prior=prior, v_low=v_low, quality=c.get_quality(quality))
    agents, revenue = np.zeros(n), 0.0
    devs = []
    worst_principal = np.inf
    for skills, p in model.profiles():
        truth = c.psec_expected_outcome(v, skills, prior, v_low, quality, model=model)
        worst_principal = min(worst_principal, truth.principal)  # IR ex post of skills
        agents += p * truth.agents
        revenue += p * truth.revenue
        for agent in range(n):
            for rep in prior:
                for e in EFFORT_GRID:
                    out = c.psec_expected_outcome(v, skills, prior, v_low, quality, model=model,
                                                  reported_skills={agent: rep}, efforts={agent: e})
                    devs.append(Deviation(f"agent {agent} s={skills}", f"report {rep}, effort {e}",
                                          truth.agents[agent], out.agents[agent]))
        for rv in np.linspace(v_low, 3 * v, 7):
            out = c.psec_expected_outcome(v, skills, prior, v_low, quality, model=model, reported_v=float(rv))
            devs.append(Deviation(f"principal s={skills}", f"report {rv:.3g}", truth.principal, out.principal))
    return MechanismCase(f"PSEC v={v} n={n}", worst_principal, agents, revenue, devs)


class TestPSEC(MechanismPropertyTests):
    """Theorem 4: IC, IR for the principal, ex ante IR and budget balance for agents."""

    def cases(self):
        yield _psec_case(10.0, 2, PRIOR, 5.0)
        yield _psec_case(25.0, 3, PRIOR3, 9.0)


@settings(max_examples=25, deadline=None)
@given(v=st.floats(0.0, 60.0), n=st.integers(1, 6), quality=st.sampled_from(["uniform", "truncnorm"]),
       agent=st.integers(0, 5), e=st.one_of(st.just(0.0), st.floats(0.01, 1.0)),
       report=st.floats(0.0, 120.0))
def test_csec_properties_on_random_environments(v, n, quality, agent, e, report):
    """Theorem 2 on random environments: IR with equality, exact budget balance, IC.

    For the truncated normal, Eq. (11)'s extreme-effort policy is efficient only
    above v* = 2.7532 (below it an intermediate effort can be better, and CSEC
    is then not IC: see the chapter), so small values are shifted above v*.
    Efforts in (0, 0.01) are left out: a truncated-normal good made with effort
    near 0 has positive quality, a free lottery ticket worth below 1e-8 (the
    chapter quantifies it).
    """
    if quality == "truncnorm" and v < 2.76:
        v += 2.76
    agent = agent % n
    truth = c.csec_expected_outcome(v, n, quality)
    assert np.allclose(truth.agents, 0.0, atol=1e-9) and abs(truth.revenue) < 1e-9
    assert truth.principal >= -1e-9
    dev = c.csec_expected_outcome(v, n, quality, efforts={agent: e})
    assert dev.agents[agent] <= truth.agents[agent] + 1e-9
    lie = c.csec_expected_outcome(v, n, quality, reported_v=report)
    assert lie.principal <= truth.principal + 1e-9


@pytest.mark.filterwarnings("ignore::crowdlib.CrowdlibWarning")  # the warning is the point
def test_csec_is_not_ic_below_the_extreme_effort_threshold():
    """Below v*, m* from Eq. (11) is not efficient and a deviation pays (truncated normal)."""
    truth = c.csec_expected_outcome(1.0, 1, "truncnorm")
    dev = c.csec_expected_outcome(1.0, 1, "truncnorm", efforts={0: 0.25})
    assert dev.agents[0] > truth.agents[0] + 1e-3
