"""Inference: pre-processing, model run, post-processing (the Predictor comes with issue 4)."""
