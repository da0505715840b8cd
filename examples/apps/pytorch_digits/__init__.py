"""A PyTorch app for fedwarden: a small CNN on scikit-learn's 8x8 digits (see README.md)."""
