"""CLAN-R50 on Stanford Cars (196 classes): the recipe of docs/MODEL.md.

    python -m clan_jax.datasets.prepare --dataset=cars --manual_dir=DIR
    python main.py --config=configs/cars.py --workdir=runs/cars \
        --config.dataset.manual_dir=DIR --config.init.torch_checkpoint=resnet50-0676ba61.pth

DIR holds cars_train.tgz, cars_test.tgz, car_devkit.tgz and cars_test_annos_withlabels.mat
(docs/DATA.md: the original host is gone). Expected result: not yet measured by this
project; PMG reports 95.1% top-1 with ResNet-50 at 448 px (docs/MODEL.md).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.name = 'cars'
  return config
