"""The attention figures: drawn from numpy maps (figures.py), and the model's maps for the first
eval images (attention.py)."""
