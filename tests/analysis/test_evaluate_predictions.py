"""manage.py evaluate_predictions (SPEC section 6): JSON keys, DeLong values, one-line errors, no database.

These tests do not request the ``db`` fixture: pytest-django makes any database access fail, so they also
prove the command never touches the database.
"""

import io
import json
import math

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from scipy.stats import norm
from sklearn.metrics import mean_absolute_error, roc_auc_score

from analysis.stats.regression import paired_mae_comparison

# The hand example of test_delong.py: labels 1,0,1,0,1; AUC(s1) = 11/12 with Var 1/72;
# AUC(s2) = 2/3; paired z = (1/4) / sqrt(11/72).
HAND = "id,label,s1,s2\n1,1,0.9,0.8\n2,0,0.1,0.3\n3,1,0.7,0.2\n4,0,0.4,0.5\n5,1,0.4,0.9\n"


def _run(*args):
    out = io.StringIO()
    call_command("evaluate_predictions", *args, stdout=out)
    return out.getvalue()


def _write(tmp_path, text, name="pred.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_binary_json_with_paired_delong(tmp_path):
    path = _write(tmp_path, HAND)
    result = json.loads(_run(path, "--label-col", "label", "--score-col", "s1", "--compare-col", "s2", "--json"))
    assert result["n"] == 5 and result["ci_method"] == "delong"
    assert result["auc"] == pytest.approx(11 / 12, abs=1e-12)
    assert result["auc_ci_low"] == pytest.approx(11 / 12 - norm.ppf(0.975) / math.sqrt(72), abs=1e-9)
    assert result["auc_ci_high"] == 1.0
    compare = result["compare"]
    assert compare["auc"] == pytest.approx(2 / 3, abs=1e-12)
    z = 0.25 / math.sqrt(11 / 72)  # score minus compare
    assert compare["delong_z"] == pytest.approx(z, abs=1e-9)
    assert compare["delong_p"] == pytest.approx(2 * norm.sf(z), abs=1e-9)


def test_positive_label_and_lower_is_positive(tmp_path):
    text = "label,risk\nyes,0.1\nno,0.8\nyes,0.3\nno,0.6\nyes,0.6\nno,0.2\n"
    path = _write(tmp_path, text)
    result = json.loads(
        _run(path, "--label-col", "label", "--positive", "yes", "--score-col", "risk", "--lower-is-positive", "--json")
    )
    y = np.array([1, 0, 1, 0, 1, 0])
    risk = np.array([0.1, 0.8, 0.3, 0.6, 0.6, 0.2])
    assert result["auc"] == pytest.approx(roc_auc_score(y, -risk), abs=1e-12)
    assert result["direction"] == "lower" and result["positive"] == "yes"


def test_text_output_without_json(tmp_path):
    path = _write(tmp_path, HAND)
    text = _run(path, "--label-col", "label", "--score-col", "s1")
    assert text.startswith("n=5 AUC=0.917 (95% CI 0.686-1.000, delong)")


def test_multiclass_by_column_prefix(tmp_path):
    rng = np.random.default_rng(0)
    classes = ["osteoporosis", "osteopenia", "normal"]
    y = rng.choice(3, size=60)
    proba = rng.dirichlet(np.ones(3), size=60) + 0.5 * np.eye(3)[y]
    proba = proba / proba.sum(axis=1, keepdims=True)
    lines = ["category,p_osteoporosis,p_osteopenia,p_normal"]
    lines += [f"{classes[t]},{p[0]:.6f},{p[1]:.6f},{p[2]:.6f}" for t, p in zip(y, proba)]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    result = json.loads(
        _run(path, "--task", "multiclass", "--label-col", "category", "--score-col", "p_", "--n-resamples", "200",
             "--json")
    )
    assert result["classes"] == classes and result["n"] == 60 and result["ci_method"] == "bootstrap"
    written = np.array([[float(v) for v in line.split(",")[1:]] for line in lines[1:]])
    order = np.argsort(classes)
    expected = roc_auc_score(np.array(classes)[y], written[:, order], multi_class="ovr", labels=sorted(classes))
    assert result["auc"] == pytest.approx(expected, abs=1e-12)
    assert result["auc_ci_low"] <= result["auc"] <= result["auc_ci_high"]
    assert result["metrics"]["binary_positive_class"] == "osteoporosis"


def test_regression_with_compare(tmp_path):
    rng = np.random.default_rng(1)
    truth = rng.uniform(40, 200, 50).round(1)
    a = (truth + rng.normal(0, 8, 50)).round(1)
    b = (truth + rng.normal(0, 15, 50)).round(1)
    text = "qct,model_a,model_b\n" + "".join(f"{t},{x},{z}\n" for t, x, z in zip(truth, a, b))
    path = _write(tmp_path, text)
    result = json.loads(
        _run(path, "--task", "regression", "--label-col", "qct", "--score-col", "model_a", "--compare-col", "model_b",
             "--n-resamples", "300", "--json")
    )
    assert result["mae"] == pytest.approx(mean_absolute_error(truth, a), abs=1e-12)
    expected = paired_mae_comparison(truth, a, b, n_resamples=300, random_state=0)
    assert result["compare"]["mae_diff"] == pytest.approx(expected.diff, abs=1e-12)
    assert result["compare"]["p"] == expected.p_value


@pytest.mark.parametrize(
    "text, args, message",
    [
        (HAND, ["--score-col", "nope"], r"pred.csv line 1: no column 'nope' \(columns: id, label, s1, s2\)"),
        ("label,s\n1,0.5\n0,abc\n1,0.3\n", ["--score-col", "s"], r"pred.csv line 3: column 's' value 'abc' is not a number"),
        ("label,s\n1,0.5\n\n0,nan\n", ["--score-col", "s"], r"pred.csv line 4: column 's' value 'nan' is not a number"),
        ("label,s\n1,0.5\n1,0.3\n", ["--score-col", "s"], r"pred.csv: only one class in column 'label'"),
        ("label,s\na,0.5\nb,0.3\n", ["--score-col", "s"], r"name the positive one with --positive"),
        ("label,s\n1,0.5\n0\n", ["--score-col", "s"], r"pred.csv line 3: 1 fields, the header has 2"),
        ("label,s\n", ["--score-col", "s"], r"pred.csv: no data rows"),
    ],
)
def test_bad_input_gives_one_line_reason(tmp_path, text, args, message):
    path = _write(tmp_path, text)
    with pytest.raises(CommandError, match=message) as info:
        _run(path, "--label-col", "label", *args, "--json")
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    missing = str(tmp_path / "absent.csv")
    with pytest.raises(CommandError, match="absent.csv: file not found"):
        _run(missing, "--label-col", "label", "--score-col", "s")


def test_multiclass_label_outside_classes_names_the_line(tmp_path):
    text = "y,p_a,p_b\na,0.6,0.4\nc,0.5,0.5\nb,0.2,0.8\n"
    path = _write(tmp_path, text)
    with pytest.raises(CommandError, match=r"pred.csv line 3: label 'c' is not one of the classes \['a', 'b'\]"):
        _run(path, "--task", "multiclass", "--label-col", "y", "--score-col", "p_")
