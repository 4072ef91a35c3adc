"""Booby-trapped checkpoints in each nnU-Net family format: refused, and the payload never runs."""

import pickle

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_transfer.cli.main import main
from nnunet_transfer.pretrained.data_only_pickle import read_data_only_pickle
from nnunet_transfer.pretrained.source import read_source_weights
from nnunet_transfer.pretrained.safe_load import UnsafeCheckpointError
from nnunet_transfer.transfer.weights import transfer_weights
from support.booby_trap import Payload
from support.nnunet_family import (generic_unet_v1_state_dict, resenc_unet, v1_plans, v2_plans, write_nnssl_checkpoint,
                                   write_results_folder, write_v1_model, zip_results_folder)

POOL, KERNELS = [[2, 2, 2]], [[3, 3, 3]] * 2


def _net():
    return PlainConvUNet(1, 2, [8, 16], nn.Conv3d, 3, [1, 2], 2, 2, 2, True, nn.InstanceNorm3d, {"affine": True},
                         None, None, nn.LeakyReLU, {"inplace": True})


def _v1_model(tmp, marker):
    return write_v1_model(tmp / "v1", generic_unet_v1_state_dict(1, 8, 2, POOL, KERNELS),
                          v1_plans(POOL, KERNELS, [16, 16, 16], [1, 1, 1]), payload=Payload(marker))


def _v1_pkl(tmp, marker):
    return write_v1_model(tmp / "v1pkl", generic_unet_v1_state_dict(1, 8, 2, POOL, KERNELS),
                          v1_plans(POOL, KERNELS, [16, 16, 16], [1, 1, 1]), pkl_payload=Payload(marker))


def _v2_folder(tmp, marker):
    return write_results_folder(tmp / "results", _net(), v2_plans({}, [16] * 3, [1] * 3), payload=Payload(marker))


def _v2_zip(tmp, marker):
    folder = _v2_folder(tmp, marker)
    return zip_results_folder(tmp / "results", folder, tmp / "model.zip")


def _nnssl(tmp, marker):
    return write_nnssl_checkpoint(tmp / "nnssl" / "checkpoint_final.pth", resenc_unet(), payload=Payload(marker))


@pytest.mark.parametrize("write", [_v1_model, _v1_pkl, _v2_folder, _v2_zip, _nnssl],
                         ids=["v1 .model", "v1 .model.pkl", "v2 results folder", "v2 model zip", "nnssl"])
def test_booby_trapped_checkpoint_is_refused_and_never_executes(write, tmp_path):
    marker = tmp_path / "payload_ran"
    path = write(tmp_path, marker)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        read_source_weights(path)
    with pytest.raises(UnsafeCheckpointError):
        transfer_weights(_net(), path)
    assert main(["extract-encoder", str(path), "-o", str(tmp_path / "encoder.pth")]) == 1
    assert not (tmp_path / "encoder.pth").exists()
    assert not marker.exists(), "the pickled payload ran"
    # the trap is real: a full unpickle would have run it
    if write is _v1_pkl:
        with open(str(path) + ".pkl", "rb") as f:
            pickle.load(f)
        assert marker.exists()


def test_data_only_pickle_reads_v1_plans_and_refuses_other_globals(tmp_path):
    plans = v1_plans(POOL, KERNELS, [16, 16, 16], [1.5, 1, 1])
    clean = tmp_path / "plans.pkl"
    for protocol in (2, 3, 4, 5):  # 2: sets and bytes go through globals; 3 was Python 3.6's default, 4 3.8's
        clean.write_bytes(pickle.dumps(plans, protocol=protocol))
        loaded = read_data_only_pickle(clean)
        assert loaded["plans_per_stage"][0]["patch_size"].tolist() == [16, 16, 16]
        assert loaded["list_of_npz_files"] == {"a", "b"} and loaded["original_spacings"][0].tolist() == [1.5, 1, 1]
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"x": torch.nn.Identity}))
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.linear.Identity"):
        read_data_only_pickle(evil)
