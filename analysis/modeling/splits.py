"""Train / validation / test splits of the seed study (no Django here).

The study split its cohort in time (exams before a cut-off date form the development set, exams from the
cut-off on the internal test set) and then drew 20 % of the development set at random as the validation set.
:func:`temporal_random_split` does both, with the random draw stratified by category and seeded, so the same
inputs and seed give the same splits. The registry side (writing the splits to a cohort, refusing to change a
frozen one) is :func:`analysis.modeling.records.assign_splits`.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

__all__ = ["SPLITS", "temporal_random_split"]

SPLITS = ("train", "validation", "test")


def temporal_random_split(exam_dates, categories, *, test_from=None, validation_fraction=0.2, random_state=0):
    """Temporal cut-off, then a seeded stratified random train/validation split of the development set.

    Parameters
    ----------
    exam_dates : sequence of datetime.date, length n_exams
    categories : sequence of str or None, length n_exams
        Reference category per exam (the stratification variable). Development exams without a category
        cannot be stratified and are left unassigned ("").
    test_from : datetime.date, optional
        Exams on or after this date form the test split. None: no test split.
    validation_fraction : float
        Share of the development set drawn as validation, in (0, 1).
    random_state : int
        Seed of the draw (scikit-learn ``train_test_split``).

    Returns
    -------
    splits : ndarray of str, shape (n_exams,)
        "train", "validation", "test" or "" (not assigned).
    """
    from sklearn.model_selection import train_test_split

    dates = list(exam_dates)
    cats = list(categories)
    if len(dates) != len(cats):
        raise ValueError(f"{len(dates)} exam dates but {len(cats)} categories")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if test_from is not None and not isinstance(test_from, dt.date):
        raise ValueError(f"test_from must be a date, got {test_from!r}")
    splits = np.full(len(dates), "", dtype=object)
    development = []
    for i, (date, category) in enumerate(zip(dates, cats)):
        if test_from is not None and date >= test_from:
            splits[i] = "test"
        elif category:
            development.append(i)
    if not development:
        return splits
    strata = [cats[i] for i in development]
    names, counts = np.unique(strata, return_counts=True)
    if counts.min() < 2:
        raise ValueError(
            "a stratified validation split needs at least 2 development exams of each category; "
            f"counts: {dict(zip(names.tolist(), counts.tolist()))}"
        )
    train, validation = train_test_split(
        np.array(development), test_size=validation_fraction, stratify=strata, random_state=random_state
    )
    splits[train] = "train"
    splits[validation] = "validation"
    return splits
