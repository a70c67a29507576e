"""crowdlib: numerics for the companion book on incentives in crowdsourcing.

One module per topic:

* :mod:`crowdlib.quality` -- quality distributions (Cavallo & Jain, Section 2).
* :mod:`crowdlib.effort` -- when extreme effort is efficient (Lemma 1, Section 2.2).
* :mod:`crowdlib.contests` -- optimal participation, CSEC and PSEC mechanisms.
* :mod:`crowdlib.contests_audit` -- audits of Theorems 2 and 4 that run the ex-post rules.
* :mod:`crowdlib.contracts` -- Luce contracts for a budget-constrained principal.
* :mod:`crowdlib.contracts_audit` -- random families and checks for its "for all" claims.
* :mod:`crowdlib.procurement` -- budget-feasible mechanisms for large markets.
* :mod:`crowdlib.bandits` -- adaptive incentive selection under a budget and a deadline.
* :mod:`crowdlib.rating` -- rating protocols for the crowdsourcing contest dilemma.
* :mod:`crowdlib.experiments` -- sweeps (``sweep``), seeding (``spawn``) and the book's one
  significance rule (``mean_ci``, ``compare``).
* :mod:`crowdlib.ledger` -- the reproduction ledger: each result's check and verdict.
* :mod:`crowdlib.book` -- figure saving and result caching for the chapters.
"""

__version__ = "0.1.0"

from ._validation import CrowdlibWarning  # noqa: E402  (the warning class every module uses)

__all__ = ["CrowdlibWarning"]
