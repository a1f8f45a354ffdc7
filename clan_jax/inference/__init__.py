"""Inference: where a model's variables come from (one choice for every command), prediction
of image files, and the --mode=eval / --mode=visualize runs of a workdir."""
