"""The report as strict JSON (non-finite floats as strings; see :mod:`trtdebug.comparison.report`)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

from trtdebug.comparison.report import Report
from trtdebug.util.files import write_text_atomic


def report_json(report: Report, *, indent: int = 1) -> str:
    """``report.to_dict()`` as text; ``allow_nan=False`` guarantees no bare NaN/Infinity slips out."""
    return json.dumps(report.to_dict(), indent=indent, allow_nan=False)


def write_json(report: Report, path: Union[str, os.PathLike]) -> Path:
    """Write the JSON report atomically (an interrupted run never leaves half a file)."""
    return write_text_atomic(path, report_json(report) + "\n")
