"""Test helpers, in one place: paths and command runs, configs, fake datasets in the
official layouts, fixed-seed torch fixtures, the shared tiny trained model (conftest.py turns
them into fixtures)."""
