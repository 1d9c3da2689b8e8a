"""kyfs: key-value workspaces that live as a filesystem.

Layers (see docs/design.md): paths, errors, names, config, migrations and store
at the bottom; workspaces over store; openfile and fs (the FUSE adapter) over
those; mount and cli on top.
"""

__version__ = "0.1.0"
