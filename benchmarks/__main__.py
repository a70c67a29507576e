"""Every kernel against its floor and its naive reference, as ratios measured in one run.

Usage, from the repository root (after ``make venv``)::

    .venv/bin/python -m benchmarks [--quick]

Rows (each timing is the best of a few repetitions, so a ratio is meaningful on any machine):

* Mechanism 2 (Anari et al., Section 4) on 10^6 sellers against ``np.sort`` of 10^6 floats,
  for the optimal, uniform and three-level rules, with and without one seller at
  theta_i = 0.5, and for a rule given by ``phi`` alone (``from_phi``); and, at a size the O(n^2)
  method can do, against that method.
* ``bandits.simulate`` with exact draws from the total-task laws (the default) against the
  normal approximation and against per-user draws (HAIS, C(20), B = 2000, T = 14).
* The contests, contracts and rating kernels against their brute-force references.

The targets of the kernels issue are printed next to the ratios, with whether they are met.

Memory: on a virtual machine, a fresh page costs a fault that can outweigh the arithmetic of a
vectorised pass (glibc returns large freed blocks to the system, so every NumPy temporary of
8 MB faults its pages in again). By default the benchmark asks glibc (``mallopt``) to keep
freed memory, as a long-running numerical process would, for the floor and the kernels alike;
``--system-malloc`` measures with the default allocator instead.
"""
from __future__ import annotations

import argparse
import itertools
import time

import numpy as np


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse (no trimming, no mmap for large blocks)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 40)
                    and libc.mallopt(M_TOP_PAD, 256 << 20))
    except (OSError, AttributeError):
        return False


def best_of(fn, repeat: int = 3) -> float:
    """The best wall time of ``repeat`` calls (a first, warming call is not counted)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def row(name: str, t: float, ref_name: str, t_ref: float, target: str = "", met: bool | None = None) -> None:
    """One line: the kernel's time and its ratio to the reference (below 1: the kernel is faster)."""
    ratio = t / t_ref
    flag = "" if met is None else ("  met" if met else "  NOT met")
    print(f"{name:<62}{t * 1e3:>10.2f} ms  {ratio:>10.3g} x {ref_name:<32}{target}{flag}")


def mechanism2_rows(quick: bool) -> None:
    from crowdlib import procurement as P

    n = 10**5 if quick else 10**6
    rng = np.random.default_rng(0)
    c = rng.uniform(0, 1, n)
    u = rng.uniform(0.5, 1.5, n)
    B = 0.25 * c.sum()
    keys = rng.random(n)
    floor = best_of(lambda: np.sort(keys))              # sorts a copy: the keys stay unsorted
    print(f"\nMechanism 2, {n:,} sellers (uniform costs, budget a quarter of the total); floor: np.sort of "
          f"{n:,} floats = {floor * 1e3:.1f} ms")
    # and with one seller beyond the fast path's bracket: theta_i = min(c_i, u_i r* p(0)) / B = 0.5
    # (its cost half the budget, its utility a third of the market's)
    c_out, u_out = c.copy(), u.copy()
    c_out[0], u_out[0] = 0.5 * B, 4.0 * B
    three = P.three_level_rule(0.5, 0.6)
    for name, rule in (("optimal", "optimal"), ("uniform", "uniform"), ("three-level (a = 0.5, h = 0.6)", three)):
        for label, cc, uu in ((f"{name} rule", c, u), (f"{name}, a seller at theta = 0.5", c_out, u_out)):
            out = P.mechanism2(cc, uu, B, rule)
            p0 = float(P.get_rule(rule).unit_payment(np.zeros(1))[0])
            theta0 = min(cc[0], uu[0] * out.stopping_rate * p0) / B
            assert uu is u or theta0 == 0.5, theta0
            t = best_of(lambda: P.mechanism2(cc, uu, B, rule), 3)
            row(f"  {label} (path {out.path})", t, "np.sort", floor, "target <= 10 x", t / floor <= 10)
    # a rule known by phi alone (AllocationRule.from_phi): the kernel on the map of its payment
    square = P.AllocationRule.from_phi(lambda x: (1.0 - np.minimum(x, 1.0)) ** 2, "(1 - x)^2")
    for label, cc, uu in (("phi = (1 - x)^2 by from_phi", c, u), ("(1 - x)^2, a seller at theta = 0.5", c_out, u_out)):
        out = P.mechanism2(cc, uu, B, square)
        t = best_of(lambda: P.mechanism2(cc, uu, B, square), 2)
        row(f"  {label} (path {out.path})", t, "np.sort", floor, "no quadratic path", out.path == "pieces")
    # against the definition (one Mechanism 1 per seller, O(n^2)) where it is feasible
    m = 1000 if quick else 2000
    c2, u2 = c[:m].copy(), u[:m].copy()
    B2 = 0.25 * c2.sum()
    for label, rule in (("optimal rule", "optimal"), ("three-level rule", three), ("(1 - x)^2 by from_phi", square)):
        t = best_of(lambda: P.mechanism2(c2, u2, B2, rule), 2)
        t_naive = best_of(lambda: P.mechanism2_naive(c2, u2, B2, rule), 1)
        row(f"  {label}, n = {m:,}", t, "the naive O(n^2) method", t_naive)


def simulate_rows(quick: bool) -> None:
    from crowdlib import bandits as Bd

    inst = Bd.instance_family("C", 20)
    pol = Bd.HAIS(20, 0.5)
    n, n_exact = (5000, 200) if quick else (20000, 1000)
    speed = {}
    for draws, runs in (("law", n), ("auto", n), ("exact", n_exact)):
        t = best_of(lambda: Bd.simulate(inst, pol, 2000, 14, runs, 1, draws=draws), 2)
        speed[draws] = runs / t
    print("\nbandits.simulate, HAIS on C(20), B = 2000, T = 14 (runs per second)")
    for draws, label in (("law", "exact, by the total-task laws (default)"),
                         ("auto", "normal approximation above 30 users"),
                         ("exact", "exact, per-user beta and binomial draws")):
        print(f"  {label:<56}{speed[draws]:>12,.0f} runs/s")
    r1, r2 = speed["law"] / speed["auto"], speed["law"] / speed["exact"]
    print(f"  {'law / normal approximation':<56}{r1:>12.2f}    target >= 0.33  {'met' if r1 >= 1 / 3 else 'NOT met'}")
    print(f"  {'law / per-user draws':<56}{r2:>12.1f}    target >= 20    {'met' if r2 >= 20 else 'NOT met'}")


def kernel_rows(quick: bool) -> None:
    from crowdlib import contests as Ct
    from crowdlib import contracts as Cn
    from crowdlib import rating as Rt

    print("\nOther kernels against their brute-force references")
    n = 10 if quick else 12
    skills = np.linspace(1.0, 0.4, n)

    def brute() -> float:
        return max(Ct.welfare(30.0, np.isin(np.arange(n), S).astype(float), skills)
                   for k in range(n + 1) for S in itertools.combinations(range(n), k))

    t = best_of(lambda: Ct.efficient_efforts(30.0, skills), 3)
    row(f"  contests.efficient_efforts (greedy by skill), n = {n}", t, f"brute force over 2^{n} subsets",
        best_of(brute, 1))
    w, p = np.linspace(1, 3, 16), np.linspace(0.2, 0.8, 16)
    t = best_of(lambda: Cn.weighted_win_probabilities(w, p, "integral"), 3)
    row("  contracts.weighted_win_probabilities (integral), n = 16", t, "enumeration of 2^15 sets",
        best_of(lambda: Cn.weighted_win_probabilities(w, p, "exact"), 1))
    args = ((0.1, 0.15), (0.05, 0.08), 0.4, 0.05, 0.1, 0.9)
    t = best_of(lambda: Rt.design_protocol(*args, grid=1000), 3)
    row("  rating.design_protocol (Algorithm 1, closed form), m = 1000", t, "grid brute force (alpha, beta, P)",
        best_of(lambda: Rt.design_protocol_brute(*args, steps=(0.02, 0.02, 0.002)), 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    ap.add_argument("--system-malloc", action="store_true",
                    help="measure with glibc's default allocator (freed memory returned to the system)")
    args = ap.parse_args()
    kept = False if args.system_malloc else keep_freed_memory()
    print(f"allocator: {'freed memory kept (mallopt)' if kept else 'system default'}")
    print(f"{'kernel':<62}{'time':>13}  {'ratio':>12} {'to':<32}")
    mechanism2_rows(args.quick)
    simulate_rows(args.quick)
    kernel_rows(args.quick)


if __name__ == "__main__":
    main()
