"""CLAN-R50 on Stanford Dogs (120 breeds): the recipe of docs/MODEL.md.

    python -m clan_jax.datasets.prepare --dataset=dogs --manual_dir=DIR   # images.tar, lists.tar
    wget https://download.pytorch.org/models/resnet50-0676ba61.pth   # ImageNet-1k V1
    python main.py --config=configs/dogs.py --workdir=runs/dogs --mode=preflight \
        --config.dataset.manual_dir=DIR --config.init.torch_checkpoint=resnet50-0676ba61.pth
    python main.py --config=configs/dogs.py --workdir=runs/dogs \
        --config.dataset.manual_dir=DIR --config.init.torch_checkpoint=resnet50-0676ba61.pth

Without a checkpoint the run refuses to start (--config.init.from_scratch=True forces it).
Expected result: not yet measured by this project, and not calibrated: CLAN_SPEC v2's
reference table has no Dogs row. Compare CLAN-R50 with a plain ResNet-50 trained by the same
recipe and seeds (--config.model.name=resnet); CLAN is worth its cost only if it wins by more
than their spread. Beware: Stanford Dogs' images come from ImageNet, so an ImageNet-pretrained
backbone has seen its test images and every figure is optimistic. Protocol of
eval_results.json: the final checkpoint, single centre crop, `fusion='sum'`.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.name = 'dogs'
  return config
