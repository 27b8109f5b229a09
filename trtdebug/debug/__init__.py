"""Bisectors: find which piece of a model (nodes, layers, tactics, tensors) to blame.

The layers, from pure to concrete:

* :mod:`~trtdebug.debug.search`   - the search over ordered candidates (bisection, then delta
  debugging), the verdict journal that lets a killed search resume, and the executors that
  judge candidates on one or several workers.  Knows nothing about models.
* :mod:`~trtdebug.debug.oracle`   - judges of one candidate *model*: a Python callable, an external
  command, ONNX Runtime failing, outputs differing from the reference, TensorRT failing to build.
  Each runs in a child process with a timeout; a crash or hang is a verdict.
* :mod:`~trtdebug.debug.subgraph` - sanitizing a model and cutting a node subset out of it, fed with
  the true values of its inputs.
* :mod:`~trtdebug.debug.reduce`   - ``trtdebug debug reduce``: the three above put together, and the
  repro bundle it writes.
* :mod:`~trtdebug.debug.unsupported` - ``trtdebug debug unsupported``: the parser's capability report
  first, then builds of the subgraphs it accepts, to find the nodes TensorRT cannot build.
* :mod:`~trtdebug.debug.surgeon`  - ``trtdebug surgeon sanitize|extract``: the same surgery, for users.

Nothing here imports TensorRT or ONNX Runtime at module level.
"""
