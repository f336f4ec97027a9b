"""Inference: beam search over the hierarchy (pure) and the predictor (photo -> result)."""
