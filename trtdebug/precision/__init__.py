"""Reduced-precision triage: convert a model to FP16/BF16 with nodes kept in FP32
(:mod:`~trtdebug.precision.convert`), and find which nodes introduce the error
(:mod:`~trtdebug.precision.attribution`)."""
