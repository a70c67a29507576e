"""Fast kernels of Mechanism 2 (Anari, Goel & Nikzad, Section 4), used by :mod:`crowdlib.procurement`.

Seller ``i``'s rate ``r_i`` is the stopping rate of Mechanism 1 on the market with ``c_i`` set to
0. Computing each by its definition is O(n) per seller, O(n^2) in all. Here:

* **Step rules** (the uniform rule, the three-level rules): the total payment is ``r W(r)`` with
  ``W`` a step function whose pieces are the sorted breakpoints ``rho_j / t_s``. On piece ``k``
  the largest feasible rate with an extra utility weight ``w`` is ``B / (W_k + w)``, and piece
  ``k`` is reachable iff ``w < g_k = B / a_k - W_k``, a decreasing sequence: one
  ``searchsorted`` of all sellers' weights (on the short stretch of ``g`` that their range
  spans, so unsorted) gives every rate exactly (then checked against the exact predicate and
  moved by one piece where rounding disagrees). A seller's own extra weight is a step function
  of ``r`` too (its breakpoints ``rho_i / t_s``), so its rate is the last of at most ``S + 1``
  such searches whose answer falls inside its segment. O(S n log n). On large markets only a
  window of pieces is built: around the stopping rate of a small market that stands for the
  whole (``sample_market``), wide enough for every ``r_i`` by the bracket
  ``r_i >= r* (1 - theta_i)``; ``W`` below it is a masked sum, and the window is checked to
  hold ``r*`` and every rate (else the sorted subset below a cap on ``r*``, else the market).
  The few sellers whose bracket is wide (``theta_i > WIDE_THETA``) are left out of it: each
  gets a window around its own sample estimate, where its rate is one query on the market
  without it (its cost 0 adds ``u_i p(0)`` at every rate).
* **Rules with a power series** (the optimal and linear rules): in units of the stopping rate,
  ``s = r / r*`` and ``x_j = rho_j / r*``, a seller's payment ``u_j r* G(s; x_j)``, with
  ``G(s; x) = s p(x / s)``, is analytic in ``s`` near 1 once the seller is active (``x_j < s``),
  with radius of convergence at least ``radius`` (``1/e`` for ``phi*``, 1 for the linear rule).
  Every ``r_i`` lies in ``[r* (1 - theta_i), r*]`` (our proof of Lemma 9's bound). For a tier
  of sellers with ``theta_i <= theta`` the total payment on that bracket is, between two
  consecutive rates ``x_j`` of the *near* sellers (``1 - theta <= x_j < 1``), one polynomial in
  ``t = s - 1``: the series of the far sellers summed once, plus prefix sums of the near
  sellers' series in sorted order. Each seller's own correction (its cost set to 0) is a
  polynomial too, so ``r_i`` is the root of a polynomial of degree ``K`` on a known piece:
  Newton's method on all sellers at once, starting on the top piece; the few roots that fall
  below a near seller's rate are moved to their piece by binary search over the pieces.
  ``K`` is chosen so that the truncated tail, ``(theta / radius)^(K+1)`` relative, is below
  1e-18. O(n K) after the O(n_near log n_near) sort of the near sellers.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int_]


# ------------------------------------------------------------------ step rules
def prefix_sum(x: FloatArray) -> FloatArray:
    """Prefix sums accurate to about one rounding each (a compensated ``cumsum``).

    A plain ``cumsum`` of 10^6 utilities of 1e-16 after one of 1 rounds every one away (the rates
    would then overspend the budget by 1e-10 of it). Here each step's rounding error is recovered
    exactly by Knuth's TwoSum from the running sums themselves, ``e_i = (s_{i-1} - (s_i - b)) +
    (x_i - b)`` with ``b = s_i - s_{i-1}``, and the errors' own prefix sums are added back.
    """
    s = np.cumsum(x)
    prev = np.concatenate(([0.0], s[:-1]))
    bb = s - prev
    err = (prev - (s - bb)) + (x - bb)
    return s + np.cumsum(err)


def _pieces(runs: list[FloatArray], weights: list[FloatArray], a0: float = 0.0,
            W0: float = 0.0) -> tuple[FloatArray, FloatArray]:
    """Sorted distinct breakpoints ``a`` (from ``a_0 = a0``) and ``W_k = W0 + sum(wt[bp <= a_k])``,
    from breakpoint arrays above ``a0`` that are each sorted already (merged by a run-aware
    stable sort); ``W0`` is the weight of the breakpoints at or below ``a0``."""
    if len(runs) == 1:
        b, wt = runs[0], weights[0]
    else:
        bp, wt = np.concatenate(runs), np.concatenate(weights)
        order = np.argsort(bp, kind="stable")      # timsort: linear-time merge of sorted runs
        b, wt = bp[order], wt[order]
    cum = prefix_sum(wt)
    if W0:
        cum += W0
    last = np.flatnonzero(np.append(b[1:] != b[:-1], True)) if b.size else np.zeros(0, dtype=np.intp)
    a, W = b[last], cum[last]
    if not a.size or a[0] > a0:
        a, W = np.concatenate(([a0], a)), np.concatenate(([W0], W))
    return a, W


def breakpoints(rho: FloatArray, t: float) -> FloatArray:
    """``b = max{r : rho / r >= t}`` in floating point: the last stretch at which the step
    ``[rho / r < t]`` is still off. The pieces are built on these, so that they agree with the
    rule's own evaluation of ``rho / r < t`` to the last ulp (``fl(rho / t)`` can be one ulp
    off, and a seller whose rate lands there would be paid a step the budget did not count).
    ``b = rho`` for ``t = 1``; a seller with ``rho = 0`` is on at every ``r > 0`` (``b = 0``)."""
    if t == 1.0:
        return rho
    with np.errstate(over="ignore"):
        b = rho / t                               # inf beyond the largest float: never reached
    if math.frexp(t)[0] == 0.5 and np.all(b < np.finfo(float).max):
        return b                                  # a power of two: rho / t and b t are exact
    pos = (rho > 0) & (b < np.inf)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(8):
            on = pos & (rho / b < t)              # already on at b: b is too large
            if not on.any():
                break
            b[on] = np.nextafter(b[on], 0.0)
        for _ in range(8):
            nb = np.nextafter(b, np.inf)
            off = pos & ~(rho / nb < t)           # still off just above b: b is too small
            if not off.any():
                break
            b[off] = nb[off]
    return b


#: a window of the reachability thresholds up to this long is searched with the queries unsorted
UNSORTED_WINDOW = 1 << 14


def _caps(W: FloatArray, B: float, w: FloatArray) -> FloatArray:
    tot = W + w
    if tot.size and tot.min() > 0:
        return B / tot
    with np.errstate(divide="ignore"):
        return np.where(tot > 0, B / np.where(tot > 0, tot, 1.0), np.inf)


class _Pieces:
    """The pieces ``(a_k, a_{k+1}]`` of a step-shaped ``W`` and the reachability thresholds
    ``g_k = B / a_k - W_k`` (decreasing: piece ``k`` is reachable with weight ``w`` iff
    ``w < g_k``, up to rounding)."""

    def __init__(self, a: FloatArray, W: FloatArray, B: float) -> None:
        self.a, self.W, self.B = a, W, B
        self.a_next = np.append(a[1:], np.inf)
        self._neg_g: FloatArray | None = None

    @property
    def neg_g(self) -> FloatArray:
        if self._neg_g is None:
            a, W, B = self.a, self.W, self.B
            with np.errstate(divide="ignore", over="ignore"):   # B / a of a subnormal a: inf
                g = np.where(a > 0, B / np.where(a > 0, a, 1.0), np.inf) - W
            self._neg_g = -np.minimum.accumulate(g)   # non-decreasing; kept so under rounding
        return self._neg_g

    def stopping_rate(self) -> float:
        """``sup{r : r W(r) <= B}``: the last piece with ``a_k W_k < B``, checked exactly."""
        with np.errstate(over="ignore"):
            k0 = int(np.searchsorted(self.a * self.W, self.B, side="left")) - 1
        return float(self.rates(np.zeros(1), k0=np.array([k0]))[0])

    def _piece_of(self, w: FloatArray) -> IntArray:
        """``searchsorted(-g, -w) - 1`` for every query. The queries' range ``[min w, max w]``
        maps to a window of ``g``; when that window is small (the usual case: ``g`` falls by
        about one utility per piece) the search runs on it directly, in cache, without sorting
        the queries; a wide window gets sorted queries instead (a random search over a large
        array costs a cache miss per step)."""
        ng = self.neg_g
        lo = int(np.searchsorted(ng, -float(w.max()), side="left"))
        hi = int(np.searchsorted(ng, -float(w.min()), side="left"))
        if hi - lo <= UNSORTED_WINDOW:
            # exact: every g before lo is above max(w), every g from hi on at most min(w)
            return np.searchsorted(ng[lo:hi], -w, side="left") + (lo - 1)
        order = np.argsort(w)
        k = np.empty(w.size, dtype=np.intp)
        k[order] = np.searchsorted(ng[lo:hi], -w[order], side="left") + (lo - 1)
        return k

    def rates(self, w: FloatArray, k0: IntArray | None = None) -> FloatArray:
        """``sup{r : r (W(r) + w_q) <= B}`` for every query ``w_q >= 0``, exactly: a
        ``searchsorted`` on ``g``, then the exact predicate ``B / (W_k + w) > a_k`` moves the
        few answers that rounding put on a neighbouring piece."""
        a, W, B, m = self.a, self.W, self.B, self.a.size
        if w.size == 0:
            return np.zeros(0)
        k = self._piece_of(w) if k0 is None else k0
        np.clip(k, 0, m - 1, out=k)
        cap = _caps(W[k], B, w)
        k1 = np.minimum(k + 1, m - 1)
        bad = np.flatnonzero((~(cap > a[k]) & (k > 0)) | ((k < m - 1) & (_caps(W[k1], B, w) > a[k1])))
        moved = bad
        for _ in range(m + 1):                    # rounding: move by single pieces, both ways
            if bad.size == 0:
                break
            kk, wb = k[bad], w[bad]
            down = (kk > 0) & ~(_caps(W[kk], B, wb) > a[kk])
            up = ~down & (kk < m - 1)
            up[up] = _caps(W[kk[up] + 1], B, wb[up]) > a[kk[up] + 1]
            k[bad] = kk - down + up
            bad = bad[down | up]
        else:  # pragma: no cover - the reachable pieces are a prefix, so the moves stop
            raise RuntimeError("step kernel: the piece search did not settle")
        if moved.size:
            cap[moved] = _caps(W[k[moved]], B, w[moved])
        return np.minimum(self.a_next[k], cap)


#: sellers in the small market that stands for a large one (``sample_market``)
SAMPLE_SIZE = 4096


def sample_market(rho: FloatArray, u: FloatArray, size: int = SAMPLE_SIZE,
                  own: int | None = None) -> tuple[FloatArray, FloatArray]:
    """A small market whose stopping rate estimates the whole market's at the same budget: an
    evenly strided sample of about ``size`` sellers, their utilities scaled by the ratio of the
    utility they stand for to their own, plus every heavy seller (utility above
    ``sum(u) / size``, which a sample would over- or under-count) with its own utility.
    ``own = i``: seller ``i`` counted as heavy with its cost set to 0 (an estimate of ``r_i``)."""
    heavy = u > float(u.sum()) / size
    if own is not None:
        heavy = heavy.copy()
        heavy[own] = True
    stride = max(1, rho.size // size)
    idx = np.arange(0, rho.size, stride)
    if heavy.any():
        idx = idx[~heavy[idx]]
        h = np.flatnonzero(heavy)
        light_total = float(u.sum()) - float(u[h].sum())
    else:
        h, light_total = np.zeros(0, dtype=np.intp), float(u.sum())
    us = u[idx]
    if us.size:
        us = us * (light_total / float(us.sum()))
    rho_h = rho[h]
    if own is not None:
        rho_h[h == own] = 0.0
    return np.concatenate((rho[idx], rho_h)), np.concatenate((us, u[h]))


#: markets at least this large sort only the sellers below a sample's estimate of the cap on r*
SAMPLE_MIN_N = 20_000


def _step_pieces(t: FloatArray, v: FloatArray, rho: FloatArray, u: FloatArray,
                 B: float) -> tuple[float, "_Pieces"]:
    """Mechanism 1's stopping rate of the step rule ``(t, v)`` on the sellers given, and the
    pieces of ``W`` up to the one that holds it (every ``r_i <= r*`` lies on them)."""
    S = t.size
    order = np.argsort(rho)
    rs, us = rho[order], u[order]
    runs = [breakpoints(rs, float(ts)) for ts in t]      # sorted, as rs is
    weights = [us if vs == 1.0 else vs * us for vs in v]
    if S > 1 and v[-1] > 0:
        with np.errstate(over="ignore"):
            j = int(np.searchsorted(rs * np.cumsum(weights[-1]), B, side="left"))
        if j < rs.size and rs[j] < 1e300:
            bound = float(rs[j]) * (1.0 + 1e-9)
            cut = [int(np.searchsorted(r_, bound, side="right")) + 1 for r_ in runs]
            runs, weights = [r_[:k] for r_, k in zip(runs, cut)], [w_[:k] for w_, k in zip(weights, cut)]
    a, W = _pieces(runs, weights)
    r_star = _Pieces(a, W, B).stopping_rate()
    keep = int(np.searchsorted(a, r_star, side="left")) + 1
    return r_star, _Pieces(a[:keep], W[:keep], B)


#: the window of the step kernel spans the sample's stopping rate times and divided by this
WINDOW_FACTOR = 1.02


def _window_pieces(t: FloatArray, v: FloatArray, rho: FloatArray, u: FloatArray, B: float,
                   r_lo: float, r_hi: float, star: bool = True) -> tuple[float, _Pieces] | None:
    """The pieces of ``W`` on ``(r_lo, r_hi)``, exact there, and the stopping rate if it lies
    inside (else None). ``W(r_lo)`` is a masked (pairwise) sum over the sellers whose
    breakpoints lie below; only breakpoints inside the window are computed to the ulp and sorted.
    A relative margin of 1e-12 around the window's ends decides which are computed exactly
    (``fl(rho / t)`` is within two ulps of the breakpoint)."""
    runs, weights, W0 = [], [], 0.0
    lo_m, hi_m = r_lo * (1.0 - 1e-12), r_hi * (1.0 + 1e-12)
    for ts, vs in zip(t, v):
        with np.errstate(over="ignore"):
            f = rho if ts == 1.0 else rho / ts
        below = f < lo_m
        cand = np.flatnonzero(~below & (f < hi_m))
        uc = u[cand]
        bc = breakpoints(rho[cand], float(ts))
        low = bc <= r_lo
        inside = np.flatnonzero(~low & (bc < r_hi))
        W0 += float(vs) * (float(np.sum(u * below)) + float(np.sum(uc * low)))
        bi = bc[inside]
        o = np.argsort(bi)
        runs.append(bi[o])
        weights.append(uc[inside][o] * vs)
    a, W = _pieces(runs, weights, r_lo, W0)        # every breakpoint in the runs is above r_lo
    if not star:                                   # the pieces alone (exact below r_hi)
        return math.nan, _Pieces(a, W, B)
    r_star = _Pieces(a, W, B).stopping_rate()
    if not (r_lo < r_star < r_hi):
        return None
    keep = int(np.searchsorted(a, r_star, side="left")) + 1
    return r_star, _Pieces(a[:keep], W[:keep], B)


def step_rates(steps: tuple[tuple[float, float], ...], rho: FloatArray, u: FloatArray,
               B: float) -> tuple[float, FloatArray]:
    """Mechanism 1's ``r*`` and every seller's ``r_i`` for ``p(x) = sum_s v_s [x < t_s]``.

    ``W(r) = sum_s v_s sum_{rho_j < t_s r} u_j``; seller ``i`` at cost 0 adds
    ``u_i sum_{s <= sigma} v_s`` on the segment ``(rho_i / t_{sigma+1}, rho_i / t_sigma]`` of
    ``r`` (``t`` increasing, ``t_0 = 0``, ``t_{S+1}`` giving the segment ``(0, rho_i]``).
    Only breakpoints up to a bound on ``r*`` are merged: the last step alone pays at least
    ``r v_S sum_{j' <= j} u_j'`` for ``r > rho_(j)``, so ``r* <= rho_(j)`` once that reaches ``B``.
    """
    t = np.array([s_[0] for s_ in steps], dtype=float)
    v = np.array([s_[1] for s_ in steps], dtype=float)
    if rho.size >= SAMPLE_MIN_N:
        r0, _ = _step_pieces(t, v, *sample_market(rho, u), B)
        # a window (r_lo, r_hi) that holds r* and every r_i (r_i >= r* (1 - theta_i), theta_i =
        # min(c_i, u_i r* p(0)) / B <= its value at r_hi >= r*): only its breakpoints are sorted
        r_hi = WINDOW_FACTOR * r0
        theta = np.minimum(rho * u, u * (r_hi * float(v.sum())))
        theta *= (1.0 + 1e-9) / B
        # the few sellers with a wide bracket get windows of their own, around their own
        # sample estimate, so that they do not widen the window of everybody else
        wide = np.flatnonzero(theta > WIDE_THETA)
        if wide.size > MAX_OWN_WINDOWS or wide.size == rho.size:
            wide = wide[:0]
        theta_max = float(theta.max() if not wide.size else np.max(np.where(theta > WIDE_THETA, 0.0, theta)))
        if theta_max < 0.9:
            r_lo = r0 * (1.0 - theta_max) / WINDOW_FACTOR
            got = _window_pieces(t, v, rho, u, B, r_lo, r_hi)
            if got is not None and got[0] * (1.0 - theta_max) > r_lo:
                r_star = got[0]
                rates = _step_queries(t, v, rho, u, *got)
                ok = True
                for i in wide:
                    r_i = _own_window_rate(t, v, rho, u, B, r_star, int(i))
                    ok = r_i is not None
                    if not ok:
                        break
                    rates[i] = r_i
                if ok and (np.delete(rates, wide) if wide.size else rates).min() > r_lo:
                    return r_star, rates               # every other rate inside the window
        # else only sellers below a cap on r* shape the pieces below it (a breakpoint
        # rho_j / t_s is at least rho_j): the sample's estimate gives the cap, checked afterwards
        for factor in (1.05, 1.5):
            sel = np.flatnonzero(rho < factor * r0)
            if sel.size > 3 * rho.size // 4:
                break
            r_star, pieces = _step_pieces(t, v, rho[sel], u[sel], B)
            if r_star < factor * r0:      # the pieces agree with the whole market's below the cap
                return r_star, _step_queries(t, v, rho, u, r_star, pieces)
    r_star, pieces = _step_pieces(t, v, rho, u, B)
    return r_star, _step_queries(t, v, rho, u, r_star, pieces)


#: sellers whose bracket is wider than this get their own window (at most MAX_OWN_WINDOWS)
WIDE_THETA = 0.02
MAX_OWN_WINDOWS = 8


def _own_window_rate(t: FloatArray, v: FloatArray, rho: FloatArray, u: FloatArray, B: float,
                     r_star: float, i: int) -> float | None:
    """Seller ``i``'s rate from a window of pieces around its own sample estimate, or None if it
    does not fall strictly inside. With its cost at 0 the seller adds ``u_i p(0)`` at every rate,
    so ``r_i = sup{r : r (W_{-i}(r) + u_i p(0)) <= B}``: one query on the pieces of the market
    without it. Pieces exact on the window, a search answer strictly inside it is exact."""
    est, _ = _step_pieces(t, v, *sample_market(rho, u, own=i), B)
    lo, hi = est / WINDOW_FACTOR, est * WINDOW_FACTOR
    others = u.copy()
    others[i] = 0.0
    _, pieces = _window_pieces(t, v, rho, others, B, lo, hi, star=False)
    r_i = float(pieces.rates(np.array([u[i] * float(v.sum())]))[0])
    return min(r_i, r_star) if lo < r_i < hi else None


def _step_queries(t: FloatArray, v: FloatArray, rho: FloatArray, u: FloatArray, r_star: float,
                  pieces: _Pieces) -> FloatArray:
    """Every seller's ``r_i`` on the pieces of ``W`` up to ``r*`` (see :func:`step_rates`)."""
    S = t.size
    rates = np.full(rho.size, r_star)
    V = np.cumsum(v)                                # V[sigma - 1] = sum_{s <= sigma} v_s
    # segment sigma = 0 (r > b_{i,1}, no extra): feasible up to r* when r* > b_{i,1}; the segment
    # ends b_{i,s} are the breakpoints of the pieces, to the ulp
    pending = np.flatnonzero(~(r_star > breakpoints(rho, float(t[0]))))
    for sigma in range(1, S + 1):
        if pending.size == 0:
            break
        rp = rho[pending]
        hi = breakpoints(rp, float(t[sigma - 1]))
        if sigma < S:
            # the segment (b_{i,sigma+1}, b_{i,sigma}] can hold r_i <= r* only if its left end
            # is below r*
            lo = breakpoints(rp, float(t[sigma]))
            maybe = np.flatnonzero(lo < r_star)
            if not maybe.size:
                continue
            q = pending[maybe]
            R = pieces.rates(u[q] * V[sigma - 1])
            found = R > lo[maybe]
            rates[q[found]] = np.minimum(hi[maybe][found], R[found])
            drop = np.zeros(pending.size, dtype=bool)
            drop[maybe[found]] = True
            pending = pending[~drop]
        else:
            R = pieces.rates(u[pending] * V[sigma - 1])
            rates[pending] = np.minimum(hi, R)
    return rates


def uniform_rates(rho: FloatArray, u: FloatArray, B: float) -> tuple[float, FloatArray]:
    """``r*`` and every ``r_i`` for the uniform rule: the step rule ``p(x) = [x < 1]``."""
    return step_rates(((1.0, 1.0),), rho, u, B)


# ------------------------------------------------------------------ rules with a power series
Series = Callable[..., FloatArray]


def series_order(theta: float, radius: float, ratio: float) -> int:
    """Smallest ``K`` with ``ratio * (theta / radius)^(K+1) <= 1e-18`` (at least 2, at most 60)."""
    q = theta / radius
    if q <= 0.0:
        return 2
    need = (math.log(1e-18) - math.log(max(ratio, 1e-300))) / math.log(q)
    return int(min(60, max(2, math.ceil(need) - 1)))


def _horner(A: list, t: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Value and derivative of ``sum_k A[k] t^k`` (entries scalars or arrays)."""
    f = A[-1] + 0.0 * t
    d = np.zeros_like(t)
    for k in range(len(A) - 2, -1, -1):
        d = d * t + f
        f = f * t + A[k]
    return f, d


def _newton_once(A: list, b: float, t: FloatArray, theta: float) -> FloatArray | None:
    """One Newton step from ``t`` for the root of ``sum_k A[k] t^k = b``, returned only if it is
    provably converged for every entry (and every ``|t| <= theta``), else None.

    Newton's error after a step is at most ``M e^2`` with ``M = max|f''| / (2 min f')`` on
    ``[-theta, theta]`` and ``e`` the error before it, which is at most twice the step when
    ``M |step| <= 1/4``; so ``4 M step^2 <= eps / 4`` leaves an error below a quarter of the
    spacing of ``s = 1 + t``. The bounds on ``f'`` and ``f''`` use ``max |A[k]|``. From the
    linear start the step is about ``A[2] t^2 / A[1]``: for most sellers ``1e-12`` or less.
    No clipping to the seller's bracket is needed: the root lies in it (Lemma 9's bound), and the
    returned point is within a quarter ulp of the root."""
    if t.size and not (float(t.min()) >= -theta and float(t.max()) <= theta):
        return None
    amax = [0.0, 0.0] + [float(np.max(np.abs(a_))) if np.ndim(a_) else abs(float(a_)) for a_ in A[2:]]
    a1_min = float(np.min(A[1])) if np.ndim(A[1]) else float(A[1])
    d_min = a1_min - sum(k * amax[k] * theta ** (k - 1) for k in range(2, len(A)))
    if not d_min > 0:
        return None
    M = sum(k * (k - 1) * amax[k] * theta ** (k - 2) for k in range(2, len(A))) / (2.0 * d_min)
    f, d = _horner(A, t)
    f -= b
    step = f / d                                  # d >= d_min > 0 on the bracket
    big = float(np.max(np.abs(step))) if step.size else 0.0
    if M * big > 0.25 or 4.0 * M * big * big > 0.25 * np.finfo(float).eps:
        return None
    return np.subtract(t, step, out=step)


def _newton(A: list, b: float, t: FloatArray, lo: FloatArray, hi: FloatArray) -> FloatArray:
    """Root of ``sum_k A[k] t^k = b`` in ``[lo, hi]`` (an increasing polynomial there), to the
    precision of ``s = 1 + t``: iterations stop when no step exceeds ``2 eps`` (40 at most)."""
    eps2 = 2 * np.finfo(float).eps
    moving = np.ones(t.size, dtype=bool)
    for _ in range(40):
        f, d = _horner(A, t)
        f -= b
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(d > 0, f / np.where(d > 0, d, 1.0), 0.0)
        t_new = np.clip(t - step, lo, hi)
        moving = np.abs(t_new - t) > eps2
        t = t_new
        if not moving.any():
            return t
    # not settled (a flat or oscillating stretch): bisection on the same increasing polynomial
    idx = np.flatnonzero(moving)
    A_sub = [a_[idx] if np.ndim(a_) else a_ for a_ in A]
    lo_s = np.broadcast_to(lo, t.shape)[idx].copy()
    hi_s = np.broadcast_to(hi, t.shape)[idx].copy()
    for _ in range(120):
        mid = 0.5 * (lo_s + hi_s)
        f, _ = _horner(A_sub, mid)
        below = f <= b                          # payment within budget: the root is above mid
        lo_s = np.where(below, mid, lo_s)
        hi_s = np.where(below, hi_s, mid)
        if np.all(hi_s - lo_s <= eps2):
            break
    t[idx] = lo_s
    return t


#: sellers' roots are found in blocks of this many
QUERY_BLOCK = 1 << 15


def series_rates(series: Series, radius: float, p0: float, x: FloatArray, u: FloatArray, b: float,
                 theta: FloatArray, which: IntArray | None = None) -> FloatArray:
    """``t_i = r_i / r* - 1`` for the sellers ``which`` (all sellers if None).

    ``series(x, K)`` returns the ``(K + 1, len(x))`` coefficients ``c_k(x)`` of
    ``G(1 + t; x) = sum_k c_k(x) t^k``; ``b = B / r*`` is the budget in units of the stopping
    rate; seller ``i``'s root lies in ``[-theta_i, 0]``.
    """
    q_idx = np.arange(x.size) if which is None else which
    thq = theta if which is None else theta[which]
    th = float(thq.max()) if thq.size else 0.0
    out = np.zeros(q_idx.size)
    if th <= 0.0:
        return out
    lo_s = 1.0 - th
    W_idx = np.flatnonzero(x < 1.0)                 # the winners: active at r*
    xw, uw = x[W_idx], u[W_idx]
    # sellers with theta_i = 0 (a zero cost, or left to the caller) keep t_i = 0: they weigh
    # nothing in the series orders or Newton's bounds
    uz = u * (theta > 0)
    u_max = float(uz.max() if which is None else uz[which].max())
    # series orders: the total (weights up to sum u) and each seller's own correction (u_i)
    K = series_order(th, radius, 4.0 * (float(uw.sum()) + u_max) / b)
    Ko = min(K, series_order(th, radius, 4.0 * u_max / b))
    Cw = series(xw, K)                                             # (K+1, winners)
    near_w = xw >= lo_s
    Fk = Cw @ np.where(near_w, 0.0, uw)                            # far sellers, summed
    o = np.flatnonzero(near_w)
    o = o[np.argsort(xw[o], kind="stable")]
    xn, Cn = xw[o], Cw[:, o] * uw[o]
    N = xn.size
    T = Fk[:, None] + np.hstack([np.zeros((K + 1, 1)), np.cumsum(Cn, axis=1)])   # (K+1, N+1)
    top = [float(T[k, N]) for k in range(K + 1)]

    # the queries in two groups: winners (own term replaced by u_i p0 s) and losers (own term
    # u_i p0 s added); on the top piece every winner is active
    if which is None:
        qw, ql = W_idx, np.flatnonzero(x >= 1.0)
        pos_w, pos_l = qw, ql                       # positions in the output
        Cq = Cw[: Ko + 1]
    else:
        wq = x[which] < 1.0
        pos_w, pos_l = np.flatnonzero(wq), np.flatnonzero(~wq)
        qw, ql = which[pos_w], which[pos_l]
        Cq = series(x[qw], Ko) if qw.size else np.zeros((Ko + 1, 0))
    t = np.zeros(q_idx.size)
    for pos_all, q_all, C_all in ((pos_w, qw, Cq), (pos_l, ql, None)):
        for s in range(0, q_all.size, QUERY_BLOCK):        # in blocks: temporaries stay in cache
            blk = slice(s, s + QUERY_BLOCK)
            q = q_all[blk]
            uq = uz[q]
            A: list = [top[k] - uq * C_all[k, blk] if (C_all is not None and k <= Ko) else top[k]
                       for k in range(K + 1)]
            A[0] = A[0] + uq * p0
            A[1] = A[1] + uq * p0
            t0 = (b - A[0]) / A[1]                  # a linear first step, then Newton
            t1 = _newton_once(A, b, t0, th)
            if t1 is None:                          # Newton's iterations inside each bracket
                lo = -theta[q]
                t1 = _newton(A, b, np.clip(t0, lo, 0.0), lo, np.zeros(q.size))
            t[pos_all[blk]] = t1

    if N:
        # a root at or below the top near seller's rate lies on a lower piece: binary search over
        # the pieces (piece m is (xn[m-1], xn[m]] in s, with xn[N] = 1), then Newton on it
        cross = np.flatnonzero(1.0 + t <= xn[-1])
        if cross.size:
            sel = q_idx[cross]
            xs, us, ths = x[sel], u[sel], theta[sel]
            Cs = np.zeros((Ko + 1, sel.size))
            ws = xs < 1.0
            if ws.any():
                Cs[:, ws] = series(xs[ws], Ko)
            far_s, near_s = xs < lo_s, (xs >= lo_s) & (xs < 1.0)

            def coeffs(m: IntArray) -> list:
                """The crossing queries' total payment on piece ``m`` (``m`` near sellers active)."""
                act = far_s | (near_s & (m > 0) & (xs <= xn[np.maximum(m - 1, 0)]))
                ua = np.where(act, us, 0.0)
                A = [T[k, m] - (ua * Cs[k] if k <= Ko else 0.0) for k in range(K + 1)]
                A[0] = A[0] + us * p0
                A[1] = A[1] + us * p0
                return A

            kink = np.append(xn, 1.0) - 1.0                   # t at the right end of piece m
            lo_p, hi_p = np.zeros(sel.size, dtype=int), np.full(sel.size, N)
            while np.any(lo_p < hi_p):                          # largest m with P(left end) <= b
                mid = (lo_p + hi_p + 1) // 2
                f, _ = _horner(coeffs(mid), kink[mid - 1])
                ok = f <= b
                lo_p = np.where(ok, mid, lo_p)
                hi_p = np.where(ok, hi_p, mid - 1)
            left = np.where(lo_p > 0, kink[np.maximum(lo_p - 1, 0)], -np.inf)
            lo_t = np.maximum(left, -ths)
            hi_t = np.minimum(kink[lo_p], 0.0)
            t[cross] = _newton(coeffs(lo_p), b, np.clip(t[cross], lo_t, hi_t), lo_t, hi_t)
    np.minimum(t, 0.0, out=t)
    t *= thq > 0
    return t
