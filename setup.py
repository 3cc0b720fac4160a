"""Only the C extension lives here; everything else about the package is in pyproject.toml.

``streaming.speed._fold`` is the speed layer's per-event fold (``streaming/speed/_fold.c``); without a
compiler the install still works and ``streaming.speed.aggregate`` uses its Python reference instead.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("streaming.speed._fold", ["streaming/speed/_fold.c"], optional=True)])
