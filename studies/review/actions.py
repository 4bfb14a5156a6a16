"""The review workflow: building the queue, assigning readers, editing a reading without lost edits,
deciding, double reading with adjudication, and agreement.

Pages, commands and tests call these functions; each change is one transaction, audited (django-auditlog)
and recorded as a :class:`~.models.ReviewEvent` for the case history.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from auditlog.models import LogEntry
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from analysis.models import MeasurementRun
from studies.models import Exam, Membership, Role

from . import levels as relabel_levels
from .models import (
    OPEN_STATUSES,
    CaseStatus,
    Decision,
    Reading,
    ReadingKind,
    ReviewCase,
    ReviewComment,
    ReviewEvent,
    ReviewSettings,
)
from .relabel import changes_anything, create_reviewed_run, level_map_of
from .segments import run_segments

READERS = frozenset({Role.ANNOTATOR, Role.ADMIN, Role.PI})
ASSIGNERS = frozenset({Role.ADMIN, Role.COORDINATOR})


class ReviewError(ValueError):
    """An action that is not allowed in the case's state (the message says why)."""


@dataclass
class EditConflict(Exception):
    """The reading changed since the reader opened it; nothing was saved."""

    reading: Reading
    opened_version: int
    events: list = field(default_factory=list)

    def __str__(self):
        return (f"this case changed since you opened it (version {self.opened_version}, now "
                f"{self.reading.version}): " + "; ".join(e.summary for e in self.events))


# -- need for review -------------------------------------------------------------------------------------
SACRUM = "sacrum"  # the segment flag of the default segmenter's sacrum (analysis.segmentation.labelling)


def priority_of(run, segments=None):
    """(priority, reasons) of a run: withheld levels first, then low confidence, then flags."""
    segments = segments if segments is not None else run_segments(run)
    score, reasons = 0, []
    # The sacrum is found and listed as a segment but is no level to name: not a withheld level.
    withheld = [s["index"] for s in segments if not s.get("level") and SACRUM not in (s.get("flags") or ())]
    if withheld:
        score += 1000 + 10 * len(withheld)
        reasons.append(f"{len(withheld)} level(s) withheld")
    low = [s["level"] for s in segments if s.get("level") and s.get("confidence") is not None
           and s["confidence"] < 0.5]
    if low:
        score += 100 + 10 * len(low)
        reasons.append(f"low confidence: {', '.join(low)}")
    flags = sorted(set(run.flags or []))
    if flags:
        score += 10 * len(flags)
        reasons.append(f"flags: {', '.join(flags)}")
    if not segments:
        score += 2000
        reasons.append("no vertebra found")
    return score, reasons


def latest_image_runs(project):
    """The newest run with a label map of each exam of ``project`` (the run a reviewer can see)."""
    runs = (MeasurementRun.objects.filter(exam__patient__project=project).exclude(labels="")
            .order_by("exam_id", "-created_at", "-pk").select_related("exam"))
    chosen = {}
    for run in runs.iterator(chunk_size=2000):
        chosen.setdefault(run.exam_id, run)
    return chosen


def open_cases(project):
    """A review case for every measured exam of ``project`` without one; returns the number created."""
    has_case = ReviewCase.objects.filter(exam=OuterRef("pk"))
    exam_ids = set(Exam.objects.filter(patient__project=project).annotate(has=Exists(has_case))
                   .filter(has=False).values_list("pk", flat=True))
    cases = []
    for exam_id, run in latest_image_runs(project).items():
        if exam_id not in exam_ids or "reviewed" in (run.flags or []):
            continue
        priority, reasons = priority_of(run)
        cases.append(ReviewCase(project=project, exam_id=exam_id, base_run=run, priority=priority,
                                priority_reasons=reasons))
    with transaction.atomic():
        ReviewCase.objects.bulk_create(cases, ignore_conflicts=True)
    return len(cases)


def _unassigned():
    """A case to review that no reader is assigned to, as a filter: any reading it has is the undecided single
    reading without a reader that :func:`working_reading` makes when someone opens the case."""
    assigned = Reading.objects.filter(case=OuterRef("pk")).exclude(kind=ReadingKind.SINGLE, reader=None,
                                                                  decided_at=None)
    return Q(status=CaseStatus.PENDING) & ~Exists(assigned)


def queue(project, *, user=None, status="open"):
    """The project's cases ordered by need, in one query.

    ``user``: only the cases that user may take up now: those with an undecided reading assigned to them, and
    the open cases nobody is assigned to (:func:`unassigned_cases`), which any annotator may read.
    """
    cases = ReviewCase.objects.filter(project=project).select_related("exam__patient")
    if status == "open":
        cases = cases.filter(in_queue=1)  # indexed with the order (see ReviewCase.in_queue)
    elif status:
        cases = cases.filter(status=status)
    if user is not None:
        # The reader's open readings are few (indexed by reader and decided_at): one hashed list of case ids,
        # not a join, which would repeat a case per reading and no longer read the queue in index order.
        mine = Reading.objects.filter(reader=user, decided_at=None).values("case_id")
        cases = cases.filter(Q(pk__in=mine) | _unassigned())
    return cases.order_by("-priority", "pk")


# -- assignment --------------------------------------------------------------------------------------------
def project_readers(project):
    """Annotators of the project, in a fixed order (by user name), for round-robin assignment."""
    return [m.user for m in Membership.objects.filter(project=project, role=Role.ANNOTATOR)
            .select_related("user").order_by("user__username")]


def unassigned_cases(project):
    """Open cases no reader is assigned to: cases without a reading, and cases an annotator opened before they
    were assigned (:func:`working_reading` then made their single reading, with no reader and undecided)."""
    return ReviewCase.objects.filter(project=project).filter(_unassigned())


@transaction.atomic
def assign(project, *, readers=None, double_read_share=None, seed=0, user=None):
    """Assign every open, unassigned case (:func:`unassigned_cases`): round-robin over ``readers``; a
    ``double_read_share`` of them (chosen at random with ``seed``) to two different readers. Returns the
    number of cases assigned.

    A case an annotator opened before it was assigned keeps the reading they started (its edits and version):
    read once, that reading gets the reader; drawn for double reading, it becomes the first reading (of the
    first reader) and a second reading starts from the automatic levels. Opened cases take part in the draw
    like the others, so the share of double readings does not depend on which cases were opened early.
    """
    readers = list(readers if readers is not None else project_readers(project))
    if not readers:
        raise ReviewError("the project has no annotators to assign cases to")
    config, _ = ReviewSettings.objects.select_for_update().get_or_create(project=project)
    if double_read_share is not None:
        if not 0.0 <= double_read_share <= 1.0:
            raise ReviewError("the double-reading share must be between 0 and 1")
        config.double_read_share = double_read_share
    if config.double_read_share > 0 and len(readers) < 2:
        raise ReviewError("double reading needs at least two annotators")
    unassigned = list(unassigned_cases(project).order_by("-priority", "pk"))
    opened = {r.case_id: r for r in Reading.objects.filter(case__in=unassigned_cases(project))}
    rng = random.Random(seed)
    n_double = round(config.double_read_share * len(unassigned))
    double = set(rng.sample(range(len(unassigned)), n_double)) if n_double else set()
    position = config.next_reader
    readings, taken = [], []
    for i, case in enumerate(unassigned):
        level_map = _initial_map(case)
        n_readers = 2 if i in double else 1
        chosen = [readers[(position + k) % len(readers)] for k in range(n_readers)]
        started = opened.get(case.pk)
        if started is not None:
            kind = ReadingKind.FIRST if n_readers == 2 else ReadingKind.SINGLE
            if not _take_over(started, user, reader=chosen[0], kind=kind):
                continue  # decided while we were assigning: the case is closed
            taken.append(started)
        position += n_readers
        if n_readers == 2:
            case.double_read = True
            case.save(update_fields=["double_read"])
            if started is None:
                readings.append(Reading(case=case, kind=ReadingKind.FIRST, reader=chosen[0], level_map=level_map))
            readings.append(Reading(case=case, kind=ReadingKind.SECOND, reader=chosen[1], level_map=level_map))
        elif started is None:
            readings.append(Reading(case=case, kind=ReadingKind.SINGLE, reader=chosen[0], level_map=level_map))
    Reading.objects.bulk_create(readings)
    config.next_reader = position % len(readers)
    config.save()
    for reading in readings:
        ReviewEvent.objects.create(case=reading.case, reading=reading, user=user, action="assign", version=1,
                                   summary=f"{reading.get_kind_display()} assigned to {reading.reader}")
    for reading in taken:
        ReviewEvent.objects.create(case=reading.case, reading=reading, user=user, action="assign",
                                   version=reading.version,
                                   summary=f"{reading.get_kind_display()} (opened before) assigned to {reading.reader}")
    return len({r.case_id for r in readings} | {r.case_id for r in taken})


def _take_over(reading, user, *, reader, kind):
    """Give an opened single reading without a reader its ``reader`` (as ``kind``), audited, keeping its edits.
    False when it was decided or assigned in the meantime (nothing changed)."""
    if not Reading.objects.filter(pk=reading.pk, kind=ReadingKind.SINGLE, reader=None, decided_at=None).update(
            reader=reader, kind=kind):
        return False
    changes = {"reader": ["None", str(reader)]}
    if kind != ReadingKind.SINGLE:
        changes["kind"] = [ReadingKind.SINGLE.value, kind.value]
    reading.reader, reading.kind = reader, kind
    _audit(reading, changes, user)
    return True


def _initial_map(case):
    return {str(k): v for k, v in level_map_of(case.base_run).items()}


# -- which reading a user works on, and what they may see -----------------------------------------------------
def readings_visible_to(case, user, role):
    """The readings ``user`` may see: in blinded double reading only their own until both have decided."""
    readings = list(case.readings.select_related("reader", "decided_by").order_by("pk"))
    blinded = [r for r in readings if r.kind in (ReadingKind.FIRST, ReadingKind.SECOND)]
    if blinded and not all(r.decided_at for r in blinded):
        return [r for r in readings if r.reader_id == user.pk]
    return readings


def working_reading(case, user, role):
    """The reading ``user`` edits on this case now, or None (view only). Creates the single reading of an
    unassigned case on first use."""
    if case.status == CaseStatus.ADJUDICATION:
        reading = case.readings.filter(kind=ReadingKind.ADJUDICATION).first()
        if reading and (reading.reader_id in (None, user.pk) or role == Role.ADMIN):
            return reading
        return None
    if case.status not in OPEN_STATUSES or role not in READERS:
        return None
    if case.double_read:
        return case.readings.filter(kind__in=[ReadingKind.FIRST, ReadingKind.SECOND], reader=user,
                                    decided_at=None).first()
    reading, _ = Reading.objects.get_or_create(case=case, kind=ReadingKind.SINGLE,
                                               defaults={"level_map": _initial_map(case)})
    if reading.decided_at is not None:
        return None
    # A reading assigned to a reader is theirs (a project admin may step in); an unassigned one is anyone's.
    if reading.reader_id not in (None, user.pk) and role != Role.ADMIN:
        return None
    return reading


def why_view_only(case, user, role):
    """Why ``user`` has no reading to change on ``case`` (see :func:`working_reading`), as a sentence."""
    if case.status not in OPEN_STATUSES:
        return f"this case is {case.get_status_display().lower()}."
    if case.status == CaseStatus.ADJUDICATION:
        adjudication = case.readings.filter(kind=ReadingKind.ADJUDICATION).select_related("reader").first()
        who = adjudication.reader if adjudication and adjudication.reader else "the project's adjudicator"
        return f"this case is in adjudication, by {who}."
    if role not in READERS:
        return "your role views cases; annotators, PIs and admins read them."
    if case.double_read:
        return "this case is double-read by two other readers."
    single = case.readings.filter(kind=ReadingKind.SINGLE).select_related("reader").first()
    if single and single.decided_at:
        return "its reading is decided."
    if single and single.reader_id not in (None, user.pk):
        return f"this case is assigned to {single.reader}."
    return "there is no reading of yours on this case."


def as_int_map(level_map):
    return {int(k): v for k, v in level_map.items()}


# -- editing without lost edits ---------------------------------------------------------------------------
def _audit(instance, changes, user):
    LogEntry.objects.log_create(instance, action=LogEntry.Action.UPDATE, changes=changes, actor=user,
                                additional_data=instance.get_additional_data())


def _save_reading(reading, opened_version, user, *, action, summary, **values):
    """Store ``values`` on ``reading`` if it is still at ``opened_version`` (one conditional UPDATE, safe
    on every database); otherwise raise :class:`EditConflict` with what happened in between."""
    with transaction.atomic():
        updated = Reading.objects.filter(pk=reading.pk, version=opened_version, decided_at=None).update(
            version=opened_version + 1, **values)
        if not updated:
            current = Reading.objects.get(pk=reading.pk)
            events = list(ReviewEvent.objects.filter(reading=current, version__gt=opened_version)
                          .select_related("user"))
            raise EditConflict(current, opened_version, events)
        before = {k: getattr(reading, k) for k in values}
        reading.refresh_from_db()
        _audit(reading, {k: [str(before[k]), str(getattr(reading, k))] for k in values
                         if before[k] != getattr(reading, k)} | {"version": [str(opened_version),
                                                                            str(reading.version)]}, user)
        ReviewEvent.objects.create(case=reading.case, reading=reading, user=user, action=action,
                                   summary=summary[:300], version=reading.version)
    return reading


def edit_levels(reading, opened_version, user, operation, *, index=None, level=None, delta=None):
    """Apply one relabel ``operation`` (``name`` the spine from one segment, ``shift`` all levels,
    ``rename`` one segment) to the reading. Raises RelabelError or EditConflict; returns the reading."""
    current = as_int_map(reading.level_map)
    if operation == "name":
        new = relabel_levels.levels_by_counting(len(current), int(index), level)
        summary = f"named segment {index} {level}; others by counting"
    elif operation == "shift":
        new = relabel_levels.shift_levels(current, int(delta))
        summary = f"shifted all levels {'down' if int(delta) > 0 else 'up'} by one"
    elif operation == "rename":
        new = relabel_levels.rename_level(current, int(index), level or None)
        summary = f"renamed segment {index} to {level or 'unnamed'}"
    else:
        raise ReviewError(f"unknown relabel operation {operation!r}")
    changes = relabel_levels.describe_changes(current, new)
    if changes:
        summary += " (" + ", ".join(changes) + ")"
    return _save_reading(reading, opened_version, user, action=operation, summary=summary,
                         level_map={str(k): v for k, v in sorted(new.items())})


def set_unusable(reading, opened_version, user, index, unusable=True):
    """Mark segment ``index`` unusable (fracture, lesion, artefact: it leaves the features) or usable again."""
    current = set(int(i) for i in reading.unusable)
    if int(index) not in as_int_map(reading.level_map):
        raise ReviewError(f"no segment {index}")
    new = current | {int(index)} if unusable else current - {int(index)}
    level = as_int_map(reading.level_map).get(int(index)) or f"segment {index}"
    return _save_reading(reading, opened_version, user, action="unusable" if unusable else "usable",
                         summary=f"{level} marked {'unusable' if unusable else 'usable'}", unusable=sorted(new))


def comment(case, user, text, reading=None):
    text = (text or "").strip()
    if not text:
        raise ReviewError("an empty comment is not saved")
    with transaction.atomic():
        row = ReviewComment.objects.create(case=case, author=user, text=text[:2000], reading=reading)
        ReviewEvent.objects.create(case=case, reading=reading, user=user, action="comment",
                                   summary=f"comment: {text[:200]}", version=reading.version if reading else 0)
    return row


# -- deciding ------------------------------------------------------------------------------------------
def decide(reading, opened_version, user, decision, *, segmenter=""):
    """Record the reading's decision; settle the case when it is the last decision needed. Returns the case.

    ``segmenter``: for a request of re-segmentation, the segmenter to run (see :mod:`.resegment`; empty: the
    project's default). In double reading the request is made with the choice of the reader who decided last.
    """
    if decision not in Decision.values:
        raise ReviewError(f"unknown decision {decision!r}")
    now = timezone.now()
    with transaction.atomic():
        _save_reading(reading, opened_version, user, action=decision,
                      summary=f"{reading.get_kind_display()}: {Decision(decision).label.lower()}",
                      decision=decision, decided_by=user, decided_at=now)
        case = ReviewCase.objects.select_for_update().get(pk=reading.case_id)
        if reading.kind in (ReadingKind.SINGLE, ReadingKind.ADJUDICATION):
            _settle(case, reading, user, segmenter)
        else:
            pair = list(case.readings.filter(kind__in=[ReadingKind.FIRST, ReadingKind.SECOND]))
            if all(r.decided_at for r in pair):
                first, second = sorted(pair, key=lambda r: r.kind != ReadingKind.FIRST)
                if _same_result(first, second):
                    _settle(case, reading, user, segmenter)
                else:
                    _to_adjudication(case, first, second, user)
    return case


def _same_result(a, b):
    if a.decision != b.decision:
        return False
    if a.decision != Decision.ACCEPT:
        return True
    return as_int_map(a.level_map) == as_int_map(b.level_map) and sorted(a.unusable) == sorted(b.unusable)


def _to_adjudication(case, first, second, user):
    config = ReviewSettings.objects.filter(project=case.project).first()
    adjudicator = config.adjudicator if config else None
    differences = []
    if first.decision != second.decision:
        differences.append(f"decisions {first.decision} / {second.decision}")
    a, b = as_int_map(first.level_map), as_int_map(second.level_map)
    differences += [f"segment {i}: {first.reader} {a.get(i) or 'unnamed'} / {second.reader} {b.get(i) or 'unnamed'}"
                    for i in sorted(set(a) | set(b)) if a.get(i) != b.get(i)]
    if sorted(first.unusable) != sorted(second.unusable):
        differences.append(f"unusable {first.unusable} / {second.unusable}")
    # A case back from re-segmentation has the adjudication reading of its earlier round: it starts afresh.
    Reading.objects.update_or_create(case=case, kind=ReadingKind.ADJUDICATION, defaults={
        "reader": adjudicator, "level_map": _initial_map(case), "unusable": [], "decision": "", "decided_by": None,
        "decided_at": None})
    case.status = CaseStatus.ADJUDICATION
    case.save()
    ReviewEvent.objects.create(case=case, user=user, action="disagreement", version=0,
                               summary=("readers disagree: " + "; ".join(differences))[:300])


def _settle(case, reading, user, segmenter=""):
    """Close the case with ``reading``'s decision; an accepted change becomes a new measurement run, a request
    of re-segmentation starts the exam's segment-and-measure job."""
    if reading.decision == Decision.ACCEPT:
        level_map, unusable = as_int_map(reading.level_map), [int(i) for i in reading.unusable]
        if changes_anything(case.base_run, level_map, unusable):
            case.result_run = create_reviewed_run(case.base_run, level_map, unusable, user=user, case_id=case.pk)
        case.status = CaseStatus.ACCEPTED
    elif reading.decision == Decision.REJECT:
        case.status = CaseStatus.REJECTED
    else:
        case.status = CaseStatus.RESEGMENT
    case.decided_at = timezone.now()
    case.save()
    summary = f"case {case.get_status_display().lower()}"
    if case.result_run_id:
        summary += f"; reviewed measurement run {case.result_run_id} created"
    ReviewEvent.objects.create(case=case, reading=reading, user=user, action="settled", summary=summary,
                               version=reading.version)
    if case.status == CaseStatus.RESEGMENT:
        from .resegment import request_resegmentation

        request_resegmentation(case, user, segmenter)


# -- agreement ------------------------------------------------------------------------------------------
def agreement(project):
    """Agreement of double readings in ``project``: Cohen's kappa on the decisions of first and second
    readers, and per level (as named by the automatic run) the share of segments both readers named alike."""
    from analysis.stats.agreement import cohen_kappa

    pairs, per_level = [], {}
    cases = ReviewCase.objects.filter(project=project, double_read=True).prefetch_related("readings")
    for case in cases.select_related("base_run"):
        readings = {r.kind: r for r in case.readings.all()}
        first, second = readings.get(ReadingKind.FIRST), readings.get(ReadingKind.SECOND)
        if not (first and second and first.decided_at and second.decided_at):
            continue
        pairs.append((first.decision, second.decision))
        if first.decision == second.decision == Decision.ACCEPT:
            base = level_map_of(case.base_run)
            a, b = as_int_map(first.level_map), as_int_map(second.level_map)
            for index, level in base.items():
                key = level or "unnamed"
                agree, total = per_level.get(key, (0, 0))
                per_level[key] = (agree + (a.get(index) == b.get(index)), total + 1)
    from analysis.segmentation.levels import VERSE_LABEL

    levels = [{"level": k, "agree": v[0], "n": v[1], "share": v[0] / v[1]}
              for k, v in sorted(per_level.items(), key=lambda kv: VERSE_LABEL.get(kv[0], 99))]
    return {"decisions": cohen_kappa(pairs), "levels": levels, "pairs": pairs}


def reviewed_training_cases(project):
    """The cases accepted in review now, with their :attr:`~.models.ReviewCase.reviewed_run`: what a
    segmentation network trains on and segmenters are compared on (see ``ReviewCase.objects.reviewed``)."""
    return (ReviewCase.objects.filter(project=project).reviewed()
            .select_related("exam__patient", "base_run", "result_run").order_by("pk"))


__all__ = ["EditConflict", "ReviewError"]
