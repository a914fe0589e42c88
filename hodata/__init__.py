"""hodata: learning-free 3D hand-object reconstruction from RGB clips (HOMAN, 3DV 2021)."""

__version__ = "0.1.0"
