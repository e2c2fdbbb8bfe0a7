"""
The world models: what every one offers (:class:`WorldModelBase`, with the open-loop prediction pictures), and
the Gaussian world model of PlaNet and DreamerV1 (:class:`WorldModel`): observation encoder, RSSM, observation
decoder, reward head and an optional continuation head, with its training loss.
"""

from __future__ import annotations

from typing import Optional

import torch as th
from gymnasium import spaces
from torch import nn
from torch.distributions import Bernoulli, kl_divergence

from sb3_rssm.common.networks import (
    ObservationDecoder,
    ObservationEncoder,
    mlp,
    unit_gaussian_log_prob,
)
from sb3_rssm.common.rssm import KL_STRATEGIES, RSSM, LatentState, RSSMBase, RSSMState, free_bits_clamp, kl_loss
from sb3_rssm.common.spaces import action_size
from sb3_rssm.common.type_aliases import SequenceSamples, TensorObs


class WorldModelBase(nn.Module):
    """
    What every world model of this package offers, whatever its RSSM and heads: an ``encoder``
    (:class:`~sb3_rssm.common.networks.ObservationEncoder`), an ``rssm``
    (:class:`~sb3_rssm.common.rssm.RSSMBase`), a ``decoder`` (:class:`~sb3_rssm.common.networks.ObservationDecoder`,
    whose image predictions are in the encoder's input units, [-0.5, 0.5]) and a ``reward_head``; :meth:`loss`,
    :meth:`reward` and :meth:`continuation`; and the open-loop prediction pictures built from them.
    """

    encoder: ObservationEncoder
    rssm: RSSMBase
    decoder: ObservationDecoder
    reward_head: nn.Module

    def reward(self, features: th.Tensor) -> th.Tensor:
        """Mean predicted reward, shape of ``features`` without the last dimension."""
        raise NotImplementedError

    def continuation(self, features: th.Tensor) -> Optional[th.Tensor]:
        """Probability that the episode goes on from these states, or None without a continuation head."""
        raise NotImplementedError

    def loss(self, batch: SequenceSamples) -> tuple[th.Tensor, dict[str, th.Tensor], LatentState]:
        """
        The world model's loss on a (batch, time) chunk.

        :return: (loss, detached metrics, posterior states (batch, time, ...) for imagination)
        """
        raise NotImplementedError

    @th.no_grad()
    def open_loop_features(self, batch: SequenceSamples, context: int = 5) -> th.Tensor:
        """
        The model states of a (batch, time) chunk: posteriors of the first ``context`` steps, then the prior rolled
        open-loop with the real actions (sampled latents). Episode starts after the context are ignored.

        :return: features (batch, time, feature_size)
        """
        embeds = self.encoder(batch.observations)
        context = min(context, embeds.shape[1])
        start = self.rssm.context_state(batch)
        posterior, _ = self.rssm.observe(embeds[:, :context], batch.actions[:, :context], batch.is_first[:, :context], start)
        features = [posterior.features]
        if context < embeds.shape[1]:
            last = type(posterior)(*(x[:, -1] for x in posterior))
            imagined, _ = self.rssm.imagine(last, batch.actions[:, context:])
            features.append(imagined.features)
        return th.cat(features, dim=1)

    @th.no_grad()
    def open_loop_prediction(self, batch: SequenceSamples, context: int = 5) -> dict[str, th.Tensor]:
        """
        Reconstruct the first ``context`` steps from the posterior, then predict the rest open-loop with the
        prior and the real actions (Dreamer's video prediction, from :meth:`open_loop_features`).

        :return: per image key, predictions in [0, 1] of shape (batch, time, C, H, W)
        """
        return self.images(self.open_loop_features(batch, context))

    def images(self, features: th.Tensor) -> dict[str, th.Tensor]:
        """Per image key, the decoder's images of ``features`` (..., feature_size) in [0, 1], (..., C, H, W)."""
        decoded = self.decoder(features)
        return {key: (decoded[key].float() + 0.5).clamp(0.0, 1.0) for key in self.decoder.image_keys}

    @th.no_grad()
    def open_loop_strips(self, batch: SequenceSamples, n_sequences: int = 4, context: int = 5) -> dict[str, th.Tensor]:
        """
        Pictures of :meth:`open_loop_prediction` for the first ``n_sequences`` of ``batch``: per sequence three
        rows, the real frames, the model's frames (reconstructions of the first ``context``, then open-loop
        predictions) and their difference (grey: none); one column per time step.

        :return: per image key, a (3 * n * H, T * W, 3) float image in [0, 1] (grayscale shown as RGB)
        """
        if not self.decoder.image_keys:
            return {}
        observations = batch.observations
        if isinstance(observations, dict):
            head: TensorObs = {key: value[:n_sequences] for key, value in observations.items()}
        else:
            head = observations[:n_sequences]
        small = SequenceSamples(head, *(None if x is None else x[:n_sequences] for x in batch[1:]))
        strips = {}
        for key, predicted in self.open_loop_prediction(small, context).items():
            real = (head[key] if isinstance(head, dict) else head).float() / 255.0
            error = (predicted - real + 1.0) / 2.0
            rows = th.stack([real, predicted, error], dim=1).flatten(0, 1)  # (3 * n, T, C, H, W)
            rows = rows[:, :, :3] if rows.shape[2] >= 3 else rows[:, :, :1].expand(-1, -1, 3, -1, -1)
            strips[key] = rows.permute(0, 3, 1, 4, 2).flatten(2, 3).flatten(0, 1)  # (3n * H, T * W, 3)
        return strips


class WorldModel(WorldModelBase):
    """
    Every module is built here, from the spaces, so that optimizers and ``save``/``load`` see all of them.

    :param observation_space: Box (image or vector) or flat Dict of Boxes
    :param action_space: Box or Discrete
    :param stochastic_size: RSSM stochastic state size
    :param deterministic_size: RSSM GRU size
    :param hidden_size: RSSM dense layer width
    :param min_std: RSSM minimum standard deviation
    :param cnn_depth: conv encoder/decoder depth
    :param mlp_units: width of the vector encoder/decoder MLPs
    :param mlp_layers: hidden layers of the vector encoder/decoder MLPs
    :param reward_units: width of the reward (and continuation) head
    :param reward_layers: hidden layers of the reward (and continuation) head
    :param use_continuation: learn p(continue | state) from ``terminated`` (never from time-limit truncation)
    :param kl_strategy: ``regular``, ``free_bits`` (Dreamer v1), ``free_bits_per_step`` (PlaNet) or ``balanced``
        (see :func:`sb3_rssm.common.rssm.kl_loss`)
    :param free_bits: free nats of ``free_bits`` and ``free_bits_per_step``
    :param kl_balance_alpha: alpha for ``balanced``
    :param kl_scale: weight of the KL term
    :param reward_scale: weight of the reward log-likelihood
    :param continuation_scale: weight of the continuation log-likelihood
    :param overshooting_distance: latent overshooting (PlaNet): also train open-loop priors up to this many
        steps ahead towards the posteriors (0 or 1: off)
    :param overshooting_kl_scale: weight of the latent-overshooting KL term
    :param activation_fn: activation of the dense layers
    :param cnn_activation_fn: activation of the conv layers
    :param image_bits: bits per image channel, for the encoder's input and the decoder's target alike (8: Dreamer;
        PlaNet: 5, with uniform dequantization noise in training), see :func:`sb3_rssm.common.networks.preprocess_image`
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        stochastic_size: int = 30,
        deterministic_size: int = 200,
        hidden_size: int = 200,
        min_std: float = 0.1,
        cnn_depth: int = 32,
        mlp_units: int = 400,
        mlp_layers: int = 2,
        reward_units: int = 400,
        reward_layers: int = 2,
        use_continuation: bool = False,
        kl_strategy: str = "free_bits",
        free_bits: float = 3.0,
        kl_balance_alpha: float = 0.8,
        kl_scale: float = 1.0,
        reward_scale: float = 1.0,
        continuation_scale: float = 1.0,
        overshooting_distance: int = 0,
        overshooting_kl_scale: float = 1.0,
        activation_fn: type[nn.Module] = nn.ELU,
        cnn_activation_fn: type[nn.Module] = nn.ReLU,
        image_bits: int = 8,
    ) -> None:
        super().__init__()
        if kl_strategy not in KL_STRATEGIES:
            raise ValueError(f"Unknown kl_strategy {kl_strategy!r}: choose one of {KL_STRATEGIES}")
        self.kl_strategy = kl_strategy
        self.free_bits = free_bits
        self.kl_balance_alpha = kl_balance_alpha
        self.kl_scale = kl_scale
        self.reward_scale = reward_scale
        self.continuation_scale = continuation_scale
        if overshooting_distance < 0:
            raise ValueError(f"overshooting_distance must be >= 0, got {overshooting_distance}")
        self.overshooting_distance = overshooting_distance
        self.overshooting_kl_scale = overshooting_kl_scale
        self.encoder = ObservationEncoder(
            observation_space, cnn_depth, mlp_units, mlp_layers, activation_fn, cnn_activation_fn, image_bits
        )
        self.rssm = RSSM(
            self.encoder.output_size,
            action_size(action_space),
            stochastic_size,
            deterministic_size,
            hidden_size,
            min_std,
            activation_fn,
        )
        feature_size = self.rssm.feature_size
        self.decoder = ObservationDecoder(
            observation_space, feature_size, cnn_depth, mlp_units, mlp_layers, activation_fn, cnn_activation_fn
        )
        self.reward_head = mlp(feature_size, 1, reward_units, reward_layers, activation_fn)
        self.continuation_head: Optional[nn.Module] = (
            mlp(feature_size, 1, reward_units, reward_layers, activation_fn) if use_continuation else None
        )

    def reward(self, features: th.Tensor) -> th.Tensor:
        return self.reward_head(features).squeeze(-1)

    def continuation(self, features: th.Tensor) -> Optional[th.Tensor]:
        if self.continuation_head is None:
            return None
        return th.sigmoid(self.continuation_head(features).squeeze(-1))

    def loss(self, batch: SequenceSamples) -> tuple[th.Tensor, dict[str, th.Tensor], RSSMState]:
        """
        Negative ELBO of a (batch, time) chunk:
        ``kl_scale * KL - sum_k log p(o^k | state) - reward_scale * log p(r | state) [- log p(continue | state)]``.

        :return: (loss, detached metrics, posterior states (batch, time, ...) for imagination)
        """
        # the encoder's input and the decoder's target: converted once
        images = self.encoder.preprocess(batch.observations)
        embeds = self.encoder(batch.observations, images)
        posterior, prior = self.rssm.observe(embeds, batch.actions, batch.is_first, self.rssm.context_state(batch))
        features = posterior.features
        metrics: dict[str, th.Tensor] = {}
        loss = th.zeros((), device=features.device)
        for key, log_lik in self.decoder.log_likelihood(features, batch.observations, images).items():
            log_lik = log_lik.mean()
            metrics[f"reconstruction_log_lik/{key}"] = log_lik.detach()
            loss = loss - log_lik
        reward_log_lik = unit_gaussian_log_prob(self.reward(features), batch.rewards.float()).mean()
        # in float32 even under bfloat16 autocast (a no-op otherwise): the KL of 30 dims is a small difference of logs
        kl, kl_raw = kl_loss(
            RSSMState(*(x.float() for x in posterior)),
            RSSMState(*(x.float() for x in prior)),
            self.kl_strategy,
            self.free_bits,
            self.kl_balance_alpha,
        )
        loss = loss - self.reward_scale * reward_log_lik + self.kl_scale * kl
        if self.overshooting_distance > 1:
            overshooting = self.overshooting_kl(posterior, batch.actions, batch.is_first)
            loss = loss + self.overshooting_kl_scale * overshooting
            metrics["overshooting_kl"] = overshooting.detach()
        if self.continuation_head is not None:
            logits = self.continuation_head(features).squeeze(-1)
            continuation_log_lik = (
                Bernoulli(logits=logits, validate_args=False).log_prob(1.0 - batch.terminated.float()).mean()
            )
            loss = loss - self.continuation_scale * continuation_log_lik
            metrics["continuation_log_lik"] = continuation_log_lik.detach()
        with th.no_grad():  # logging only: no graph for these on the update's hot path
            metrics.update(
                reward_log_lik=reward_log_lik.detach(),
                kl=kl_raw,
                kl_loss=kl.detach(),
                posterior_entropy=posterior.entropy().mean(),
                prior_entropy=prior.entropy().mean(),
                model_loss=loss.detach(),
            )
        return loss, metrics, posterior

    def overshooting_kl(self, posterior: RSSMState, actions: th.Tensor, is_first: th.Tensor) -> th.Tensor:
        """
        Latent overshooting (Hafner et al., 2019, section 4): from every posterior state, roll the prior
        open-loop ``d = 2 .. overshooting_distance`` steps and measure ``KL(sg(q_{t+d}) || p(s_{t+d} | s_t, a))``.
        Distance 1 is the ordinary KL term. Targets past the chunk's end or across an episode start are masked.
        The free-bits rule applies per distance as to the ordinary term (per step for ``free_bits_per_step``,
        as in PlaNet's overshooting objective).

        :return: the mean over distances of the masked mean KL
        """
        batch_size, length = is_first.shape
        starts = th.arange(length, device=is_first.device)
        state = posterior.flatten()
        valid = th.ones(batch_size, length, dtype=th.bool, device=is_first.device)
        terms = []
        for distance in range(1, min(self.overshooting_distance, length - 1) + 1):
            target = (starts + distance).clamp(max=length - 1)
            step_actions = actions[:, target].reshape(batch_size * length, -1)
            state = self.rssm.imagine_step(state, step_actions)
            valid = valid & (starts + distance < length) & ~is_first[:, target].bool()
            if distance == 1:
                continue
            target_posterior = RSSMState(*(x[:, target].reshape(batch_size * length, -1) for x in posterior)).detach()
            kl = kl_divergence(target_posterior.distribution(), state.distribution()).reshape(batch_size, length)
            terms.append(free_bits_clamp(kl, self.kl_strategy, self.free_bits, valid.float()))
        if not terms:
            return th.zeros((), device=is_first.device)
        return th.stack(terms).mean()
