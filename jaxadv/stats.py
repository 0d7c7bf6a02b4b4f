"""Statistics of training curves and of repeated runs, in NumPy alone (nothing traced).

Episode returns arrive as ``[seeds, updates]`` arrays: the mean return of the episodes
that ended in each update (NaN where none did) beside ``episodes``, how many ended.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["bootstrap_ci", "final_returns", "forward_fill", "iqm", "mean_ci95", "seed_mean_std",
           "t_quantile_975", "windowed_returns"]


_T_975 = (
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
    2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
    2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
    2.059539, 2.055529, 2.051831, 2.048407, 2.045230,
)  # t_{0.975, df} for df = 1 … 29 (scipy.stats.t.ppf, rounded to 6 decimals)


def forward_fill(episode_return: np.ndarray) -> np.ndarray:
    """Each seed's latest finished-episode return at every update: ``[seeds, updates]``.

    An update in which no episode ended (NaN) takes the seed's last finite value; NaN
    stays only before the seed's first finished episode.

    >>> forward_fill(np.array([[np.nan, 1.0, np.nan, 3.0], [2.0, np.nan, np.nan, np.nan]]))
    array([[nan,  1.,  1.,  3.],
           [ 2.,  2.,  2.,  2.]])
    """
    returns = np.asarray(episode_return, dtype=np.float64)
    finite = np.isfinite(returns)
    last = np.maximum.accumulate(np.where(finite, np.arange(returns.shape[1]), 0), axis=1)
    filled = np.take_along_axis(returns, last, axis=1)
    return np.where(np.maximum.accumulate(finite, axis=1), filled, np.nan)


def seed_mean_std(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) std over axis 0 of the finite entries; NaN where there are none.

    >>> seed_mean_std(np.array([[1.0, np.nan], [3.0, np.nan]]))
    (array([ 2., nan]), array([ 1., nan]))
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    safe = np.maximum(counts, 1)
    mean = np.where(finite, values, 0.0).sum(axis=0) / safe
    var = (np.where(finite, values - mean, 0.0) ** 2).sum(axis=0) / safe
    return np.where(counts > 0, mean, np.nan), np.where(counts > 0, np.sqrt(var), np.nan)


def windowed_returns(episode_return: np.ndarray, episodes: np.ndarray, window: int) -> np.ndarray:
    """Mean return of the episodes that ended in the trailing ``window`` updates, per seed.

    ``episode_return``, ``episodes``: ``[seeds, updates]`` (the per-update mean return,
    NaN where ``episodes`` is 0, and the episode count); NaN where the window holds no
    episode.

    >>> windowed_returns(np.array([[10.0, np.nan, 40.0]]), np.array([[1, 0, 2]]), 2)
    array([[10., 10., 40.]])
    """
    returns = np.nan_to_num(np.asarray(episode_return, np.float64))
    count = np.asarray(episodes, np.float64)

    def trailing_sum(x: np.ndarray) -> np.ndarray:
        c = np.concatenate([np.zeros_like(x[:, :1]), np.cumsum(x, axis=1)], axis=1)
        lo = np.maximum(np.arange(1, x.shape[1] + 1) - window, 0)
        return c[:, 1:] - c[:, lo]

    total, n = trailing_sum(returns * count), trailing_sum(count)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def final_returns(
    episode_return: np.ndarray, episodes: np.ndarray, fraction: float = 0.1
) -> np.ndarray:
    """Per seed, the mean return of the episodes that ended in the last ``fraction`` of
    updates (at least one update): ``[seeds]``, NaN for a seed with none. The one
    definition of a run's final return: ``jaxadv train``'s summary and
    :func:`~jaxadv.engine.sweep.run_sweep` both use it.

    >>> final_returns(np.array([[1.0, 2.0, np.nan, 4.0]]), np.array([[1, 1, 0, 3]]), 0.5)
    array([4.])
    """
    window = max(1, math.ceil(fraction * np.shape(episode_return)[1]))
    return windowed_returns(episode_return, episodes, window)[:, -1]


def t_quantile_975(df: int) -> float:
    """Student's t quantile t₀.₉₇₅ with ``df`` degrees of freedom: the two-sided 95% factor.

    A table for ``df`` < 30; from 30 on the Cornish–Fisher expansion in ``1/df``
    (Abramowitz & Stegun 26.7.5, four terms; error < 1e-7 there). No scipy needed.

    >>> round(t_quantile_975(1), 3), round(t_quantile_975(9), 3), round(t_quantile_975(1000), 3)
    (12.706, 2.262, 1.962)
    """
    if isinstance(df, bool) or int(df) != df or df < 1:
        raise ValueError(f"`df` must be a positive integer, got {df!r}")
    df = int(df)
    if df < 30:
        return _T_975[df - 1]
    z = 1.959963984540054  # standard normal 0.975 quantile
    terms = (
        (z**3 + z) / 4,
        (5 * z**5 + 16 * z**3 + 3 * z) / 96,
        (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160,
    )
    return z + sum(g / df ** (i + 1) for i, g in enumerate(terms))


def mean_ci95(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 of the finite entries, the half-width of its 95% CI, and their count.

    Half-width ``t₀.₉₇₅,ₙ₋₁ · sd / √n`` (:func:`t_quantile_975`; ``sd`` the sample, n − 1,
    standard deviation of the ``n`` finite entries): the interval is mean ± half-width.
    The mean is NaN where ``n`` = 0, the half-width where ``n`` < 2.

    >>> mean, half, n = mean_ci95(np.array([[1.0, 5.0], [3.0, np.nan]]))
    >>> mean.tolist(), half.round(4).tolist(), n.tolist()
    ([2.0, 5.0], [12.7062, nan], [2, 1])
    """
    values = np.asarray(values, dtype=np.float64)
    count = np.isfinite(values).sum(axis=0)
    mean, std = seed_mean_std(values)  # population std: × √(n / (n − 1)) for the sample one
    n = np.maximum(count, 2)
    t = np.vectorize(t_quantile_975, otypes=[np.float64])(n - 1)
    half = t * std * np.sqrt(n / (n - 1)) / np.sqrt(n)
    return mean, np.where(count >= 2, half, np.nan), count


def iqm(values: np.ndarray) -> float:
    """Interquartile mean of the finite entries of ``values``: the mean of what is left after
    cutting ``floor(n / 4)`` from each end of the sorted values (``scipy.stats.trim_mean``
    at 0.25, as the rliable paper defines it: Agarwal et al., "Deep Reinforcement Learning
    at the Edge of the Statistical Precipice", 2021). NaN without finite entries.

    >>> iqm(np.array([0.0, 1.0, 2.0, 3.0, 100.0, np.nan])), iqm(np.array([5.0]))
    (2.0, 5.0)
    """
    x = np.sort(np.asarray(values, np.float64).ravel())
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan
    cut = x.size // 4
    return float(np.mean(x[cut:x.size - cut]))


def bootstrap_ci(*samples: np.ndarray, statistic: Callable[[np.ndarray], float] = iqm,
                 reps: int = 2000, seed: int = 0,
                 combine: Callable[..., float] | None = None) -> tuple[float, float]:
    """Percentile 95% interval of ``statistic`` by resampling each of ``samples`` (the finite
    entries, with replacement, each on its own: the strata of the stratified bootstrap of
    rliable, here one task per sample). With several samples, ``combine(*statistics)``
    (default: the first minus the second) is the quantity whose interval is returned.

    >>> low, high = bootstrap_ci(np.arange(20.0))
    >>> bool(low < iqm(np.arange(20.0)) < high)
    True
    """
    rng = np.random.default_rng(seed)
    data = [np.asarray(x, np.float64).ravel() for x in samples]
    data = [x[np.isfinite(x)] for x in data]
    if any(x.size == 0 for x in data):
        return math.nan, math.nan
    combine = combine or (lambda *stats: stats[0] - stats[1] if len(stats) > 1 else stats[0])
    draws = np.empty(reps)
    for r in range(reps):
        draws[r] = combine(*(statistic(x[rng.integers(0, x.size, x.size)]) for x in data))
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)
