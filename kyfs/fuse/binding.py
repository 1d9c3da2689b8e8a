"""The one place that loads the FUSE binding (mfusepy) and picks libfuse3.

mfusepy loads libfuse2 first when both are installed; the environment variable
``FUSE_LIBRARY_NAME=fuse3``, set before the import, makes it load libfuse3
(needed for UTIME_NOW/UTIME_OMIT, ``O_TRUNC`` in open, and the only library on
fuse3-only systems). Every kyfs module that needs the binding imports it from
here, so the choice is made once. Importing this module loads libfuse: keep it
out of code paths that do not mount (the CLI imports it lazily).
"""

from __future__ import annotations

import os

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

import mfusepy

FUSE = mfusepy.FUSE
FuseOSError = mfusepy.FuseOSError
Operations = mfusepy.Operations
fuse_major_version: int = mfusepy.fuse_version_major

__all__ = ["FUSE", "FuseOSError", "Operations", "fuse_major_version", "mfusepy"]
