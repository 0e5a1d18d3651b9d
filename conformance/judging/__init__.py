"""Stage 2, judging: the float64 oracle, the tolerance model, the comparison, the references
(TensorFlow, oracle, golden) and the run's verdict."""
