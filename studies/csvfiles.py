"""Reading the CSV files users upload: one reader for every importer (QCT values, HU values, predictions).

It checks what is the same for all of them: UTF-8, comma as the separator (a semicolon- or tab-separated
file is named as such), a header with the required columns, no unknown or duplicated column, the cell count
of each row, control characters in cells, blank lines, the row limit. Each problem reads
``line N: reason`` with N the physical line (the header is line 1; a quoted cell spanning lines counts
every line). The importer parses the cells of each row and adds its own ``line N: reason`` errors.
"""

import csv
import io
import re
from contextlib import contextmanager
from dataclasses import dataclass, field

MAX_ROWS = 200_000
# Control characters have no place in a registry value, and PostgreSQL refuses NUL in text outright. Tab and
# line breaks are allowed, as a quoted cell may hold them (a note written over two lines).
CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Spreadsheets in locales with a decimal comma save "CSV" with semicolons; tab-separated exports also occur.
# Such a file is refused with a hint rather than read with a guessed separator, because its numbers may use a
# decimal comma ("95,5") that a comma-separated reading could silently misplace.
OTHER_SEPARATORS = {";": "semicolon", "\t": "tab"}


class CSVFileError(ValueError):
    """The file as a whole is unusable; ``errors`` lists every ``line N: reason`` (or ``FILE: reason``)."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


@dataclass
class CSVRows:
    header: list
    rows: list = field(default_factory=list)  # (line, {column: cell text})
    errors: list = field(default_factory=list)


def line_order(error):
    """Sort key putting ``line N: ...`` messages in file order (file-level messages first)."""
    head = error.split(":", 1)[0]
    return int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else 0


def decode(data, source, error=CSVFileError):
    """Text of an uploaded file (bytes or str); a BOM is dropped."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error([f"{source}: not UTF-8 text (byte {exc.start}); save the file as UTF-8 CSV"]) from None


def read_rows(data, *, source, required, optional=(), error=CSVFileError, what="", max_rows=MAX_ROWS):
    """Check the header and split the file into rows of cells.

    Parameters
    ----------
    data : bytes or str
    source : str
        The file's name, for messages.
    required, optional : sequence of str
        Column names (lower case); any other column is refused.
    error : type
        The ``CSVFileError`` subclass to raise for file-level problems.
    what : str
        Words appended to the missing-columns message (e.g. "for a regression model").
    max_rows : int
        More data rows than this is an error (split the file).

    Returns
    -------
    CSVRows
        Rows with their physical line numbers, and row-level problems already found.
    """
    reader = csv.reader(io.StringIO(decode(data, source, error), newline=""))
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        raise error([f"{source}: the file is empty"]) from None
    except csv.Error as exc:
        raise error([f"line 1: {exc}"]) from None
    allowed = tuple(required) + tuple(optional)
    separator = _other_separator(header, required)
    if separator:
        raise error([f"line 1: the file looks {separator}-separated; save it as comma-separated (UTF-8) CSV"])
    problems = []
    missing = [name for name in required if name not in header]
    if missing:
        problems.append(f"line 1: missing column(s) {', '.join(missing)}{' ' + what if what else ''}")
    unknown = [name for name in header if name not in allowed]
    if unknown:
        problems.append(f"line 1: unknown column(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        problems.append(f"line 1: duplicated column(s) {', '.join(duplicated)}")
    if problems:
        raise error(problems)

    table = CSVRows(header=header)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            table.errors.append(f"line {reader.line_num}: {exc}")
            break
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(table.rows) + len(table.errors) >= max_rows:
            table.errors.append(f"line {line}: more than {max_rows} rows; split the file")
            break
        if len(cells) != len(header):
            table.errors.append(f"line {line}: {len(cells)} cells, the header has {len(header)}")
            continue
        row = dict(zip(header, cells))
        bad = control_character_problems(row)
        if bad:
            table.errors.append(f"line {line}: {'; '.join(bad)}")
            continue
        table.rows.append((line, row))
    if not table.rows and not table.errors:
        table.errors.append(f"{source}: no data rows")
    return table


def control_character_problems(cells):
    """``column: control character not allowed (U+XXXX)`` for each cell holding one (tab and line breaks pass)."""
    if not CONTROL_CHARACTERS.search("".join(cells.values())):
        return []  # the common case, in one search per row
    problems = []
    for column, text in cells.items():
        found = CONTROL_CHARACTERS.search(text)
        if found:
            problems.append(f"{column}: control character not allowed (U+{ord(found.group()):04X})")
    return problems


def _other_separator(header, required):
    """The name of the separator a one-column header was written with, if it holds the required names."""
    if len(header) != 1:
        return None
    for char, name in OTHER_SEPARATORS.items():
        names = [part.strip().strip('"') for part in header[0].split(char)]
        if len(names) > 1 and any(name_ in names for name_ in required):
            return name
    return None


@contextmanager
def reported_to_command(file, stderr):
    """For management commands: a missing file or an unusable CSV becomes a one-line ``CommandError``,
    after every ``line N: reason`` has been written to ``stderr``."""
    from django.core.management.base import CommandError

    try:
        yield
    except FileNotFoundError:
        raise CommandError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise CommandError(f"{file}: is a directory, not a CSV file") from None
    except CSVFileError as exc:
        for error in exc.errors:
            stderr.write(error)
        raise CommandError(f"{file}: {len(exc.errors)} problem(s); nothing was imported") from None
