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
"""

from __future__ import annotations

from dataclasses import dataclass

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
    merged : bool
        Holds more than one vertebra (a missed disc): never an anchor.
    ala_gap_mm : float
        For a segment joined to the ilium: how far below its upper disc the joint ends along the spine
        (the alae reach the top of S1, about level with the L5/S1 disc).
    """

    complete: bool
    cut: bool = False
    rib_left: bool = False
    rib_right: bool = False
    pelvic_left: bool = False
    pelvic_right: bool = False
    ala_gap_mm: float = 0.0
    extent_mm: float | None = None
    merged: bool = False

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
# The first rib is only read as T1 at the top of a run of at least this many rib-bearing vertebrae (T1-T3):
# a single rib-bearing segment with a rib-free one above it is as likely T12 below a split or rib-less
# segment.
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


def label_segments(segments):
    """Assign levels to segments ordered from inferior (index 0) to superior.

    Levels are counted from the anchors in view; a segment that holds more than one vertebra
    (``merged``) and an end segment cut by the edge of the scan with no more than
    :data:`MIN_CUT_SEGMENT_MM` in view get no level.

    Parameters
    ----------
    segments : list of Segment

    Returns
    -------
    levels : dict
        Segment index -> (level name, confidence 0..1). Sacral segments are left out.
    flags : list of str
    notes : list of str
        Which anchors were used and why, and which levels were withheld.
    """
    levels, flags, notes = _counted_levels(segments)
    for k in sorted(levels):
        segment = segments[k]
        if segment.merged:
            name = levels.pop(k)[0]
            notes.append(f"{name} withheld: the segment at the edge of the scan holds more than one vertebra "
                         f"({segment.extent_mm:.0f} mm in view; a disc in it was missed)")
        elif (k in (0, len(segments) - 1) and segment.cut and segment.extent_mm is not None
              and segment.extent_mm <= MIN_CUT_SEGMENT_MM):
            name = levels.pop(k)[0]
            notes.append(f"{name} withheld: only {segment.extent_mm:.0f} mm of it in view at the edge of the scan")
    return levels, flags, notes


def _counted_levels(segments):
    """Levels counted from the anchors (see :func:`label_segments`)."""
    flags, notes = [], []
    n = len(segments)
    # --- sacrum: the lowest run of segments attached to the ilium on both sides; S1 is its top. A
    # segment above it attached on one side only is a transitional vertebra (hemisacralisation).
    s1 = None
    for i, seg in enumerate(segments):
        if seg.pelvic == 2:
            s1 = i
        elif s1 is not None:
            break
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
        # rib-bearing vertebra cut by the scan looks rib-free (aorta_ct_cropped: the lower 14 mm of T2).
        run_below = sum(1 for i in rib_idx if first - FIRST_RIB_RUN < i <= first)
        if (above is not None and above.ribs == 0
                and (above.complete or (not above.cut and (above.extent_mm or 0.0) >= C7_IN_VIEW_MM))
                and run_below >= FIRST_RIB_RUN):
            first_anchor = first
            notes.append(f"first rib-bearing vertebra (segment {first}) = T1, with a complete rib-free "
                         "vertebra (C7) above it")
    levels = {}
    if sacral_anchor is None and rib_anchor is None and first_anchor is not None:
        # Counting down from the first rib (how thoracic levels are named on a chest CT): 11 or 13 rib
        # pairs do not move it, but a missed or split disc on the way does.
        for i in range(n):
            name = _name_from_t12(i - (first_anchor - 11))
            if name:
                levels[i] = (name, max(0.5, 0.8 - 0.03 * abs(first_anchor - i)))
        return levels, sorted(set(flags)), notes
    if sacral_anchor is not None and rib_anchor is not None:
        # Rib-free segments from L5 up to the one below T12.
        lumbar = rib_anchor - sacral_anchor
        if lumbar == 5:
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
        for i in range(sacral_anchor, n):
            k = i - sacral_anchor
            name = LEVEL_NAMES[LEVEL_NAMES.index("L5") - k] if LEVEL_NAMES.index("L5") - k >= 0 else None
            if name:
                # Counting away from the anchor adds uncertainty (a missed or split disc shifts all above).
                levels[i] = (name, max(0.5, 0.9 - 0.03 * k))
    elif rib_anchor is not None:
        for i in range(n):
            if s1 is not None and i <= s1:
                continue
            name = _name_from_t12(i - rib_anchor)
            if name:
                # Rib anchor alone: 11 or 13 rib pairs occur in a few per cent of people and cannot be
                # excluded without the first rib or the sacrum in view, hence less than the two anchors.
                levels[i] = (name, max(0.5, 0.8 - 0.03 * abs(i - rib_anchor)))
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
        else:
            count = first_anchor - min(rib_idx) + 1
            flags += ["level_disagreement", "unusual_rib_count", "low_confidence"]
            notes.append(f"{count} rib-bearing vertebrae from the first rib to the last (expected 12): the "
                         "anchors disagree; levels kept at low confidence")
            levels = {i: (name, min(conf, 0.4)) for i, (name, conf) in levels.items()}
    return levels, sorted(set(flags)), notes
