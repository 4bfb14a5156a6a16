"""Which model versions are stale: trained on registry values or measurement runs that changed since.

A model version's data snapshot records, per exam it used, the QCT BMD and category (the labels), age and sex
(features), and the measurement run; it also lists the exams it left out and why. After training, the
registry stays correctable (QCT values, ages, flags), so a version can drift from the data it names. This
module compares each snapshot with the current values in a few queries for a whole page of versions (the
exams of all versions are read once) and says why a version is stale. Nothing is stored: a correction undone
makes the version current again.

Stale when, for an exam the version used: the exam was deleted; its QCT BMD or category changed (a threshold
change changes categories); its age or sex changed; it is now excluded; or another run would now be chosen
for it (a re-measurement or a review); or when an exam left out as excluded is no longer excluded.
"""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Q
from django.template.defaultfilters import floatformat

from analysis.modeling.records import chosen_runs
from studies.models import Exam, ExclusionFlag

__all__ = ["stale_reasons"]

_CHUNK = 5000


def _current_values(exam_ids):
    """``{exam_id: (pseudonym, exam_date, age, sex, qct_bmd, category)}`` and the set of excluded exam ids."""
    current, excluded = {}, set()
    ids = sorted(exam_ids)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        rows = Exam.objects.filter(pk__in=chunk).values_list(
            "pk", "patient_id", "patient__pseudonym", "exam_date", "age_at_exam", "patient__sex", "qct__qct_bmd",
            "qct__category")
        patients = {}
        for pk, patient_id, pseudonym, exam_date, age, sex, bmd, category in rows:
            current[pk] = (pseudonym, exam_date, age, sex, bmd, category or None)
            patients[pk] = patient_id
        flags = ExclusionFlag.objects.filter(Q(exam_id__in=chunk) | Q(patient_id__in=set(patients.values()),
                                                                        exam=None))
        flagged_exams, flagged_patients = set(), set()
        for exam_id, patient_id in flags.values_list("exam_id", "patient_id"):
            if exam_id:
                flagged_exams.add(exam_id)
            else:
                flagged_patients.add(patient_id)
        excluded |= {pk for pk, patient_id in patients.items()
                     if pk in flagged_exams or patient_id in flagged_patients}
    return current, excluded


def _example(current, exam_id):
    pseudonym, exam_date = current[exam_id][:2]
    return f"{pseudonym} {exam_date:%Y-%m-%d}"


def _bmd(value):
    return "none" if value is None else floatformat(value, 1)


def _reason(what, items):
    """One sentence: count and the first example, e.g. "QCT BMD changed for 2 exams (P001 2022-06-01: ...)"."""
    n = len(items)
    return f"{what} for {n} exam{'s' if n != 1 else ''} ({items[0]}{', ...' if n > 1 else ''})"


def stale_reasons(versions):
    """Why each model version is stale.

    Parameters
    ----------
    versions : iterable of ModelVersion

    Returns
    -------
    dict
        ``{version id: [reason, ...]}`` for the stale versions only. External versions (imported predictions)
        and versions whose snapshot names no exams are never stale.
    """
    versions = [v for v in versions if not v.external and (v.data_snapshot or {}).get("exam_ids")]
    if not versions:
        return {}
    used_ids, dropped_ids = set(), set()
    for v in versions:
        used_ids.update(v.data_snapshot["exam_ids"])
        dropped_ids.update(d["exam_id"] for d in v.data_snapshot.get("excluded", []))
    current, excluded_now = _current_values(used_ids | dropped_ids)
    runs_by_source = {}
    for source in {v.data_snapshot.get("measurement_source") or v.measurement_source for v in versions}:
        if source:  # a version that names no source cannot say which run it would use now
            runs_by_source[source] = chosen_runs(Exam.objects.filter(pk__in=used_ids & current.keys()), source)

    stale = {}
    for v in versions:
        snap = v.data_snapshot
        exam_ids = snap["exam_ids"]
        found = defaultdict(list)
        runs_now = runs_by_source.get(snap.get("measurement_source") or v.measurement_source)
        columns = {name: snap.get(name) for name in ("qct_bmd", "category", "age", "sex", "measurement_run_ids")}
        if runs_now is None:
            columns["measurement_run_ids"] = None
        for i, exam_id in enumerate(exam_ids):
            now = current.get(exam_id)
            if now is None:
                found["deleted since training"].append(f"exam id {exam_id}")
                continue
            _, _, age, sex, bmd, category = now
            example = _example(current, exam_id)
            if columns["qct_bmd"] is not None and columns["qct_bmd"][i] != bmd:
                # One decimal, rounded as the registry's pages round it (93.333 -> 93.3).
                found["QCT BMD changed"].append(
                    f"{example}: {_bmd(columns['qct_bmd'][i])} -> {_bmd(bmd)} mg/cm3")
            elif columns["category"] is not None and columns["category"][i] != str(category):
                found["category changed"].append(f"{example}: {columns['category'][i]} -> {category}")
            if columns["age"] is not None and columns["age"][i] != age:
                found["age changed"].append(f"{example}: {columns['age'][i]} -> {age}")
            if columns["sex"] is not None and columns["sex"][i] != sex:
                found["sex changed"].append(f"{example}: {columns['sex'][i]} -> {sex}")
            if exam_id in excluded_now:
                found["now excluded"].append(example)
            used_run = columns["measurement_run_ids"][i] if columns["measurement_run_ids"] is not None else None
            if used_run is not None and runs_now.get(exam_id) != used_run:
                found["another measurement run would be used"].append(
                    f"{example}: run {used_run} -> {runs_now.get(exam_id)}")
        for dropped in snap.get("excluded", []):
            if dropped.get("reason", "").startswith("excluded") and dropped["exam_id"] in current \
                    and dropped["exam_id"] not in excluded_now:
                found["no longer excluded"].append(_example(current, dropped["exam_id"]))
        if found:
            stale[v.pk] = [_reason(what, items) for what, items in found.items()]
    return stale
