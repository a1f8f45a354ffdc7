"""CLAN-R50 on CUB-200-2011 (200 bird species): the recipe of docs/MODEL.md.

    python -m clan_jax.datasets.prepare --dataset=cub --manual_dir=DIR   # holds CUB_200_2011.tgz
    python main.py --config=configs/cub.py --workdir=runs/cub \
        --config.dataset.manual_dir=DIR --config.init.torch_checkpoint=resnet50-0676ba61.pth

init.torch_checkpoint is torchvision's ImageNet ResNet-50 (IMAGENET1K_V1); without it the
backbone trains from scratch and FGVC accuracy collapses. Expected result: not yet measured
by this project (no GPU run so far); peers report 87.7-89.6% top-1 for ResNet-50 methods at
448 px (docs/MODEL.md), and the mmcls ResNet-50 baseline 88.45%. Protocol of eval_results.json:
single centre crop, `fusion='sum'`, the final checkpoint.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.name = 'cub'
  return config
