"""Segmenters by name: the rule-based one, the site's trained versions, and MONAI bundle folders.

Every segmenter is a callable ``(volume, device="cpu") -> SegmentationResult`` with a ``name``; callers
ask :func:`resolve_segmenter` and never test which kind they hold. The default is the project's promoted
version, else the rule-based segmenter. This module is the thin ORM glue of the network package: the
database is read only here (and only when a version is asked for by name or a project default is
looked up), so ``measure_volume`` without ``--segmenter`` still touches no database.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

RULE_BASED = "anatomy"
# Names by which the rule-based segmenter is asked for.
RULE_BASED_NAMES = ("anatomy", "default", "rule-based")


class SegmenterNotFound(ValueError):
    """No segmenter of that name (the message lists what exists)."""


class RuleBasedSegmenter:
    """The anatomy-driven default (:func:`analysis.segmentation.spine.segment_vertebrae`) as a segmenter."""

    name = RULE_BASED

    def __call__(self, volume, device="cpu"):
        from analysis.segmentation.spine import segment_vertebrae

        return segment_vertebrae(volume, device=device)


def version_segmenter(version):
    """A :class:`.segmenter.NetworkSegmenter` for a :class:`analysis.models.SegmenterVersion`.

    Raises ``ValueError`` when the stored weights do not match their recorded SHA-256.
    """
    from .segmenter import NetworkSegmenter

    with version.weights.open("rb") as fh:
        weights = fh.read()
    digest = hashlib.sha256(weights).hexdigest()
    if digest != version.weights_sha256:
        raise ValueError(f"segmenter {version.name}: weights file {version.weights.name} has SHA-256 {digest[:12]}..., "
                         f"recorded {version.weights_sha256[:12]}...; the file was changed or damaged")
    return NetworkSegmenter(name=version.name, version=digest[:12], weights=weights,
                            preprocessing=version.preprocessing, inference=version.inference,
                            class_levels={int(k): v for k, v in version.label_map.items()},
                            architecture=version.architecture)


def resolve_segmenter(name=None, project=None):
    """The segmenter called ``name`` (or the default), ready to call.

    Parameters
    ----------
    name : str, optional
        ``"anatomy"`` (rule-based), a MONAI bundle folder, or the name of a
        :class:`analysis.models.SegmenterVersion`. None: ``project``'s promoted version, else rule-based.
    project : studies.models.Project, optional

    Raises
    ------
    SegmenterNotFound
    """
    if name is None or name == "":
        if project is not None:
            from analysis.models import SegmenterVersion

            promoted = SegmenterVersion.objects.filter(project=project, promoted=True).first()
            if promoted is not None:
                return version_segmenter(promoted)
        return RuleBasedSegmenter()
    if name in RULE_BASED_NAMES:
        return RuleBasedSegmenter()
    from .bundle import is_bundle, load_bundle

    if is_bundle(name):
        return load_bundle(name)
    if Path(name).exists():
        raise SegmenterNotFound(f"{name}: not a MONAI bundle folder (no configs/ folder in it)")
    from analysis.models import SegmenterVersion

    version = SegmenterVersion.objects.filter(name=name).first()
    if version is None:
        known = list(SegmenterVersion.objects.values_list("name", flat=True)[:20])
        raise SegmenterNotFound(f"no segmenter named {name!r}; known: {', '.join([RULE_BASED] + known)}")
    return version_segmenter(version)


def promote(version, user=None):
    """Make ``version`` its project's default segmenter (the previous default is demoted), audited."""
    from django.db import transaction

    from analysis.models import SegmenterVersion
    from studies.audit import acting_as

    with transaction.atomic(), acting_as(user):
        for old in SegmenterVersion.objects.select_for_update().filter(project=version.project_id, promoted=True):
            if old.pk != version.pk:
                old.promoted = False
                old.save(update_fields=["promoted"])
        version.promoted = True
        version.save(update_fields=["promoted"])
    return version
