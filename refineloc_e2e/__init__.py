"""refineloc-e2e: raw videos -> I3D features -> RefineLoc weakly-supervised temporal action localisation."""

__version__ = "0.4.0"
