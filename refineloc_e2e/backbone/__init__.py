"""The I3D backbone: ``i3d`` (the network), ``formats`` (weight file loaders), ``weights`` (manifest,
fetch, registration, ``resolve_stream`` / ``build_i3d``)."""

from refineloc_e2e.backbone.i3d import InceptionI3d
from refineloc_e2e.backbone.weights import build_i3d, resolve_stream

__all__ = ["InceptionI3d", "build_i3d", "resolve_stream"]
