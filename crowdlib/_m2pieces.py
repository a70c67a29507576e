"""Rules known only by ``phi`` or by ``p``: piecewise Chebyshev maps, and Mechanism 2 for them.

Used by :mod:`crowdlib.procurement` for rules with neither a power series in the stretch nor steps
(a rule built by :meth:`~crowdlib.procurement.AllocationRule.from_phi`, or one built directly from
two functions).

* **Pieces** (:func:`fit`). A function on ``[lo, hi)`` is cut into pieces on each of which one
  Chebyshev interpolant of degree at most 64 reproduces it to ``2^-50`` of its scale (the
  interpolant's last coefficients are below that, plus an allowance, capped at a thousand
  times that, for the function's own rounding, about ``eps |x| |f'(x)|``), and holds to 16
  times that between its nodes and at points graded towards both ends of the piece (so that a
  jump at 0.999 is not missed by nodes that all lie below it). A piece on which no interpolant
  converges is cut at a jump when one is found there (the largest difference on a grid, zoomed
  in until two neighbouring floats straddle it and dwarf their neighbours' difference), else at
  a kink when one is found (the largest second difference, zoomed in, whose ratio to its step
  stays put as the step shrinks), else halved. A piece is kept *raw*, the function itself used
  there (and graded Gauss-Legendre quadrature for its integral), when it is narrower than
  ``2^-20`` and its rounding exceeds the cap (a steep stretch next to a singularity, as
  ``(1 - x)^k``, ``k < 1``, at 1), or narrower than 64 ulps and still failing. This is the
  splitting idea of Chebfun (Platte and Trefethen's piecewise interpolants), reduced to what the
  mechanism needs: where the function is smooth, and a polynomial there. Like any method that
  samples a function, it cannot see a feature narrower than the gaps between its samples.
* **The payment of a rule given by phi** (:func:`payment_from_phi`):
  ``p(x) = x phi(x) + int_x^1 phi`` on the pieces of ``phi``. On a converged piece it is the
  polynomial ``x q(x) + int_x^b q + (the integrals of the later pieces)``, ``q`` the piece's
  interpolant, so ``p`` is exact to about 1e-15, or to the rounding of ``phi`` itself where
  ``phi`` is steep (``eps |x phi'(x)|``, next to a singularity), and smooth between the
  pieces' edges.
* **Mechanism 2** (:func:`piece_rates`). Every ``r_i`` lies in ``[r* (1 - theta_i), r*]``. On
  that window a seller whose ``rho_j / r`` stays inside one smooth piece of ``p`` contributes a
  smooth function of ``r``: these *far* sellers' total is one Chebyshev interpolant in ``r``
  (each node an exact sum). The other, *near*, sellers cross an edge of ``p`` inside the window;
  their total is smooth between consecutive crossings, and is interpolated on each such
  interval (its nodes are exact sums over the near sellers). The total payment is then known on
  the window at the cost of a few exact sums, and each seller's rate is the root of that total
  plus its own correction (its cost set to 0), exact, by a bracketed Illinois iteration on all
  sellers at once, finished by bisection to neighbouring floats (the payment may jump).
  O(n (d + log n)) for the far sellers, O(N^2 d) for ``N`` near ones; ``N`` is small when the
  window is narrow, that is, on large markets. The caller gives the few sellers with a wide
  window their own exact searches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.polynomial import Chebyshev
from numpy.polynomial import chebyshev as C
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int_]

#: a piece's interpolant is accepted when its last three coefficients are below this (times the
#: function's scale), plus the function's own rounding there
TOL = 2.0 ** -50
#: interpolant degrees tried on a piece before it is split
DEGREES = (8, 16, 32, 64)
#: a piece narrower than this many ulps that still fails to converge is kept raw
RAW_ULPS = 64
#: more pieces than this and the function is refused as too rough
MAX_PIECES = 1024
#: a difference between two neighbouring floats larger than this (times the scale) is a jump
JUMP_MIN = 1e-9


@dataclass(frozen=True, eq=False)
class Pieces:
    """A piecewise Chebyshev map of a function on ``[edges[0], edges[-1])``.

    ``coefs[k]`` holds the interpolant's coefficients on ``[edges[k], edges[k+1])`` (in the
    piece's own variable, ``-1`` to ``1``), or is ``None`` for a raw piece. ``jumps`` lists the
    interior edges at which a jump was found.
    """

    edges: FloatArray
    coefs: tuple[FloatArray | None, ...]
    jumps: tuple[float, ...] = ()

    @property
    def raw(self) -> NDArray[np.bool_]:
        """Raw pieces, with one more entry (``False``) for the points at or beyond the last edge."""
        return np.array([c is None for c in self.coefs] + [False])

    def index(self, x: FloatArray) -> IntArray:
        """The piece holding each ``x`` (``len(coefs)`` at or beyond the last edge)."""
        return np.searchsorted(self.edges, x, side="right") - 1

    def evaluate(self, x: FloatArray, raw: Callable[[FloatArray], FloatArray] | None = None) -> FloatArray:
        """The interpolants at ``x`` (``edges[0] <= x < edges[-1]``); ``raw(x)`` on raw pieces."""
        x = np.asarray(x, dtype=float)
        out = np.zeros(x.shape)
        if x.size == 0:
            return out
        flat, res = x.ravel(), out.ravel()
        k = self.index(flat)
        m = len(self.coefs)
        if m == 1:
            groups = [(0, np.arange(flat.size))]
        else:
            order = np.argsort(k.astype(np.int16 if m < 2**15 else np.int64), kind="stable")
            ks, starts = np.unique(k[order], return_index=True)
            bounds = np.append(starts, flat.size)
            groups = [(int(kk), order[bounds[j]:bounds[j + 1]]) for j, kk in enumerate(ks)]
        for kk, idx in groups:
            if not 0 <= kk < m:
                continue
            a, b = self.edges[kk], self.edges[kk + 1]
            c = self.coefs[kk]
            xs = flat[idx]
            if c is None:
                if raw is None:
                    raise ValueError("a raw piece needs the function itself")
                res[idx] = raw(xs)
            else:
                res[idx] = C.chebval((2.0 * xs - (a + b)) / (b - a), c)
        return out


#: a piece is raw when rounding, not smoothness, limits its interpolant: the allowance for the
#: function's own rounding would exceed this many times the tolerance
NOISE_CAP = 1e3
#: ... and the piece is at most this wide (a wider one is split: near an endpoint singularity
#: the noise estimate is large on every piece that touches it)
RAW_WIDTH = 2.0 ** -20

RAW = "raw"


def _interpolant(f: Callable[[FloatArray], FloatArray], a: float, b: float,
                 tol: float) -> FloatArray | str | None:
    """Chebyshev coefficients of ``f`` on ``[a, b]`` that converged to ``tol``, chopped; ``RAW``
    when the function's own rounding there is above ``NOISE_CAP tol``; else None (split)."""
    for d in DEGREES:
        nodes = 0.5 * (a + b) + 0.5 * (b - a) * C.chebpts1(d + 1)
        vals = np.asarray(f(nodes), dtype=float)
        if not np.all(np.isfinite(vals)):
            return None
        if vals.max() == vals.min():             # constant on the piece (a step rule): exactly,
            xs = _check_points(a, b, d)          # once the check points agree
            return vals[:1].copy() if np.all(np.asarray(f(xs), dtype=float) == vals[0]) else None
        t = C.chebpts1(d + 1)
        c = C.chebfit(t, vals, d)
        # the function's own rounding: f evaluated in floats near x is noisy by about
        # eps |x| |f'(x)| (the slope between neighbouring nodes), so no interpolant can be asked
        # to do better than that; where that is large the function is float-grained: raw
        slope = float(np.max(np.abs(np.diff(vals) / np.diff(t)))) * 2.0 / (b - a)
        noise = 8.0 * np.finfo(float).eps * max(abs(a), abs(b)) * slope
        if noise > NOISE_CAP * tol and b - a <= RAW_WIDTH:
            return RAW
        tol_here = tol + min(noise, NOISE_CAP * tol)
        if np.max(np.abs(c[-3:])) <= tol_here:
            tail = np.cumsum(np.abs(c[::-1]))[::-1]     # tail[k] = sum of |c_j|, j >= k
            n = int(np.flatnonzero(tail > tol_here)[-1]) + 1 if tail[0] > tol_here else 1
            c = np.array(c[:n])
            # the nodes can miss a feature near an end (a jump at 0.999 on [0, 1)): check the
            # interpolant between the nodes and at points graded towards both ends
            xs = _check_points(a, b, d)
            if np.max(np.abs(np.asarray(f(xs), dtype=float) - C.chebval((2.0 * xs - (a + b)) / (b - a), c))) \
                    > CHECK_FACTOR * tol_here:
                return None
            return c
    return None


#: a converged interpolant must also hold to this many times its tolerance at the check points
CHECK_FACTOR = 16.0


def _check_points(a: float, b: float, d: int) -> FloatArray:
    """Midpoints between the ``d + 1`` nodes, and points ``a + w 2^-k``, ``b - w 2^-k``
    (``k = 1..60``, ``w = b - a``) graded towards both ends, inside ``[a, b)``."""
    t = C.chebpts1(d + 1)
    mid = 0.5 * (t[1:] + t[:-1])
    w = b - a
    g = w * 2.0 ** -np.arange(1, 61)
    xs = np.concatenate([0.5 * (a + b) + 0.5 * w * mid, a + g, b - g])
    return np.unique(xs[(xs >= a) & (xs < b)])


def _jump(f: Callable[[FloatArray], FloatArray], a: float, b: float, tol: float) -> float | None:
    """An interior point of ``(a, b)`` at which ``f`` jumps (the right one of two neighbouring
    floats that straddle the jump), or None."""
    lo, hi = a, float(np.nextafter(b, a))
    for _ in range(16):
        x = np.linspace(lo, hi, 65)
        x[0], x[-1] = lo, hi
        y = np.asarray(f(x), dtype=float)
        k = int(np.argmax(np.abs(np.diff(y))))
        lo, hi = float(x[k]), float(x[k + 1])
        if hi <= np.nextafter(lo, math.inf):
            break
    if hi > np.nextafter(lo, math.inf) or not a < lo:
        return None
    # a jump, not a steep stretch: the step between the two floats dwarfs its neighbours' steps
    xs = [lo, hi]
    for _ in range(2):
        xs = [float(np.nextafter(xs[0], -math.inf)), *xs, float(np.nextafter(xs[-1], math.inf))]
    if not a <= xs[0] or not xs[-1] < b:
        return None
    d = np.abs(np.diff(np.asarray(f(np.array(xs)), dtype=float)))
    step, around = float(d[2]), float(max(d[0], d[1], d[3], d[4]))
    return hi if step > JUMP_MIN * tol / TOL and step > 1e6 * around else None


def _kink(f: Callable[[FloatArray], FloatArray], a: float, b: float) -> float | None:
    """An interior point of ``(a, b)`` at which ``f``'s slope jumps, or None: the largest second
    difference on a grid, zoomed in; a kink if the second difference over ``h``, divided by
    ``h``, stays put as ``h`` shrinks a hundredfold (for a smooth ``f`` it shrinks with ``h``)."""
    lo, hi = a, float(np.nextafter(b, a))
    for _ in range(14):
        x = np.linspace(lo, hi, 65)
        y = np.asarray(f(x), dtype=float)
        k = int(np.argmax(np.abs(np.diff(y, 2)))) + 1
        lo, hi = float(x[k - 1]), float(x[k + 1])
        if hi - lo <= 8 * np.spacing(hi):
            break
    xk = 0.5 * (lo + hi)
    w = b - a
    ratio = []
    for h in (1e-4 * w, 1e-6 * w):
        if not (a < xk - h and xk + h < b):
            return None
        y = np.asarray(f(np.array([xk - h, xk, xk + h])), dtype=float)
        ratio.append(abs(float(y[0] - 2.0 * y[1] + y[2])) / h)
    return xk if ratio[1] > 0.5 * ratio[0] and ratio[1] > 1e-6 else None


def fit(f: Callable[[FloatArray], FloatArray], lo: float = 0.0, hi: float = 1.0,
        scale: float = 1.0, name: str = "f", max_pieces: int = MAX_PIECES) -> Pieces:
    """Cut ``[lo, hi)`` into pieces where ``f`` is one converged Chebyshev interpolant (module
    docstring). ``scale``: the size of ``f`` the tolerance is relative to. Raises ``ValueError``
    naming ``name`` when ``f`` needs more than ``max_pieces`` pieces."""
    tol = TOL * scale
    done: list[tuple[float, float, FloatArray | None]] = []
    jumps: list[float] = []
    stack = [(float(lo), float(hi))]
    while stack:
        a, b = stack.pop()
        c = _interpolant(f, a, b, tol)
        if isinstance(c, str):
            m = _jump(f, a, b, tol)              # a steep piece may hide a jump: cut there
            if m is None:
                done.append((a, b, None))
            else:
                jumps.append(m)
                stack += [(m, b), (a, m)]
            continue
        if c is not None:
            done.append((a, b, c))
            continue
        if len(done) + len(stack) >= max_pieces:
            raise ValueError(f"{name} is too rough: it is not smooth between fewer than {max_pieces} "
                             f"breakpoints of [{lo:g}, {hi:g})")
        if b - a <= RAW_ULPS * np.spacing(b):
            done.append((a, b, None))
            continue
        m = _jump(f, a, b, tol)
        if m is not None:
            jumps.append(m)
        else:
            m = _kink(f, a, b)
            if m is None or not a < m < b:
                m = 0.5 * (a + b)
        stack += [(m, b), (a, m)]
    done.sort(key=lambda t: t[0])
    merged: list[tuple[float, float, FloatArray | None]] = []
    for piece in done:                   # neighbouring raw pieces are one raw piece
        if merged and piece[2] is None and merged[-1][2] is None:
            merged[-1] = (merged[-1][0], piece[1], None)
        else:
            merged.append(piece)
    done = merged
    edges = np.array([t[0] for t in done] + [float(hi)])
    return Pieces(edges, tuple(t[2] for t in done), tuple(sorted(jumps)))


#: Gauss-Legendre nodes per cell of a raw piece's graded grid
GAUSS_NODES = 24


class _RawIntegral:
    """``int_x^b phi`` on a raw piece ``[a, b)`` (steep, or singular at an end): the piece is cut
    at ``a + w 2^-k`` and ``b - w 2^-k`` (``k = 1..60``), so that every cell is at least its own
    length away from both ends, and each cell is integrated by Gauss-Legendre (geometric
    grading, the standard quadrature for endpoint singularities)."""

    def __init__(self, phi: Callable[[FloatArray], FloatArray], a: float, b: float) -> None:
        w = b - a
        g = w * 2.0 ** -np.arange(1, 61)
        grid = np.unique(np.concatenate([[a, b], a + g, b - g]))
        self.phi, self.grid = phi, grid[(grid >= a) & (grid <= b)]
        cells = _gauss(phi, self.grid[:-1], self.grid[1:])
        self.right = np.append(np.cumsum(cells[::-1])[::-1], 0.0)   # int_{grid_j}^b phi

    def __call__(self, x: FloatArray) -> FloatArray:
        j = np.clip(np.searchsorted(self.grid, x, side="right") - 1, 0, self.grid.size - 2)
        return _gauss(self.phi, x, self.grid[j + 1]) + self.right[j + 1]


def _gauss(f: Callable[[FloatArray], FloatArray], a: FloatArray, b: FloatArray) -> FloatArray:
    """``int_a^b f`` for each pair, by Gauss-Legendre with ``GAUSS_NODES`` nodes."""
    t, wts = np.polynomial.legendre.leggauss(GAUSS_NODES)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    half = 0.5 * (b - a)
    x = (0.5 * (a + b))[..., None] + half[..., None] * t
    return half * (np.asarray(f(x.ravel()), dtype=float).reshape(x.shape) @ wts)


def payment_from_phi(phi: Callable[[FloatArray], FloatArray]) -> tuple[Callable[[FloatArray], FloatArray], Pieces, Pieces]:
    """The Myerson unit payment ``p(x) = x phi(x) + int_x^1 phi`` of a standard rule, exact to
    about 1e-15, with the maps of ``phi`` and of ``p`` (module docstring)."""
    ph = fit(phi, 0.0, 1.0, 1.0, "phi")
    m = len(ph.coefs)
    pcoef: list[FloatArray | None] = [None] * m
    tails = np.zeros(m + 1)          # tails[k] = int_{edges[k]}^1 phi
    raws: dict[int, _RawIntegral] = {}
    for k in range(m - 1, -1, -1):
        a, b = float(ph.edges[k]), float(ph.edges[k + 1])
        c = ph.coefs[k]
        if c is None:                # a raw piece: graded quadrature of phi itself
            raws[k] = _RawIntegral(phi, a, b)
            tails[k] = tails[k + 1] + float(raws[k].right[0])
            continue
        q = Chebyshev(c, domain=[a, b])
        anti = q.integ(lbnd=b)       # int_b^x q
        pk = Chebyshev.identity(domain=[a, b]) * q - anti + tails[k + 1]
        pcoef[k] = np.array(pk.coef)
        tails[k] = tails[k + 1] - float(anti(a))
    pp = Pieces(ph.edges, tuple(pcoef), ph.jumps)

    def raw(x: FloatArray) -> FloatArray:      # x phi(x) + int_x^b phi on a raw piece
        k = ph.index(x)
        out = x * np.asarray(phi(x), dtype=float) + tails[k + 1]
        for kk in np.unique(k):
            sel = k == kk
            out[sel] += raws[int(kk)](x[sel])
        return out

    def p(x: FloatArray) -> FloatArray:
        x = np.asarray(x, dtype=float)
        out = np.zeros(x.shape)
        inside = x < 1.0
        if inside.all():
            return pp.evaluate(x, raw)
        out[inside] = pp.evaluate(x[inside], raw)
        return out

    return p, ph, pp


# ------------------------------------------------------------------ Mechanism 2
#: near sellers' intervals are interpolated at these degrees (raised while the last coefficients
#: are not below the sum's rounding)
NEAR_DEGREES = (6, 12, 24, 48, 96)
#: the far sellers' total at these degrees
FAR_DEGREES = (8, 16, 32, 64, 128)
#: an interpolant of a sum has converged when its last coefficients are below this times the
#: budget: the sums' own rounding (an exact sum of n terms is not smooth below it)
SUM_NOISE = 64 * np.finfo(float).eps
#: near sellers' intervals narrower than this times r* are summed exactly, not interpolated
TINY_INTERVAL = 64 * np.finfo(float).eps
#: at most this many near sum evaluations (points times near sellers) per tier, else the tier's
#: sellers are left to their own exact searches (None is returned)
NEAR_WORK_MAX = 4 * 10**7

#: ... and above this many evaluations of phi (raw pieces weighted) Mechanism 2 warns that it is slow
NEAR_WORK_WARN = 10**8

Total = Callable[[FloatArray, FloatArray, float], float]


def slow_warning(message: str, stacklevel: int) -> None:
    """Mechanism 2 takes a path that can be slow: a ``CrowdlibWarning`` attributed ``stacklevel``
    frames up from the function that calls this one (1: that function), each caller choosing it
    so that it names the caller of ``mechanism2``."""
    import warnings

    from ._validation import CrowdlibWarning

    warnings.warn(f"mechanism2: {message}; this can be slow", CrowdlibWarning, stacklevel=stacklevel + 1)


def _cheb_nodes(a: FloatArray, b: FloatArray, d: int) -> FloatArray:
    """Chebyshev points of the first kind (``d + 1``, interior) on each interval ``[a_k, b_k]``."""
    t = np.cos(np.pi * (np.arange(d + 1) + 0.5) / (d + 1))[::-1]
    return 0.5 * (a + b)[:, None] + 0.5 * (b - a)[:, None] * t[None, :]


def _coefficients(vals: FloatArray, d: int) -> FloatArray:
    """Chebyshev coefficients (rows) of the interpolants through ``vals`` at ``_cheb_nodes``."""
    t = np.cos(np.pi * (np.arange(d + 1) + 0.5) / (d + 1))[::-1]
    T = C.chebvander(t, d)                        # (d+1 nodes, d+1 degrees)
    c = vals @ T * (2.0 / (d + 1))
    c[:, 0] *= 0.5
    return c


def _clenshaw(c: FloatArray, s: FloatArray) -> FloatArray:
    """``sum_k c[:, k] T_k(s)`` row by row (each query its own coefficient row)."""
    b1 = np.zeros(s.shape)
    b2 = np.zeros(s.shape)
    for k in range(c.shape[1] - 1, 0, -1):
        b1, b2 = 2.0 * s * b1 - b2 + c[:, k], b1
    return s * b1 - b2 + c[:, 0]


def _sums(p: Callable[[FloatArray], FloatArray], rho: FloatArray, u: FloatArray, rs: FloatArray) -> FloatArray:
    """``r sum_j u_j p(rho_j / r)`` for each ``r`` in ``rs``, all at once (in chunks of about
    2^22 terms; each row's sum pairwise)."""
    rs = np.asarray(rs, dtype=float)
    out = np.empty(rs.size)
    step = max(1, (1 << 22) // max(rho.size, 1))
    for s in range(0, rs.size, step):
        r = rs[s : s + step, None]
        out[s : s + step] = r[:, 0] * np.sum(u[None, :] * p(rho[None, :] / r), axis=1)
    return out


def _far_interpolant(total: Total, rho: FloatArray, u: FloatArray, r_lo: float, r_hi: float,
                     scale: float) -> Chebyshev | None:
    for d in FAR_DEGREES:
        cheb = Chebyshev.interpolate(lambda rs: np.array([total(rho, u, float(r)) for r in rs]), d,
                                     domain=[r_lo, r_hi])
        if np.max(np.abs(cheb.coef[-2:])) <= SUM_NOISE * scale:
            return cheb
    return None


def _events(pieces: Pieces, rho: FloatArray, r_lo: float, r_hi: float,
            k_top: IntArray, k_bot: IntArray) -> FloatArray:
    """The rates in ``(r_lo, r_hi)`` at which a near seller moves to another piece of ``p``: the
    largest float ``r`` with ``rho / r >= edge`` (the sum is continuous from the left there)."""
    cnt = k_bot - k_top
    if not cnt.sum():
        return np.zeros(0)
    seller = np.repeat(np.arange(rho.size), cnt)
    first = np.repeat(k_top + 1 - np.cumsum(cnt) + cnt, cnt)
    edge = pieces.edges[first + np.arange(seller.size)]
    rr = rho[seller]
    e = rr / edge
    for _ in range(4):                           # the float semantics of the sums: rho / r >= edge
        bad = rr / e < edge
        e = np.where(bad, np.nextafter(e, 0.0), e)
        up = np.nextafter(e, math.inf)
        e = np.where(~bad & (rr / up >= edge), up, e)
    e = e[(e > r_lo) & (e < r_hi)]
    return np.unique(e)


def piece_rates(p: Callable[[FloatArray], FloatArray], pieces: Pieces, total: Total,
                rho: FloatArray, u: FloatArray, B: float, r_star: float, lo: FloatArray,
                which: IntArray) -> FloatArray | None:
    """``r_i`` for the sellers ``which``, each on its bracket ``[lo_i, r*]`` (module docstring).

    ``p``: the rule's unit payment; ``pieces``: a map of ``p`` on ``[0, 1)`` (its edges are where
    it may fail to be smooth); ``total(rho, u, r)``: the exact total payment of a set of sellers.
    Returns rates for every seller (``r*`` outside ``which``), or None when the near sellers are
    too many for this tier or the far total does not converge (the caller then searches).
    """
    rates = np.full(rho.size, r_star)
    todo = which[lo[which] < r_star]
    if todo.size == 0:
        return rates
    r_lo = float(lo[todo].min())
    p0 = float(p(np.zeros(1))[0])
    act = np.flatnonzero(rho < r_star)
    ra, ua = rho[act], u[act]
    k_top, k_bot = pieces.index(ra / r_star), pieces.index(ra / r_lo)
    far = (k_top == k_bot) & ~pieces.raw[k_top]
    scale = B
    cheb = None
    if far.any():
        cheb = _far_interpolant(total, ra[far], ua[far], r_lo, r_star, scale)
        if cheb is None:
            return None
    near = ~far
    rn, un = ra[near], ua[near]
    bnd = np.concatenate(([r_lo], _events(pieces, rn, r_lo, r_star, k_top[near], k_bot[near]), [r_star]))
    bnd = np.unique(bnd)
    coef, exact = None, None
    raw_cost = 1.0
    spent = [0.0, 0.0]                # exact near evaluations so far (phi calls), warned yet
    if rn.size and bnd.size > 1:
        a, b = bnd[:-1], bnd[1:]
        # an interval narrower than TINY_INTERVAL r* (inside a raw piece of p, where p is the
        # rule's own float-grained function) is summed exactly when a query lands in it
        exact = (b - a) <= TINY_INTERVAL * r_star
        # on such an interval the near total is its value at the right end (the total is
        # continuous from the left, and within 64 ulps it moves by less than the sums' rounding)
        tiny = np.flatnonzero(exact)
        tiny_val = np.zeros(a.size)
        tiny_val[tiny] = _sums(p, rn, un, b[tiny]) if tiny.size else 0.0
        is_tiny = exact.copy()
        coef = np.zeros((a.size, NEAR_DEGREES[-1] + 1))
        width = np.ones(a.size, dtype=int)        # coefficients used on each interval
        todo_iv = np.flatnonzero(~exact)
        work, warned = 0, False
        # a near seller inside a raw piece costs GAUSS_NODES evaluations of phi per point
        raw_cost = 1.0 + GAUSS_NODES * float(np.mean(pieces.raw[k_top[near]] | pieces.raw[k_bot[near]]))
        for d in NEAR_DEGREES:
            if todo_iv.size == 0:
                break
            work += todo_iv.size * (d + 1) * rn.size
            if work > NEAR_WORK_MAX:
                return None
            if work * raw_cost > NEAR_WORK_WARN and not warned and not spent[1]:
                spent[1] = 1.0
                slow_warning(f"{rn.size} sellers cross edges of the rule's pieces inside the bracket, "
                             "some in raw pieces (phi is steep there); their sums take about "
                             f"{work * raw_cost:.2g} evaluations of phi", stacklevel=4)
                warned = True
            nodes = _cheb_nodes(a[todo_iv], b[todo_iv], d).ravel()
            vals = _sums(p, rn, un, nodes).reshape(todo_iv.size, d + 1)
            c = _coefficients(vals, d)
            ok = np.max(np.abs(c[:, -2:]), axis=1) <= SUM_NOISE * scale
            coef[todo_iv[ok], : d + 1] = c[ok]
            width[todo_iv[ok]] = d + 1
            todo_iv = todo_iv[~ok]
        exact[todo_iv] = True            # not smooth to the sums' rounding: exactly, too

    def common(r: FloatArray) -> FloatArray:
        out = cheb(r) if cheb is not None else np.zeros(r.shape)
        if coef is not None:
            k = np.clip(np.searchsorted(bnd, r, side="left") - 1, 0, bnd.size - 2)
            aa, bb = bnd[k], bnd[k + 1]
            s = np.clip((2.0 * r - (aa + bb)) / np.where(bb > aa, bb - aa, 1.0), -1.0, 1.0)
            near_part = np.empty(r.shape)
            wk = width[k]
            for w in np.unique(wk):               # each interval at its own degree
                m = wk == w
                near_part[m] = _clenshaw(coef[k[m], :w], s[m])
            if exact is not None and exact.any():
                q = np.flatnonzero(exact[k])
                if q.size:
                    small = is_tiny[k[q]]
                    near_part[q[small]] = tiny_val[k[q[small]]]
                    rest = q[~small]
                    if rest.size:
                        near_part[rest] = _sums(p, rn, un, r[rest])
                        spent[0] += rest.size * rn.size * raw_cost
                        if spent[0] > NEAR_WORK_WARN and not spent[1]:
                            spent[1] = 1.0
                            slow_warning(f"{rn.size} sellers cross edges of the rule's pieces inside "
                                         "the bracket where their total is not smooth (phi is singular "
                                         "at an edge, as (1 - x)^k with k < 1 at 1), so it is summed "
                                         "exactly for every root that lands there", stacklevel=6)
            out = out + near_part
        return out

    ri, ui = rho[todo], u[todo]

    def excess(r: FloatArray, live: IntArray) -> FloatArray:
        own = ui[live] * r * (p0 - p(ri[live] / r))
        return common(r) + own - B

    everyone = np.arange(todo.size)
    top = excess(np.full(todo.size, r_star), everyone)
    open_ = np.flatnonzero(top > 0)              # the others are feasible at r*: their rate is r*
    a = lo[todo][open_].copy()
    b = np.full(open_.size, r_star)
    fa = np.minimum(excess(a, open_), 0.0)       # feasible by the bracket lemma; clip rounding
    fb = top[open_]
    side = np.zeros(open_.size, dtype=int)
    live = np.arange(open_.size)
    tol = 4 * np.finfo(float).eps * r_star
    for it in range(200):                        # Illinois, with a bisection every 8th step
        if live.size == 0:
            break
        A_, B_, FA, FB = a[live], b[live], fa[live], fb[live]
        den = FB - FA
        # FB / (FB - FA) is in [0, 1] (FA <= 0 < FB): no overflow at extreme scales
        x = np.where(den > 0, B_ - FB / np.where(den > 0, den, 1.0) * (B_ - A_), A_ + 0.5 * (B_ - A_))
        if it % 8 == 7:
            x = A_ + 0.5 * (B_ - A_)
        x = np.clip(x, A_, B_)
        fx = excess(x, open_[live])
        left = fx <= 0
        a[live] = np.where(left, x, A_)
        fa[live] = np.where(left, fx, np.where(side[live] == -1, FA / 2, FA))
        # an exact zero is the rate to within an ulp (the payment increases): b just above it
        b[live] = np.where(fx == 0, np.minimum(B_, np.nextafter(x, math.inf)), np.where(left, B_, x))
        fb[live] = np.where(left, np.where(side[live] == 1, FB / 2, FB), fx)
        side[live] = np.where(left, 1, -1)
        live = live[(b[live] - a[live] > tol) & (fx != 0)]
    live = np.arange(open_.size)
    for _ in range(1100):                        # to neighbouring floats: the payment may jump
        mid = a[live] + 0.5 * (b[live] - a[live])
        keep = (mid > a[live]) & (mid < b[live])
        live, mid = live[keep], mid[keep]
        if live.size == 0:
            break
        ok = excess(mid, open_[live]) <= 0
        a[live] = np.where(ok, mid, a[live])
        b[live] = np.where(ok, b[live], mid)
    out = np.full(todo.size, r_star)
    out[open_] = a
    rates[todo] = out
    return rates
