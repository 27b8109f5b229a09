"""TensorRT backend.  Nothing here imports ``tensorrt`` at module level.

All version differences (8.6, 10.x, 11.x) are detected by name in ``compat.py`` and
stay inside this package.
"""
from trtdebug.runners.tensorrt.config import Profile, TrtBuildConfig

__all__ = ["Profile", "TrtBuildConfig"]
