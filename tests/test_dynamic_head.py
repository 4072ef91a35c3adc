"""DoDNet head math: batched grouped convolution vs a per-sample reference, all-task vs single-task passes."""

import pytest
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_transfer.architectures.dynamic_head import NOT_EVALUATED_LOGIT, DynamicHead, DynamicHeadNetwork
from nnunet_transfer.data import mots_tasks


def _reference_head(features, params, head):
    """Per-sample, per-task loop with ordinary convolutions (what the grouped version must reproduce)."""
    weights, biases = head.split_params(params)
    out = torch.empty(features.shape[0], params.shape[1], head.out_channels, *features.shape[2:])
    for n in range(features.shape[0]):
        for t in range(params.shape[1]):
            x = features[n:n + 1]
            for layer, (w, b) in enumerate(zip(weights, biases)):
                x = F.conv3d(x, w[n, t][..., None, None, None], b[n, t])
                if layer < len(weights) - 1:
                    x = F.relu(x)
            out[n, t] = x[0]
    return out


def _backbone(deep_supervision=False):
    return PlainConvUNet(1, 3, [8, 16, 24], torch.nn.Conv3d, 3, [1, 2, 2], 1, 8, 1, True, torch.nn.InstanceNorm3d,
                         {"affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True},
                         deep_supervision=deep_supervision)


def _network(deep_supervision=False):
    torch.manual_seed(0)
    b = _backbone(deep_supervision)
    return DynamicHeadNetwork(b.encoder, b.decoder, mots_tasks.NUM_TASKS, mots_tasks.head_channel_index())


def test_head_has_dodnet_162_parameters():
    head = DynamicHead(8, (8, 8), 2)
    assert head.num_params == 162
    weights, biases = head.split_params(torch.zeros(1, 1, 162))
    assert [tuple(w.shape[-2:]) for w in weights] == [(8, 8), (8, 8), (2, 8)]
    assert [b.shape[-1] for b in biases] == [8, 8, 2]


@pytest.mark.parametrize("tasks_per_sample", [1, 7])
def test_grouped_head_equals_per_sample_loop(tasks_per_sample):
    torch.manual_seed(1)
    head = DynamicHead()
    features = torch.randn(3, 8, 4, 5, 6)
    params = torch.randn(3, tasks_per_sample, head.num_params)
    torch.testing.assert_close(head(features, params), _reference_head(features, params, head), rtol=1e-5, atol=1e-5)


def test_all_task_inference_equals_each_task_alone():
    net = _network().eval()
    x = torch.randn(2, 1, 8, 16, 16)
    with torch.no_grad():
        all_tasks = net(x)
        assert all_tasks.shape == (2, mots_tasks.NUM_OUTPUT_CHANNELS, 8, 16, 16)
        for task in range(mots_tasks.NUM_TASKS):
            with net.conditioned_on(torch.full((2,), task)):
                alone = net(x)
            own = [ch.index for ch in mots_tasks.OUTPUT_CHANNELS if ch.task == task]
            others = [ch.index for ch in mots_tasks.OUTPUT_CHANNELS if ch.task != task]
            torch.testing.assert_close(alone[:, own], all_tasks[:, own], rtol=1e-5, atol=1e-5)
            assert torch.all(alone[:, others] == NOT_EVALUATED_LOGIT)
            assert torch.all(torch.sigmoid(alone[:, others]) == 0)


def test_forward_all_tasks_matches_output_channels():
    net = _network().eval()
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        raw = net.forward_all_tasks(x)  # (N, 7, 2, ...)
        out = net(x)
    assert raw.shape == (1, 7, 2, 8, 16, 16)
    for ch in mots_tasks.OUTPUT_CHANNELS:
        torch.testing.assert_close(out[:, ch.index], raw[:, ch.task, ch.kind])


def test_mixed_tasks_in_one_batch_use_each_samples_own_head():
    net = _network().eval()
    x = torch.randn(3, 1, 8, 16, 16)
    tasks = torch.tensor([1, 6, 1])
    with torch.no_grad():
        all_tasks = net(x)
        with net.conditioned_on(tasks):
            mixed = net(x)
    for n, t in enumerate(tasks.tolist()):
        for ch in mots_tasks.OUTPUT_CHANNELS:
            if ch.task == t:
                torch.testing.assert_close(mixed[n, ch.index], all_tasks[n, ch.index], rtol=1e-5, atol=1e-5)
            else:
                assert torch.all(mixed[n, ch.index] == NOT_EVALUATED_LOGIT)


def test_deep_supervision_outputs_every_scale_highest_first():
    net = _network(deep_supervision=True)
    out = net(torch.randn(2, 1, 8, 16, 16))
    assert [tuple(o.shape[2:]) for o in out] == [(8, 16, 16), (4, 8, 8)]
    assert all(o.shape[1] == mots_tasks.NUM_OUTPUT_CHANNELS for o in out)


def test_parameter_names_keep_the_backbone_names():
    """A plain U-Net with the same plans can take these weights: only seg_layers/controller keys differ."""
    net = _network()
    plain = PlainConvUNet(1, 3, [8, 16, 24], torch.nn.Conv3d, 3, [1, 2, 2], 1, 4, 1, True, torch.nn.InstanceNorm3d,
                          {"affine": True}, None, None, torch.nn.LeakyReLU, {"inplace": True})
    ours = set(net.state_dict())
    theirs = set(plain.state_dict())
    assert {k for k in theirs - ours} == set()
    assert all(k.startswith("controller.") for k in ours - theirs)
    for k in theirs:
        if ".seg_layers." not in k:
            assert net.state_dict()[k].shape == plain.state_dict()[k].shape


def test_dodnet_controller_pooling_option_groupnorm_relu_gap():
    b = _backbone()
    default = DynamicHeadNetwork(b.encoder, b.decoder, mots_tasks.NUM_TASKS, mots_tasks.head_channel_index())
    assert not any(k.startswith("gap_norm.") for k in default.state_dict())  # existing checkpoints keep loading
    torch.manual_seed(1)
    b = _backbone()
    net = DynamicHeadNetwork(b.encoder, b.decoder, mots_tasks.NUM_TASKS, mots_tasks.head_channel_index(),
                             controller_pooling="groupnorm_relu")
    assert {"gap_norm.0.weight", "gap_norm.0.bias"} <= set(net.state_dict())
    assert net.gap_norm[0].num_groups == 8  # gcd(16, 24 bottleneck channels); 16 for nnU-Net's 320
    bottleneck = torch.randn(2, 24, 2, 4, 4)
    tasks = torch.tensor([[0], [3]])
    expected_pooled = F.relu(F.group_norm(bottleneck, 8, net.gap_norm[0].weight, net.gap_norm[0].bias)).mean((2, 3, 4))
    code = F.one_hot(tasks, mots_tasks.NUM_TASKS).float()
    expected = net.controller(torch.cat((expected_pooled[:, None], code), -1))
    torch.testing.assert_close(net.task_parameters(bottleneck, tasks), expected)
    with pytest.raises(ValueError, match="controller_pooling"):
        DynamicHeadNetwork(b.encoder, b.decoder, 7, mots_tasks.head_channel_index(), controller_pooling="bn")
