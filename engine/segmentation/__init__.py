"""Features of a pretrained run → feature cache → factorised pixel-classifier ensemble → a fitted classifier."""
