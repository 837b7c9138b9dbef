"""Imports every attention module so that each registers itself. Add new types here."""

from . import clustered, iclustered, linear, pooled, softmax  # noqa: F401
