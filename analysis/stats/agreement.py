"""Agreement between two raters on categorical decisions."""

from __future__ import annotations

from collections import Counter


def cohen_kappa(pairs):
    """Cohen's kappa of two raters.

    Parameters
    ----------
    pairs : sequence of (a, b)
        One pair of categories per rated item: rater 1's and rater 2's.

    Returns
    -------
    dict
        ``n``, ``observed`` (share of items both rated alike), ``expected`` (agreement by chance from each
        rater's category shares) and ``kappa`` = (observed - expected) / (1 - expected); ``kappa`` is None
        with no items, and 1.0 when both raters used one and the same category throughout.
    """
    pairs = list(pairs)
    n = len(pairs)
    if n == 0:
        return {"n": 0, "observed": None, "expected": None, "kappa": None}
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum(first[c] * second[c] for c in set(first) | set(second)) / (n * n)
    kappa = 1.0 if expected == 1.0 else (observed - expected) / (1.0 - expected)
    return {"n": n, "observed": observed, "expected": expected, "kappa": kappa}
