"""Training: the run's set-up, the pure steps, the optimizer, the loop, exact evaluation,
checkpoints, the mesh and the processes of a multi-host job. Nothing here imports a command."""
