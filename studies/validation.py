"""Value checks shared by the forms and the CSV importer, so a value refused on a page is refused in a file."""

import datetime as dt
import re

BMD_MIN_MG_CM3 = 0.0
BMD_MAX_MG_CM3 = 400.0
# DXA areal BMD is reported in g/cm2, typically 0.4-1.6; no volumetric trabecular BMD is below 5 mg/cm3.
AREAL_BMD_LIKE_BELOW = 5.0
UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
FORMULA_FIRST = frozenset(FORMULA_PREFIXES)


def parse_number(text, name, low=None, high=None):
    """A float from a text cell; None when empty. ``low``/``high`` bound it (inclusive) when given."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number") from None
    if low is not None and not low <= value <= high:
        raise ValueError(f"{name} {value:g} is outside {low:g}-{high:g}")
    return value


def parse_bmd(text):
    """A QCT BMD in mg/cm3 from text; None when empty. Raises ValueError with a message naming the unit."""
    value = parse_number(text, "BMD")
    if value is not None:
        check_bmd(value)
    return value


def check_bmd(value):
    if value != value:  # NaN
        raise ValueError("BMD is not a number")
    if not BMD_MIN_MG_CM3 <= value <= BMD_MAX_MG_CM3:
        raise ValueError(f"BMD {value:g} mg/cm3 is outside {BMD_MIN_MG_CM3:g}-{BMD_MAX_MG_CM3:g} mg/cm3")
    if value < AREAL_BMD_LIKE_BELOW:
        raise ValueError(
            f"BMD {value:g} looks like an areal DXA value in g/cm2; this field is QCT volumetric BMD in mg/cm3"
        )


def parse_age(text):
    value = parse_number(text, "age")
    if value is None:
        return None
    if value != int(value):
        raise ValueError(f"age {text.strip()!r} must be whole years")
    if not 0 <= value <= 120:
        raise ValueError(f"age {value:g} is outside 0-120 years")
    return int(value)


def parse_date(text, field="exam_date"):
    text = text.strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"{field} {text!r} is not a date in YYYY-MM-DD form")
    try:
        value = dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{field} {text!r} is not a valid date") from None
    check_exam_date(value, field)
    return value


def check_exam_date(value, field="exam_date"):
    if value.year < 1970:
        raise ValueError(f"{field} {value:%Y-%m-%d} is before 1970 (no CT)")
    if value > dt.date.today():
        raise ValueError(f"{field} {value:%Y-%m-%d} is in the future")


def check_uid(value, tag="StudyInstanceUID (0020,000D)"):
    if value and (len(value) > 64 or not UID_RE.match(value)):
        raise ValueError(f"{tag} {value!r} is not a valid DICOM UID (digits and dots, at most 64 characters)")


def looks_like_formula(text):
    """A cell a spreadsheet would execute. Numbers with a sign are values, not formulas."""
    if not text or not text.startswith(FORMULA_PREFIXES):
        return False
    try:
        float(text)
    except ValueError:
        return True
    return False


def formula_problems(cells):
    """``column X holds a formula cell ...`` for every cell of a row that a spreadsheet would execute."""
    # Most rows have no cell starting with a formula character: one look at the first characters says so.
    if not FORMULA_FIRST.intersection(text[:1] for text in cells.values()):
        return []
    return [f"column {column} holds a formula cell {text[:20]!r}; enter plain values"
            for column, text in cells.items() if looks_like_formula(text)]


def row_patient_id(cells):
    """The stripped ``patient_id`` of a CSV row whose cells are all plain values.

    Raises ``ValueError`` for a formula cell in any column (named) or an empty ``patient_id``.
    """
    problems = formula_problems(cells)
    if problems:
        raise ValueError(problems[0])
    patient_id = cells["patient_id"].strip()
    if not patient_id:
        raise ValueError("patient_id is empty")
    return patient_id
