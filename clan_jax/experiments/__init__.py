"""Experiments made of many training runs: the ablation's plan, launches and table."""
