"""Hostile input against every public callable of crowdlib.

Every name in each model module's ``__all__`` (functions, classes, and the public methods of
instances built with their defaults) is called with arguments drawn from a pool of valid, edge
and invalid values: wrong types, NaN, infinities, subnormals, 1e-300 and 1e300, huge integers,
complex numbers, empty and badly shaped arrays. A call may return, or raise ``ValueError`` or
``TypeError`` (crowdlib's refusals); anything else fails the test: another exception type, a
NaN or infinite float result, a call that runs longer than :data:`CALL_SECONDS`, or a refusal
whose message names none of the callable's parameters.

Two profiles, chosen by ``HYPOTHESIS_PROFILE`` as for the other property tests: the default
(``reproducible``) is derandomized and small enough for CI; ``explore`` draws many more
examples per callable (``CROWDLIB_FUZZ_EXAMPLES``, default 120: more than 10^4 calls in all).
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import signal
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

MODULES = ["quality", "effort", "contests", "contests_audit", "contracts", "contracts_audit",
           "procurement", "bandits", "rating", "experiments"]
CALL_SECONDS = 10

EXPLORE = os.environ.get("HYPOTHESIS_PROFILE") == "explore"
EXAMPLES = int(os.environ.get("CROWDLIB_FUZZ_EXAMPLES", "120")) if EXPLORE else 6

#: results that are NaN or infinite by contract (documented): an infeasible protocol, an
#: unbounded Hoeffding target for tied arms
NONFINITE_OK = {"rating.design_protocol", "rating.design_protocol_exact", "rating.design_protocol_brute",
                "rating.best_protocol_free_pmin", "rating.design_protocol_all_actions",
                "bandits.hoeffding_targets", "bandits.hais_targets", "rating.Protocol.infeasible",
                "procurement.worst_case_ratio"}
#: callables whose argument is a function or that write files are exercised by their own tests
SKIP = {"experiments.sweep", "experiments.map_points"}

POOL = [None, "x", True, -1, 0, 1, 2, 3, 0.5, 0.999, 3.7, 1e300, -1e300, 1e-300, 5e-324,
        math.nan, math.inf, -math.inf, 10 ** 30, 1 + 1j, [], [0.5], [0.2, 0.7], [1, 2, 3],
        [0.0, 0.0], np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1e300, 1e-300]),
        np.array([0.1, 0.2, 0.3, 0.4]), (0.1, 0.2), "uniform", "optimal", "C", "L"]


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _callables():
    out = []
    for mod_name in MODULES:
        mod = importlib.import_module(f"crowdlib.{mod_name}")
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            label = f"{mod_name}.{name}"
            if label in SKIP or not callable(obj):
                continue
            if isinstance(obj, type) and issubclass(obj, BaseException):
                continue
            out.append((label, obj))
            if isinstance(obj, type):
                try:
                    instance = obj()                      # default-constructible classes
                except Exception:
                    continue
                for meth_name, meth in inspect.getmembers(instance, callable):
                    if not meth_name.startswith("_"):
                        out.append((f"{label}.{meth_name}", meth))
    return out


CALLABLES = _callables()


def _required(fn):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    return [p for p in sig.parameters.values() if p.default is p.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _nonfinite(value) -> bool:
    if isinstance(value, (float, np.floating)):
        return not math.isfinite(float(value))
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return bool(np.isnan(value).any())
    return False


def _names(fn) -> list[str]:
    """The parameter names a refusal may name (and a class's own name for its constructor)."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []
    return names + ([fn.__name__] if isinstance(fn, type) else [])


def _check_message(label, fn, args, err) -> None:
    """A refusal names the parameter it refuses (every crowdlib rejection does)."""
    if isinstance(fn, type) and inspect.isabstract(fn):
        return
    names = _names(fn)
    if names and not any(name in str(err) for name in names):
        pytest.fail(f"{label}{tuple(args)!r:.200} raised {type(err).__name__} naming none of "
                    f"{names}: {err}"[:600])


def _call(label, fn, args):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CALL_SECONDS)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                result = fn(*args)
    except (ValueError, TypeError) as err:
        _check_message(label, fn, args, err)
        return None
    except _Timeout:
        pytest.fail(f"{label}{tuple(args)!r:.200} ran longer than {CALL_SECONDS} s")
    except Exception as err:  # any other exception type is a crash
        pytest.fail(f"{label}{tuple(args)!r:.200} raised {type(err).__name__}: {err}"[:600])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    base = label.rsplit(".", 1)[0] if label.count(".") > 1 else label
    if _nonfinite(result) and label not in NONFINITE_OK and base not in NONFINITE_OK:
        pytest.fail(f"{label}{tuple(args)!r:.200} returned a non-finite value {result!r:.80}")
    return result


def test_every_public_callable_is_fuzzed():
    assert len(CALLABLES) > 140, [c for c, _ in CALLABLES]


@pytest.mark.parametrize("label, fn", CALLABLES, ids=[c for c, _ in CALLABLES])
def test_hostile_arguments(label, fn):
    required = _required(fn)
    if required is None:
        pytest.skip("no signature")

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), derandomize=not EXPLORE)
    @given(st.lists(st.sampled_from(range(len(POOL))), min_size=len(required), max_size=len(required)))
    def run(picks):
        _call(label, fn, [POOL[i] for i in picks])

    run()
