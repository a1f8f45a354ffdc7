"""Your own images on a CPU: a small CLAN-R18 fine-tuned from ImageNet weights at 128 px.

    # root/train/<class>/*.jpg and root/test/<class>/*.jpg (docs/DATA.md)
    wget https://download.pytorch.org/models/resnet18-f37072fd.pth   # ImageNet-1k, 45 MB
    python main.py --config=configs/folder_small.py --workdir=runs/my_birds \
        --config.dataset.root=$HOME/my_birds --config.init.torch_checkpoint=resnet18-f37072fd.pth

Expected time, as measured on 2 idle CPU cores (TIMING): TIMING. Expected accuracy: not
measured by this project (it depends on your images).

Why ImageNet weights: from scratch, a ResNet learns from a few hundred real photos only the
easy cues (the demo needs 3,200 synthetic images whose classes differ in clear details, and
350 steps, to get there); a pretrained backbone brings edges, textures and parts, so a few
epochs fine-tune it. The file is torchvision's ResNet-18 (without torch, the same weights as
model.safetensors from https://huggingface.co/timm/resnet18.tv_in1k). Nothing to download:
add --config.init.from_scratch=True --config.optimizer.backbone_learning_rate=2e-3 (the
demo's rate for every layer), for a fraction of the accuracy.

The model is the demo's (CLAN-R18, clca_dim 64, head_dim 128), 128 px crops of 146 px
images (448 of 512, scaled), batch 16, AdamW: the backbone at 1e-4, the new layers (CLCA,
CLSA, heads, the classifier) at 1e-3, a one-epoch warm-up, then cosine to 0. One evaluation
and checkpoint per epoch; at the end, the attention figures of the first 8 test images as
PNGs under the workdir's visualizations/ (docs/VISUALIZE.md). The full-size recipe
(configs/default.py with dataset.name='folder': CLAN-R50 at 448 px, 100 epochs) and how the
two compare in time: docs/DATA.md, *Your own images*.
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
