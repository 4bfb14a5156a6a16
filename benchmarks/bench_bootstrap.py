"""2000-resample bootstrap CIs of the multiclass and regression metric sets on ~140 cases.

Prints medians of several runs, then the evaluation share of the training grid: 9 classifiers and 9
regressors (3 feature tables x 3 algorithms each) evaluated on train / validation / test of a 702-patient
cohort (426 / 106 / 170 cases), every metric with 2000-resample CIs. The whole grid (training included)
must finish under 60 s on 2 cores. Run: ``.venv/bin/python benchmarks/bench_bootstrap.py``.
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.categories import CATEGORIES  # noqa: E402
from analysis.stats.classification import multiclass_metrics  # noqa: E402
from analysis.stats.regression import paired_mae_comparison, regression_metrics  # noqa: E402
from benchmarks.timing import median_time  # noqa: E402

N_CASES = 140
N_RESAMPLES = 2000
REPEATS = 7
SPLIT_SIZES = (426, 106, 170)


def _classification_data(n, rng):
    y = rng.choice(3, size=n, p=[0.36, 0.42, 0.22])
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[y]
    proba = np.round(np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), 2)
    return np.array(CATEGORIES)[y], proba


def _regression_data(n, rng):
    truth = rng.uniform(30, 220, n)
    return truth, 0.9 * truth + 10 + rng.normal(0, 12, n)


def main():
    rng = np.random.default_rng(0)
    y_cls, proba = _classification_data(N_CASES, rng)
    y_reg, pred = _regression_data(N_CASES, rng)
    pred_b = pred + rng.normal(0, 5, N_CASES)
    multiclass_metrics(y_cls, proba, CATEGORIES, n_resamples=N_RESAMPLES)  # warm-up (imports)
    regression_metrics(y_reg, pred, n_resamples=N_RESAMPLES)

    t_cls = median_time(lambda: multiclass_metrics(y_cls, proba, CATEGORIES, n_resamples=N_RESAMPLES), REPEATS)[0]
    t_reg = median_time(lambda: regression_metrics(y_reg, pred, n_resamples=N_RESAMPLES), REPEATS)[0]
    t_pair = median_time(lambda: paired_mae_comparison(y_reg, pred, pred_b, n_resamples=N_RESAMPLES), REPEATS)[0]
    print(f"{N_CASES} cases, {N_RESAMPLES} resamples, median of {REPEATS} runs:")
    print(f"  multiclass_metrics (macro AUC, accuracy, macro sens/spec/prec/F1 CIs + binary task): "
          f"{t_cls * 1000:.1f} ms")
    print(f"  regression_metrics (MAE, RMSE, R2, EV, Pearson r CIs + Bland-Altman): {t_reg * 1000:.1f} ms")
    print(f"  paired_mae_comparison: {t_pair * 1000:.1f} ms")

    data = [(_classification_data(n, rng), _regression_data(n, rng)) for n in SPLIT_SIZES]

    def grid_evaluation():
        for (yc, pc), (yr, pr) in data:
            for _ in range(9):
                multiclass_metrics(yc, pc, CATEGORIES, n_resamples=N_RESAMPLES)
                regression_metrics(yr, pr, n_resamples=N_RESAMPLES)

    start = time.perf_counter()
    grid_evaluation()
    t_grid = time.perf_counter() - start
    print(f"grid evaluation (18 models x 3 splits of 426/106/170 cases, 2000 resamples): {t_grid:.2f} s "
          f"(budget for the whole grid: 60 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
