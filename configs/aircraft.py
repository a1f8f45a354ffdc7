"""CLAN-R50 on FGVC-Aircraft (100 variants): the recipe of docs/MODEL.md.

    python -m clan_jax.datasets.prepare --dataset=aircraft --manual_dir=DIR  # the .tar.gz
    wget https://download.pytorch.org/models/resnet50-0676ba61.pth   # ImageNet-1k V1
    python main.py --config=configs/aircraft.py --workdir=runs/aircraft --mode=preflight \
        --config.dataset.manual_dir=DIR --config.init.torch_checkpoint=resnet50-0676ba61.pth
    python main.py --config=configs/aircraft.py --workdir=runs/aircraft \
        --config.dataset.manual_dir=DIR --config.init.torch_checkpoint=resnet50-0676ba61.pth

DIR holds fgvc-aircraft-2013b.tar.gz. Trains on `trainval` (6,667), evaluates on `test`
(3,333), with the 20-pixel copyright banner cropped; --config.dataset.aircraft_label=family
(70) or manufacturer (30) changes the task. Without a checkpoint the run refuses to start
(--config.init.from_scratch=True forces it). Expected result: not yet measured by this
project. A plain torchvision ImageNet-1k ResNet-50 with this recipe
(--config.model.name=resnet) should reach about 90-92% top-1 on variants, the range FGVC
papers quote for that baseline at 448 px (CLAN_SPEC v2, docs/TRAINING.md); CLAN-R50 must beat
that run, same seeds, by more than their spread to be worth its cost; PMG reports 93.4%
(best test checkpoint), MMAL-Net 94.7%.
Protocol of eval_results.json: the final checkpoint, single centre crop, `fusion='sum'`.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.name = 'aircraft'
  config.dataset.train_split = 'trainval'
  return config
