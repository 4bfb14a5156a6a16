"""The model grid: reproducible bit for bit, z-scoring fitted on the training split only, metrics as
scikit-learn computes them, paired comparisons."""

import numpy as np
import pytest

from analysis.categories import CATEGORIES
from analysis.modeling.demo import synthetic_records
from analysis.modeling.features import build_feature_table
from analysis.modeling.synthetic import generate_cohort
from analysis.modeling.training import (
    compare_predictions,
    dump_artefact,
    fit_model,
    load_artefact,
    predict,
    train_grid,
    transfer_model,
)


@pytest.fixture(scope="module")
def records():
    return synthetic_records(generate_cohort(n_patients=160, random_state=5))


def test_two_trainings_with_the_same_seed_are_identical(records):
    a = train_grid(records, feature_sets=("chest_cal",), random_state=11, n_resamples=50)
    b = train_grid(records, feature_sets=("chest_cal",), random_state=11, n_resamples=50)
    assert len(a.entries) == 18  # 6 models x 3 calibration variants
    for ea, eb in zip(a.entries, b.entries):
        for key in ea.output:
            assert np.array_equal(ea.output[key], eb.output[key]), (ea.model.algorithm, key)
        assert dump_artefact(ea.model) == dump_artefact(eb.model)
        assert ea.metrics == eb.metrics
    # A different seed changes the randomised models (bagging and forests draw other samples).
    c = train_grid(records, feature_sets=("chest_cal",), tasks=("regression",), algorithms={"regression": ["RF"]},
                   random_state=12, n_resamples=50)
    rf_a = next(e for e in a.entries if e.model.task == "regression" and e.model.algorithm == "RF")
    assert not np.array_equal(rf_a.output["bmd"], c.entries[0].output["bmd"])


@pytest.mark.parametrize("task,algorithm", [("classification", "LR"), ("regression", "SGD"), ("regression", "BDT")])
def test_scaler_is_fitted_on_the_training_split_only(records, task, algorithm):
    table = build_feature_table(records, "abdomen")
    model = fit_model(table, task, algorithm, random_state=0)
    scaler = model.pipeline.named_steps["scale"]
    train = table.X[table.split_mask("train")]
    # Expected: numpy's mean and population SD of the training rows alone.
    np.testing.assert_allclose(scaler.mean_, train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scaler.scale_, train.std(axis=0), rtol=1e-12)
    assert not np.allclose(scaler.mean_, table.X.mean(axis=0), rtol=1e-6)
    assert scaler.n_samples_seen_ == train.shape[0] < table.X.shape[0]


def test_classification_metrics_match_scikit_learn(records):
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    grid = train_grid(records, feature_sets=("abdomen",), tasks=("classification",),
                      algorithms={"classification": ["LR"]}, n_resamples=100)
    entry = grid.entries[0]
    mask = entry.table.split_mask("validation")
    y = entry.table.y_category[mask].astype(str)
    proba = entry.output["proba"][mask]
    m = entry.metrics["validation"]
    assert m["auc_average"] == "macro one-vs-rest" and m["classes"] == list(CATEGORIES)
    # scikit-learn wants its labels sorted: reorder the columns alphabetically.
    order = np.argsort(CATEGORIES)
    expected = roc_auc_score(y, proba[:, order], multi_class="ovr", average="macro",
                             labels=list(np.array(CATEGORIES)[order]))
    assert m["macro_auc"] == pytest.approx(expected, abs=1e-12)
    predicted = np.array(CATEGORIES)[proba.argmax(axis=1)]
    assert m["accuracy"] == pytest.approx(accuracy_score(y, predicted), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(f1_score(y, predicted, average="macro"), abs=1e-12)
    low, high = m["ci"]["macro_auc"]
    assert low < m["macro_auc"] < high
    # The binary osteoporosis-vs-not task with its DeLong CI.
    assert m["binary"]["ci_method"] == "delong"
    assert m["binary"]["auc"] == pytest.approx(roc_auc_score(y == "osteoporosis", proba[:, 0]), abs=1e-12)


def test_regression_metrics_match_scikit_learn(records):
    from sklearn.metrics import mean_absolute_error, r2_score

    grid = train_grid(records, feature_sets=("chest",), tasks=("regression",), algorithms={"regression": ["SGD"]},
                      n_resamples=100)
    entry = grid.entries[0]
    for split in ("train", "validation", "test"):
        mask = entry.table.split_mask(split)
        y, p = entry.table.y_bmd[mask], entry.output["bmd"][mask]
        m = entry.metrics[split]
        assert m["n"] == mask.sum()
        assert m["mae"] == pytest.approx(mean_absolute_error(y, p), rel=1e-12)
        assert m["r2"] == pytest.approx(r2_score(y, p), rel=1e-10)
        assert m["bland_altman"]["bias"] == pytest.approx(np.mean(p - y), abs=1e-9)


def test_artefact_round_trip_predicts_identically(records):
    table = build_feature_table(records, "chest_cal", calibration_variant="feature_augmentation")
    model = fit_model(table, "classification", "BDT", random_state=2)
    again = load_artefact(dump_artefact(model))
    assert np.array_equal(predict(again, table.X)["proba"], predict(model, table.X)["proba"])
    assert again.calibration.k_ == model.calibration.k_
    # A transfer variant: the artefact holds the lumbar map and the abdomen model.
    transfer_table = build_feature_table(records, "chest_cal")
    transfer = transfer_model(fit_model(build_feature_table(records, "abdomen"), "classification", "LR"),
                              transfer_table)
    again = load_artefact(dump_artefact(transfer))
    assert again.calibration_variant == "abdomen_transfer"
    assert np.array_equal(predict(again, transfer_table.X)["proba"], predict(transfer, transfer_table.X)["proba"])


def test_paired_comparisons(records):
    from sklearn.metrics import mean_absolute_error

    y = np.array([r.qct_bmd for r in records])
    a = y + np.linspace(-5, 5, y.size)
    b = y + 10.0
    result = compare_predictions("regression", y, a, b, n_resamples=200)
    # MAE_a = mean |linspace(-5, 5)|, MAE_b = 10 exactly.
    assert result["diff"] == pytest.approx(mean_absolute_error(y, a) - 10.0, rel=1e-12)
    assert result["method"] == "paired_bootstrap_mae" and result["p_value"] < 0.01
    categories = np.array([r.category for r in records], dtype=object)
    proba = np.where(categories[:, None] == np.array(CATEGORIES)[None, :], 0.8, 0.1)
    same = compare_predictions("classification", categories, proba, proba)
    # Identical scores: no difference, z = 0, p = 1 (DeLong paired test).
    assert same["diff"] == 0 and same["p"] == 1.0


def test_grid_benchmark_reports_the_parts_of_its_median_run():
    # The benchmark prints the fitting and evaluation times of the run of median wall time; medians taken
    # one by one come from different runs and printed a negative remainder ("rest -0.58 s").
    import importlib.util
    import os
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_training_grid.py"
    spec = importlib.util.spec_from_file_location("bench_training_grid", path)
    bench = importlib.util.module_from_spec(spec)
    saved = dict(os.environ)
    try:
        spec.loader.exec_module(bench)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    walls, fits, evals = [15.56, 15.07, 20.40], [7.0, 7.43, 9.9], [8.2, 7.3, 8.71]
    run = bench.median_run(walls)
    assert run == 0 and fits[run] + evals[run] <= walls[run]
    assert bench.median_run([3.0, 1.0, 2.0, 4.0]) == 2  # even count: the lower middle run
