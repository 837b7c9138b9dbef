"""The objective registry: name -> LightningModule class and its config dataclass."""

from ..registry import Registry

OBJECTIVES: Registry = Registry("objective")
