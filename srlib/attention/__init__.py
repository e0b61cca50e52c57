"""Attention mechanisms for SR and the bucket machinery they share."""
