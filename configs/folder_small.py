"""Your own images on a CPU: a small CLAN-R18 fine-tuned from ImageNet weights at 128 px.

    # root/train/<class>/*.jpg and root/test/<class>/*.jpg (docs/DATA.md)
    wget https://download.pytorch.org/models/resnet18-f37072fd.pth   # ImageNet-1k, 45 MB
    python main.py --config=configs/folder_small.py --workdir=runs/my_birds \
        --config.dataset.root=$HOME/my_birds --config.init.torch_checkpoint=resnet18-f37072fd.pth

Expected time for 10 classes x 50 images (40 of them for training: 25 steps an epoch, 375
in all, 15 evaluations), as measured on 2 idle CPU cores (AMD EPYC VM, 2026-12-04, on a
generated folder of that size): 10 min 56 s from the command to the figures, 0.6-0.9
steps/s, about 40 s an epoch (the demo ran at 1.1-1.3 steps/s on that VM that hour). Time
grows with the number of training images; --mode=preflight (same flags) times a few steps
on your machine first. The full-size recipe, CLAN-R50 at 448 px for 100 epochs, takes about
27 s a step on such a CPU (about 20 hours for the same folder): docs/DATA.md, *Your own
images*, has both side by side, with a GPU.
Expected accuracy: not measured by this project (it depends on your images).

Why ImageNet weights: from scratch, a ResNet learns from a few hundred real photos only the
easy cues (the demo needs 3,200 synthetic images whose classes differ in clear details, and
350 steps, to get there); a pretrained backbone brings edges, textures and parts, so a few
epochs fine-tune it. The file is torchvision's ResNet-18; without torch, the same weights:
https://huggingface.co/timm/resnet18.tv_in1k/resolve/main/model.safetensors. Nothing to
download: --config.init.from_scratch=True --config.optimizer.backbone_learning_rate=1e-3
(every layer at the new layers' rate), which learns far less from a few hundred photos.

The model is the demo's (CLAN-R18, clca_dim 64, head_dim 128), 128 px crops of 146 px
images (448 of 512, scaled), batch 16, AdamW: the backbone at 1e-4, the new layers (CLCA,
CLSA, heads, the classifier) at 1e-3, a one-epoch warm-up, then cosine to 0, label
smoothing 0.1. Images are decoded and resized once (dataset.cache). One evaluation and
checkpoint per epoch; at the end, the attention figures of the first 8 test images as PNGs
under the workdir's visualizations/ (docs/VISUALIZE.md); `python -m clan_jax.predict
--workdir=runs/my_birds --figures=DIR IMAGE ...` draws them for any image.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.update(depth=18, clca_dim=64, head_dim=128)
  # Decoded and resized once, in the first epoch: a 12-megapixel photo took 0.25 s to decode
  # and resize on one core of the loaded VM (2026-12-04), so a batch of 16 every step would
  # cost more than the step. 1,000 images at 146 px take 64 MB.
  config.dataset.update(name='folder', resize_size=146, crop_size=128, cache=True)
  config.batch_size = 16
  config.num_epochs = 15
  config.optimizer.update(name='adamw', learning_rate=1e-3, backbone_learning_rate=1e-4,
                          weight_decay=1e-4, warmup_epochs=1.0, label_smoothing=0.1)
  config.visualize.after_training = True
  return config
