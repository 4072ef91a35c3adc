"""End to end with the real ``nnUNetv2_train``: a booby-trapped ``-pretrained_weights`` file never runs, however the
flag is spelled, and a fine-tuning killed in epoch 0 and resumed with ``--c`` loads its pretrained weights again
(checked) or stops saying how to restart, also when its transfer record was deleted. One nnUNetv2_train run per
failure mode."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from nnunet_transfer.pretrained.safe_load import read_checkpoint_file
from nnunet_transfer.workspace import CommandFailed, trainer_variant_source
from support.booby_trap import Payload
from support.mots_run import MOTS_ID, MOTS_NAME, TINY_MOTS

pytestmark = pytest.mark.slow

DYING = "FineTuneTrainer_diesInEpoch0"
#: with DUMP_AND_DIE=FILE the first train step saves the network's weights to FILE and "kills" the run
DYING_BODY = """
def train_step(self, batch):
    import os
    dump = os.environ.get("DUMP_AND_DIE")
    if dump:
        torch.save({k: v.detach().cpu() for k, v in self.network.state_dict().items()}, dump)
        raise KeyboardInterrupt("simulated kill in epoch 0, before the first checkpoint")
    return super().train_step(batch)
"""


def _train(ws, trainer, *extra, dump=None):
    env = {"nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1"}
    if dump is not None:
        env["DUMP_AND_DIE"] = str(dump)
    return ws.nnunet("nnUNetv2_train", MOTS_ID, "3d_fullres", "0", "-tr", trainer, "-device", "cpu", *extra,
                     extra_env=env)


def test_nnunet_train_refuses_a_booby_trapped_file_given_with_equals_after_a_safe_one(mots_pretrained, tmp_path):
    ws = mots_pretrained["workspace"]
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.pth"
    torch.save({"network_weights": {}, "hook": Payload(marker)}, evil)
    with pytest.raises(CommandFailed) as info:
        _train(ws, TINY_MOTS, "-pretrained_weights", str(mots_pretrained["checkpoint"]),
               f"-pretrained_weights={evil}")
    assert "refused to load" in str(info.value) and str(evil) in str(info.value)
    assert not marker.exists()


def test_resume_after_a_kill_in_epoch_0_loads_the_weights_again_or_stops(mots_pretrained, tmp_path):
    ws = mots_pretrained["workspace"]
    ws.write_trainers("dying", [trainer_variant_source(DYING, "FineTuneTrainer", body=DYING_BODY)])
    pretrained = tmp_path / "pretrained.pth"
    shutil.copy(mots_pretrained["checkpoint"], pretrained)
    saved = read_checkpoint_file(pretrained)["network_weights"]
    fold = ws.model_folder(MOTS_NAME, DYING, "3d_fullres") / "fold_0"

    with pytest.raises(CommandFailed, match="simulated kill"):
        _train(ws, DYING, "-pretrained_weights", str(pretrained), dump=tmp_path / "first.pt")
    assert (fold / "transfer_report.json").is_file() and not list(fold.glob("checkpoint_*.pth"))

    # --c finds no checkpoint: nnU-Net starts afresh; the trainer must load the same weights again itself
    with pytest.raises(CommandFailed, match="simulated kill") as info:
        _train(ws, DYING, "--c", dump=tmp_path / "resumed.pt")
    assert "loading the pretrained weights" in str(info.value)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    encoder = [k for k in resumed if k.startswith("encoder.") and k.endswith(".weight")]
    assert encoder and all(torch.equal(resumed[k], saved[k]) for k in encoder)
    report = json.loads((fold / "transfer_report.json").read_text())
    assert report["summary"]["loaded"] > 0

    # the file changed since: the run stops and says how to restart instead of claiming weights it did not load
    torch.save({"network_weights": {k: v + 1 for k, v in saved.items()}}, pretrained)
    with pytest.raises(CommandFailed, match="changed since") as info:
        _train(ws, DYING, "--c", dump=tmp_path / "never.pt")
    assert "start the training again without --c" in str(info.value)
    assert not (tmp_path / "never.pt").exists()

    # the transfer report deleted: --c must not go on from random weights without a word
    (fold / "transfer_report.json").unlink()
    with pytest.raises(CommandFailed, match="transfer_report.json is missing") as info:
        _train(ws, DYING, "--c", dump=tmp_path / "never.pt")
    assert "without --c" in str(info.value) and not (tmp_path / "never.pt").exists()
