"""The report as strict JSON (non-finite floats as strings; see :mod:`trtdebug.comparison.report`), and back.

:func:`load_report` lives here, beside :func:`write_json`, so the file format has one home:
what one writes the other reads.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

from trtdebug.comparison.report import Report
from trtdebug.errors import InputError, ReportFormatError
from trtdebug.util.files import write_text_atomic


def report_json(report: Report, *, indent: int = 1) -> str:
    """``report.to_dict()`` as text; ``allow_nan=False`` guarantees no bare NaN/Infinity slips out."""
    return json.dumps(report.to_dict(), indent=indent, allow_nan=False)


def write_json(report: Report, path: Union[str, os.PathLike]) -> Path:
    """Write the JSON report atomically (an interrupted run never leaves half a file)."""
    return write_text_atomic(path, report_json(report) + "\n")


def load_report(path: Union[str, os.PathLike]) -> Report:
    """Read a report written by :func:`write_json` back into a :class:`Report`.

    Raises :class:`~trtdebug.errors.ReportFormatError` (exit code 2) with one line naming
    the file for a file that is not valid JSON, not a trtdebug report, of a newer report
    version, or malformed; :class:`~trtdebug.errors.InputError` when it cannot be read.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read report {os.fspath(path)}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ReportFormatError(f"{os.fspath(path)}: not a JSON file ({exc})") from exc
    try:
        return Report.from_dict(data)
    except ReportFormatError as exc:
        raise ReportFormatError(f"{os.fspath(path)}: {exc}") from exc
