"""Inserting and updating many registry rows at once, inside the caller's transaction.

On PostgreSQL rows travel with ``COPY`` (the primary keys of new rows taken from the table's sequence
beforehand, so the caller knows them without reading the rows back), and updates go through a temporary table
and one ``UPDATE ... FROM``. Django's ``bulk_create`` and ``bulk_update`` build every model instance and
every SQL parameter in Python; for 200,000 rows that costs minutes, ``COPY`` seconds. Elsewhere (SQLite, the
embedded default) the ORM's bulk statements are used.

Values are given as they are stored: ``rows`` are tuples in the order of ``fields`` (model field names; a
foreign key by its id, e.g. ``patient`` -> the patient's pk). No signals are sent, so the caller writes the
audit entries (``audit_rows``).
"""

import json

from django.db import connection

CHUNK = 2000


def _columns(model, fields):
    return [model._meta.get_field(name).column for name in fields]


def _attnames(model, fields):
    return [model._meta.get_field(name).attname for name in fields]


def _quoted(name):
    return connection.ops.quote_name(name)


def _versioned(model):
    """Rows with an edit version (``studies.models.VersionedModel``): a bulk write is an edit like any other, so
    a new row starts at version 1 and an updated row moves to the next version (an open form then sees the
    conflict instead of overwriting the import)."""
    return any(f.name == "version" for f in model._meta.concrete_fields)


def insert(model, fields, rows):
    """Insert ``rows`` (tuples of values in ``fields`` order). Returns the new primary keys, in row order."""
    rows = list(rows)
    if not rows:
        return []
    if connection.vendor == "postgresql":
        return _copy_insert(model, fields, rows)
    attnames = _attnames(model, fields)
    objects = [model(**dict(zip(attnames, row))) for row in rows]
    for start in range(0, len(objects), CHUNK):
        model.objects.bulk_create(objects[start:start + CHUNK])
    return [obj.pk for obj in objects]


def _copy_insert(model, fields, rows):
    table = model._meta.db_table
    pk_column = model._meta.pk.column
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                       [table, pk_column, len(rows)])
        ids = [value for (value,) in cursor.fetchall()]
        extra = ("version",) if _versioned(model) and "version" not in fields else ()
        columns = ", ".join(_quoted(c) for c in [pk_column] + _columns(model, tuple(fields) + extra))
        with cursor.cursor.copy(f"COPY {_quoted(table)} ({columns}) FROM STDIN") as copy:
            for pk, row in zip(ids, rows):
                copy.write_row((pk, *row, *(1 for _ in extra)))
    return ids


def update(model, fields, rows):
    """Update existing rows: ``rows`` are tuples ``(pk, value of fields[0], value of fields[1], ...)``."""
    rows = list(rows)
    if not rows:
        return
    if connection.vendor == "postgresql":
        _copy_update(model, fields, rows)
        return
    attnames = _attnames(model, fields)
    objects = []
    for pk, *values in rows:
        obj = model(pk=pk)
        for name, value in zip(attnames, values):
            setattr(obj, name, value)
        objects.append(obj)
    model.objects.bulk_update(objects, [model._meta.get_field(name).name for name in fields], batch_size=CHUNK)
    if _versioned(model) and "version" not in fields:
        from django.db.models import F

        pks = [row[0] for row in rows]
        for start in range(0, len(pks), CHUNK):
            model.objects.filter(pk__in=pks[start:start + CHUNK]).update(version=F("version") + 1)


def _copy_update(model, fields, rows):
    table = model._meta.db_table
    pk_column = model._meta.pk.column
    columns = _columns(model, fields)
    temp = _quoted(f"bulk_update_{table}")
    listed = ", ".join(_quoted(c) for c in [pk_column] + columns)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE {temp} ON COMMIT DROP AS "
                       f"SELECT {listed} FROM {_quoted(table)} WITH NO DATA")
        with cursor.cursor.copy(f"COPY {temp} ({listed}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        assignments = ", ".join(f"{_quoted(c)} = new.{_quoted(c)}" for c in columns)
        if _versioned(model) and "version" not in fields:
            assignments += f", {_quoted('version')} = old.{_quoted('version')} + 1"
        cursor.execute(f"UPDATE {_quoted(table)} AS old SET {assignments} FROM {temp} AS new "
                       f"WHERE old.{_quoted(pk_column)} = new.{_quoted(pk_column)}")
        updated = cursor.rowcount
        cursor.execute(f"DROP TABLE {temp}")
    if updated != len(rows):
        # The rows were locked by the caller, so a row gone here is a bug, not a race; refuse the whole import.
        raise RuntimeError(f"{table}: {len(rows) - updated} of {len(rows)} rows to update are gone")


LOG_FIELDS = ("content_type", "object_pk", "object_id", "object_repr", "action", "changes", "changes_text",
              "actor", "cid", "timestamp", "additional_data")


def audit_rows(entries):
    """Write django-auditlog entries given as tuples in ``LOG_FIELDS`` order, with ``changes`` and
    ``additional_data`` as dicts (as ``LogEntry.objects.log_create`` would store them)."""
    from auditlog.models import LogEntry

    if not entries:
        return
    if connection.vendor == "postgresql":
        # COPY in text format: JSON columns take their JSON text. The additional data repeats (one per
        # patient), so each distinct one is written out once.
        dumps = json.dumps
        extra_text = {}

        def extra_json(extra):
            key = tuple(extra.items())
            if key not in extra_text:
                extra_text[key] = dumps(extra)
            return extra_text[key]

        insert_rows = ((ct, pk_text, pk, text, action, dumps(changes), "", actor, cid, at, extra_json(extra))
                       for ct, pk_text, pk, text, action, changes, _, actor, cid, at, extra in entries)
        _copy_insert(LogEntry, LOG_FIELDS, list(insert_rows))
    else:
        insert(LogEntry, LOG_FIELDS, entries)
