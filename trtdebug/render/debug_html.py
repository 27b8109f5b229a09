"""A ``trtdebug debug`` report (the JSON ``reduce``, ``unsupported``, ``tactics`` and ``fusion`` write) as one HTML page.

Rendered by jinja2 from ``templates/debug.html.j2`` with autoescaping on: node names, tensor
names and TensorRT's error text come from the user's model and reach the page escaped.  The
page is self-contained (inline CSS, no scripts), like the comparison report's.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Union

from trtdebug.util.files import write_text_atomic

_DEFAULTS = {"summary": [], "failing": [], "buildable": [], "steps": [], "notes": [], "repro": None,
             "minimal_model": None, "oracle": "", "builds": 0, "oracle_calls": 0, "seconds": 0.0, "model": "",
             "culprit_nodes": [], "culprit_tactics": [], "fused_layers": [], "workaround": None, "replay": None}


def render_debug_html(data: Mapping[str, Any]) -> str:
    """The page for one debug report (a dict as in ``report.json`` / ``unsupported.json``)."""
    return _environment().get_template("debug.html.j2").render(data={**_DEFAULTS, **dict(data)})


def write_debug_html(data: Mapping[str, Any], path: Union[str, "os.PathLike[str]"]) -> Path:
    return write_text_atomic(path, render_debug_html(data))


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("trtdebug.render", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined)
