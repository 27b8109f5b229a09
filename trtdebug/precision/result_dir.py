"""The directory a ``debug precision`` search leaves: ``report.json`` and the model that passes.

The FP16/BF16 and the INT8 searches write the same kind of directory and guard it the same way: it is
written aside and swapped in whole, and an existing one is replaced only if it holds nothing but what
such a search writes (never a directory of the user's).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Sequence

REPORT = "report.json"


class ResultDir:
    """A result directory whose model may be called one of ``model_files``."""

    def __init__(self, model_files: Sequence[str]) -> None:
        self.model_files = tuple(model_files)

    def owned(self, directory: Path) -> Optional[str]:
        """Why ``directory`` is not one of ours (None: it is, and may be replaced)."""
        from trtdebug.util.files import unlisted_entry

        extra = unlisted_entry(directory, [REPORT, *self.model_files])
        return None if extra is None else f"it holds {extra}, which trtdebug did not write"

    def check(self, out_dir) -> None:
        """Refuse a non-empty directory trtdebug did not write, before the search starts."""
        from trtdebug.util.files import check_replaceable

        check_replaceable(out_dir, self.owned)

    def write(self, out_dir, report_data: Mapping[str, object], model, model_file: str, *,
              report: Optional[Path] = None) -> Path:
        """``DIR/report.json`` and ``DIR/<model_file>`` (when there is a model) atomically; the report also at ``report``."""
        from trtdebug.model.loader import save_model
        from trtdebug.util.files import atomic_directory, write_text_atomic

        assert model_file in self.model_files, model_file
        text = json.dumps(report_data, indent=2)
        with atomic_directory(out_dir, owned=self.owned) as staging:
            (staging / REPORT).write_text(text, encoding="utf-8")
            if model is not None:
                save_model(model, staging / model_file)
        if report is not None:
            write_text_atomic(report, text)
        return Path(out_dir)
