"""Statistics of the seed study, as pure functions on arrays (no Django).

- :mod:`.roc`: empirical AUC, DeLong variance/CI and paired test (pROC-equivalent), ROC points.
- :mod:`.bootstrap`: seeded stratified bootstrap percentile CIs and paired differences.
- :mod:`.classification`: binary and one-vs-rest multiclass metrics (tables 2 and 4).
- :mod:`.regression`: MAE, RMSE, R^2, Pearson, Bland-Altman (tables 3 and 5).
- :mod:`.cohort`: table 1 (Kruskal-Wallis, chi-square without continuity correction).
"""
