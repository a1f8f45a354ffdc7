"""The training command from the repository root: `python main.py --config=configs/cub.py
--workdir=runs/cub` (clan_jax/main.py, also `python -m clan_jax.main` and `clan-train`)."""

from clan_jax.main import run

if __name__ == '__main__':
  run()
