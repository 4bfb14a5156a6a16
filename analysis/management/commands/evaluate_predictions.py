"""python manage.py evaluate_predictions FILE.csv --label-col COL --score-col COL [...] --json

Evaluates predictions of any model (ours or an external one) from a CSV file, without the database.
SPEC section 6 fixes the binary JSON keys: n, auc, auc_ci_low, auc_ci_high, ci_method ("delong"), and with
--compare-col "compare": {auc, delong_z, delong_p} (z for score minus compare).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, DjangoHelpFormatter

HELP = """Evaluate predictions in a CSV file (header on line 1, one row per case).

Tasks:
  binary (default)  --label-col holds the true label; --positive names the positive label value (default:
                    labels must be 0/1 or true/false, 1/true positive). --score-col is a numeric score,
                    higher = positive unless --lower-is-positive (which applies to --compare-col too).
                    AUC with DeLong 95% CI; --compare-col adds the paired DeLong test (z for score minus
                    compare).
  multiclass        --score-col is a column-name PREFIX: every column whose name starts with it is the
                    probability of one class, the class being the rest of the name (--score-col p_ reads
                    p_osteoporosis, p_osteopenia, p_normal). Labels must be among those classes. One-vs-rest
                    macro AUC with a stratified bootstrap CI, per-class metrics, confusion matrix, and the
                    binary task "--positive vs rest" (default class osteoporosis) with DeLong CI.
  regression        --label-col is the reference value, --score-col the prediction (same units): MAE, RMSE,
                    explained variance, R^2, Pearson r, Bland-Altman, bootstrap CIs; --compare-col adds a
                    paired bootstrap comparison of MAE (score minus compare).
Bad input (missing file or column, a non-numeric score, a single class) stops with a one-line reason
naming the file and line."""


class _HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _parse_number(raw, path, line, column):
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        value = None
    # float() also accepts "nan" and "inf", which are no usable score either.
    if value is None or not math.isfinite(value):
        shown = text if text else "(empty)"
        raise CommandError(f"{path} line {line}: column {column!r} value {shown!r} is not a number")
    return value


def read_columns(path, columns):
    """Read the named columns of a CSV file as lists of stripped strings, with physical line numbers.

    Returns ``(header, {column: [values]}, [line numbers])``; raises CommandError naming file and line.
    """
    p = Path(path)
    if not p.is_file():
        raise CommandError(f"{path}: file not found")
    try:
        with p.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise CommandError(f"{path}: empty file (no header line)")
            header = [h.strip() for h in header]
            duplicates = sorted({h for h in header if header.count(h) > 1})
            if duplicates:
                raise CommandError(f"{path} line 1: duplicate column(s) {duplicates}")
            for column in columns:
                if column not in header:
                    raise CommandError(f"{path} line 1: no column {column!r} (columns: {', '.join(header)})")
            positions = {c: header.index(c) for c in columns}
            data = {c: [] for c in columns}
            lines = []
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue  # blank line
                if len(row) != len(header):
                    raise CommandError(
                        f"{path} line {reader.line_num}: {len(row)} fields, the header has {len(header)}"
                    )
                for c, i in positions.items():
                    data[c].append(row[i].strip())
                lines.append(reader.line_num)
    except UnicodeDecodeError:
        raise CommandError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise CommandError(f"{path}: malformed CSV ({exc})") from None
    if not lines:
        raise CommandError(f"{path}: no data rows")
    return header, data, lines


def _numbers(path, data, lines, column):
    return [_parse_number(v, path, line, column) for v, line in zip(data[column], lines)]


def _labels(path, data, lines, column):
    for value, line in zip(data[column], lines):
        if value == "":
            raise CommandError(f"{path} line {line}: column {column!r} is empty")
    return data[column]


class Command(BaseCommand):
    help = HELP
    # Pure computation on a file: no system checks, no database.
    requires_system_checks = []

    def create_parser(self, prog_name, subcommand, **kwargs):
        # Keep the line breaks of the task list in --help.
        kwargs.setdefault("formatter_class", _HelpFormatter)
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV file, header on line 1")
        parser.add_argument("--label-col", required=True, help="column of the true label / reference value")
        parser.add_argument("--score-col", required=True, help="score column (multiclass: column prefix)")
        parser.add_argument(
            "--positive", help="positive label value (binary) or class of the binary sub-task (multiclass)"
        )
        parser.add_argument("--compare-col", help="second score/prediction column for a paired comparison")
        parser.add_argument("--task", choices=("binary", "multiclass", "regression"), default="binary")
        parser.add_argument(
            "--lower-is-positive", action="store_true", help="binary: lower score = more likely positive"
        )
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        parser.add_argument("--alpha", type=float, default=0.05, help="1 - confidence level (default 0.05)")
        parser.add_argument(
            "--n-resamples", type=int, default=2000, help="bootstrap resamples (multiclass, regression)"
        )
        parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")

    def handle(self, *args, **options):
        path = options["file"]
        task = options["task"]
        if not 0.0 < options["alpha"] < 1.0:
            raise CommandError(f"--alpha must be between 0 and 1, got {options['alpha']}")
        if options["lower_is_positive"] and task != "binary":
            raise CommandError("--lower-is-positive applies to --task binary only")
        if options["n_resamples"] < 1:
            raise CommandError("--n-resamples must be at least 1")
        try:
            if task == "binary":
                result = self._binary(path, options)
            elif task == "multiclass":
                result = self._multiclass(path, options)
            else:
                result = self._regression(path, options)
        except ValueError as exc:
            raise CommandError(f"{path}: {exc}") from None
        if options["json"]:
            self.stdout.write(json.dumps(result, allow_nan=False))
        else:
            self.stdout.write(self._summary(result))

    def _binary(self, path, options):
        from analysis.stats.roc import delong_auc, delong_paired, jsonable

        label_col, score_col, compare_col = options["label_col"], options["score_col"], options["compare_col"]
        columns = [label_col, score_col] + ([compare_col] if compare_col else [])
        _, data, lines = read_columns(path, columns)
        labels = _labels(path, data, lines, label_col)
        positive = options["positive"]
        if positive is None:
            truthy = {"1", "1.0", "true", "yes"}
            falsy = {"0", "0.0", "false", "no"}
            values = {v.lower() for v in labels}
            if not values <= truthy | falsy:
                shown = sorted(set(labels))[:10]
                raise CommandError(
                    f"{path}: column {label_col!r} has labels {shown}; name the positive one with --positive"
                )
            y = [v.lower() in truthy for v in labels]
            positive = "1"
        else:
            y = [v == positive for v in labels]
        if all(y) or not any(y):
            present = sorted(set(labels))
            raise CommandError(
                f"{path}: only one class in column {label_col!r} (labels {present}, positive {positive!r}); "
                "AUC needs positive and negative cases"
            )
        sign = -1.0 if options["lower_is_positive"] else 1.0
        score = [sign * v for v in _numbers(path, data, lines, score_col)]
        auc = delong_auc(y, score, alpha=options["alpha"])
        result = {
            "task": "binary",
            "file": str(path),
            "n": len(y),
            "n_positive": auc.n_pos,
            "n_negative": auc.n_neg,
            "positive": positive,
            "score_col": score_col,
            "direction": "lower" if options["lower_is_positive"] else "higher",
            "auc": auc.auc,
            "auc_se": auc.se,
            "auc_ci_low": auc.ci_low,
            "auc_ci_high": auc.ci_high,
            "ci_method": "delong",
            "conf_level": 1.0 - options["alpha"],
        }
        if compare_col:
            other = [sign * v for v in _numbers(path, data, lines, compare_col)]
            paired = delong_paired(y, score, other, alpha=options["alpha"])
            other_auc = delong_auc(y, other, alpha=options["alpha"])
            result["compare"] = {
                "column": compare_col,
                "auc": paired.auc_b,
                "auc_ci_low": other_auc.ci_low,
                "auc_ci_high": other_auc.ci_high,
                "auc_diff": paired.diff,
                "auc_diff_ci_low": paired.ci_low,
                "auc_diff_ci_high": paired.ci_high,
                "delong_z": paired.z,
                "delong_p": paired.p,
            }
        return jsonable(result)

    def _multiclass(self, path, options):
        from analysis.categories import OSTEOPOROSIS
        from analysis.stats.classification import multiclass_metrics
        from analysis.stats.roc import jsonable

        if options["compare_col"]:
            raise CommandError("--compare-col applies to --task binary and regression")
        label_col, prefix = options["label_col"], options["score_col"]
        header, _, _ = read_columns(path, [label_col])
        score_cols = [h for h in header if h.startswith(prefix) and h != label_col and len(h) > len(prefix)]
        if len(score_cols) < 2:
            raise CommandError(
                f"{path} line 1: multiclass needs two or more columns starting with {prefix!r}, "
                f"found {score_cols}"
            )
        classes = [c[len(prefix) :] for c in score_cols]
        _, data, lines = read_columns(path, [label_col] + score_cols)
        labels = _labels(path, data, lines, label_col)
        for value, line in zip(labels, lines):
            if value not in classes:
                raise CommandError(f"{path} line {line}: label {value!r} is not one of the classes {classes}")
        proba = list(zip(*[_numbers(path, data, lines, c) for c in score_cols]))
        positive = options["positive"] if options["positive"] is not None else OSTEOPOROSIS
        if options["positive"] is not None and positive not in classes:
            raise CommandError(f"{path}: --positive {positive!r} is not one of the classes {classes}")
        present = set(labels)
        absent = [c for c in classes if c not in present]
        if absent:
            raise CommandError(f"{path}: no case of class(es) {absent} in column {label_col!r}")
        metrics = multiclass_metrics(
            labels,
            proba,
            classes,
            n_resamples=options["n_resamples"],
            random_state=options["seed"],
            alpha=options["alpha"],
            binary_positive=positive,
        )
        low, high = metrics.ci["macro_auc"]
        return jsonable(
            {
                "task": "multiclass",
                "file": str(path),
                "n": metrics.n,
                "classes": metrics.classes,
                "auc": metrics.macro_auc,
                "auc_ci_low": low,
                "auc_ci_high": high,
                "auc_average": "macro one-vs-rest",
                "ci_method": "bootstrap",
                "conf_level": 1.0 - options["alpha"],
                "n_resamples": options["n_resamples"],
                "seed": options["seed"],
                "metrics": metrics.to_dict(),
            }
        )

    def _regression(self, path, options):
        from analysis.stats.regression import paired_mae_comparison, regression_metrics
        from analysis.stats.roc import jsonable

        label_col, score_col, compare_col = options["label_col"], options["score_col"], options["compare_col"]
        columns = [label_col, score_col] + ([compare_col] if compare_col else [])
        _, data, lines = read_columns(path, columns)
        y = _numbers(path, data, lines, label_col)
        pred = _numbers(path, data, lines, score_col)
        metrics = regression_metrics(
            y, pred, n_resamples=options["n_resamples"], random_state=options["seed"], alpha=options["alpha"]
        )
        result = {"task": "regression", "file": str(path), "score_col": score_col}
        result.update(metrics.to_dict())
        result["ci_method"] = "bootstrap"
        if compare_col:
            other = _numbers(path, data, lines, compare_col)
            comparison = paired_mae_comparison(
                y, pred, other, n_resamples=options["n_resamples"], random_state=options["seed"],
                alpha=options["alpha"],
            )
            result["compare"] = {
                "column": compare_col,
                "mae": comparison.mae_b,
                "mae_diff": comparison.diff,
                "mae_diff_ci_low": comparison.ci_low,
                "mae_diff_ci_high": comparison.ci_high,
                "p": comparison.p_value,
                "method": "paired bootstrap",
            }
        return jsonable(result)

    @staticmethod
    def _summary(result):
        def fmt(value):
            return "n/a" if value is None else f"{value:.3f}"

        level = round(100 * result.get("conf_level", 0.95))
        if result["task"] == "regression":
            text = (
                f"n={result['n']} MAE={fmt(result['mae'])} RMSE={fmt(result['rmse'])} R2={fmt(result['r2'])} "
                f"r={fmt(result['pearson_r'])} bias={fmt(result['bland_altman']['bias'])}"
            )
            if "compare" in result:
                c = result["compare"]
                text += f"\nvs {c['column']}: MAE={fmt(c['mae'])} diff={fmt(c['mae_diff'])} p={c['p']:.4g}"
            return text
        text = (
            f"n={result['n']} AUC={fmt(result['auc'])} ({level}% CI {fmt(result['auc_ci_low'])}-"
            f"{fmt(result['auc_ci_high'])}, {result['ci_method']})"
        )
        if "compare" in result:
            c = result["compare"]
            text += (
                f"\nvs {c['column']}: AUC={fmt(c['auc'])} z={fmt(c['delong_z'])} "
                f"p={'n/a' if c['delong_p'] is None else format(c['delong_p'], '.4g')}"
            )
        return text
