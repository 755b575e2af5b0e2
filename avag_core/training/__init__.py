"""What training and evaluation need beside the model and the data: losses, optimiser groups, the released
protocol's metrics, scoring a model or a predictor on a dataset, and a progress display."""
