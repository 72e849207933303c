"""Reading dataset files, with one clear `UserError` naming the file and row for bad input.

Every reader decodes the whole file strictly (UTF-8 by default; a byte-order mark is ignored),
so undecodable bytes are reported with their line instead of turning into replacement
characters that would silently change the text.
"""

import csv
import io
import json
import os

from mh3.errors import UserError

# Reddit posts can be long; the csv module's default field limit (128 KiB) is not a data limit.
csv.field_size_limit(2**31 - 1)


def require_dir(path: str, what: str) -> str:
    """Returns `path` if it is a folder; otherwise raises a UserError that says what it needs."""
    if not path:
        raise UserError(f"no data folder given for {what}; pass --config.data.path=DIR")
    if not os.path.isdir(path):
        raise UserError(
            f"data folder {path!r} does not exist; pass --config.data.path=DIR ({what})"
        )
    return path


def require_file(path: str, what: str) -> str:
    """Returns `path` if it is a file; otherwise raises a UserError naming it."""
    if not os.path.isfile(path):
        raise UserError(f"missing file {path!r} ({what}); check --config.data.path and data.files")
    return path


def read_text(path: str, encoding: str) -> str:
    """The decoded contents of `path`.

    Raises:
      UserError: the file has bytes that are not valid in `encoding`, naming the line.
    """
    with open(path, "rb") as f:
        data = f.read()
    codec = "utf-8-sig" if encoding.replace("_", "-").lower() in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(
            f"{path} line {line}: bytes {data[e.start : e.end]!r} are not valid {encoding}; "
            "re-save the file as UTF-8 or set --config.data.encoding"
        ) from None
    except LookupError:
        raise UserError(f"unknown encoding {encoding!r} in data.encoding") from None


# How a missing column is fixed for dataset files; other readers (predict) pass their own.
COLUMN_HINT = "set the column in --config.data (text_columns, label_column, id_column)"


def read_csv(
    path: str, columns: list[str], encoding: str, hint: str = COLUMN_HINT
) -> list[tuple[str, dict]]:
    """Rows of a CSV file with a header, as (where, {column: value}) for the named columns.

    Columns are found by header name, so files that order their columns differently read the
    same. `where` is "FILE row N (line L)" for error messages.

    Raises:
      UserError: a named column is missing, or a row has fewer fields than the header.
    """
    reader = csv.reader(io.StringIO(read_text(path, encoding), newline=""))
    header = next(reader, None)
    if header is None:
        raise UserError(f"{path}: the file is empty; it needs a header row")
    header = [h.strip() for h in header]
    missing = [c for c in columns if c not in header]
    if missing:
        shown = ", ".join(h for h in header[:20] if h) + (", ..." if len(header) > 20 else "")
        raise UserError(f"{path}: no column {missing[0]!r} (columns: {shown}); {hint}")
    where_col = {c: header.index(c) for c in columns}
    rows = []
    for number, fields in enumerate(reader, start=1):
        if not fields:
            continue  # a blank line, as at the end of many files
        where = f"{path} row {number} (line {reader.line_num})"
        if len(fields) < len(header):
            raise UserError(
                f"{where}: {len(fields)} fields but the header has {len(header)}; fix the row"
            )
        rows.append((where, {c: fields[i] for c, i in where_col.items()}))
    return rows


def read_jsonl(
    path: str, columns: list[str], encoding: str, hint: str = COLUMN_HINT
) -> list[tuple[str, dict]]:
    """Rows of a JSON-lines file (one object per line), like `read_csv`; values become strings.

    Raises:
      UserError: a line is not a JSON object, or lacks a named key.
    """
    rows = []
    for line_number, line in enumerate(read_text(path, encoding).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} row {len(rows) + 1} (line {line_number})"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: not valid JSON ({e.msg}); one object per line") from None
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        missing = [c for c in columns if c not in obj]
        if missing:
            raise UserError(f"{where}: no key {missing[0]!r} (keys: {', '.join(obj)}); {hint}")
        rows.append((where, {c: "" if obj[c] is None else str(obj[c]) for c in columns}))
    return rows
