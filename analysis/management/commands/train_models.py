"""python manage.py train_models --project NAME [--cohort main] [--seed 0] [--feature-sets chest,abdomen,chest_cal]
[--n-resamples 2000] [--source NAME] [--tasks classification,regression] [--calibration-variants abdomen_transfer,learned_mapping,feature_augmentation]"""

import time

from django.core.management.base import BaseCommand, CommandError

from analysis.modeling.calibration import CALIBRATION_VARIANTS
from analysis.modeling.features import FEATURE_SETS
from analysis.modeling.training import TASKS


def _csv_list(value, allowed, what):
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise CommandError(f"unknown {what} {', '.join(bad) or '(none given)'}; choose from {', '.join(allowed)}")
    return tuple(items)


def _ci(ci, key):
    low, high = (ci or {}).get(key) or (None, None)
    return f"({low:.3f}-{high:.3f})" if low is not None and high is not None else ""


def summary_line(version, split, m):
    """One line of the summary table for a version's metrics on a split."""
    features = version.feature_set + (f":{version.calibration_variant}" if version.calibration_variant else "")
    head = f"{version.pk:>5}  {features:<30} {version.task:<14} {version.algorithm:<4} {split:<10} {m.get('n', 0):>4}"
    if "error" in m:
        return f"{head}  {m['error']}"
    if version.task == "classification":
        binary = m.get("binary") or {}
        return (f"{head}  macro AUC {m['macro_auc']:.3f} {_ci(m.get('ci'), 'macro_auc')}  acc {m['accuracy']:.3f}  "
                f"sens {m['macro_sensitivity']:.3f}  spec {m['macro_specificity']:.3f}  F1 {m['macro_f1']:.3f}  "
                f"OP-vs-not AUC {binary.get('auc', float('nan')):.3f}")
    return (f"{head}  MAE {m['mae']:.2f} {_ci(m.get('ci'), 'mae')}  RMSE {m['rmse']:.2f}  R2 {m['r2']:.3f}  "
            f"EVS {m['explained_variance']:.3f}  r {m['pearson_r']:.3f}")


class Command(BaseCommand):
    help = ("Train the model grid (classifiers BDT, LR, RF; regressors BDT, SGD, RF) on a cohort's splits for each "
            "feature set, store every model as a version with its evaluations, and print a summary table "
            "(classification AUCs are one-vs-rest macro averages with bootstrap CIs).")

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--cohort", default="main")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--feature-sets", default=",".join(FEATURE_SETS))
        parser.add_argument("--tasks", default=",".join(TASKS))
        parser.add_argument("--n-resamples", type=int, default=2000)
        parser.add_argument("--source", default=None,
                            help="measurement source: only that tool's runs (default: per exam the newest reviewed "
                                 "run, else the newest run of any source)")
        parser.add_argument("--calibration-variants", default=",".join(CALIBRATION_VARIANTS),
                            help="variants of the calibrated chest model (T5-T10-Cal), one version each")

    def handle(self, *args, **o):
        from analysis.modeling.versions import train_cohort
        from studies.models import Cohort, Project

        feature_sets = _csv_list(o["feature_sets"], tuple(FEATURE_SETS), "feature set(s)")
        tasks = _csv_list(o["tasks"], TASKS, "task(s)")
        variants = _csv_list(o["calibration_variants"], CALIBRATION_VARIANTS, "calibration variant(s)")
        if o["n_resamples"] < 1:
            raise CommandError("--n-resamples must be at least 1")
        try:
            project = Project.objects.get(name=o["project"])
        except Project.DoesNotExist:
            raise CommandError(f"no project named {o['project']!r}") from None
        if not Cohort.objects.filter(project=project, name=o["cohort"]).exists():
            raise CommandError(f"project {project.name!r} has no cohort {o['cohort']!r}")
        start = time.perf_counter()
        try:
            versions, grid = train_cohort(
                project, cohort_name=o["cohort"], feature_sets=feature_sets, tasks=tasks, random_state=o["seed"],
                n_resamples=o["n_resamples"], measurement_source=o["source"],
                calibration_variants=variants,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        seconds = time.perf_counter() - start
        for fs, table in grid.tables.items():
            self.stdout.write(f"{fs}: {table.n_by_split()} used, {len(table.dropped)} left out")
        self.stdout.write(f"{'id':>5}  {'features':<9} {'task':<14} {'alg':<4} {'split':<10} {'n':>4}  metrics")
        for version in versions:
            for evaluation in sorted(version.evaluations.all(), key=lambda e: ("train", "validation", "test").index(e.split)):
                self.stdout.write(summary_line(version, evaluation.split, evaluation.metrics))
        self.stdout.write(f"{len(versions)} model version(s) in {seconds:.1f} s "
                          f"(fitting {grid.fit_seconds:.1f} s, evaluation {grid.eval_seconds:.1f} s); "
                          f"cohort {o['cohort']!r} is now frozen")
