"""BMD categories from QCT volumetric BMD (mg/cm3).

2018 Chinese QCT guideline (= ACR): BMD < 80 osteoporosis; 80 <= BMD <= 120 osteopenia; BMD > 120 normal.
The thresholds are per-project data; these defaults are only used when a project has not set its own.
"""

from dataclasses import dataclass

OSTEOPOROSIS = "osteoporosis"
OSTEOPENIA = "osteopenia"
NORMAL = "normal"
CATEGORIES = (OSTEOPOROSIS, OSTEOPENIA, NORMAL)


@dataclass(frozen=True)
class Thresholds:
    """Category boundaries in mg/cm3; both boundaries belong to osteopenia."""

    osteoporosis_below: float = 80.0
    normal_above: float = 120.0

    def categorize(self, bmd_mg_cm3):
        if bmd_mg_cm3 is None:
            return None
        if bmd_mg_cm3 < self.osteoporosis_below:
            return OSTEOPOROSIS
        if bmd_mg_cm3 > self.normal_above:
            return NORMAL
        return OSTEOPENIA


DEFAULT_THRESHOLDS = Thresholds()
