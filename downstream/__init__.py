"""Downstream evaluation: train inspection models on generated pairs, score them on real test images."""
