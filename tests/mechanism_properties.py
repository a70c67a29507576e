"""One shared set of property checks that every mechanism in crowdlib must pass.

A mechanism enters the suite through a :class:`MechanismCase`: a small object
that reports, for one environment, the truthful expected utilities and a list
of deviations with their expected utilities. :class:`MechanismPropertyTests`
then checks individual rationality (IR), incentive compatibility (IC) and the
budget, the same way for every mechanism (in the spirit of Axelrod's shared
strategy tests). Subclasses provide ``cases()`` and say which notion of IR and
budget balance the paper claims.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np


@dataclass
class Deviation:
    """A unilateral deviation: who deviates, how, and the expected utilities."""

    player: str
    description: str
    truthful_utility: float
    deviating_utility: float


@dataclass
class MechanismCase:
    """Expected outcomes of one mechanism in one environment (exact, not sampled)."""

    label: str
    principal_utility: float
    agent_utilities: np.ndarray
    expected_revenue: float
    deviations: list[Deviation] = field(default_factory=list)


class MechanismPropertyTests:
    """Base class: subclass it, implement ``cases`` and set the flags.

    * ``budget_balanced``: expected revenue is exactly 0 (else only >= 0).
    * ``agents_ir``: every agent's expected utility is >= 0.
    """

    tol = 1e-9
    budget_balanced = True
    agents_ir = True

    def cases(self) -> Iterable[MechanismCase]:  # pragma: no cover - abstract
        raise NotImplementedError

    def all_cases(self) -> list[MechanismCase]:
        """The cases, computed once per test class."""
        cls = type(self)
        if "_cases" not in cls.__dict__:
            cls._cases = list(self.cases())
        return cls._cases

    def test_principal_individually_rational(self) -> None:
        for case in self.all_cases():
            assert case.principal_utility >= -self.tol, case.label

    def test_agents_individually_rational(self) -> None:
        if not self.agents_ir:
            return
        for case in self.all_cases():
            assert np.all(case.agent_utilities >= -self.tol), (case.label, case.agent_utilities)

    def test_budget(self) -> None:
        for case in self.all_cases():
            if self.budget_balanced:
                assert abs(case.expected_revenue) <= self.tol * 100, (case.label, case.expected_revenue)
            else:
                assert case.expected_revenue >= -self.tol, (case.label, case.expected_revenue)

    def test_incentive_compatible(self) -> None:
        checked = 0
        for case in self.all_cases():
            for dev in case.deviations:
                assert dev.deviating_utility <= dev.truthful_utility + self.tol, (
                    case.label, dev.player, dev.description, dev.truthful_utility, dev.deviating_utility)
                checked += 1
        assert checked > 0, "a mechanism test must check at least one deviation"
