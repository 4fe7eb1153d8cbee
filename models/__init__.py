"""EdgeWatch models: training, evaluation and ONNX export of the anomaly and failure-risk models."""

REFERENCES = ("training", "first", "rolling", "deployed")
"""The windows an asset can be standardised against (:func:`models.pipeline.standardised`)."""
