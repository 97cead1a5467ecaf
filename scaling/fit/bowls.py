"""Where one group's lr (and batch) bowl has its vertex, vectorised over resamples (the columns of Y).

A group is the runs of one configuration at one budget. Its optimum is read from a bowl of loss in ln lr (and
ln batch):

- **Asymmetric lr bowls** (an lr line of >= MIN_ASYMMETRIC_LRS learning rates at one batch): real bowls climb
  faster above the optimum than below it (the right/left curvature ratio is about 14 on Step-Law's released dense
  sweep), and the vertex of a symmetric parabola is then pulled towards the shallow side: x0.75 in lr at a ratio
  of 3 (measured with `analysis/stress_fit.py`). The bowl here is L* + k w(d) d^2, d = ln(lr / lr*), with
  w = 1 / sqrt(rho) below the vertex and sqrt(rho) above it. The ratio rho is a property of the optimiser and
  model, so it is **shared by every group of a family** and fitted jointly with each group's vertex, floor and
  curvature: a free curvature on each side of every bowl was unbiased too, but its vertex scattered 4x more
  (sd 0.12 against 0.03 in ln lr at 0.02 nats of noise). With several seeds, each seed's runs may sit at their own
  level (sum-to-zero seed contrasts): a seed's initialisation and data order shift all its runs together.
- **Symmetric parabolas** otherwise: in ln lr on a line of 3 learning rates, in ln batch along a batch line, and
  in (ln lr, ln batch) jointly on a full 2-D grid.

A bowl that does not open upwards, or whose vertex lies more than MAX_EXTRAPOLATION outside the grid, falls back
to the best run (the caller says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_EXTRAPOLATION = 1.0
"""A fitted vertex more than this many natural-log units (x e) outside the swept range falls back to the best run."""
MIN_ASYMMETRIC_LRS = 4
"""An lr line with this many distinct learning rates gets the asymmetric bowl; with 3, a symmetric parabola."""
VERTEX_STEP = 0.05
"""Resolution (natural-log units of lr) of the search for an asymmetric bowl's vertex; refined between candidates by
a parabola through the profile's three lowest neighbours."""
LOG_RATIOS = np.linspace(-np.log(30.0), np.log(30.0), 31)
"""Candidate ln(curvature above / curvature below) of the shared asymmetry, from 1/30 to 30 (1 included)."""
WINDOW = 5
"""An lr line with more learning rates than this is read on the WINDOW nearest (in ln lr) to its best: far from the
optimum real bowls are not quadratic (they flatten, or climb towards divergence), and a bowl fitted to all of
Step-Law's 12 learning rates pinned its ratio at 30 and missed their near-optimal lr by a median x1.83, x4.3 at
worst; on the nearest 5, by a median x1.13, x1.69 at worst (tests/test_fit_reference.py)."""
CHUNK = 256
"""Resamples profiled at once (bounds memory: candidates x ratios x parameters x CHUNK floats)."""


# ---- symmetric bowls -------------------------------------------------------------------------------------------
def vertex_1d(v: np.ndarray, Y: np.ndarray):
    """Vertex (position, value) of a least-squares parabola in v per column of Y, and whether it opens upwards."""
    X = np.column_stack([np.ones_like(v), v, v * v])
    c = np.linalg.pinv(X) @ Y
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = -c[1] / (2 * c[2])
    return pos, c[0] + c[1] * pos + c[2] * pos * pos, c[2] > 0


def quadratic_2d(x, z):
    return np.column_stack([np.ones_like(x), x, z, x * x, z * z, x * z])


def vertex_2d(x: np.ndarray, z: np.ndarray, Y: np.ndarray):
    c = np.linalg.pinv(quadratic_2d(x, z)) @ Y
    h11, h22, h12 = 2 * c[3], 2 * c[4], c[5]
    det = h11 * h22 - h12 * h12
    with np.errstate(divide="ignore", invalid="ignore"):
        xv = -(h22 * c[1] - h12 * c[2]) / det
        zv = -(-h12 * c[1] + h11 * c[2]) / det
    value = c[0] + c[1] * xv + c[2] * zv + c[3] * xv * xv + c[4] * zv * zv + c[5] * xv * zv
    return xv, zv, value, (h11 > 0) & (det > 0)


def inside(v, values: np.ndarray, margin: float = MAX_EXTRAPOLATION):
    return (values.min() - margin <= v) & (v <= values.max() + margin)


def longest_line(v: np.ndarray, other: np.ndarray) -> np.ndarray | None:
    """Rows at the value of `other` with the most distinct values of v (at least 3), or None."""
    _, line = np.unique(other, return_inverse=True)
    pairs = np.unique(np.column_stack([line, v]), axis=0)
    distinct = np.bincount(pairs[:, 0].astype(int), minlength=line.max() + 1)
    best = int(np.argmax(distinct))  # the first of the longest lines, as a scan in sorted order finds it
    return line == best if distinct[best] >= 3 else None


def seed_contrasts(seeds: np.ndarray | None) -> np.ndarray | None:
    """Sum-to-zero columns, one per seed but the first, so each seed's runs sit at their own level while the bowl's
    floor stays the mean over seeds; None with one seed, or when a seed has fewer than 2 runs."""
    if seeds is None:
        return None
    values, counts = np.unique(seeds, return_counts=True)
    if len(values) < 2 or counts.min() < 2:
        return None
    first = (seeds == values[0]).astype(float)
    return np.column_stack([(seeds == s) - first * (n / counts[0]) for s, n in zip(values[1:], counts[1:],
                                                                                     strict=True)])


# ---- asymmetric bowls with a shared ratio ----------------------------------------------------------------------
@dataclass
class Asymmetric:
    """One lr line's candidate bowls: for each shared ratio (LOG_RATIOS) and candidate vertex (`grid`), the design
    [1, w(d) d^2, seed contrasts] and what least squares needs of it."""

    v: np.ndarray
    """ln lr of the runs."""
    extra: np.ndarray | None
    """The seed contrasts (None with one seed)."""
    grid: np.ndarray
    X: np.ndarray
    """(ratios, vertices, runs, parameters)."""
    P: np.ndarray
    """Pseudo-inverses, (ratios, vertices, parameters, runs)."""
    Xt: np.ndarray
    """The designs transposed, contiguous: (ratios, vertices, parameters, runs)."""

    @classmethod
    def of(cls, v: np.ndarray, extra: np.ndarray | None) -> Asymmetric:
        lo, hi = v.min() - MAX_EXTRAPOLATION, v.max() + MAX_EXTRAPOLATION
        grid = np.linspace(lo, hi, int(np.ceil((hi - lo) / VERTEX_STEP)) + 1)
        bend = _bend(v[None, None, :] - grid[None, :, None], LOG_RATIOS[:, None, None])
        cols = [np.ones_like(bend), bend]
        if extra is not None:
            cols += [np.broadcast_to(c, bend.shape) for c in extra.T]
        X = np.stack(cols, axis=3)
        return cls(v, extra, grid, X, np.linalg.pinv(X), np.ascontiguousarray(np.swapaxes(X, 2, 3)))

    def profile(self, Y: np.ndarray) -> dict[str, np.ndarray]:
        """Per ratio and column of Y: the least residual sum of squares over the candidate vertices (inf where no
        candidate curves upwards), that vertex (refined) and the floor there; each (ratios, columns)."""
        out = {k: np.empty((len(LOG_RATIOS), Y.shape[1])) for k in ("sse", "pos", "floor", "inner")}
        yy = (Y * Y).sum(axis=0)
        for start in range(0, Y.shape[1], CHUNK):
            y = Y[:, start:start + CHUNK]
            c = (self.P.reshape(-1, len(y)) @ y).reshape(*self.P.shape[:3], -1)  # (Q, G, p, r): one GEMM each
            xty = (self.Xt.reshape(-1, len(y)) @ y).reshape(c.shape)
            sse = yy[start:start + CHUNK] - np.einsum("qgpr,qgpr->qgr", c, xty)  # y'y - c'X'y
            sse[c[:, :, 1] <= 0] = np.inf  # no upward bowl at this candidate
            g = np.argmin(sse, axis=1)  # (Q, r)
            Q, r = np.indices(g.shape)
            s0, s1, s2 = (sse[Q, np.clip(g + k, 0, len(self.grid) - 1), r] for k in (-1, 0, 1))
            inner = (g > 0) & (g < len(self.grid) - 1) & np.isfinite(s1)
            with np.errstate(invalid="ignore", divide="ignore"):
                shift = 0.5 * (s0 - s2) / (s0 - 2 * s1 + s2)
            shift = np.where(inner & np.isfinite(shift) & (np.abs(shift) <= 1), shift, 0.0)
            sl = slice(start, start + y.shape[1])
            out["sse"][:, sl] = s1
            out["pos"][:, sl] = self.grid[g] + shift * (self.grid[1] - self.grid[0])
            out["floor"][:, sl] = c[Q, g, 0, r]
            out["inner"][:, sl] = inner
        return out

    def fitted(self, y: np.ndarray, log_ratio: float, vertex: float) -> tuple[np.ndarray, np.ndarray, int]:
        """Fitted values with the shared ratio and this group's vertex, the design there, and the residual degrees
        of freedom (the vertex counts as a parameter; the shared ratio is charged to no one group)."""
        X = _bowl_design(self.v, self.extra, vertex, log_ratio)
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        return X @ coef, X, len(y) - np.linalg.matrix_rank(X) - 1


def _bend(d, log_ratio):
    """The bowl's shape at d = ln(lr / lr*): d^2 / sqrt(rho) below the vertex, d^2 sqrt(rho) above it."""
    root = np.exp(np.asarray(log_ratio, float) / 2)
    return np.where(d < 0, 1 / root, root) * d * d


def _bowl_design(v: np.ndarray, extra: np.ndarray | None, vertex: float, log_ratio: float) -> np.ndarray:
    cols = [np.ones_like(v), _bend(v - vertex, log_ratio)]
    return np.column_stack(cols if extra is None else [*cols, extra])


def _sse_at(v: np.ndarray, y: np.ndarray, extra: np.ndarray | None, vertex: float, log_ratio: float):
    """(residual sum of squares, coefficients) of the bowl with its vertex and ratio fixed."""
    X = _bowl_design(v, extra, vertex, log_ratio)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    r = y - X @ coef
    return (float(r @ r) if coef[1] > 0 else np.inf), coef


def polish(groups: list[tuple[Asymmetric, np.ndarray]], log_ratio: float, vertices: list[float]):
    """The grid's answer for one set of losses made exact: the shared ratio and every group's vertex minimised
    continuously (Brent over the ratio of the sum of each group's Brent-minimised profile), starting from the grid's
    best. Returns (log ratio, [(vertex, floor, inner)])."""
    from scipy.optimize import minimize_scalar

    def group_best(a: Asymmetric, y: np.ndarray, lr: float, start: float):
        step = a.grid[1] - a.grid[0]
        lo, hi = max(a.grid[0], start - 2 * step), min(a.grid[-1], start + 2 * step)
        with np.errstate(invalid="ignore"):  # a bowl without an upward curvature is inf: Brent steps away from it
            res = minimize_scalar(lambda x: _sse_at(a.v, y, a.extra, x, lr)[0], bounds=(lo, hi), method="bounded",
                                  options={"xatol": 1e-9})
        return res.x, res.fun

    def total(lr: float) -> float:
        return sum(group_best(a, y, lr, x)[1] for (a, y), x in zip(groups, vertices, strict=True))

    step = LOG_RATIOS[1] - LOG_RATIOS[0]
    with np.errstate(invalid="ignore"):
        res = minimize_scalar(total, bounds=(max(LOG_RATIOS[0], log_ratio - step),
                                             min(LOG_RATIOS[-1], log_ratio + step)),
                              method="bounded", options={"xatol": 1e-9})
    lr = res.x if res.fun <= total(log_ratio) else log_ratio
    out = []
    for (a, y), x in zip(groups, vertices, strict=True):
        vertex, sse = group_best(a, y, lr, x)
        _, coef = _sse_at(a.v, y, a.extra, vertex, lr)
        out.append((vertex, coef[0], bool(np.isfinite(sse) and a.grid[1] < vertex < a.grid[-2])))
    return lr, out


def shared_ratio(profiles: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Index into LOG_RATIOS, per column, of the ratio that fits every group's bowl best together."""
    total = np.sum([np.where(np.isfinite(p["sse"]), p["sse"], 1e30) for p in profiles], axis=0)
    return np.argmin(total, axis=0)


def window(lr: np.ndarray, batch: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Which runs a group's bowl is read from: all of them, except on an lr line (one batch) of more than WINDOW
    learning rates, whose WINDOW learning rates nearest the best (lowest mean loss over seeds) are kept."""
    x = np.log(np.asarray(lr, float))
    values = np.unique(x)
    if len(np.unique(batch)) > 1 or len(values) <= WINDOW:
        return np.ones(len(x), bool)
    means = np.array([np.mean(np.asarray(loss, float)[x == v]) for v in values])
    best = values[int(np.argmin(means))]
    keep = values[np.argsort(np.abs(values - best), kind="stable")[:WINDOW]]
    return np.isin(x, keep)


# ---- one group's design ----------------------------------------------------------------------------------------
@dataclass
class Design:
    """How one group's runs are laid out, decided once and applied to every resample."""

    x: np.ndarray
    z: np.ndarray
    two_d: bool
    lr_line: np.ndarray | None
    batch_line: np.ndarray | None
    model: np.ndarray | None
    """Design matrix of the symmetric bowl whose fitted values and residuals the bootstrap resamples (None: too few
    runs)."""
    asymmetric: Asymmetric | None = None
    """The lr line's asymmetric bowls, when it has >= MIN_ASYMMETRIC_LRS learning rates at one batch."""

    def fitted(self, y: np.ndarray, log_ratio: float | None = None,
               vertex: float | None = None) -> tuple[np.ndarray, np.ndarray, int] | None:
        """The bowl's fitted values at the runs, its design matrix there (for the residuals' leverages) and its
        residual degrees of freedom; None without a model. An asymmetric bowl needs the shared `log_ratio` and its
        `vertex` (ln lr)."""
        if self.asymmetric is not None and log_ratio is not None and vertex is not None:
            fit = self.asymmetric.fitted(y, log_ratio, vertex)
            if fit[2] >= 1:
                return fit
        if self.model is None:
            return None
        coef, *_ = np.linalg.lstsq(self.model, y, rcond=None)
        return self.model @ coef, self.model, len(y) - self.model.shape[1]


def design(x: np.ndarray, z: np.ndarray, seeds: np.ndarray | None = None, asymmetric: bool = True) -> Design:
    n_lr, n_b = len(np.unique(x)), len(np.unique(z))
    two_d = n_lr >= 3 and n_b >= 3 and len(x) >= 6 and np.linalg.matrix_rank(quadratic_2d(x, z)) == 6
    candidates = []
    if two_d:
        candidates.append(quadratic_2d(x, z))
    if n_lr >= 3 and n_b >= 3:
        candidates.append(np.column_stack([np.ones_like(x), x, x * x, z, z * z]))
    if n_lr >= 3 and n_b == 2:
        candidates.append(np.column_stack([np.ones_like(x), x, x * x, z]))
    if n_lr >= 3:
        candidates.append(np.column_stack([np.ones_like(x), x, x * x]))
    model = next((X for X in candidates if np.linalg.matrix_rank(X) == X.shape[1] and len(x) > X.shape[1]), None)
    lr_line = longest_line(x, z)
    bowls = None
    if asymmetric and n_b == 1 and lr_line is not None and n_lr >= MIN_ASYMMETRIC_LRS:
        bowls = Asymmetric.of(x, seed_contrasts(seeds))
    return Design(x, z, two_d, lr_line, longest_line(z, x) if n_b > 1 else None, model, bowls)


def optimum(d: Design, Y: np.ndarray, asym: dict | None = None, ratio_index: np.ndarray | None = None):
    """(ln lr, ln batch, loss, lr from a bowl?) per column of Y. `asym`, `ratio_index`: the group's asymmetric
    profile and the shared ratio chosen per column (`shared_ratio`)."""
    x, z = d.x, d.z
    best = np.argmin(Y, axis=0)
    lx, lz, loss = x[best].astype(float), z[best].astype(float), Y[best, np.arange(Y.shape[1])]
    lr_ok = np.zeros(Y.shape[1], bool)
    if d.lr_line is not None:
        if asym is not None:
            cols = np.arange(Y.shape[1])
            pos, val = asym["pos"][ratio_index, cols], asym["floor"][ratio_index, cols]
            ok = asym["inner"][ratio_index, cols].astype(bool)
        else:
            pos, val, up = vertex_1d(x[d.lr_line], Y[d.lr_line])
            ok = up & inside(pos, x[d.lr_line])
        lx, loss, lr_ok = np.where(ok, pos, lx), np.where(ok, val, loss), ok
    if d.batch_line is not None:
        pos, val, up = vertex_1d(z[d.batch_line], Y[d.batch_line])
        ok = up & inside(pos, z[d.batch_line])
        lz, loss = np.where(ok, pos, lz), np.where(ok, np.minimum(loss, val), loss)
    if d.two_d:
        xv, zv, val, pd_ = vertex_2d(x, z, Y)
        ok = pd_ & inside(xv, x) & inside(zv, z)
        lx, lz, loss = np.where(ok, xv, lx), np.where(ok, zv, lz), np.where(ok, val, loss)
        lr_ok |= ok
    return lx, lz, loss, lr_ok


def optima_of_groups(designs: list[Design], Ys: list[np.ndarray]):
    """Each group's `optimum` over the columns of its Y (all with the same number of columns), the asymmetric
    groups sharing one ratio per column; and that ln ratio per column (None without asymmetric groups)."""
    profiles = [d.asymmetric.profile(Y) if d.asymmetric is not None else None for d, Y in zip(designs, Ys,
                                                                                              strict=True)]
    used = [p for p in profiles if p is not None]
    ratio = shared_ratio(used) if used else None
    if used and Ys[0].shape[1] == 1:  # the estimate itself (not a resample): exact, not to the grid's resolution
        members = [(i, d.asymmetric) for i, d in enumerate(designs) if d.asymmetric is not None]
        log_ratio, found = polish([(a, Ys[i][:, 0]) for i, a in members], float(LOG_RATIOS[ratio[0]]),
                                  [float(profiles[i]["pos"][ratio[0], 0]) for i, _ in members])
        for (i, _), (vertex, floor, inner) in zip(members, found, strict=True):
            inner = inner and bool(profiles[i]["inner"][ratio[0], 0])  # the grid's edge is the search's edge
            profiles[i] = {"pos": np.array([[vertex]]), "floor": np.array([[floor]]), "inner": np.array([[inner]])}
        return ([optimum(d, Y, p, np.zeros(1, int)) for d, Y, p in zip(designs, Ys, profiles, strict=True)],
                np.array([log_ratio]))
    return ([optimum(d, Y, p, ratio) for d, Y, p in zip(designs, Ys, profiles, strict=True)],
            None if ratio is None else LOG_RATIOS[ratio])
