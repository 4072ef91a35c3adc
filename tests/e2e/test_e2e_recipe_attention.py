"""End to end: the attention-polyp recipe at ``--scale tiny`` (a smoke run of every step through the real
``nnunet-transfer``/``nnUNetv2_*`` commands).

The gated and gate-free arms differ only in the gates and the weights they start from.
"""

from __future__ import annotations

import pytest

from support.tiny_recipes import test_tiny_recipe_runs_every_arm_and_writes_the_papers_table  # noqa: F401

pytestmark = pytest.mark.slow
RECIPE = "attention-polyp"


def test_tiny_attention_arms_differ_only_in_gates_and_weights(tiny_run):
    from nnunet_transfer.architectures.attention_unet import GATE_KEY_PREFIX
    from nnunet_transfer.transfer.weights import TransferReport

    workspace, _ = tiny_run
    folds = {p.parent.name.split("__")[0]: p for p in workspace.glob("nnUNet_results/Dataset997_*/*/fold_0")}
    gated = TransferReport.load(folds["AttentionUNetTrainer_attPretrainedgates_seed0"] / "transfer_report.json")
    new = [k for k in gated.reinitialised if ".seg_layers." not in k]
    assert new and all(k.startswith(GATE_KEY_PREFIX) for k in new)  # only the gates are new
    plain = TransferReport.load(folds["AttentionUNetTrainer_attPretrainednogates_seed0"] / "transfer_report.json")
    assert not [k for k in plain.reinitialised if ".seg_layers." not in k]  # the same U-Net: everything loads
    assert plain.loaded and set(plain.loaded) == set(gated.loaded)
