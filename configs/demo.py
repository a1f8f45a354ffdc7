"""Demo: a small CLAN-R18 trained from scratch on the embedded synthetic dataset.

    make demo      # = python main.py --config=configs/demo.py --workdir=runs/demo

Nothing is downloaded. Expected, as measured on 2 CPU cores: 5-10 minutes; fused top-1 on
the synthetic test split (20 classes: chance 0.05) 0.42 with the default seed 0, 0.41 and
0.60 with seeds 1 and 2 on Intel VMs; 0.54 with seed 0 on an AMD EPYC VM (800 steps from
scratch end early in the learning curve, where even the CPU's float rounding moves a run by
+-0.1); docs/RESULTS.md.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.update(depth=18, clca_dim=64, head_dim=128)
  config.dataset.update(name='synthetic', resize_size=104, crop_size=96, cache=True)
  # 96-px images, and 200 per class: with 60, a network from scratch memorises them.
  config.dataset.synthetic.update(image_size=96, train_per_class=200)
  config.batch_size = 16
  config.num_train_steps = 800
  # From scratch, AdamW leaves SGD's long initial plateau out; one rate for all layers.
  config.optimizer.update(name='adamw', learning_rate=1e-3, backbone_learning_rate=1e-3,
                          weight_decay=1e-4, warmup_epochs=0.5)
  config.log_every_steps = 50
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 400
  return config
