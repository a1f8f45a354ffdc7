"""Default configuration: every field the project reads, with its default.

    python main.py --config=configs/default.py --workdir=/tmp/clan

Dataset recipes (configs/cub.py, ...) start from this file and override what differs.
Path fields default to '' (never None: ml_collections cannot override a None field
from the command line).
Each key's comment (the comment lines just above its assignment and the one at its end) is
its help in `python main.py --config=... --print_config` (clan_jax/config/print_config.py).
"""

import dataclasses

import ml_collections

from clan_jax.datasets.synthetic_images import SyntheticSpec
from clan_jax.models.fields import ModelConfig


def get_model_config() -> ml_collections.ConfigDict:
  """The model section: ModelConfig's defaults (docs/MODEL.md).

  Each field's meaning and allowed values: its 'help' in clan_jax/models/fields.py, the
  one place the fields are defined (validation, the benchmark and create_model read it).
  """
  # Nested dicts become ConfigDicts (head_loss_weights); tuples stay tuples (mid_stages).
  values = dataclasses.asdict(ModelConfig())
  # A field whose choices mix types ('auto' or a number: stem_channels) takes either: a
  # recipe's `= 4` and `--config.model.stem_channels=4` set the int, `=auto` the string.
  for field in dataclasses.fields(ModelConfig):
    if len({type(choice) for choice in field.metadata.get('choices', ())}) > 1:
      values[field.name] = ml_collections.FieldReference(values[field.name], field_type=object)
  return ml_collections.ConfigDict(values)


def get_dataset_config() -> ml_collections.ConfigDict:
  """The dataset section: which data, where it is, and the input pipeline (docs/DATA.md)."""
  dataset = ml_collections.ConfigDict()
  # 'cub', 'cars', 'aircraft', 'dogs', 'folder' (root/<split>/<class>/<image>), 'synthetic',
  # 'tfds' (a stock TFDS dataset: tfds_name).
  dataset.name = 'cub'
  dataset.tfds_name = ''  # For 'tfds': e.g. 'oxford_flowers102' or 'food101:2.1.0'.
  dataset.image_key = 'image'  # For 'tfds': the feature holding the image.
  dataset.label_key = 'label'  # For 'tfds': the feature holding the label.
  dataset.data_dir = ''  # TFDS data dir; '': $TFDS_DATA_DIR or ~/tensorflow_datasets.
  dataset.manual_dir = ''  # The original archives; '': <data_dir>/downloads/manual.
  dataset.root = ''  # For 'folder'.
  dataset.num_classes = 0  # 0: from the dataset.
  dataset.train_split = 'train'  # The split (or TFDS slice) trained on.
  dataset.eval_split = 'test'  # The split evaluated and reported.
  # Splits take TFDS slices for every dataset, e.g. train_split='train[:90%]' with
  # val_split='train[90%:]'. The best checkpoint is chosen on val_split: 'auto' is the
  # dataset's validation split when it has one that training does not use, else none;
  # '' is none: the best is then chosen on eval_split, as the peers do (docs/TRAINING.md).
  dataset.val_split = 'auto'
  dataset.resize_size = 512  # Images are resized to this square size, then cropped.
  # The crop's side (random in training, central in eval); a multiple of 32.
  dataset.crop_size = 448
  dataset.augment = ml_collections.ConfigDict()
  dataset.augment.random_crop = True  # False: the central crop in training too.
  dataset.augment.flip = True  # Random horizontal flip.
  # Random resized crop (Inception-style) of the resized image instead of the plain crop.
  dataset.augment.random_resized_crop = False
  dataset.augment.crop_area = (0.25, 1.0)  # Its area range, as a fraction of the image.
  dataset.augment.color_jitter = 0.0  # Brightness/contrast/saturation strength, 0: off.
  dataset.cache = False  # Keep decoded, resized uint8 images in RAM (CUB at 512: ~9 GB).
  dataset.shuffle_seed = 0  # Keys the order of every epoch and every augmentation.
  dataset.aircraft_label = 'variant'  # 'variant' (100 classes), 'family' (70), 'manufacturer' (30).
  dataset.aircraft_crop_banner = True  # Remove the 20-pixel copyright banner at the bottom.
  dataset.synthetic = ml_collections.ConfigDict(dataclasses.asdict(SyntheticSpec()))
  return dataset


def get_optimizer_config() -> ml_collections.ConfigDict:
  """SGD with momentum; the learning rates are for `base_batch_size` and scale linearly.

  The real-dataset recipe of CLAN_SPEC v2 (docs/MODEL.md). Peers that make one optimiser
  step per batch use about 1e-3 for the backbone at batch 16 (DCL 8e-4 with 10x for new
  layers, CAL 1e-3, API-Net 0.01 at batch 120, mmpretrain 0.01 at batch 64); the table of
  their scripts, and where each value was read: docs/TRAINING.md.
  """
  optimizer = ml_collections.ConfigDict()
  optimizer.name = 'sgd'  # 'sgd', or 'adamw' (decoupled weight decay) for training from scratch.
  # New layers (CLCA, CLSA, heads, fc when K != 1000): 10x the backbone's, as DCL.
  optimizer.learning_rate = 0.01
  optimizer.backbone_learning_rate = 0.001  # The pretrained ResNet.
  optimizer.base_batch_size = 16  # The batch size the learning rates are for.
  optimizer.momentum = 0.9  # SGD only.
  optimizer.weight_decay = 5e-4  # PMG's, API-Net's and mmpretrain's.
  optimizer.decay_norm_and_bias = True  # torch's default; False excludes BN and biases.
  optimizer.grad_clip_norm = 0.0  # Global-norm clipping; 0: off.
  optimizer.label_smoothing = 0.0  # 0: off.
  # Linear warm-up from 0, then cosine to 0, per step. 5 epochs (mmpretrain's) keep the
  # new layers' first, large gradients from disturbing the pretrained backbone.
  optimizer.warmup_epochs = 5.0
  return optimizer


def get_visualize_config() -> ml_collections.ConfigDict:
  """Attention figures (docs/VISUALIZE.md): --mode=visualize, TensorBoard in training, PNGs
  after training."""
  visualize = ml_collections.ConfigDict()
  visualize.num_images = 8  # The first N images of the eval split, one figure each.
  # The mid-level position whose CLCA row is shown, as a fraction (row, col) of the mid map.
  visualize.query_position = (0.5, 0.5)
  visualize.every_eval = True  # Also write the figures to TensorBoard at each evaluation.
  # Also write them as PNGs under workdir/visualizations/ once training has ended (the demo
  # does: a newcomer sees where the model looks without a second command).
  visualize.after_training = False
  return visualize


def get_preflight_config() -> ml_collections.ConfigDict:
  """--mode=preflight (and its short form at the start of every run): docs/TRAINING.md."""
  preflight = ml_collections.ConfigDict()
  preflight.num_images = 256  # Training images put through the ImageNet sanity check.
  # Below this fraction of images with an ImageNet class of the dataset's group in their
  # top-5, the run warns loudly and preflight exits non-zero.
  preflight.min_group_fraction = 0.5
  preflight.timing_steps = 3  # Training steps timed after the compiled first one.
  return preflight


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = get_model_config()
  config.dataset = get_dataset_config()
  config.optimizer = get_optimizer_config()
  config.batch_size = 16  # Global, over all devices and processes.
  config.eval_batch_size = 0  # 0: batch_size.
  config.num_epochs = 100  # The run's length unless num_train_steps is set.
  config.num_train_steps = -1  # -1: from num_epochs; when set, also the schedule's length.
  config.log_every_steps = 50  # Training metrics (log and TensorBoard) every N steps.
  config.eval_every_steps = -1  # -1: every epoch; 0: only at the end.
  config.checkpoint_every_steps = 1000  # Also at every evaluation and at the end.
  config.keep_checkpoints = 2  # The last N, plus the best by eval top-1.
  config.seed = 0  # Initialisation of the parts not loaded from a checkpoint.
  config.init = ml_collections.ConfigDict()
  # An ImageNet torchvision ResNet (.pth or .safetensors) for the backbone.
  config.init.torch_checkpoint = ''
  config.init.torch_backbone_only = True  # False: the file is a whole model of this config.
  config.init.checkpoint = ''  # A variables checkpoint written by clan_jax.convert.
  config.init.allowed_globals = ''  # Comma-separated globals to allow in a trusted .pth.
  # Real datasets need ImageNet weights: a run without torch_checkpoint or checkpoint refuses
  # to start unless this is True (the synthetic dataset trains from scratch anyway).
  config.init.from_scratch = False
  config.eval = ml_collections.ConfigDict()
  config.eval.flip = False  # Also average the logits of each image's mirror image.
  config.preflight = get_preflight_config()
  config.visualize = get_visualize_config()
  return config
