"""The models package's exception tree.

    ModelsError
    ├── DatasetError      a dataset folder is wrong (file, key or line/column, why)
    ├── TrainingError     a model cannot be fitted from the data given (too few windows, ...)
    └── ArtifactError     a model folder cannot be read or written

Library errors (pandas, scikit-learn, onnx, onnxruntime) are translated at the boundary
where they occur.
"""

from __future__ import annotations

from edge_agent.errors import ConfigError, EdgeWatchError


class ModelsError(EdgeWatchError):
    """Base class of every error the models package raises on purpose."""


class DatasetError(ModelsError, ConfigError):
    """A dataset is invalid: names the file, where in it (key, line, column) and why."""


class TrainingError(ModelsError):
    """The data cannot give a model (no healthy windows, a single class, ...)."""


class ArtifactError(ModelsError):
    """A model folder is missing, incomplete or not what the command needs."""
