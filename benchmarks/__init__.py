"""nndiff-bench: a harness for neural network diffusion on train-once-for-all personalization."""
