"""Local command lines that use no Ray: training, evaluation, weights files, the demo."""
