"""Parameter and FLOP counts from XLA's cost analysis."""

from clan_jax.perf.model_cost import model_cost
from configs import default
from helpers.commands import run_cli


def test_resnet18_costs_match_torchvision_figures():
  config = default.get_model_config()
  config.update({'name': 'resnet', 'depth': 18})
  cost = model_cost(config, 1000, 224)
  assert cost.params == 11_689_512
  # torchvision lists ResNet-18 at 1.81 GMACs (224 px), padding included; XLA counts only
  # the multiply-adds inside the image, which leaves out 5-7% on ResNet-18's 3x3 convs.
  assert 1.65 <= cost.gmacs <= 1.82, cost


def test_clan_costs_more_than_its_backbone_and_the_cli_prints_both():
  config = default.get_model_config()
  config.depth = 18
  clan = model_cost(config, 10, 64)
  config.name = 'resnet'
  resnet = model_cost(config, 10, 64)
  assert clan.params > resnet.params and clan.flops > resnet.flops
  result = run_cli('-m', 'clan_jax.summary', '--config=configs/default.py',
                   '--config.model.depth=18', '--image_size=64', '--num_classes=10')
  assert 'CLAN-R18' in result.stdout and 'ResNet-18' in result.stdout
  assert f'{clan.params:,}' in result.stdout
