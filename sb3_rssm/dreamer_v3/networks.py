"""
DreamerV3's network pieces (danijar/dreamerv3 ``embodied/jax/nets.py`` and ``dreamerv3/rssm.py``): dense and
conv layers followed by RMSNorm and SiLU, their initialisation (a truncated normal scaled by fan-in, output
layers scaled by ``outscale``, 0 for zero-initialised heads), the block-diagonal dense layer of the RSSM's GRU,
and the observation encoder and decoder built from them (symlog inputs and targets for vectors).
"""

from __future__ import annotations

import math
from typing import Optional

import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from sb3_rssm.common.distributions import symlog
from sb3_rssm.common.networks import MLP, ObservationDecoder, ObservationEncoder, channels_last_on_cpu
from sb3_rssm.common.spaces import IMAGE_SIZE


class BlockLinear(nn.Module):
    """
    A dense layer whose weight is block-diagonal: the input and the output are split into ``blocks`` equal groups
    and group k of the output depends only on group k of the input, so it costs ``1 / blocks`` of a dense layer.

    :param in_features: input size (a multiple of ``blocks``)
    :param out_features: output size (a multiple of ``blocks``)
    :param blocks: number of groups
    """

    def __init__(self, in_features: int, out_features: int, blocks: int) -> None:
        super().__init__()
        if in_features % blocks or out_features % blocks:
            raise ValueError(f"BlockLinear({in_features}, {out_features}): both sizes must be multiples of blocks={blocks}")
        self.in_features, self.out_features, self.blocks = in_features, out_features, blocks
        self.weight = nn.Parameter(th.empty(blocks, in_features // blocks, out_features // blocks))
        self.bias = nn.Parameter(th.zeros(out_features))

    def forward(self, x: th.Tensor) -> th.Tensor:
        lead = x.shape[:-1]
        groups = x.reshape(-1, self.blocks, self.in_features // self.blocks).transpose(0, 1)
        y = th.bmm(groups, self.weight.to(groups.dtype)).transpose(0, 1).reshape(*lead, self.out_features)
        return y + self.bias.to(y.dtype)


def init_(module: nn.Module, outscale: float = 1.0) -> nn.Module:
    """
    DreamerV3's initialisation of a dense, block-dense or conv layer: weights from a normal truncated at two
    standard deviations, with standard deviation ``1.1368 * outscale / sqrt(fan_in)`` (1.1368 makes up for the
    truncation; a block-dense layer counts all its inputs, a transposed convolution its input channels times the
    kernel's area), biases zero. ``outscale=0`` gives a zero output layer.
    """
    weight = module.weight
    if isinstance(module, BlockLinear):
        fan_in = module.in_features
    elif isinstance(module, nn.ConvTranspose2d):
        # stored (in, out, k, k); each output sums over in * k * k inputs, as the reference's kernel (k, k, in, out)
        fan_in = weight.shape[0] * math.prod(weight.shape[2:])
    else:
        fan_in = math.prod(weight.shape[1:])
    std = 1.1368 / math.sqrt(fan_in)
    with th.no_grad():
        nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)
        weight.mul_(outscale)
        if module.bias is not None:
            module.bias.zero_()
    return module


class RMSNorm(nn.Module):
    """
    Root-mean-square normalisation over one dimension with a learned scale: ``x / sqrt(mean(x^2) + eps) * scale``,
    computed in float32 (as DreamerV3's ``Norm``, whose epsilon 1e-4 it keeps).

    :param size: length of the normalised dimension
    :param dim: the dimension (-1 for dense layers, 1 for the channels of NCHW images)
    :param eps: added to the mean square
    """

    def __init__(self, size: int, dim: int = -1, eps: float = 1e-4) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.scale = nn.Parameter(th.ones(size))

    def forward(self, x: th.Tensor) -> th.Tensor:
        if self.dim == -1 and x.dtype == th.float32 and x.device.type == "cpu":
            # one fused call, bit-identical to the lines below for float32 on the CPU (forward and backward; tested):
            # fewer operator calls at acting's batch of one, where the norms were a quarter of DreamerV3's step
            return F.rms_norm(x, self.scale.shape, self.scale, self.eps)
        return self._reference(x)

    def _reference(self, x: th.Tensor) -> th.Tensor:
        """The normalisation written out: for other dtypes (autocast), devices and dimensions."""
        y = x.float()
        y = y * th.rsqrt(y.square().mean(self.dim, keepdim=True) + self.eps)
        shape = [1] * x.dim()
        shape[self.dim] = -1
        return (y * self.scale.reshape(shape)).to(x.dtype)


def dense(in_features: int, out_features: int) -> list[nn.Module]:
    """A dense layer, RMSNorm and SiLU: DreamerV3's hidden layer."""
    return [init_(nn.Linear(in_features, out_features)), RMSNorm(out_features), nn.SiLU(inplace=True)]


def normed_mlp(input_size: int, units: int, layers: int, output_size: Optional[int] = None, outscale: float = 1.0) -> MLP:
    """
    ``layers`` hidden layers of :func:`dense` with ``units``, then (unless ``output_size`` is None) a linear output
    layer initialised with ``outscale`` (DreamerV3: 0 for the reward and critic heads, 0.01 for the actor).
    """
    modules: list[nn.Module] = []
    size = input_size
    for _ in range(layers):
        modules += dense(size, units)
        size = units
    if output_size is not None:
        modules.append(init_(nn.Linear(size, output_size), outscale))
    return MLP(*modules)


class Symlog(nn.Module):
    """:func:`~sb3_rssm.common.distributions.symlog` as a layer."""

    def forward(self, x: th.Tensor) -> th.Tensor:
        return symlog(x)


def _conv(in_channels: int, out_channels: int, kernel: int, outscale: float = 1.0, stride: int = 1) -> nn.Conv2d:
    """A convolution with "same" padding (stride 2 halves the height and width), DreamerV3-initialised."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2)
    return init_(conv, outscale)  # type: ignore[return-value]


def _upconv(in_channels: int, out_channels: int, kernel: int, outscale: float = 1.0) -> nn.ConvTranspose2d:
    """
    A stride-2 transposed convolution that doubles the height and width, DreamerV3-initialised: the reference's
    strided decoder layer (``Conv2D(transp=True)``, a "same" convolution over the input spread onto every other
    pixel).
    """
    conv = nn.ConvTranspose2d(in_channels, out_channels, kernel, 2, padding=kernel // 2, output_padding=1)
    return init_(conv, outscale)  # type: ignore[return-value]


class ConvEncoderV3(nn.Module):
    """
    DreamerV3's image encoder: four stages of a stride-1 convolution (kernel 5), a 2x2 max-pool, RMSNorm over the
    channels and SiLU, with ``depth * (2, 3, 4, 4)`` channels. A (C, 64, 64) image becomes ``4 * depth`` 4x4 maps,
    flattened to ``64 * depth`` features. ``strided`` (the reference's ``strided: True``) replaces each convolution
    and max-pool by one stride-2 convolution: a quarter of the FLOPs, since every convolution runs at its output's
    resolution.

    :param in_channels: image channels
    :param depth: channel multiplier
    :param kernel: convolution kernel size
    :param strided: stride-2 convolutions instead of stride 1 and max-pooling
    """

    MULTS = (2, 3, 4, 4)

    def __init__(self, in_channels: int, depth: int, kernel: int = 5, strided: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for mult in self.MULTS:
            if strided:
                layers.append(_conv(channels, depth * mult, kernel, stride=2))
            else:
                layers += [_conv(channels, depth * mult, kernel), nn.MaxPool2d(2)]
            layers += [RMSNorm(depth * mult, dim=1), nn.SiLU(True)]
            channels = depth * mult
        self.net = nn.Sequential(*layers)
        resolution = IMAGE_SIZE // 2 ** len(self.MULTS)
        self.output_size = channels * resolution * resolution

    def forward(self, image: th.Tensor) -> th.Tensor:
        lead = image.shape[:-3]
        x = self.net(channels_last_on_cpu(image.reshape(-1, *image.shape[-3:])))
        return x.reshape(*lead, self.output_size)


class ConvDecoderV3(nn.Module):
    """
    DreamerV3's image decoder without its block-linear input layer (``bspace``): a dense layer to ``4 * depth``
    4x4 maps with RMSNorm and SiLU, three stages of 2x nearest upsampling, a stride-1 convolution (kernel 5),
    RMSNorm and SiLU (``depth * (4, 3, 2)`` channels), then upsampling and a convolution to the image's channels
    and a sigmoid. The output is shifted by -0.5 into the units of the encoder's input (``x / 255 - 0.5``), so
    the squared error against it is DreamerV3's against ``x / 255``. ``strided`` replaces each upsampling and
    convolution by one stride-2 transposed convolution (the reference's ``strided: True``; a quarter of the FLOPs).

    :param feature_size: model-state size
    :param out_channels: image channels
    :param depth: channel multiplier
    :param kernel: convolution kernel size
    :param strided: stride-2 transposed convolutions instead of upsampling and stride 1
    """

    def __init__(self, feature_size: int, out_channels: int, depth: int, kernel: int = 5, strided: bool = False) -> None:
        super().__init__()
        mults = ConvEncoderV3.MULTS
        self.out_channels = out_channels
        self.resolution = IMAGE_SIZE // 2 ** len(mults)
        self.channels = depth * mults[-1]
        self.dense = init_(nn.Linear(feature_size, self.channels * self.resolution**2))
        self.dense_norm = RMSNorm(self.channels, dim=1)
        layers: list[nn.Module] = []
        channels = self.channels

        def upsample(in_channels: int, out_channels: int) -> list[nn.Module]:
            if strided:
                return [_upconv(in_channels, out_channels, kernel)]
            return [nn.Upsample(scale_factor=2), _conv(in_channels, out_channels, kernel)]

        for mult in reversed(mults[:-1]):
            layers += [*upsample(channels, depth * mult), RMSNorm(depth * mult, dim=1), nn.SiLU(True)]
            channels = depth * mult
        layers += upsample(channels, out_channels)
        self.net = nn.Sequential(*layers)

    def forward(self, features: th.Tensor) -> th.Tensor:
        lead = features.shape[:-1]
        x = self.dense(features.reshape(-1, features.shape[-1]))
        x = x.reshape(-1, self.channels, self.resolution, self.resolution)
        x = self.net(channels_last_on_cpu(F.silu(self.dense_norm(x))))
        return (th.sigmoid(x) - 0.5).reshape(*lead, self.out_channels, IMAGE_SIZE, IMAGE_SIZE)


class ObservationEncoderV3(ObservationEncoder):
    """
    :class:`~sb3_rssm.common.networks.ObservationEncoder` with DreamerV3's networks: a :class:`ConvEncoderV3` per
    image entry, and :func:`normed_mlp` over the symlog of the concatenated vector entries.

    :param observation_space: Box (image or vector) or flat Dict of Boxes
    :param cnn_depth: conv channel multiplier
    :param mlp_units: width of the vector MLP
    :param mlp_layers: layers of the vector MLP
    :param cnn_strided: stride-2 convolutions (see :class:`ConvEncoderV3`)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        cnn_depth: int = 16,
        mlp_units: int = 256,
        mlp_layers: int = 3,
        cnn_strided: bool = False,
    ) -> None:
        self.cnn_strided = cnn_strided
        super().__init__(observation_space, cnn_depth, mlp_units, mlp_layers, nn.SiLU, nn.SiLU, image_bits=8)

    def image_network(self, channels: int) -> nn.Module:
        return ConvEncoderV3(channels, self.cnn_depth, strided=self.cnn_strided)

    def vector_network(self, size: int) -> nn.Module:
        return MLP(Symlog(), *normed_mlp(size, self.mlp_units, self.mlp_layers))


class ObservationDecoderV3(ObservationDecoder):
    """
    :class:`~sb3_rssm.common.networks.ObservationDecoder` with DreamerV3's networks: a :class:`ConvDecoderV3` per
    image entry, and per vector entry a :func:`normed_mlp` that predicts the entry's symlog (DreamerV3's
    ``symlog_mse``; the official decoder shares one MLP between the vector entries, with a linear head each).

    :param observation_space: Box (image or vector) or flat Dict of Boxes
    :param feature_size: model-state size
    :param cnn_depth: conv channel multiplier
    :param mlp_units: width of the vector MLPs
    :param mlp_layers: hidden layers of the vector MLPs
    :param cnn_strided: stride-2 transposed convolutions (see :class:`ConvDecoderV3`)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        feature_size: int,
        cnn_depth: int = 16,
        mlp_units: int = 256,
        mlp_layers: int = 3,
        cnn_strided: bool = False,
    ) -> None:
        self.cnn_strided = cnn_strided
        super().__init__(observation_space, feature_size, cnn_depth, mlp_units, mlp_layers, nn.SiLU, nn.SiLU)

    def image_network(self, channels: int) -> nn.Module:
        return ConvDecoderV3(self.feature_size, channels, self.cnn_depth, strided=self.cnn_strided)

    def vector_network(self, size: int) -> nn.Module:
        return normed_mlp(self.feature_size, self.mlp_units, self.mlp_layers, size)

    def vector_target(self, vector: th.Tensor) -> th.Tensor:
        return symlog(vector)
