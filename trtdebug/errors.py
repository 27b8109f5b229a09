"""The exception tree and the exit codes the CLI maps it to.

Every error the library raises on purpose derives from :class:`TrtDebugError` and carries
the exit code the CLI should use, so the CLI needs one ``except`` clause, and the original
cause (a TensorRT or ONNX Runtime exception) stays chained with ``raise ... from exc`` for
``--verbose``::

    TrtDebugError                       (exit 4: a bug in trtdebug, if it ever escapes)
     +-- UsageError                     (exit 2) flags that make no sense together, bad values
     +-- InputError                     (exit 2) the user's data is wrong
     |    +-- ModelLoadError                     missing file, not an ONNX model, bad external data
     |    +-- FeedError                          unknown input name, wrong shape or dtype, missing input
     |    +-- OutputsFormatError                 a saved-outputs directory or JSON file we cannot read
     |    +-- InputsDifferError                  two saved runs to compare were made on different inputs
     |    +-- ReportFormatError                  a file that is not a (readable) trtdebug JSON report
     +-- BackendError                   (exit 3) a backend could not load, build or run the model
          +-- BackendUnavailableError            tensorrt / onnxruntime / cuda-python / a GPU is missing
          +-- ParseError                         the TensorRT ONNX parser rejected the model
          +-- BuildError                         the engine build failed
          +-- InferenceError                     running the model failed
     +-- MetricError                    (exit 3) a user's --metric function raised or returned nonsense

An accuracy failure is not an exception: it is a result (exit 1).
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_USAGE = 2
EXIT_BACKEND = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 every compared tensor passed; 1 an accuracy failure; 2 bad usage or bad input; "
    "3 a backend failed to load, build or run the model; 4 an internal error; 130 interrupted."
)


class TrtDebugError(Exception):
    """Base of every error trtdebug raises on purpose."""

    exit_code = EXIT_INTERNAL


class UsageError(TrtDebugError):
    """Options that are malformed or contradict each other."""

    exit_code = EXIT_USAGE


class InputError(TrtDebugError):
    """Something the user gave us (a file, a tensor) is wrong."""

    exit_code = EXIT_USAGE


class ModelLoadError(InputError):
    """The model file is missing, unreadable, or not an ONNX model."""


class FeedError(InputError):
    """Input data does not match the model: unknown name, wrong shape/dtype, missing input."""


class OutputsFormatError(InputError):
    """Saved outputs (ours or Polygraphy's JSON) cannot be read."""


class InputsDifferError(InputError):
    """Two runs to compare did not see the same inputs, so their differences mean nothing."""


class ReportFormatError(InputError):
    """A JSON report to load is malformed, of another format, or of a newer version."""


class BackendError(TrtDebugError):
    """A backend failed to load, build or run the model. Its own message is kept in the text."""

    exit_code = EXIT_BACKEND


class BackendUnavailableError(BackendError):
    """A backend's library (or the GPU it needs) is not installed or not usable here."""


class ParseError(BackendError):
    """TensorRT's ONNX parser rejected the model.

    The message is one line naming every failing node and its cause; ``details`` keeps the
    parser's and TensorRT's full multi-line text (for ``--verbose`` and JSON reports).
    """

    def __init__(self, message: str, *, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details or message


class BuildError(BackendError):
    """TensorRT could not build an engine."""


class InferenceError(BackendError):
    """A backend failed while running the model."""


class MetricError(TrtDebugError):
    """A user-supplied accuracy metric (``--metric``) raised or returned something that is not a verdict.

    Exit 3, like a backend failing to run: the user's code is a part of the judge that broke while
    judging, not a bad flag (a metric that cannot be *loaded* is a UsageError, exit 2)."""

    exit_code = EXIT_BACKEND


def missing_dependency(package: str, extra: str | None = None, *, what: str | None = None) -> BackendUnavailableError:
    """An error naming the missing package and how to install it."""
    hint = f"pip install 'trtdebug[{extra}]'" if extra else f"pip install {package}"
    return BackendUnavailableError(f"{what or package} is not available: {package} is not installed ({hint})")
