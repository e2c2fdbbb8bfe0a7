"""
Neural network pieces of the world model: observation encoders and decoders built from
observation spaces (images, vectors, and Dicts of both), and dense heads.

Images are uint8, channel-first (C, 64, 64) and scaled to [-0.5, 0.5] before the encoder; the
decoder predicts them in the same scaled units.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import numpy as np
import torch as th
from gymnasium import spaces
from torch import nn

from sb3_rssm.common.spaces import IMAGE_SIZE, split_observation_space

ObsTensor = Union[th.Tensor, dict[str, th.Tensor]]


def make_activation(activation_fn: type[nn.Module]) -> nn.Module:
    """
    An instance of ``activation_fn``, in place where the class supports it (ReLU, ELU, SiLU, ...).

    Every activation here follows a dense or conv layer whose output nothing else keeps, and these
    activations' backward passes need only their result, so working in place saves one tensor
    allocation and one pass over memory per layer without changing any value or gradient.
    """
    try:
        return activation_fn(inplace=True)
    except TypeError:
        return activation_fn()


class MLP(nn.Sequential):
    """
    Dense layers applied to the last dimension of inputs with any number of leading dimensions.

    The input is flattened to 2-D first: a dense layer on a 3-D input returns a view of its 2-D result,
    and an in-place activation on that view makes autograd copy the whole gradient back through it
    (``CopySlices``), which cost Dreamer's imagination about a sixth of its time.
    """

    def forward(self, x: th.Tensor) -> th.Tensor:
        lead = x.shape[:-1]
        y = super().forward(x.reshape(-1, x.shape[-1]))
        return y.reshape(*lead, y.shape[-1])


def mlp(input_size: int, output_size: int, units: int, layers: int, activation_fn: type[nn.Module]) -> MLP:
    """``layers`` hidden dense layers of ``units`` with ``activation_fn``, then a linear output."""
    modules: list[nn.Module] = []
    size = input_size
    for _ in range(layers):
        modules += [nn.Linear(size, units), make_activation(activation_fn)]
        size = units
    modules.append(nn.Linear(size, output_size))
    return MLP(*modules)


def as_dict(observations: ObsTensor) -> dict[str, th.Tensor]:
    return observations if isinstance(observations, dict) else {"observation": observations}


def _scale_image_(image: th.Tensor, bits: int, dequantize: bool) -> th.Tensor:
    """In place on a float copy of uint8 values: see :func:`preprocess_image`."""
    if bits >= 8:
        return image.div_(255.0).sub_(0.5)
    bins = 2**bits
    image.div_(2 ** (8 - bits)).floor_().div_(bins)
    if dequantize:
        return image.add_(th.rand_like(image).mul_(1.0 / bins)).sub_(0.5)
    return image.sub_(0.5 - 0.5 / bins)


def preprocess_image(image: th.Tensor, bits: int = 8, dequantize: bool = False) -> th.Tensor:
    """
    uint8 [0, 255] images (..., C, H, W) to float [-0.5, 0.5], in the memory layout the conv encoder runs
    in (channels-last on CPU, see :func:`channels_last_on_cpu`), so that the encoder takes it without a copy.
    Never the caller's tensor, even for float input.

    * ``bits=8`` (Dreamer): ``x / 255 - 0.5``.
    * ``bits < 8`` (PlaNet's ``image_bits``, planet/tools/preprocess.py): the values are reduced to
      ``2**bits`` levels, ``floor(x / 2**(8 - bits)) / 2**bits - 0.5``, then dequantized: with
      ``dequantize`` a uniform sample within the bin is added (PlaNet's noise, used in training), otherwise
      half a bin, the noise's mean (acting and evaluation, where the same frame must give the same belief).

    :param image: uint8 values (any dtype holding them)
    :param bits: bits per channel kept
    :param dequantize: add uniform noise within the bin (only with ``bits < 8``)
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"image_bits must be between 1 and 8, got {bits}")
    if image.dim() < 4:
        return _scale_image_(image.to(th.float32, copy=True), bits, dequantize)
    frames = image.reshape(-1, *image.shape[-3:])
    layout = th.channels_last if image.device.type == "cpu" else th.contiguous_format
    # one conversion into a fresh float buffer (never the caller's tensor), then in place
    out = th.empty(frames.shape, dtype=th.float32, device=image.device, memory_format=layout)
    out.copy_(frames)
    return _scale_image_(out, bits, dequantize).reshape(image.shape)


def preprocess_images(
    observations: ObsTensor, image_keys: list[str], bits: int = 8, dequantize: bool = False
) -> dict[str, th.Tensor]:
    """:func:`preprocess_image` of each image entry of ``observations``, by key."""
    obs = as_dict(observations)
    return {key: preprocess_image(obs[key], bits, dequantize) for key in image_keys}


# elements per chunk of SquaredErrorSum's forward pass on CPU: about 1.5 MB of float32 temporaries for a 64x64x3
# frame (a module constant: torch.compile cannot read attributes of an autograd.Function class)
SQUARED_ERROR_CHUNK = 2**19


class SquaredErrorSum(th.autograd.Function):
    """
    ``((target - mean) ** 2)`` summed over the last ``event_dims`` dimensions, with its gradient, without
    materializing the difference in the forward pass.

    For 2,500 decoded 64x64x3 frames autograd's version allocates three 123 MB tensors (difference, square,
    gradient) and passes over them about seven times; fresh memory that large costs page faults on top of
    the passes (about 0.3 s an update on the project's CPU machines). Here the forward pass runs, on CPU,
    over chunks of events small enough to be served from the allocator's cache (on other devices, whose
    caching allocators reuse memory, in one piece), and the backward pass is one fused
    ``(mean - target) * grad`` into the gradient's own buffer.
    """

    @staticmethod
    def forward(ctx: Any, mean: th.Tensor, target: th.Tensor, event_dims: int, chunk_elements: int) -> th.Tensor:
        """:param chunk_elements: elements per chunk of the forward pass on CPU (:data:`SQUARED_ERROR_CHUNK`)"""
        lead = mean.shape[: mean.dim() - event_dims]
        means, targets = mean.reshape(-1, *mean.shape[len(lead) :]), target.reshape(-1, *mean.shape[len(lead) :])
        dims = tuple(range(1, event_dims + 1))
        dtype = th.promote_types(mean.dtype, target.dtype)
        event_size = max(1, math.prod(means.shape[1:]))
        step = max(1, chunk_elements // event_size if mean.device.type == "cpu" else len(means))
        out = th.empty(means.shape[0], dtype=dtype, device=mean.device)
        for start in range(0, means.shape[0], step):
            chunk = targets[start : start + step].to(dtype) - means[start : start + step]
            th.sum(chunk.square_(), dim=dims, out=out[start : start + step])
        ctx.save_for_backward(mean, target)
        ctx.event_dims = event_dims
        return out.reshape(lead)

    @staticmethod
    def backward(ctx: Any, grad: th.Tensor) -> tuple[Optional[th.Tensor], Optional[th.Tensor], None, None]:
        mean, target = ctx.saved_tensors
        grad = grad.reshape(*grad.shape, *([1] * ctx.event_dims))
        # d/dmean (target - mean)^2 = 2 (mean - target)
        grad_mean = th.sub(mean, target).mul_(2.0 * grad)
        grad_target = -grad_mean if ctx.needs_input_grad[1] else None
        return (grad_mean.to(mean.dtype) if ctx.needs_input_grad[0] else None), grad_target, None, None


def squared_error_sum(mean: th.Tensor, target: th.Tensor, event_dims: int = 0) -> th.Tensor:
    """``(target - mean) ** 2`` summed over the last ``event_dims`` dimensions, by :class:`SquaredErrorSum`."""
    if event_dims:
        return SquaredErrorSum.apply(mean, target, event_dims, SQUARED_ERROR_CHUNK)
    return (target - mean).square()


def unit_gaussian_log_prob(mean: th.Tensor, target: th.Tensor, event_dims: int = 0) -> th.Tensor:
    """
    Log-density of ``target`` under a Gaussian of unit variance around ``mean``, summed over the last
    ``event_dims`` dimensions: what ``Independent(Normal(mean, 1), event_dims).log_prob(target)`` computes,
    with the sum over events by :class:`SquaredErrorSum` (it matters for a batch of 2,500 decoded frames).
    """
    squared = squared_error_sum(mean, target, event_dims)
    size = math.prod(mean.shape[mean.dim() - event_dims :]) if event_dims else 1
    return -0.5 * squared - 0.5 * size * math.log(2 * math.pi)


def channels_last_on_cpu(x: th.Tensor) -> th.Tensor:
    """
    (N, C, H, W) activations in channels-last memory on CPU, where oneDNN's convolutions run about 12%
    faster on it (the values and the logical layout are unchanged; reshapes afterwards see NCHW order).
    Left as is on other devices, where this was not measured.
    """
    return x.contiguous(memory_format=th.channels_last) if x.device.type == "cpu" else x


class ConvEncoder(nn.Module):
    """
    Dreamer conv encoder: 4 convolutions, kernel 4, stride 2, channels depth * (1, 2, 4, 8).
    A (C, 64, 64) image becomes a vector of 32 * depth (1024 at depth 32).
    """

    def __init__(self, in_channels: int, depth: int = 32, activation_fn: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for mult in (1, 2, 4, 8):
            layers += [nn.Conv2d(channels, depth * mult, kernel_size=4, stride=2), make_activation(activation_fn)]
            channels = depth * mult
        self.net = nn.Sequential(*layers)
        self.output_size = depth * 8 * 2 * 2

    def forward(self, image: th.Tensor) -> th.Tensor:
        lead = image.shape[:-3]
        x = self.net(channels_last_on_cpu(image.reshape(-1, *image.shape[-3:])))
        return x.reshape(*lead, self.output_size)


class ConvDecoder(nn.Module):
    """
    Dreamer conv decoder: dense to 32 * depth at 1x1, then transposed convolutions with kernels
    5, 5, 6, 6 and stride 2 back to (C, 64, 64). Outputs the mean of a unit-variance Gaussian.
    """

    def __init__(self, feature_size: int, out_channels: int, depth: int = 32, activation_fn: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.out_channels = out_channels
        self.dense = nn.Linear(feature_size, 32 * depth)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(32 * depth, 4 * depth, kernel_size=5, stride=2),
            make_activation(activation_fn),
            nn.ConvTranspose2d(4 * depth, 2 * depth, kernel_size=5, stride=2),
            make_activation(activation_fn),
            nn.ConvTranspose2d(2 * depth, depth, kernel_size=6, stride=2),
            make_activation(activation_fn),
            nn.ConvTranspose2d(depth, out_channels, kernel_size=6, stride=2),
        )

    def forward(self, features: th.Tensor) -> th.Tensor:
        lead = features.shape[:-1]
        x = self.dense(features.reshape(-1, features.shape[-1]))
        # A transposed convolution of a 1x1 input is a matmul (each input channel scatters its kernel):
        # as one, it runs at matmul speed instead of through the convolution backends' slowest case.
        first = self.net[0]
        kernel = first.kernel_size
        x = th.addmm(first.bias.repeat_interleave(kernel[0] * kernel[1]), x, first.weight.flatten(1))
        x = self.net[1:](channels_last_on_cpu(x.reshape(x.shape[0], first.out_channels, *kernel)))
        return x.reshape(*lead, self.out_channels, IMAGE_SIZE, IMAGE_SIZE)


class ObservationEncoder(nn.Module):
    """
    Embeds observations of any supported space: one :class:`ConvEncoder` per image entry, one MLP over
    the concatenation of all vector entries; the embeddings are concatenated. A subclass chooses other
    networks by overriding :meth:`image_network` and :meth:`vector_network`.

    :param observation_space: Box (image or vector) or flat Dict of Boxes
    :param cnn_depth: conv encoder depth
    :param mlp_units: width of the vector MLP
    :param mlp_layers: hidden layers of the vector MLP
    :param activation_fn: MLP activation
    :param cnn_activation_fn: conv activation
    :param image_bits: bits per image channel (8: Dreamer; PlaNet: 5), see :func:`preprocess_image`
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        cnn_depth: int = 32,
        mlp_units: int = 400,
        mlp_layers: int = 2,
        activation_fn: type[nn.Module] = nn.ELU,
        cnn_activation_fn: type[nn.Module] = nn.ReLU,
        image_bits: int = 8,
    ) -> None:
        super().__init__()
        if not 1 <= image_bits <= 8:
            raise ValueError(f"image_bits must be between 1 and 8, got {image_bits}")
        images, vectors = split_observation_space(observation_space)
        self.image_keys = list(images)
        self.image_bits = image_bits
        self.cnn_depth, self.mlp_units, self.mlp_layers = cnn_depth, mlp_units, mlp_layers
        self.activation_fn, self.cnn_activation_fn = activation_fn, cnn_activation_fn
        self.vector_shapes = {key: tuple(space.shape) for key, space in vectors.items()}
        self.cnns = nn.ModuleDict({key: self.image_network(space.shape[0]) for key, space in images.items()})
        self.vector_size = sum(int(np.prod(space.shape)) for space in vectors.values())
        self.mlp = self.vector_network(self.vector_size) if vectors else None
        self.output_size = sum(cnn.output_size for cnn in self.cnns.values()) + (mlp_units if vectors else 0)

    def image_network(self, channels: int) -> nn.Module:
        """The network of one image entry: (..., channels, 64, 64) to (..., output_size), an ``output_size`` attribute."""
        return ConvEncoder(channels, self.cnn_depth, self.cnn_activation_fn)

    def vector_network(self, size: int) -> nn.Module:
        """The network over the concatenated vector entries: (..., size) to (..., mlp_units)."""
        layers = mlp(size, self.mlp_units, self.mlp_units, self.mlp_layers - 1, self.activation_fn)
        return MLP(*layers, make_activation(self.activation_fn))

    def preprocess(self, observations: ObsTensor) -> dict[str, th.Tensor]:
        """
        The image entries as the encoder takes them and the decoder predicts them, by key: reduced to
        ``image_bits``, with dequantization noise in training mode only (see :func:`preprocess_image`).
        """
        return preprocess_images(observations, self.image_keys, self.image_bits, dequantize=self.training)

    def forward(self, observations: ObsTensor, images: Optional[dict[str, th.Tensor]] = None) -> th.Tensor:
        """
        :param observations: observations as stored (images uint8)
        :param images: the image entries already through :meth:`preprocess`, when the caller has them
        """
        obs = as_dict(observations)
        images = images or self.preprocess(obs)
        parts = [self.cnns[key](images[key]) for key in self.image_keys]
        if self.mlp is not None:
            flat = [obs[key].float().flatten(obs[key].ndim - len(shape)) for key, shape in self.vector_shapes.items()]
            parts.append(self.mlp(th.cat(flat, dim=-1)))
        return th.cat(parts, dim=-1)


class ObservationDecoder(nn.Module):
    """
    Mirror of :class:`ObservationEncoder`: a :class:`ConvDecoder` per image entry and an MLP head per
    vector entry, each the mean of a unit-variance Gaussian over that entry. A subclass chooses other
    networks by overriding :meth:`image_network`, :meth:`vector_network` and :meth:`vector_target`.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        feature_size: int,
        cnn_depth: int = 32,
        mlp_units: int = 400,
        mlp_layers: int = 2,
        activation_fn: type[nn.Module] = nn.ELU,
        cnn_activation_fn: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        images, vectors = split_observation_space(observation_space)
        self.shapes = {key: tuple(space.shape) for key, space in {**images, **vectors}.items()}
        self.image_keys = list(images)
        self.feature_size, self.cnn_depth, self.mlp_units, self.mlp_layers = feature_size, cnn_depth, mlp_units, mlp_layers
        self.activation_fn, self.cnn_activation_fn = activation_fn, cnn_activation_fn
        self.heads = nn.ModuleDict()
        for key, space in images.items():
            self.heads[key] = self.image_network(space.shape[0])
        for key, space in vectors.items():
            self.heads[key] = self.vector_network(int(np.prod(space.shape)))

    def image_network(self, channels: int) -> nn.Module:
        """The network of one image entry: features to (..., channels, 64, 64) in the encoder's input units."""
        return ConvDecoder(self.feature_size, channels, self.cnn_depth, self.cnn_activation_fn)

    def vector_network(self, size: int) -> nn.Module:
        """The network of one vector entry: features to (..., size), in the units of :meth:`vector_target`."""
        return mlp(self.feature_size, size, self.mlp_units, self.mlp_layers, self.activation_fn)

    def vector_target(self, vector: th.Tensor) -> th.Tensor:
        """A vector entry in the units the decoder predicts it in."""
        return vector

    def forward(self, features: th.Tensor) -> dict[str, th.Tensor]:
        """Predicted means per key, shaped like the (preprocessed) observations."""
        lead = features.shape[:-1]
        return {key: head(features).reshape(*lead, *self.shapes[key]) for key, head in self.heads.items()}

    def targets(
        self, observations: ObsTensor, images: dict[str, th.Tensor], like: dict[str, th.Tensor]
    ) -> dict[str, th.Tensor]:
        """
        What each entry's prediction is compared with: the image entries as the encoder took them
        (:meth:`ObservationEncoder.preprocess`), so that the target is exactly the encoder's input; the vector
        entries read from ``observations`` (as stored) through :meth:`vector_target`, shaped as ``like``'s.
        """
        obs = as_dict(observations)
        return {
            key: images[key] if key in self.image_keys else self.vector_target(obs[key].float().reshape(mean.shape))
            for key, mean in like.items()
        }

    def log_likelihood(
        self, features: th.Tensor, observations: ObsTensor, images: dict[str, th.Tensor]
    ) -> dict[str, th.Tensor]:
        """
        Per key, log-likelihood of the observations summed over the entry's dimensions, (batch, time).

        :param observations: observations as stored (the vector entries are read from here)
        :param images: the image entries as the encoder took them (:meth:`ObservationEncoder.preprocess`)
        """
        means = self.forward(features)
        targets = self.targets(observations, images, means)
        return {key: unit_gaussian_log_prob(mean, targets[key], len(self.shapes[key])) for key, mean in means.items()}
