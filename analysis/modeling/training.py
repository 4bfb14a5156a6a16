"""The seed study's model grid: fit, predict, evaluate, compare (no Django here).

Grid (SPEC section 2, seed tables 2 and 3): for each feature table (chest, abdomen, and chest_cal once per
calibration variant),

- classifiers of the 3 categories: bagging of decision trees (``BDT``), logistic regression (``LR``),
  random forest (``RF``);
- regressors of QCT BMD (mg/cm3): bagging of decision trees (``BDT``), stochastic gradient descent linear
  regression (``SGD``), random forest (``RF``).

Each model is a scikit-learn ``Pipeline(StandardScaler, estimator)`` fitted on the training split only, so
the z-scoring uses training means and SDs and nothing of the validation or test exams. The calibrated chest
models of the transfer variants (``abdomen_transfer``, ``learned_mapping``) fit nothing of their own: they are
``Pipeline(LumbarFromChest, <the abdomen model of the same task and algorithm>)`` (:func:`transfer_model`). Every random element
gets ``random_state`` explicitly and ``n_jobs=1``, so the same data and seed give the same fitted model and
the same predictions bit for bit (and the same artefact bytes, see :func:`dump_artefact`).

Evaluation on every split uses :mod:`analysis.stats`: classification with
:func:`~analysis.stats.classification.multiclass_metrics` (one-vs-rest macro AUC with a stratified bootstrap
CI, per-class values, confusion matrix, and the binary "osteoporosis vs not" task with its DeLong CI);
regression with :func:`~analysis.stats.regression.regression_metrics` (MAE, RMSE, explained variance, R^2,
Pearson r and p, Bland-Altman). Two models are compared on the same cases with the paired DeLong test (AUC)
or the paired bootstrap of MAE (:func:`compare_predictions`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from analysis.categories import CATEGORIES, OSTEOPOROSIS
from analysis.modeling.features import FEATURE_SETS, build_feature_table
from analysis.modeling.splits import SPLITS

__all__ = [
    "ALGORITHMS",
    "DEFAULT_HYPERPARAMETERS",
    "FittedModel",
    "GridEntry",
    "GridResult",
    "compare_predictions",
    "dump_artefact",
    "evaluate_model",
    "fit_model",
    "load_artefact",
    "make_pipeline",
    "predict",
    "split_metrics",
    "train_grid",
    "transfer_model",
]

TASKS = ("classification", "regression")
ALGORITHMS = {"classification": ("BDT", "LR", "RF"), "regression": ("BDT", "SGD", "RF")}

# Parameters of the final estimator (pipeline step "model"); anything not named keeps scikit-learn's default.
# Leaves of at least 3 cases keep the tree ensembles from memorising single patients of a 400-case training
# set; SGD gets enough epochs to converge on z-scored features.
DEFAULT_HYPERPARAMETERS = {
    ("classification", "BDT"): {"n_estimators": 100, "estimator__min_samples_leaf": 3},
    ("classification", "LR"): {"C": 1.0, "max_iter": 5000},
    ("classification", "RF"): {"n_estimators": 200, "min_samples_leaf": 3},
    ("regression", "BDT"): {"n_estimators": 100, "estimator__min_samples_leaf": 3},
    ("regression", "SGD"): {"alpha": 1e-4, "max_iter": 5000, "tol": 1e-6},
    ("regression", "RF"): {"n_estimators": 200, "min_samples_leaf": 3},
}


def _estimator(task, algorithm):
    from sklearn.ensemble import BaggingClassifier, BaggingRegressor, RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression, SGDRegressor
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    factories = {
        ("classification", "BDT"): lambda: BaggingClassifier(estimator=DecisionTreeClassifier(), n_jobs=1),
        ("classification", "LR"): lambda: LogisticRegression(),
        ("classification", "RF"): lambda: RandomForestClassifier(n_jobs=1),
        ("regression", "BDT"): lambda: BaggingRegressor(estimator=DecisionTreeRegressor(), n_jobs=1),
        ("regression", "SGD"): lambda: SGDRegressor(),
        ("regression", "RF"): lambda: RandomForestRegressor(n_jobs=1),
    }
    try:
        return factories[(task, algorithm)]()
    except KeyError:
        raise ValueError(
            f"no {algorithm!r} for task {task!r}; choose from {', '.join(ALGORITHMS.get(task, ()))}"
        ) from None


def make_pipeline(task, algorithm, *, random_state=0, hyperparameters=None):
    """An unfitted ``Pipeline([("scale", StandardScaler()), ("model", estimator)])``.

    Parameters
    ----------
    task : {"classification", "regression"}
    algorithm : {"BDT", "LR", "RF"} or {"BDT", "SGD", "RF"}
    random_state : int
        Set on every estimator that draws random numbers (trees included).
    hyperparameters : dict, optional
        Parameters of the estimator (names as in ``set_params`` of the estimator, e.g.
        ``estimator__max_depth`` for the trees of BDT); default :data:`DEFAULT_HYPERPARAMETERS`.

    Returns
    -------
    sklearn.pipeline.Pipeline
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    model = _estimator(task, algorithm)
    params = dict(DEFAULT_HYPERPARAMETERS[(task, algorithm)] if hyperparameters is None else hyperparameters)
    model.set_params(**params)
    # Every parameter named random_state, nested ones included (the trees inside bagging), gets the seed.
    model.set_params(**{k: int(random_state) for k in model.get_params(deep=True) if k.endswith("random_state")})
    return Pipeline([("scale", StandardScaler()), ("model", model)])


def _recorded_parameters(pipeline):
    """The estimator's parameters that are plain values (what a model version records)."""
    params = pipeline.named_steps["model"].get_params(deep=True)
    return {k: v for k, v in sorted(params.items()) if v is None or isinstance(v, (bool, int, float, str))}


@dataclass
class FittedModel:
    """A fitted pipeline and what is needed to apply it to new exams.

    ``classes`` is the category order of :meth:`predict`'s probability columns (``CATEGORIES``), None for
    regression. ``calibration`` is the fitted thoraco-lumbar calibration (``chest_cal`` only).
    """

    task: str
    algorithm: str
    feature_set: str
    feature_names: list
    pipeline: object
    hyperparameters: dict
    random_state: int
    classes: list | None = None
    calibration: object = None
    fit_seconds: float = 0.0
    calibration_variant: str = ""


def fit_model(table, task, algorithm, *, random_state=0, hyperparameters=None, train_split="train"):
    """Fit one model of the grid on the training rows of a feature table.

    Parameters
    ----------
    table : FeatureTable
    task : {"classification", "regression"}
    algorithm : str
    random_state : int
    hyperparameters : dict, optional
    train_split : str

    Returns
    -------
    FittedModel
    """
    if table.lumbar_map is not None:
        raise ValueError(
            f"the {table.calibration_variant} table applies the abdomen model; build it with transfer_model"
        )
    mask = table.split_mask(train_split)
    if not mask.any():
        raise ValueError(f"feature table {table.feature_set!r} has no exams in split {train_split!r}")
    pipeline = make_pipeline(task, algorithm, random_state=random_state, hyperparameters=hyperparameters)
    X = table.X[mask]
    classes = None
    if task == "classification":
        y = table.y_category[mask].astype(str)
        absent = [c for c in CATEGORIES if c not in set(y)]
        if absent:
            raise ValueError(f"training split of {table.feature_set!r} has no exams of category {', '.join(absent)}")
        classes = list(CATEGORIES)
    else:
        y = table.y_bmd[mask]
    start = time.perf_counter()
    pipeline.fit(X, y)
    seconds = time.perf_counter() - start
    return FittedModel(
        task=task,
        algorithm=algorithm,
        feature_set=table.feature_set,
        feature_names=list(table.feature_names),
        pipeline=pipeline,
        hyperparameters=_recorded_parameters(pipeline),
        random_state=int(random_state),
        classes=classes,
        calibration=table.calibration,
        fit_seconds=seconds,
        calibration_variant=table.calibration_variant,
    )


def transfer_model(abdomen_model, table):
    """The calibrated chest model of a transfer variant: the table's lumbar map, then the abdomen model.

    Parameters
    ----------
    abdomen_model : FittedModel
        Fitted on the ``abdomen`` table (measured T12-L2, its own scaler).
    table : FeatureTable
        A ``chest_cal`` table with ``lumbar_map`` (variant ``abdomen_transfer`` or ``learned_mapping``).

    Returns
    -------
    FittedModel
        ``feature_set="chest_cal"``, the chest columns as input; nothing is refitted, so its predictions on
        lumbar HU equal the abdomen model's.
    """
    from sklearn.pipeline import Pipeline

    if abdomen_model.feature_set != "abdomen":
        raise ValueError(f"transfer needs the abdomen model, got a {abdomen_model.feature_set!r} model")
    if table.lumbar_map is None:
        raise ValueError(f"table {table.key!r} has no lumbar map (not a transfer variant)")
    pipeline = Pipeline([("lumbar", table.lumbar_map), ("abdomen", abdomen_model.pipeline)])
    return FittedModel(
        task=abdomen_model.task,
        algorithm=abdomen_model.algorithm,
        feature_set=table.feature_set,
        feature_names=list(table.feature_names),
        pipeline=pipeline,
        hyperparameters=dict(abdomen_model.hyperparameters),
        random_state=abdomen_model.random_state,
        classes=abdomen_model.classes,
        calibration=table.calibration,
        fit_seconds=0.0,
        calibration_variant=table.calibration_variant,
    )


def predict(model, X):
    """Apply a fitted model.

    Parameters
    ----------
    model : FittedModel
    X : ndarray, shape (n_exams, n_features)
        Columns ``model.feature_names``.

    Returns
    -------
    dict
        Classification: ``"proba"`` shape (n_exams, 3) in ``model.classes`` order and ``"category"`` (the
        arg-max class, first on ties). Regression: ``"bmd"`` shape (n_exams,) in mg/cm3.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(model.feature_names):
        raise ValueError(f"X must have shape (n, {len(model.feature_names)}), got {X.shape}")
    if model.task == "classification":
        if X.shape[0] == 0:
            return {"proba": np.empty((0, len(model.classes))), "category": np.empty(0, dtype=object)}
        raw = model.pipeline.predict_proba(X)
        # scikit-learn orders classes alphabetically; the product's order is CATEGORIES.
        order = [list(model.pipeline.classes_).index(c) for c in model.classes]
        proba = raw[:, order]
        return {"proba": proba, "category": np.array(model.classes, dtype=object)[proba.argmax(axis=1)]}
    if X.shape[0] == 0:
        return {"bmd": np.empty(0)}
    return {"bmd": model.pipeline.predict(X).astype(np.float64)}


def split_metrics(task, classes, y_category, y_bmd, output, n_resamples, random_state, *, resamples_out=None):
    """Metrics dict of one split: classification from ``output["proba"]`` (columns ``classes``) against
    ``y_category``; regression from ``output["bmd"]`` against ``y_bmd`` (mg/cm3). ``resamples_out`` (a dict)
    receives the per-resample statistic that :func:`split_resamples` keeps."""
    if task == "classification":
        from analysis.stats.classification import multiclass_metrics
        from analysis.stats.reliability import reliability

        metrics = multiclass_metrics(
            y_category, output["proba"], classes, n_resamples=n_resamples, random_state=random_state,
            binary_positive=OSTEOPOROSIS, resamples_out=resamples_out,
        ).to_dict()
        metrics["reliability"] = reliability(y_category, output["proba"], classes)
        return metrics
    from analysis.stats.regression import regression_metrics

    return regression_metrics(y_bmd, output["bmd"], n_resamples=n_resamples, random_state=random_state,
                              resamples_out=resamples_out).to_dict()


def evaluate_model(model, table, *, n_resamples=2000, random_state=0, splits=SPLITS, output=None, states=None):
    """Metrics of a fitted model on each split of a feature table.

    Parameters
    ----------
    model : FittedModel
    table : FeatureTable
        The table the model was trained on (or one with the same columns).
    n_resamples : int
        Bootstrap resamples of every CI (2000 in the study's protocol).
    random_state : int
        Seed of the resamples.
    splits : sequence of str
    output : dict, optional
        :func:`predict` on ``table.X`` when already computed.
    states : dict, optional
        Receives ``{split: resample state}`` (:func:`split_resamples`), reusing the metrics' resamples.

    Returns
    -------
    dict
        ``{split: metrics dict}`` for the splits with exams; a split whose metrics are undefined (e.g. a
        category absent) maps to ``{"n": .., "error": reason}``.
    """
    output = predict(model, table.X) if output is None else output
    results = {}
    for split in splits:
        mask = table.split_mask(split)
        if not mask.any():
            continue
        sub = {key: value[mask] for key, value in output.items()}
        boot = {}
        try:
            results[split] = split_metrics(
                model.task, model.classes, table.y_category[mask], table.y_bmd[mask], sub, n_resamples, random_state,
                resamples_out=boot,
            )
        except ValueError as exc:
            results[split] = {"n": int(mask.sum()), "error": str(exc)}
            continue
        if states is not None:
            states[split] = split_resamples(model.task, model.classes, table.exam_ids[mask], table.y_category[mask],
                                            table.y_bmd[mask], sub, n_resamples, random_state, boot=boot)
    return results


def split_resamples(task, classes, exam_ids, y_category, y_bmd, output, n_resamples, random_state, *, boot=None):
    """:func:`analysis.stats.paired.resample_state` of one split (what paired comparisons read later);
    ``boot``: the ``resamples_out`` of :func:`split_metrics` on the same rows, to reuse."""
    from analysis.stats.paired import resample_state

    boot = (boot or {}).get("macro_auc" if task == "classification" else "mae")
    if task == "classification":
        return resample_state(task, exam_ids, y_category, output, classes=classes, positive=OSTEOPOROSIS,
                              n_resamples=n_resamples, random_state=random_state, boot=boot)
    return resample_state(task, exam_ids, y_bmd, output, n_resamples=n_resamples, random_state=random_state,
                          boot=boot)


def compare_predictions(task, y_true, a, b, *, classes=CATEGORIES, n_resamples=2000, random_state=0):
    """Paired comparison of two models on the same cases.

    Parameters
    ----------
    task : {"classification", "regression"}
    y_true : array_like, shape (n,)
        Categories (classification) or QCT BMD in mg/cm3 (regression).
    a, b : array_like
        Classification: probabilities shape (n, 3) in ``classes`` order; regression: BMD shape (n,).
    classes : sequence of str
    n_resamples, random_state : int
        Paired bootstrap of the MAE difference.

    Returns
    -------
    dict
        Classification: the paired DeLong test of the "osteoporosis vs not" AUC (``diff = auc_a - auc_b``,
        ``z``, ``p``), ``{"method": "delong_paired", ...}``, and under ``"macro_auc"`` the paired stratified
        bootstrap of the 3-class macro AUC (:func:`analysis.stats.paired.paired_macro_auc_bootstrap`). Regression: the paired bootstrap of
        ``MAE_a - MAE_b``, ``{"method": "paired_bootstrap_mae", ...}``.
    """
    if task == "classification":
        from analysis.stats.roc import delong_paired

        j = list(classes).index(OSTEOPOROSIS)
        positive = np.asarray(y_true) == OSTEOPOROSIS
        from analysis.stats.paired import paired_macro_auc_bootstrap

        result = delong_paired(positive, np.asarray(a)[:, j], np.asarray(b)[:, j])
        macro = paired_macro_auc_bootstrap(y_true, a, b, classes, n_resamples=n_resamples, random_state=random_state)
        macro.pop("diffs")
        return {"method": "delong_paired", "task": "osteoporosis vs not", **result.to_dict(), "macro_auc": macro}
    from analysis.stats.regression import paired_mae_comparison

    result = paired_mae_comparison(y_true, a, b, n_resamples=n_resamples, random_state=random_state)
    return {"method": "paired_bootstrap_mae", **result.to_dict()}


def dump_artefact(model):
    """The fitted model as bytes (pickle protocol 4; same model, same bytes).

    The bundle holds the pipeline, the calibration, the feature names and classes, and the library
    versions it was made with. Pickles run code when loaded: load only artefacts this site wrote.
    """
    import pickle

    import sklearn

    bundle = {
        "format": 1,
        "task": model.task,
        "algorithm": model.algorithm,
        "feature_set": model.feature_set,
        "feature_names": list(model.feature_names),
        "classes": model.classes,
        "hyperparameters": model.hyperparameters,
        "random_state": model.random_state,
        "pipeline": model.pipeline,
        "calibration": model.calibration,
        "calibration_variant": model.calibration_variant,
        "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__},
    }
    return pickle.dumps(bundle, protocol=4)


def load_artefact(data):
    """A :class:`FittedModel` from :func:`dump_artefact` bytes."""
    import pickle

    bundle = pickle.loads(data)  # noqa: S301 (the site's own artefacts only, see dump_artefact)
    if not isinstance(bundle, dict) or bundle.get("format") != 1:
        raise ValueError("not a bmdsite model artefact (format 1)")
    return FittedModel(
        task=bundle["task"],
        algorithm=bundle["algorithm"],
        feature_set=bundle["feature_set"],
        feature_names=bundle["feature_names"],
        pipeline=bundle["pipeline"],
        hyperparameters=bundle["hyperparameters"],
        random_state=bundle["random_state"],
        classes=bundle["classes"],
        calibration=bundle["calibration"],
        # Artefacts written before the calibration variants existed hold the feature-augmentation model.
        calibration_variant=bundle.get("calibration_variant",
                                       "feature_augmentation" if bundle["feature_set"] == "chest_cal" else ""),
    )


@dataclass
class GridEntry:
    """One fitted model of the grid with its predictions on the table and metrics per split."""

    model: FittedModel
    table: object
    output: dict
    metrics: dict
    fit_seconds: float
    eval_seconds: float
    resamples: dict = field(default_factory=dict)


@dataclass
class GridResult:
    tables: dict
    entries: list = field(default_factory=list)

    @property
    def fit_seconds(self):
        return sum(e.fit_seconds for e in self.entries)

    @property
    def eval_seconds(self):
        return sum(e.eval_seconds for e in self.entries)


def train_grid(
    records,
    *,
    feature_sets=tuple(FEATURE_SETS),
    tasks=TASKS,
    algorithms=None,
    random_state=0,
    n_resamples=2000,
    calibration_variants=None,
    hyperparameters=None,
    progress=None,
):
    """Fit and evaluate the grid: every feature table x task x algorithm.

    Parameters
    ----------
    records : sequence of ExamRecord
        With splits assigned (``train`` is fitted; ``validation`` and ``test`` are evaluated as well).
    feature_sets : sequence of str
    tasks : sequence of {"classification", "regression"}
    algorithms : dict, optional
        ``{task: [algorithm, ...]}``; default :data:`ALGORITHMS`.
    random_state : int
        Seed of every model and every bootstrap.
    n_resamples : int
    calibration_variants : sequence of str, optional
        Variants of ``chest_cal``, one table (and one model per task and algorithm) each; default all of
        ``CALIBRATION_VARIANTS``. The transfer variants reuse the abdomen models (fitted even when
        ``"abdomen"`` is not among ``feature_sets``, then not returned as entries).
    hyperparameters : dict, optional
        ``{(task, algorithm): params}`` overriding :data:`DEFAULT_HYPERPARAMETERS`.
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    GridResult
        ``tables`` keyed by ``FeatureTable.key``; entries in feature set, variant, task, algorithm order.
    """
    from analysis.modeling.calibration import CALIBRATION_VARIANTS, TRANSFER_VARIANTS

    algorithms = algorithms or ALGORITHMS
    hyperparameters = hyperparameters or {}
    variants = tuple(calibration_variants or CALIBRATION_VARIANTS)
    unknown = [v for v in variants if v not in CALIBRATION_VARIANTS]
    if unknown:
        raise ValueError(f"unknown calibration variant(s) {unknown}; choose from {', '.join(CALIBRATION_VARIANTS)}")
    table_plan = []
    for fs in feature_sets:
        table_plan += [(fs, v) for v in variants] if FEATURE_SETS[fs].calibrated else [(fs, "")]
    plan = [(fs, v, task, alg) for fs, v in table_plan for task in tasks for alg in algorithms[task]]
    tables = {}
    fitted = {}
    result = GridResult(tables=tables)

    def table_for(fs, variant):
        key = f"{fs}:{variant}" if variant else fs
        if key not in tables:
            calibration = next((t.calibration for t in tables.values() if t.calibration is not None), None)
            tables[key] = build_feature_table(records, fs, calibration_variant=variant or None,
                                              calibration=calibration)
        return tables[key]

    def abdomen_model(task, alg):
        if ("abdomen", task, alg) not in fitted:
            fitted[("abdomen", task, alg)] = fit_model(
                table_for("abdomen", ""), task, alg, random_state=random_state,
                hyperparameters=hyperparameters.get((task, alg)))
        return fitted[("abdomen", task, alg)]

    for done, (fs, variant, task, alg) in enumerate(plan):
        table = table_for(fs, variant)
        if progress:
            progress(done / len(plan), f"{table.key} {task} {alg}")
        if variant in TRANSFER_VARIANTS:
            model = transfer_model(abdomen_model(task, alg), table)
        elif fs == "abdomen":
            model = abdomen_model(task, alg)
        else:
            model = fit_model(
                table, task, alg, random_state=random_state, hyperparameters=hyperparameters.get((task, alg))
            )
        start = time.perf_counter()
        output = predict(model, table.X)
        resamples = {}
        metrics = evaluate_model(model, table, n_resamples=n_resamples, random_state=random_state, output=output,
                                 states=resamples)
        eval_seconds = time.perf_counter() - start
        result.entries.append(GridEntry(model, table, output, metrics, model.fit_seconds, eval_seconds, resamples))
    if "abdomen" not in feature_sets:
        tables.pop("abdomen", None)
    if progress:
        progress(1.0, f"{len(plan)} models trained")
    return result
