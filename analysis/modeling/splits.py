"""Train / validation / test splits of the seed study (no Django here).

The study split its cohort in time (exams before a cut-off date form the development set, exams from the
cut-off on the internal test set) and then drew 20 % of the development set at random as the validation set.
:func:`temporal_random_split` does both, with the random draw stratified by category and seeded, so the same
inputs and seed give the same splits. The registry side (writing the splits to a cohort, refusing to change a
frozen one) is :func:`analysis.modeling.records.assign_splits`.

:func:`study_split` is the study's own design (SPEC section 2, ``manage.py make_splits``): the development set
is split at random, not stratified unless asked, with exactly ``round((1 - share) n)`` exams in train (532
development patients give 426 / 106, as in the paper); :mod:`analysis.modeling.cohort_splits` writes it to a
cohort.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

__all__ = ["SPLITS", "study_split", "temporal_random_split", "train_count"]

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


def train_count(n_development, validation_share):
    """Exams in train: ``round((1 - share) * n)`` with halves rounded up (532 and 0.2 give 426).

    Python's ``round`` rounds halves to even; a split of 5 exams at 0.5 share would then depend on parity, so
    halves go up here.
    """
    if not 0.0 < validation_share < 1.0:
        raise ValueError(f"the validation share must be between 0 and 1 (exclusive), got {validation_share}")
    return int(np.floor((1.0 - validation_share) * n_development + 0.5))


def study_split(exam_dates, categories, *, test_from, validation_share=0.2, stratify=False, random_state=0):
    """The study's temporal test split and random train/validation split of the development exams.

    Parameters
    ----------
    exam_dates : sequence of datetime.date, length n_exams
    categories : sequence of str or None, length n_exams
        QCT category per exam; used only with ``stratify`` (exams without one form their own stratum).
    test_from : datetime.date
        Exams on or after this date are the test split.
    validation_share : float
        Share of the development exams in validation; train gets :func:`train_count` of them.
    stratify : bool
        Stratify the train/validation draw by category (scikit-learn ``train_test_split``); default a plain
        seeded permutation, as the study's "random" split.
    random_state : int

    Returns
    -------
    splits : ndarray of str, shape (n_exams,)
        "train", "validation" or "test".
    """
    dates = list(exam_dates)
    cats = list(categories)
    if len(dates) != len(cats):
        raise ValueError(f"{len(dates)} exam dates but {len(cats)} categories")
    if not isinstance(test_from, dt.date):
        raise ValueError(f"test_from must be a date, got {test_from!r}")
    splits = np.full(len(dates), "test", dtype=object)
    development = np.array([i for i, date in enumerate(dates) if date < test_from], dtype=np.int64)
    if development.size == 0:
        return splits
    n_train = train_count(development.size, validation_share)
    if n_train in (0, development.size):
        raise ValueError(
            f"{development.size} development exams with a validation share of {validation_share} leave "
            f"{'train' if n_train == 0 else 'validation'} empty"
        )
    if stratify:
        from sklearn.model_selection import train_test_split

        strata = [cats[i] or "(no category)" for i in development]
        train, _ = train_test_split(development, train_size=n_train, stratify=strata, random_state=random_state)
    else:
        train = np.random.default_rng(random_state).permutation(development)[:n_train]
    splits[development] = "validation"
    splits[train] = "train"
    return splits
