"""CLAN-R50 on Stanford Dogs (120 breeds): the recipe of docs/MODEL.md.

    python -m clan_jax.datasets.prepare --dataset=dogs --manual_dir=DIR   # images.tar, lists.tar
    python main.py --config=configs/dogs.py --workdir=runs/dogs \
        --config.dataset.manual_dir=DIR --config.init.torch_checkpoint=resnet50-0676ba61.pth

Expected result: not yet measured by this project. Beware: Stanford Dogs' images come from
ImageNet, so an ImageNet-pretrained backbone has seen its test images.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.name = 'dogs'
  return config
