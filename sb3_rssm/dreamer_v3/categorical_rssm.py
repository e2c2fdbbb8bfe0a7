"""
The categorical RSSM of DreamerV3 (Hafner et al., 2023, "Mastering Diverse Domains through World Models";
danijar/dreamerv3 ``dreamerv3/rssm.py``), beside the Gaussian one of :mod:`sb3_rssm.common.rssm` and with the
same contract (:class:`~sb3_rssm.common.rssm.RSSMBase`: observe / imagine, ``is_first`` resets, step t holding
``o_t`` and ``a_{t-1}``).

The stochastic state ``s_t`` is ``stochastic_size`` one-hot vectors of ``classes`` classes each, sampled with
straight-through gradients from categoricals whose probabilities are mixed with 1% uniform (``unimix``). The
deterministic state ``h_t`` comes from DreamerV3's GRU: ``h_{t-1}``, ``s_{t-1}`` and ``a_{t-1}`` each pass a dense
layer with RMSNorm and SiLU; ``h_{t-1}`` is split into ``blocks`` groups, each group with the three embeddings
goes through a block-diagonal dense layer (RMSNorm, SiLU) and a block-diagonal layer to the GRU's gates
``h_t = u * tanh(r * c) + (1 - u) * h_{t-1}`` with ``r = sigmoid``, ``u = sigmoid(. - 1)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch as th
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, OneHotCategorical

from sb3_rssm.common.distributions import mode_one_hot, sample_one_hot, unimix_log_probs
from sb3_rssm.common.networks import MLP
from sb3_rssm.common.rssm import LatentState, RSSMBase
from sb3_rssm.dreamer_v3.networks import BlockLinear, RMSNorm, dense, init_, normed_mlp


class _CategoricalFields(NamedTuple):
    deterministic: th.Tensor
    stochastic: th.Tensor
    log_probs: th.Tensor


class CategoricalRSSMState(LatentState, _CategoricalFields):
    """
    Latent state of the categorical RSSM. All fields share the leading batch dimensions.

    :param deterministic: GRU state ``h`` (..., deterministic_size)
    :param stochastic: sample ``s``, the one-hot vectors side by side (..., stochastic_size * classes)
    :param log_probs: log-probabilities (after the uniform mix) of the categoricals ``s`` was drawn from,
        (..., stochastic_size, classes)
    """

    __slots__ = ()

    def distribution(self) -> Independent:
        """
        ``stochastic_size`` independent one-hot categoricals (``torch.distributions``, which reads values back to the
        host: the update uses :meth:`kl` and :meth:`entropy`, which do not).
        """
        return Independent(OneHotCategorical(logits=self.log_probs, validate_args=False), 1, validate_args=False)

    def entropy(self) -> th.Tensor:
        """The entropy summed over the latents, computed directly (no host synchronisation)."""
        log_q = self.log_probs.log_softmax(-1)
        return -(log_q.exp() * log_q).sum((-2, -1))

    def kl(self, other: LatentState) -> th.Tensor:
        """
        ``KL(self || other)`` summed over the latents, computed directly rather than by ``kl_divergence``, whose
        dispatch memo fills on first use: ``torch.compile`` guards on it, so a loss traced before the first eager KL
        would be compiled again after it (minutes, under ``compile_update="losses"``). The unimix keeps every
        probability above zero, so no term needs the ``0 log 0`` care of torch's categorical KL.
        """
        log_q = self.log_probs.log_softmax(-1)
        return (log_q.exp() * (log_q - other.log_probs.log_softmax(-1))).sum((-2, -1))


class CategoricalRSSM(RSSMBase):
    """
    DreamerV3's RSSM (sizes: DreamerV3's ``size12m`` preset by default).

    :param embed_size: size of the observation embedding fed to the posterior
    :param action_size: size of the (one-hot or continuous) action vector
    :param stochastic_size: number of categorical latents (DreamerV3: 32)
    :param classes: classes of each latent
    :param deterministic_size: size of the GRU state ``h`` (a multiple of ``blocks``)
    :param hidden_size: width of the dense layers
    :param blocks: groups of the block-diagonal GRU (1: a dense GRU)
    :param unimix: share of the uniform distribution mixed into prior and posterior
    :param prior_layers: hidden layers of the prior (DreamerV3: 2)
    :param posterior_layers: hidden layers of the posterior (DreamerV3: 1)
    :param gru_layers: block-diagonal hidden layers before the GRU's gates (DreamerV3: 1)
    """

    def __init__(
        self,
        embed_size: int,
        action_size: int,
        stochastic_size: int = 32,
        classes: int = 16,
        deterministic_size: int = 2048,
        hidden_size: int = 256,
        blocks: int = 8,
        unimix: float = 0.01,
        prior_layers: int = 2,
        posterior_layers: int = 1,
        gru_layers: int = 1,
    ) -> None:
        super().__init__(embed_size, action_size)
        if deterministic_size % blocks:
            raise ValueError(
                f"deterministic_size={deterministic_size} must be a multiple of blocks={blocks}: the GRU splits h into "
                "that many equal groups. Change one of them (blocks=1 gives a dense GRU)."
            )
        if posterior_layers < 1:
            raise ValueError(f"posterior_layers must be at least 1, got {posterior_layers}")
        self.stochastic_size, self.classes = stochastic_size, classes
        self.deterministic_size, self.hidden_size, self.blocks = deterministic_size, hidden_size, blocks
        self.unimix = unimix
        flat = stochastic_size * classes
        self.deterministic_input = MLP(*dense(deterministic_size, hidden_size))
        self.stochastic_input = MLP(*dense(flat, hidden_size))
        self.action_input = MLP(*dense(action_size, hidden_size))
        layers: list[nn.Module] = []
        size = deterministic_size + blocks * 3 * hidden_size
        for _ in range(gru_layers):
            layers += [init_(BlockLinear(size, deterministic_size, blocks)), RMSNorm(deterministic_size), nn.SiLU(True)]
            size = deterministic_size
        self.gru_hidden = nn.Sequential(*layers)
        self.gru_gates = init_(BlockLinear(size, 3 * deterministic_size, blocks))
        self.prior_head = normed_mlp(deterministic_size, hidden_size, prior_layers, flat)
        self.posterior_head = normed_mlp(deterministic_size + embed_size, hidden_size, posterior_layers, flat)
        # the posterior's layers after the first (see posterior()): kept as a tuple, as slicing builds a new module
        self._posterior_rest = tuple(self.posterior_head)[1:]

    @property
    def feature_size(self) -> int:
        return self.stochastic_size * self.classes + self.deterministic_size

    @property
    def device(self) -> th.device:
        return self.gru_gates.weight.device

    def _uniform(self, batch_size: int) -> th.Tensor:
        return self.gru_gates.weight.new_full((batch_size, self.stochastic_size, self.classes), -math.log(self.classes))

    def initial(self, batch_size: int) -> CategoricalRSSMState:
        """Initial latent state: zeros (uniform distributions, never used as such)."""
        zeros = self.gru_gates.weight.new_zeros
        return CategoricalRSSMState(
            zeros(batch_size, self.deterministic_size),
            zeros(batch_size, self.stochastic_size * self.classes),
            self._uniform(batch_size),
        )

    def from_belief(self, deterministic: th.Tensor, stochastic: th.Tensor) -> CategoricalRSSMState:
        """A state with the carried ``(h, s)``; its distribution is unused by the steps that follow it."""
        return CategoricalRSSMState(deterministic, stochastic, self._uniform(deterministic.shape[0]).to(stochastic.dtype))

    def _categorical(self, logits: th.Tensor, deterministic: th.Tensor, sample: bool) -> CategoricalRSSMState:
        log_probs = unimix_log_probs(logits.unflatten(-1, (self.stochastic_size, self.classes)), self.unimix)
        one_hot = sample_one_hot(log_probs) if sample else mode_one_hot(log_probs)
        return CategoricalRSSMState(deterministic, one_hot.flatten(-2), log_probs)

    def deterministic_step(self, state: CategoricalRSSMState, action: th.Tensor) -> th.Tensor:
        """DreamerV3's block GRU (module docstring): ``h_t`` from ``h_{t-1}``, ``s_{t-1}`` and ``a_{t-1}``."""
        previous = state.deterministic
        batch, groups = previous.shape[0], self.blocks
        # actions beyond [-1, 1] (unsquashed Normal samples) are scaled back into it, as the env clips them
        action = action / action.abs().clamp(min=1.0).detach()
        inputs = th.cat(
            [self.deterministic_input(previous), self.stochastic_input(state.stochastic), self.action_input(action)], -1
        )
        # each group of h sees its own part of h_{t-1} and all three embeddings
        grouped = previous.reshape(batch, groups, -1)
        x = th.cat([grouped, inputs.unsqueeze(1).expand(batch, groups, inputs.shape[-1]).to(grouped.dtype)], -1)
        gates = self.gru_gates(self.gru_hidden(x.reshape(batch, -1))).reshape(batch, groups, 3, -1)
        reset, candidate, update = (gates[:, :, i].reshape(batch, -1) for i in range(3))
        candidate = th.tanh(th.sigmoid(reset) * candidate)
        update = th.sigmoid(update - 1.0)
        return update * candidate + (1.0 - update) * previous

    def prior(self, deterministic: th.Tensor, sample: bool = True) -> CategoricalRSSMState:
        return self._categorical(self.prior_head(deterministic), deterministic, sample)

    def project_embed(self, embed: th.Tensor) -> th.Tensor:
        layer = self.posterior_head[0]
        return F.linear(embed, layer.weight[:, self.deterministic_size :], layer.bias)

    def posterior(self, deterministic: th.Tensor, embed_projection: th.Tensor, sample: bool = True) -> CategoricalRSSMState:
        layer = self.posterior_head[0]
        x = F.linear(deterministic, layer.weight[:, : self.deterministic_size]) + embed_projection
        for module in self._posterior_rest:
            x = module(x)
        return self._categorical(x, deterministic, sample)
