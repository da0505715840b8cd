"""flower_quickstart: a Flower / scikit-learn app."""
