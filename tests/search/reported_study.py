"""One finished 4-trial digits study that the report, `studies` and dashboard tests share.

Its fixtures (`report_study`, `report_dir`) live in tests/search/conftest.py, so the study
runs once in a session whichever test asks first.
"""

from __future__ import annotations

STUDY_NAME = "reported"
# Every family, both blocks, both BN positions, two optimizers: the grouped comparison has rows.
REPORT_STUDY = """
[study]
name = "{name}"
num_samples = 4
seed = 3

[data]
dataset = "digits"

[train]
epochs = 2
batch_size = 64

[space]
family = ["wrn", "resnet", "preact-resnet", "plain"]
depth = [8, 10, 11]
width = [1, 2]
block = ["basic", "bottleneck"]
bn_position = ["before_add", "after_add"]
optimizer = ["sgd", "adam"]
# Per optimizer, as the quickstart searches it (the report once left such an lr out).
lr.sgd = {{ low = 0.03, high = 0.3, log = true }}
lr.adam = {{ low = 0.001, high = 0.01, log = true }}

[scheduler]
kind = "none"

[resources]
cpus_per_trial = 1

[tracking]
registered_model = "{name}-model"
"""
