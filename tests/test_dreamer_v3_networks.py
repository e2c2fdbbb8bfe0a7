"""DreamerV3's network pieces: initialisation, RMSNorm, block-diagonal layers, encoder and decoder."""

import math

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from torch import nn

from sb3_rssm.common.distributions import symlog
from sb3_rssm.dreamer_v3.networks import (
    BlockLinear,
    ConvDecoderV3,
    ConvEncoderV3,
    ObservationDecoderV3,
    ObservationEncoderV3,
    RMSNorm,
    init_,
    normed_mlp,
)


def test_init_truncated_normal_scaled_by_fan_in_and_outscale():
    th.manual_seed(0)
    layer = init_(nn.Linear(400, 300))
    std = 1.1368 / math.sqrt(400)
    assert layer.weight.abs().max() <= 2 * std and th.all(layer.bias == 0)
    # the truncation at two standard deviations takes 12% off the std; 1.1368 puts it back
    assert abs(layer.weight.std().item() / (1 / math.sqrt(400)) - 1) < 0.03
    conv = init_(nn.Conv2d(8, 4, 5), outscale=0.01)
    assert conv.weight.abs().max() <= 0.01 * 2 * 1.1368 / math.sqrt(8 * 25)
    assert th.all(init_(nn.Linear(3, 2), outscale=0.0).weight == 0)


def test_rms_norm():
    x = th.randn(4, 6) * 7 + 3
    y = RMSNorm(6)(x)
    th.testing.assert_close(y.square().mean(-1), th.ones(4), atol=1e-3, rtol=0)
    image = th.randn(2, 5, 3, 3) * 4
    z = RMSNorm(5, dim=1)(image)
    th.testing.assert_close(z.square().mean(1), th.ones(2, 3, 3), atol=1e-3, rtol=0)


@pytest.mark.parametrize("shape", [(1, 64), (256, 64), (16, 16, 512)])
def test_rms_norm_fused_path_is_bit_identical_to_the_written_out_one(shape):
    """float32 on the CPU takes ``F.rms_norm`` (acting's speed): the same bits, forward and backward, as the formula."""
    th.manual_seed(0)
    norm = RMSNorm(shape[-1])
    with th.no_grad():
        norm.scale.uniform_(0.5, 1.5)
    x = (th.randn(*shape) * 3 + 1).requires_grad_()
    fused, written = norm(x), norm._reference(x)
    assert th.equal(fused, written)
    grads = [th.autograd.grad((y.square() + y).sum(), [x, norm.scale]) for y in (fused, written)]
    assert all(th.equal(a, b) for a, b in zip(*grads))
    with th.autocast("cpu", dtype=th.bfloat16):  # other dtypes keep the written-out float32 computation
        low = norm(x.bfloat16())
    assert low.dtype == th.bfloat16 and th.equal(low, norm._reference(x.bfloat16()))


def test_block_linear_is_block_diagonal():
    th.manual_seed(0)
    layer = init_(BlockLinear(6, 9, blocks=3))
    x = th.randn(2, 6, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 9)
    jacobian = th.autograd.functional.jacobian(lambda v: layer(v), x[0].detach())  # (9, 6)
    for out_group in range(3):
        for in_group in range(3):
            block = jacobian[3 * out_group : 3 * out_group + 3, 2 * in_group : 2 * in_group + 2]
            assert (block.abs().sum() > 0) == (out_group == in_group)
    with pytest.raises(ValueError, match="multiples of blocks=4"):
        BlockLinear(6, 8, blocks=4)
    th.testing.assert_close(layer(x.reshape(1, 2, 6)).reshape(2, 9), y)  # any leading dimensions


def test_normed_mlp_output_scale():
    net = normed_mlp(5, 8, 2, 255, outscale=0.0)
    assert th.all(net(th.randn(3, 4, 5)) == 0)  # zero-initialised output layer (reward and critic heads)
    assert net(th.randn(3, 4, 5)).shape == (3, 4, 255)


@pytest.mark.parametrize("strided", [False, True])
def test_conv_encoder_and_decoder_shapes_and_range(strided):
    encoder = ConvEncoderV3(3, depth=2, strided=strided)
    assert encoder(th.rand(4, 5, 3, 64, 64) - 0.5).shape == (4, 5, 2 * 4 * 16) and encoder.output_size == 128
    decoder = ConvDecoderV3(10, 3, depth=2, strided=strided)
    images = decoder(th.randn(4, 5, 10) * 10)
    assert images.shape == (4, 5, 3, 64, 64)
    assert images.min() >= -0.5 and images.max() <= 0.5  # sigmoid, in the encoder's input units


def test_strided_convolutions_run_at_their_outputs_resolution():
    """The reference's ``strided``: one stride-2 (transposed) convolution per stage, no max-pool or upsampling."""
    encoder, decoder = ConvEncoderV3(3, depth=2, strided=True), ConvDecoderV3(10, 3, depth=2, strided=True)
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [m.stride for m in convs] == [(2, 2)] * 4 and not any(isinstance(m, nn.MaxPool2d) for m in encoder.modules())
    upconvs = [m for m in decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(upconvs) == 4 and not any(isinstance(m, (nn.Upsample, nn.Conv2d)) for m in decoder.modules())
    # each output of a transposed convolution sums over in_channels * kernel**2 weights: its fan-in (std 1/sqrt of it)
    th.manual_seed(0)
    upconv = upconvs[0]
    fan_in = upconv.in_channels * 25
    assert upconv.weight.abs().max() <= 2 * 1.1368 / math.sqrt(fan_in)
    assert abs(upconv.weight.std().item() * math.sqrt(fan_in) - 1) < 0.05
    # every input pixel reaches the output's 2x2 block it maps to: no pixel of the image is left out
    x = th.randn(1, upconv.in_channels, 4, 4, requires_grad=True)
    grad = th.autograd.grad(upconv(x).square().sum(), x)[0]
    assert (grad.abs().sum(1) > 0).all()
    image = th.rand(1, 3, 64, 64, requires_grad=True)
    grad = th.autograd.grad(encoder(image).square().sum(), image)[0]
    assert (grad.abs().sum(1) > 0).all()  # every pixel reaches the features


def test_observation_encoder_and_decoder_use_symlog_for_vectors():
    space = spaces.Dict({"image": spaces.Box(0, 255, (3, 64, 64), np.uint8), "vector": spaces.Box(-1e6, 1e6, (3,))})
    encoder = ObservationEncoderV3(space, cnn_depth=2, mlp_units=8, mlp_layers=2)
    assert encoder.output_size == 128 + 8
    big = th.tensor([[1e6, -1e6, 3.0]])
    obs = {"image": th.zeros(1, 3, 64, 64, dtype=th.uint8), "vector": big}
    # the vector MLP sees symlog of the input: its first dense layer gets symlog(x)
    seen = []
    encoder.mlp[1].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    encoder(obs)
    th.testing.assert_close(seen[0], symlog(big))
    decoder = ObservationDecoderV3(space, feature_size=6, cnn_depth=2, mlp_units=8, mlp_layers=2)
    means = decoder(th.randn(2, 6))
    targets = decoder.targets({"vector": big.expand(2, 3)}, {"image": th.zeros(2, 3, 64, 64)}, means)
    th.testing.assert_close(targets["vector"], symlog(big).expand(2, 3))
