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
              "actor", "actor_email", "cid", "timestamp", "additional_data")
# One JSON encoder for all entries: ``json.dumps`` builds a new one at every call, which for 800,000 entries
# costs more than the encoding itself. Same output as ``json.dumps`` with its defaults.
_encode_json = json.JSONEncoder().encode


def audit_rows(entries):
    """Write django-auditlog entries given as tuples in ``LOG_FIELDS`` order, with ``changes`` and
    ``additional_data`` as dicts (as ``LogEntry.objects.log_create`` would store them)."""
    from auditlog.models import LogEntry

    if not entries:
        return
    if connection.vendor == "postgresql":
        # COPY in text format: JSON columns take their JSON text. The additional data repeats (one per
        # patient), so each distinct one is written out once.
        extra_text = {}

        def extra_json(extra):
            key = tuple(extra.items())
            if key not in extra_text:
                extra_text[key] = _encode_json(extra)
            return extra_text[key]

        insert_rows = [(ct, pk_text, pk, text, action, _encode_json(changes), "", actor, email, cid, at,
                        extra_json(extra))
                       for ct, pk_text, pk, text, action, changes, _, actor, email, cid, at, extra in entries]
        _copy_insert(LogEntry, LOG_FIELDS, insert_rows)
    else:
        insert(LogEntry, LOG_FIELDS, entries)


# Integer-like fields and foreign keys: their text is the number's.
_NUMBER_TYPES = ("AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField",
                 "SmallIntegerField", "PositiveIntegerField", "PositiveSmallIntegerField",
                 "PositiveBigIntegerField", "ForeignKey", "OneToOneField")


def _text_sql(model, name, alias):
    """SQL for the text django-auditlog records for a field's value (``str(value)``), NULL for None and ''."""
    field = model._meta.get_field(name)
    column = f"{alias}.{_quoted(field.column)}"
    kind = field.get_internal_type()
    if kind in ("CharField", "TextField"):
        return f"NULLIF({column}, '')"
    if kind == "BooleanField":
        return f"CASE WHEN {column} THEN 'True' WHEN NOT {column} THEN 'False' END"
    if kind == "DateField":
        return f"to_char({column}, 'YYYY-MM-DD')"
    if kind == "FloatField":
        # Python's str of a float is the shortest text that reads back as the same number, and so is
        # PostgreSQL's (extra_float_digits = 1, set below), except that Python writes whole numbers with ".0"
        # (120.0, where PostgreSQL writes 120). Both switch to exponents only below 1e-4 and from 1e15 on, where
        # no validated value lies (BMD 5-400 mg/cm3, kVp 40-160, slice thickness 0.1-20 mm).
        return (f"CASE WHEN {column} = trunc({column}) AND abs({column}) < 1e15 "
                f"THEN trunc({column})::numeric::text || '.0' ELSE {column}::text END")
    if kind in _NUMBER_TYPES:
        return f"{column}::text"
    raise ValueError(f"{model.__name__}.{name}: no audit text for {kind} fields in bulk")


def _json_string_sql(model, name, text):
    """SQL for the JSON string of ``text`` (the field's ``_text_sql``): quoted and escaped for character fields;
    the text of numbers, dates and booleans has nothing to escape."""
    if model._meta.get_field(name).get_internal_type() in ("CharField", "TextField"):
        return f"to_json({text})::text"
    return f"""'"' || {text} || '"'"""


def audit_created(model, fields, pks, texts, patient_ids, *, content_type, action, actor, actor_email, cid,
                  timestamp, extra):
    """PostgreSQL: write the CREATE entries of rows just inserted, built by the database from the stored rows.

    The entries are the ones ``audit_rows`` would write for the same rows (``changes``: ``id`` and every
    non-empty value of ``fields`` as ``["None", text]``; ``additional_data``: ``extra`` and the row's patient
    id), without building, serialising and sending 200,000 JSON documents from Python. ``pks``, ``texts``
    (object_repr) and ``patient_ids`` are lists in the same order. Returns the number of entries written.
    """
    from auditlog.models import LogEntry

    if not pks:
        return 0
    table = _quoted(model._meta.db_table)
    pk = _quoted(model._meta.pk.column)
    values = ", ".join(f"{_text_sql(model, name, 't')} AS {_quoted(name)}" for name in fields)
    # The JSON is put together as text and read once as jsonb: half the database's time of building it
    # with jsonb_build_object. to_json quotes and escapes each value; concat leaves out the NULL (empty) ones.
    changes = ", ".join(f"""', "{name}": ["None", ' || {_json_string_sql(model, name, f"v.{_quoted(name)}")} || ']'"""
                        for name in fields)
    extra_head = _encode_json(extra)[:-1] + (', "patient_id": ' if extra else '"patient_id": ')
    log = LogEntry._meta
    columns = ", ".join(_quoted(log.get_field(name).column) for name in LOG_FIELDS)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL extra_float_digits = 1")
        cursor.execute(
            f"INSERT INTO {_quoted(log.db_table)} ({columns}) "
            f"SELECT %s, t.{pk}::text, t.{pk}, r.text, %s, "
            f"""concat('{{"id": ["None", "', t.{pk}, '"]', {changes}, '}}')::jsonb, """
            f"'', %s, %s, %s, %s, (%s || r.patient_id || '}}')::jsonb "
            # The lists travel as three JSON arrays (one string each, encoded in C), not as SQL arrays that
            # the driver would quote element by element in Python.
            f"FROM ROWS FROM (json_array_elements_text(%s::json), json_array_elements_text(%s::json), "
            f"json_array_elements_text(%s::json)) AS r(id, text, patient_id) "
            f"JOIN {table} AS t ON t.{pk} = r.id::bigint CROSS JOIN LATERAL (SELECT {values}) AS v "
            # The new rows' range of keys: the table is read through its primary key there, not scanned
            # whole (it holds every project's rows).
            f"WHERE t.{pk} BETWEEN %s AND %s",
            [content_type, action, actor, actor_email, cid, timestamp, extra_head,
             _encode_json(list(pks)), _encode_json(list(texts)), _encode_json(list(patient_ids)),
             min(pks), max(pks)])
        written = cursor.rowcount
    if written != len(pks):
        raise RuntimeError(f"{model._meta.db_table}: audit entries for {written} of {len(pks)} new rows")
    return written
