"""Runs/s of every incentive-selection policy: vectorised over runs against a per-run loop.

Usage (from the repository root, after `make venv`):

    .venv/bin/python benchmarks/bench_bandits.py [--runs 2000] [--loop-runs 200]

The setting is the chapter's benchmark: instance C with group size 20, B = 2000, T = 14.
Both methods are timed in the same process, so the ratio is meaningful anywhere.
"""

import argparse

from crowdlib import bandits as Bd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--loop-runs", type=int, default=200)
    args = ap.parse_args()
    rows = Bd.benchmark(Bd.instance_family("C", 20), list(Bd.POLICIES), 2000, 14,
                        runs=args.runs, loop_runs=args.loop_runs)
    print(f"{'policy':<28}{'vectorised runs/s':>20}{'loop runs/s':>14}{'ratio':>8}")
    for name, vec, loop in rows:
        print(f"{name:<28}{vec:>20,.0f}{loop:>14,.0f}{vec / loop:>8.1f}")


if __name__ == "__main__":
    main()
