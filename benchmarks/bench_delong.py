"""DeLong AUC + 95% CI for 100,000 cases: target under 1 s (O(n log n), Sun & Xu 2014).

Prints the median of several runs and the ratio against ``sklearn.metrics.roc_auc_score`` (AUC only, no
variance) on the same data in the same process. Run: ``.venv/bin/python benchmarks/bench_delong.py``.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.stats.roc import delong_auc, delong_paired  # noqa: E402
from benchmarks.timing import median_time  # noqa: E402

N_CASES = 100_000
REPEATS = 7
TARGET_S = 1.0


def main():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.random(N_CASES) < 0.35
    # Rounded scores: ties, as probabilities of tree ensembles have.
    score = np.round(rng.normal(size=N_CASES) + 1.2 * y, 3)
    other = np.round(score + rng.normal(size=N_CASES) * 0.5, 3)
    delong_auc(y, score)  # warm-up (imports)
    roc_auc_score(y, score)
    t_delong = median_time(lambda: delong_auc(y, score), REPEATS)[0]
    t_paired = median_time(lambda: delong_paired(y, score, other), REPEATS)[0]
    t_sklearn = median_time(lambda: roc_auc_score(y, score), REPEATS)[0]
    result = delong_auc(y, score)
    print(f"cases: {N_CASES}, AUC {result.auc:.4f} (95% CI {result.ci_low:.4f}-{result.ci_high:.4f})")
    print(f"delong_auc (AUC + variance + CI): median {t_delong * 1000:.1f} ms over {REPEATS} runs")
    print(f"delong_paired (two scores):      median {t_paired * 1000:.1f} ms")
    print(f"sklearn roc_auc_score (AUC only): median {t_sklearn * 1000:.1f} ms")
    print(f"ratio delong_auc / roc_auc_score: {t_delong / t_sklearn:.2f}")
    status = "OK" if t_delong < TARGET_S else "TOO SLOW"
    print(f"target < {TARGET_S:.0f} s: {status}")
    return 0 if t_delong < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
