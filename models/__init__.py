"""EdgeWatch models: training, evaluation and ONNX export of the anomaly and failure-risk models."""
