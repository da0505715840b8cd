"""Adapters for Flower users (the ``flower`` extra): keep Flower, gain fedwarden's pipeline."""
