"""CLAN-R50 on Stanford Cars (196 classes): the recipe of docs/MODEL.md.

    python -m clan_jax.datasets.prepare --dataset=cars --manual_dir=DIR
    wget https://download.pytorch.org/models/resnet50-0676ba61.pth   # ImageNet-1k V1
    python main.py --config=configs/cars.py --workdir=runs/cars --mode=preflight \
        --config.dataset.manual_dir=DIR --config.init.torch_checkpoint=resnet50-0676ba61.pth
    python main.py --config=configs/cars.py --workdir=runs/cars \
        --config.dataset.manual_dir=DIR --config.init.torch_checkpoint=resnet50-0676ba61.pth

DIR holds cars_train.tgz, cars_test.tgz, car_devkit.tgz and cars_test_annos_withlabels.mat
(docs/DATA.md: the original host is gone). Without a checkpoint the run refuses to start
(--config.init.from_scratch=True forces it). Expected result: not yet measured by this
project. A plain torchvision ImageNet-1k ResNet-50 with this recipe (--config.model.name=resnet)
should reach about 92-94% top-1, the range FGVC papers quote for that baseline at 448 px
(CLAN_SPEC v2, docs/TRAINING.md); CLAN-R50 must beat that run, same seeds, by more than their
spread to be worth its cost; PMG reports 95.1% (best test checkpoint). Protocol of
eval_results.json: the final checkpoint, single centre crop, `fusion='sum'`.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.name = 'cars'
  return config
