"""CLAN-R50 on CUB-200-2011 (200 bird species): the recipe of docs/MODEL.md.

    python -m clan_jax.datasets.prepare --dataset=cub --manual_dir=DIR   # holds CUB_200_2011.tgz
    wget https://download.pytorch.org/models/resnet50-0676ba61.pth   # ImageNet-1k V1
    python main.py --config=configs/cub.py --workdir=runs/cub --mode=preflight \
        --config.dataset.manual_dir=DIR --config.init.torch_checkpoint=resnet50-0676ba61.pth
    python main.py --config=configs/cub.py --workdir=runs/cub \
        --config.dataset.manual_dir=DIR --config.init.torch_checkpoint=resnet50-0676ba61.pth

The preflight takes minutes on a CPU: split sizes, an ImageNet check of pipeline and weights,
step time. Without a checkpoint the run refuses to start (--config.init.from_scratch=True
forces it; accuracy then collapses). Expected result: not yet measured by this project. A
plain torchvision ImageNet-1k ResNet-50 with this recipe (--config.model.name=resnet) should
reach about 85-86.5% top-1, the range FGVC papers quote for that baseline at 448 px
(CLAN_SPEC v2, docs/TRAINING.md); CLAN-R50 is worth its cost only if it beats that run, same
seeds, by more than their spread: PMG and MMAL-Net report 89.6%, API-Net 87.7% (best test
checkpoint). mmpretrain's 88.45% ResNet-50 uses ImageNet-21k weights and 600 -> 448 px: not
comparable. Protocol of eval_results.json: the final checkpoint, single centre crop,
`fusion='sum'` (--config.eval.flip=True adds the mirror image).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset.name = 'cub'
  return config
