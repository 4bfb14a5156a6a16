"""Cohort summaries from the registry (the ORM glue over ``analysis.stats.cohort``)."""

from .models import Cohort


def cohort_table_for(project, cohort_name=Cohort.DEFAULT_NAME, include_excluded=False):
    """Table 1 of the seed study for a project's cohort: one patient exam per member with a split."""
    from analysis.stats.cohort import cohort_table

    from .registry import exam_rows

    rows = exam_rows(project).filter(
        cohort_memberships__cohort__project=project, cohort_memberships__cohort__name=cohort_name
    ).exclude(cohort_memberships__split="")
    if not include_excluded:
        rows = rows.filter(excluded=False)
    rows = rows.values_list("age_at_exam", "patient__sex", "qct__category", "cohort_memberships__split")
    ages, sexes, categories, splits = [], [], [], []
    for age, sex, category, split in rows.iterator(chunk_size=5000):
        ages.append(age)
        sexes.append(sex)
        categories.append(category or None)
        splits.append(split)
    return cohort_table(ages, sexes, categories, splits)


