"""
DreamerV3's world model (Hafner et al., 2023, "Mastering Diverse Domains through World Models"): the categorical
RSSM, an encoder and decoder of RMSNorm + SiLU layers with symlog vectors, a two-hot reward head and a
continuation head, trained with the dynamics and representation KL terms.
"""

from __future__ import annotations

import torch as th
import torch.nn.functional as F
from gymnasium import spaces

from sb3_rssm.common.distributions import TwoHot
from sb3_rssm.common.networks import squared_error_sum
from sb3_rssm.common.rssm import kl_loss
from sb3_rssm.common.spaces import action_size
from sb3_rssm.common.type_aliases import SequenceSamples
from sb3_rssm.common.world_model import WorldModelBase
from sb3_rssm.dreamer_v3.categorical_rssm import CategoricalRSSM, CategoricalRSSMState
from sb3_rssm.dreamer_v3.networks import ObservationDecoderV3, ObservationEncoderV3, normed_mlp


class DreamerV3WorldModel(WorldModelBase):
    """
    Loss on a (batch, time) chunk, each term averaged over batch and time:
    ``sum_k ||dec_k(z) - o^k||^2 + CE(twohot(r), reward head) + BCE(c, continuation head) + dyn_scale * dyn
    + rep_scale * rep``, where vector entries are predicted as their symlog, images as ``x / 255`` (sigmoid),
    the continuation target is ``c = (1 - terminated) * discount`` (DreamerV3 learns the discount with it, so
    imagination multiplies by the predicted continuation alone) and ``dyn`` / ``rep`` are the KL terms of
    :func:`~sb3_rssm.common.rssm.kl_loss` (``dyn_rep``), clamped per step at ``free_bits``.

    :param observation_space: Box (image or vector) or flat Dict of Boxes
    :param action_space: Box or Discrete
    :param stochastic_size: number of categorical latents
    :param classes: classes of each latent
    :param deterministic_size: GRU state size
    :param hidden_size: width of the RSSM's dense layers
    :param blocks: groups of the block-diagonal GRU
    :param unimix: uniform share in the latents' categoricals
    :param cnn_depth: channel multiplier of the conv encoder and decoder
    :param mlp_units: width of the encoder's and decoder's MLPs
    :param mlp_layers: layers of the encoder's and decoder's MLPs
    :param head_units: width of the reward and continuation heads
    :param reward_layers: hidden layers of the reward head
    :param continuation_layers: hidden layers of the continuation head
    :param bins: two-hot bins of the reward head
    :param free_bits: free nats of each KL term, per step
    :param dyn_scale: weight of the dynamics KL (trains the prior)
    :param rep_scale: weight of the representation KL (trains the posterior)
    :param cnn_strided: stride-2 convolutions in the image encoder and decoder (the reference's ``strided``)
    """

    rssm: CategoricalRSSM
    decoder: ObservationDecoderV3

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        stochastic_size: int = 32,
        classes: int = 16,
        deterministic_size: int = 2048,
        hidden_size: int = 256,
        blocks: int = 8,
        unimix: float = 0.01,
        cnn_depth: int = 16,
        mlp_units: int = 256,
        mlp_layers: int = 3,
        head_units: int = 256,
        reward_layers: int = 1,
        continuation_layers: int = 1,
        bins: int = 255,
        free_bits: float = 1.0,
        dyn_scale: float = 0.5,
        rep_scale: float = 0.1,
        cnn_strided: bool = False,
    ) -> None:
        super().__init__()
        self.free_bits, self.dyn_scale, self.rep_scale = free_bits, dyn_scale, rep_scale
        self.encoder = ObservationEncoderV3(observation_space, cnn_depth, mlp_units, mlp_layers, cnn_strided)
        self.rssm = CategoricalRSSM(
            self.encoder.output_size,
            action_size(action_space),
            stochastic_size,
            classes,
            deterministic_size,
            hidden_size,
            blocks,
            unimix,
        )
        features = self.rssm.feature_size
        self.decoder = ObservationDecoderV3(observation_space, features, cnn_depth, mlp_units, mlp_layers, cnn_strided)
        # zero-initialised output layer: every reward is predicted as exactly 0 at first
        self.reward_head = normed_mlp(features, head_units, reward_layers, bins, outscale=0.0)
        self.continuation_head = normed_mlp(features, head_units, continuation_layers, 1)
        self.two_hot = TwoHot(bins)

    def reward(self, features: th.Tensor) -> th.Tensor:
        return self.two_hot.decode(self.reward_head(features))

    def continuation(self, features: th.Tensor) -> th.Tensor:
        """Predicted continuation, ``P(not terminal) * discount`` (see the class docstring)."""
        return th.sigmoid(self.continuation_head(features).squeeze(-1).float())

    def loss(
        self, batch: SequenceSamples, discount: float = 1.0 - 1.0 / 333
    ) -> tuple[th.Tensor, dict[str, th.Tensor], CategoricalRSSMState]:
        """
        :param batch: a (batch, time) chunk
        :param discount: the discount learned into the continuation targets (the algorithm's ``gamma``)
        :return: (loss, detached metrics, posterior states (batch, time, ...), with gradient)
        """
        images = self.encoder.preprocess(batch.observations)
        embeds = self.encoder(batch.observations, images)
        posterior, prior = self.rssm.observe(embeds, batch.actions, batch.is_first, self.rssm.context_state(batch))
        features = posterior.features
        metrics: dict[str, th.Tensor] = {}
        loss = th.zeros((), device=features.device)
        means = self.decoder(features)
        targets = self.decoder.targets(batch.observations, images, means)
        for key, mean in means.items():
            squared_error = squared_error_sum(mean, targets[key], len(self.decoder.shapes[key])).float().mean()
            metrics[f"reconstruction_loss/{key}"] = squared_error.detach()
            loss = loss + squared_error
        reward_loss = self.two_hot.loss(self.reward_head(features), batch.rewards).mean()
        continuation_target = (1.0 - batch.terminated.float()) * discount
        continuation_logits = self.continuation_head(features).squeeze(-1).float()
        continuation_loss = F.binary_cross_entropy_with_logits(continuation_logits, continuation_target)
        # in float32 even under bfloat16 autocast (a no-op otherwise): the KL is a small difference of logs
        kl, kl_raw = kl_loss(
            type(posterior)(*(x.float() for x in posterior)),
            type(prior)(*(x.float() for x in prior)),
            "dyn_rep",
            self.free_bits,
            dyn_scale=self.dyn_scale,
            rep_scale=self.rep_scale,
        )
        loss = loss + reward_loss + continuation_loss + kl
        with th.no_grad():  # logging only
            metrics.update(
                reward_loss=reward_loss.detach(),
                continuation_loss=continuation_loss.detach(),
                kl=kl_raw,
                kl_loss=kl.detach(),
                posterior_entropy=posterior.entropy().mean(),
                prior_entropy=prior.entropy().mean(),
                model_loss=loss.detach(),
            )
        return loss, metrics, posterior
