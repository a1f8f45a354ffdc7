"""CLAN-R50 on FGVC-Aircraft (100 variants): the recipe of docs/MODEL.md.

    python -m clan_jax.datasets.prepare --dataset=aircraft --manual_dir=DIR  # fgvc-aircraft-2013b.tar.gz
    python main.py --config=configs/aircraft.py --workdir=runs/aircraft \
        --config.dataset.manual_dir=DIR --config.init.torch_checkpoint=resnet50-0676ba61.pth

Trains on `trainval` (6,667), evaluates on `test` (3,333), with the 20-pixel copyright
banner cropped; --config.dataset.aircraft_label=family (70) or manufacturer (30) changes
the task. Expected result: not yet measured by this project; PMG reports 93.4% and
MMAL-Net 94.7% top-1 with ResNet-50 at 448 px (docs/MODEL.md).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.name = 'aircraft'
  config.dataset.train_split = 'trainval'
  return config
