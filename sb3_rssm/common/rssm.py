"""
The Recurrent State-Space Model (RSSM): the filtering and imagination contract every RSSM of this package
keeps (:class:`RSSMBase`, with the latent-state methods of :class:`LatentState`), the Gaussian RSSM of
PlaNet and Dreamer v1 (:class:`RSSM`), and the KL losses (:func:`kl_loss`). The categorical RSSM of
DreamerV3 is in :mod:`sb3_rssm.dreamer_v3.categorical_rssm`.

The latent state at step t has a deterministic part ``h_t`` (a GRU) and a stochastic part ``s_t``:

* deterministic path: ``h_t = GRU(h_{t-1}, dense([s_{t-1}, a_{t-1}]))``
* prior (imagination, no observation): ``p(s_t | h_t)``
* posterior (filtering, with an observation): ``q(s_t | h_t, e_t)`` where ``e_t`` embeds ``o_t``

Alignment convention, used everywhere in this package: step t of a sequence holds the
observation ``o_t`` together with the action ``a_{t-1}`` that *led to it* (zeros at the first
step of an episode). :meth:`RSSMBase.observe` therefore consumes ``(a_{t-1}, o_t)`` pairs. Where
``is_first[t]`` is true, the previous latent state and the previous action are reset to their
initial values *before* step t, so nothing flows across an episode boundary.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, TypeVar, Union

import torch as th
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from sb3_rssm.common.networks import MLP, make_activation
from sb3_rssm.common.type_aliases import SequenceSamples

KL_STRATEGIES = ("regular", "free_bits", "free_bits_per_step", "balanced", "dyn_rep")


SelfLatentState = TypeVar("SelfLatentState", bound="LatentState")


class LatentState:
    """
    What every latent state of an RSSM can do, whatever its distribution: a mixin on a ``NamedTuple`` of tensors
    that share their leading batch dimensions and have ``deterministic`` (``h``, (..., deterministic_size)) and
    ``stochastic`` (``s``, flat: (..., stochastic features)) fields; other fields may have more event dimensions.
    """

    __slots__ = ()

    deterministic: th.Tensor
    stochastic: th.Tensor

    @property
    def features(self) -> th.Tensor:
        """Model state fed to every head: ``concat(s, h)``."""
        return th.cat([self.stochastic, self.deterministic], dim=-1)

    def distribution(self) -> Distribution:
        """The distribution ``s`` was drawn from, with the latent dimensions as its event."""
        raise NotImplementedError

    def kl(self, other: LatentState) -> th.Tensor:
        """``KL(self || other)`` of each state, summed over the latent dimensions."""
        return kl_divergence(self.distribution(), other.distribution())

    def entropy(self) -> th.Tensor:
        """The entropy of :meth:`distribution` in each state, summed over the latent dimensions."""
        return self.distribution().entropy()

    def detach(self: SelfLatentState) -> SelfLatentState:
        return type(self)(*(x.detach() for x in self))  # type: ignore[call-arg, attr-defined]

    def flatten(self: SelfLatentState) -> SelfLatentState:
        """Merge all leading dimensions into one batch dimension."""
        lead = self.deterministic.dim() - 1
        return type(self)(*(x.reshape(-1, *x.shape[lead:]) for x in self))  # type: ignore[call-arg, attr-defined]

    @classmethod
    def stack(cls: type[SelfLatentState], states: list[SelfLatentState], dim: int = 1) -> SelfLatentState:
        return cls(*(th.stack(fields, dim=dim) for fields in zip(*states)))  # type: ignore[call-arg, call-overload]

    def where(self: SelfLatentState, mask: th.Tensor, other: SelfLatentState) -> SelfLatentState:
        """Per batch element: ``other`` where ``mask`` is true, else ``self``. ``mask`` has shape (batch,)."""
        mask = mask.bool()

        def pick(a: th.Tensor, b: th.Tensor) -> th.Tensor:
            return th.where(mask.reshape(*mask.shape, *([1] * (a.dim() - mask.dim()))), b, a)

        return type(self)(*(pick(a, b) for a, b in zip(self, other)))  # type: ignore[call-arg, attr-defined]


class _GaussianFields(NamedTuple):
    deterministic: th.Tensor
    stochastic: th.Tensor
    mean: th.Tensor
    std: th.Tensor


class RSSMState(LatentState, _GaussianFields):
    """
    Latent state of the Gaussian RSSM. All fields share the leading batch dimensions.

    :param deterministic: GRU state ``h`` (..., deterministic_size)
    :param stochastic: sample ``s`` (..., stochastic_size)
    :param mean: mean of the distribution ``s`` was drawn from
    :param std: standard deviation of that distribution
    """

    __slots__ = ()

    def distribution(self) -> Independent:
        """Diagonal Gaussian over the stochastic part, event dimension = latent dims."""
        # no argument validation: non-finite values must reach the non-finite update check, not raise here
        return Independent(Normal(self.mean, self.std, validate_args=False), 1, validate_args=False)


StateT = TypeVar("StateT", bound=LatentState)


class RSSMBase(nn.Module):
    """
    The filtering and imagination contract of every RSSM, on top of the steps a subclass defines: :meth:`initial`,
    :meth:`deterministic_step` (``h_t`` from ``(s_{t-1}, a_{t-1})``), :meth:`prior`, :meth:`project_embed` and
    :meth:`posterior`, and :meth:`from_belief`. An algorithm sees only this contract, so it does not care which
    RSSM its world model holds.

    :param embed_size: size of the observation embedding fed to the posterior
    :param action_size: size of the (one-hot or continuous) action vector
    """

    def __init__(self, embed_size: int, action_size: int) -> None:
        super().__init__()
        self.embed_size = embed_size
        self.action_size = action_size

    @property
    def feature_size(self) -> int:
        """Size of :attr:`LatentState.features`."""
        raise NotImplementedError

    @property
    def device(self) -> th.device:
        """Where the parameters are (acting reads it every step: one attribute lookup, not a module walk)."""
        raise NotImplementedError

    def initial(self, batch_size: int) -> LatentState:
        """Latent state before an episode's first step."""
        raise NotImplementedError

    def from_belief(self, deterministic: th.Tensor, stochastic: th.Tensor) -> LatentState:
        """The latent state that acting carries between steps as ``(h, s)`` (the rest of the state is not needed)."""
        raise NotImplementedError

    def context_state(self, batch: SequenceSamples) -> Optional[LatentState]:
        """
        The state a replayed chunk starts from: the replay context stored for the step before it (zeros, the
        initial state, where there is none), or None (the initial state) when the replay keeps no context.
        """
        if batch.context_deterministic is None or batch.context_stochastic is None:
            return None
        return self.from_belief(batch.context_deterministic, batch.context_stochastic)

    def deterministic_step(self, state: LatentState, action: th.Tensor) -> th.Tensor:
        """``h_t`` from the state at t-1 and ``a_{t-1}``: the deterministic path, shared by prior and posterior."""
        raise NotImplementedError

    def prior(self, deterministic: th.Tensor, sample: bool = True) -> LatentState:
        """
        ``p(s_t | h_t)`` for any leading dimensions of ``h_t``.

        :param deterministic: h_t (..., deterministic_size)
        :param sample: draw a sample (with gradient); otherwise ``stochastic`` is the distribution's mean or mode
        """
        raise NotImplementedError

    def project_embed(self, embed: th.Tensor) -> th.Tensor:
        """
        The embedding's share of the posterior's first layer (its embedding columns and bias).

        ``dense([h, e]) = W_h h + (W_e e + b)``: the second term does not depend on the recurrence, so
        :meth:`observe` computes it for a whole sequence in one matmul instead of one per step.
        """
        raise NotImplementedError

    def posterior(self, deterministic: th.Tensor, embed_projection: th.Tensor, sample: bool = True) -> LatentState:
        """
        ``q(s_t | h_t, e_t)``.

        :param deterministic: h_t
        :param embed_projection: :meth:`project_embed` of e_t
        :param sample: draw a sample (with gradient); otherwise ``stochastic`` is the distribution's mean or mode
        """
        raise NotImplementedError

    def _reset(self, state: StateT, action: th.Tensor, is_first: Optional[th.Tensor]) -> tuple[StateT, th.Tensor]:
        """Initial state and zero previous action where ``is_first``."""
        if is_first is None:
            return state, action
        state = state.where(is_first, self.initial(action.shape[0]))
        return state, action * (1.0 - is_first.to(action.dtype).reshape(-1, 1))

    def imagine_step(self, state: StateT, action: th.Tensor, sample: bool = True) -> StateT:
        """
        One prior transition: advance ``h`` with ``(s_{t-1}, a_{t-1})`` and draw ``s_t ~ p(s_t | h_t)``.

        :param state: latent state at t-1
        :param action: action a_{t-1} (batch, action_size)
        :param sample: draw a sample (with gradient); otherwise use the mean (Gaussian) or mode (categorical)
        :return: prior state at t
        """
        return self.prior(self.deterministic_step(state, action), sample)

    def observe_step(
        self,
        state: StateT,
        action: th.Tensor,
        embed: th.Tensor,
        is_first: Optional[th.Tensor] = None,
        sample: bool = True,
        with_prior: bool = True,
    ) -> tuple[StateT, Optional[StateT]]:
        """
        One filtering step: advance ``h``, then ``s_t ~ q(s_t | h_t, e_t)``.

        :param state: latent state at t-1
        :param action: action a_{t-1} that led to o_t
        :param embed: embedding e_t of o_t
        :param is_first: (batch,) flags; where true, ``state`` and ``action`` are reset first
        :param sample: draw a posterior sample; otherwise use the mean (Gaussian) or mode (categorical)
        :param with_prior: also return ``p(s_t | h_t)`` (for the KL term); acting needs only the posterior
        :return: (posterior, prior or None) at t. Where an observation exists no sample of the prior is
            ever used, so the prior's ``stochastic`` is its mean or mode (no random numbers drawn for it).
        """
        state, action = self._reset(state, action, is_first)
        deterministic = self.deterministic_step(state, action)
        posterior = self.posterior(deterministic, self.project_embed(embed), sample)
        return posterior, (self.prior(deterministic, sample=False) if with_prior else None)

    def observe(
        self,
        embeds: th.Tensor,
        actions: th.Tensor,
        is_first: th.Tensor,
        state: Optional[StateT] = None,
    ) -> tuple[StateT, StateT]:
        """
        Filter a (batch, time) sequence. Only the recurrence and the posterior run step by step; the embeddings'
        share of the posterior layer and the priors (which depend on ``h_t`` alone) run once over the sequence.

        :param embeds: (batch, time, embed_size) embeddings of o_t
        :param actions: (batch, time, action_size) where ``actions[:, t]`` is a_{t-1}
        :param is_first: (batch, time) episode-start flags
        :param state: state before the first step (``initial`` when None)
        :return: (posteriors, priors), each with fields of shape (batch, time, ...); the priors' ``stochastic``
            is their mean or mode, as in :meth:`observe_step`
        """
        if state is None:
            state = self.initial(embeds.shape[0])
        projections = self.project_embed(embeds)
        posteriors = []
        for t in range(embeds.shape[1]):
            state, action = self._reset(state, actions[:, t], is_first[:, t])
            state = self.posterior(self.deterministic_step(state, action), projections[:, t])
            posteriors.append(state)
        posterior = type(state).stack(posteriors)
        return posterior, self.prior(posterior.deterministic, sample=False)

    def imagine(
        self,
        start: StateT,
        policy_or_actions: Union[Callable[[StateT], th.Tensor], th.Tensor],
        horizon: Optional[int] = None,
    ) -> tuple[StateT, th.Tensor]:
        """
        Roll the prior forward from ``start``.

        :param start: (batch, ...) start states
        :param policy_or_actions: a callable mapping a state to the action taken in it, or a
            (batch, horizon, action_size) tensor of actions (the t-th taken in the t-th state)
        :param horizon: number of imagined steps (defaults to the action tensor's length)
        :return: (states, actions): the imagined states after each action, fields (batch, horizon, ...),
            and the actions taken (batch, horizon, action_size)
        """
        if horizon is None:
            if callable(policy_or_actions):
                raise ValueError("imagine() needs a horizon when given a policy")
            horizon = policy_or_actions.shape[1]
        if callable(policy_or_actions):
            policy = policy_or_actions
        else:
            planned = iter(policy_or_actions.unbind(1))

            def policy(state: StateT) -> th.Tensor:
                return next(planned)

        def step(state: StateT) -> tuple[StateT, th.Tensor]:
            action = policy(state)
            return self.imagine_step(state, action), action

        return rollout(start, step, horizon)


def rollout(start: StateT, step: Callable[[StateT], tuple[StateT, th.Tensor]], horizon: int) -> tuple[StateT, th.Tensor]:
    """
    Apply an imagination step ``horizon`` times from ``start``: :meth:`RSSMBase.imagine`'s loop, for callers whose
    step is not a plain ``imagine_step`` (DreamerV3's compiled actor-and-prior step).

    :param start: (batch, ...) start states
    :param step: maps a state to (the next state, the action taken in the state)
    :param horizon: number of steps
    :return: (states, actions): the states after each step, fields (batch, horizon, ...), and the actions
        (batch, horizon, action_size)
    """
    state = start
    states, actions = [], []
    for _ in range(horizon):
        state, action = step(state)
        states.append(state)
        actions.append(action)
    return type(state).stack(states), th.stack(actions, dim=1)


class RSSM(RSSMBase):
    """
    Gaussian RSSM (Hafner et al., 2019, "Learning Latent Dynamics for Planning from Pixels").

    :param embed_size: size of the observation embedding fed to the posterior
    :param action_size: size of the (one-hot or continuous) action vector
    :param stochastic_size: dimensions of the stochastic state ``s``
    :param deterministic_size: size of the GRU state ``h``
    :param hidden_size: width of the dense layers around the GRU
    :param min_std: lower bound added to the softplus standard deviation
    :param activation_fn: activation of the dense layers (ELU in Dreamer, ReLU in PlaNet)
    """

    def __init__(
        self,
        embed_size: int,
        action_size: int,
        stochastic_size: int = 30,
        deterministic_size: int = 200,
        hidden_size: int = 200,
        min_std: float = 0.1,
        activation_fn: type[nn.Module] = nn.ELU,
    ) -> None:
        super().__init__(embed_size, action_size)
        self.stochastic_size = stochastic_size
        self.deterministic_size = deterministic_size
        self.hidden_size = hidden_size
        self.min_std = min_std
        self.prior_input = MLP(nn.Linear(stochastic_size + action_size, hidden_size), make_activation(activation_fn))
        self.gru = nn.GRUCell(hidden_size, deterministic_size)
        self.prior_head = MLP(
            nn.Linear(deterministic_size, hidden_size),
            make_activation(activation_fn),
            nn.Linear(hidden_size, 2 * stochastic_size),
        )
        self.posterior_head = MLP(
            nn.Linear(deterministic_size + embed_size, hidden_size),
            make_activation(activation_fn),
            nn.Linear(hidden_size, 2 * stochastic_size),
        )

    @property
    def feature_size(self) -> int:
        return self.stochastic_size + self.deterministic_size

    @property
    def device(self) -> th.device:
        return self.gru.weight_hh.device

    def initial(self, batch_size: int) -> RSSMState:
        """Initial latent state (zeros; unit std so its distribution is well defined)."""
        param = self.gru.weight_hh
        zeros = param.new_zeros
        return RSSMState(
            zeros(batch_size, self.deterministic_size),
            zeros(batch_size, self.stochastic_size),
            zeros(batch_size, self.stochastic_size),
            param.new_ones(batch_size, self.stochastic_size),
        )

    def from_belief(self, deterministic: th.Tensor, stochastic: th.Tensor) -> RSSMState:
        """A state with the carried ``(h, s)``; its mean and std are unused by the steps that follow it."""
        return RSSMState(deterministic, stochastic, stochastic, th.ones_like(stochastic))

    def _gaussian(self, raw: th.Tensor, deterministic: th.Tensor, sample: bool) -> RSSMState:
        mean, std = raw.chunk(2, dim=-1)
        # softplus over a strided half of `raw` takes a scalar path about 10x slower than on contiguous memory
        std = F.softplus(std.contiguous()) + self.min_std
        stochastic = mean + std * th.randn_like(std) if sample else mean
        return RSSMState(deterministic, stochastic, mean, std)

    def deterministic_step(self, state: RSSMState, action: th.Tensor) -> th.Tensor:
        """``h_t = GRU(h_{t-1}, dense([s_{t-1}, a_{t-1}]))``: the deterministic path, shared by prior and posterior."""
        x = self.prior_input(th.cat([state.stochastic, action], dim=-1))
        return self.gru(x, state.deterministic)

    def prior(self, deterministic: th.Tensor, sample: bool = True) -> RSSMState:
        return self._gaussian(self.prior_head(deterministic), deterministic, sample)

    def project_embed(self, embed: th.Tensor) -> th.Tensor:
        layer = self.posterior_head[0]
        return F.linear(embed, layer.weight[:, self.deterministic_size :], layer.bias)

    def posterior(self, deterministic: th.Tensor, embed_projection: th.Tensor, sample: bool = True) -> RSSMState:
        layer, activation, output = self.posterior_head
        hidden = F.linear(deterministic, layer.weight[:, : self.deterministic_size]) + embed_projection
        return self._gaussian(output(activation(hidden)), deterministic, sample)


def free_bits_clamp(kl: th.Tensor, strategy: str, free_bits: float, mask: Optional[th.Tensor] = None) -> th.Tensor:
    """
    Average a (batch, time) KL into a loss under a free-bits rule.

    * ``free_bits`` (Dreamer v1): ``max(mean KL, free_bits)``: the threshold applies to the batch mean, so
      while the mean is under it no step gets gradient, and above it every step does.
    * ``free_bits_per_step`` (PlaNet): ``mean(max(KL_bt, free_bits))``: each (batch, time) step is clamped
      before averaging, so exactly the steps under the threshold get no gradient. The value is PlaNet's
      ``mean(max(0, KL_bt - free_bits)) + free_bits``, with the same gradient.
    * anything else: the plain mean.

    :param kl: per-step KL, any shape
    :param strategy: the KL strategy
    :param free_bits: the threshold in nats
    :param mask: optional 0/1 weights of the steps (masked steps count neither in the sum nor the count)
    :return: scalar loss
    """
    if strategy == "free_bits_per_step":
        kl = th.clamp(kl, min=free_bits)
    if mask is None:
        mean = kl.mean()
    else:
        mean = (kl * mask).sum() / mask.sum().clamp(min=1.0)
    if strategy == "free_bits":
        mean = th.clamp(mean, min=free_bits)
    return mean


def kl_loss(
    posterior: LatentState,
    prior: LatentState,
    strategy: str = "regular",
    free_bits: float = 1.0,
    balance_alpha: float = 0.8,
    dyn_scale: float = 0.5,
    rep_scale: float = 0.1,
) -> tuple[th.Tensor, th.Tensor]:
    """
    KL term of the world-model loss, ``KL(q || p)`` summed over latent dimensions, for any pair of latent
    states whose distributions ``torch.distributions.kl_divergence`` knows (Gaussian, categorical).

    * ``regular``: mean over batch and time of KL(q || p), gradient into both sides.
    * ``free_bits``: ``max(mean KL, free_bits)``; the threshold applies to the batch mean, as in
      Dreamer v1 (danijar/dreamer), so below it the loss is constant and carries no gradient.
    * ``free_bits_per_step``: ``mean(max(KL_bt, free_bits))``; the threshold applies to every (batch, time)
      step, as in PlaNet (google-research/planet, ``planet/training/utility.py``): a step under it gets
      no gradient, a step above it does (see :func:`free_bits_clamp`).
    * ``balanced`` (Dreamer v2): ``alpha * KL(sg(q) || p) + (1 - alpha) * KL(q || sg(p))``: the
      prior is trained towards the posterior with weight alpha, the posterior regularized
      towards the prior with weight 1 - alpha.
    * ``dyn_rep`` (DreamerV3): ``dyn_scale * mean(max(KL(sg(q) || p), free_bits)) + rep_scale *
      mean(max(KL(q || sg(p)), free_bits))``: the dynamics loss trains the prior, the representation loss the
      posterior, each clamped at ``free_bits`` per (batch, time) step (danijar/dreamerv3, ``rssm.py``).

    :param posterior: q, fields (batch, time, ...)
    :param prior: p, the same shape
    :param strategy: one of :data:`KL_STRATEGIES`
    :param free_bits: the threshold of the free-bits strategies, in nats
    :param balance_alpha: alpha of ``balanced``
    :param dyn_scale: weight of the dynamics loss of ``dyn_rep``
    :param rep_scale: weight of the representation loss of ``dyn_rep``
    :return: (loss after the strategy, mean raw KL for logging)
    """
    if strategy not in KL_STRATEGIES:
        raise ValueError(f"Unknown kl_strategy {strategy!r}: choose one of {KL_STRATEGIES}")
    if strategy in ("balanced", "dyn_rep"):
        # the same KL twice, each with the gradient of one side only
        dyn = posterior.detach().kl(prior)
        rep = posterior.kl(prior.detach())
        if strategy == "balanced":
            loss = balance_alpha * dyn.mean() + (1.0 - balance_alpha) * rep.mean()
        else:
            dyn_loss = free_bits_clamp(dyn, "free_bits_per_step", free_bits)
            loss = dyn_scale * dyn_loss + rep_scale * free_bits_clamp(rep, "free_bits_per_step", free_bits)
        return loss, dyn.mean().detach()
    kl = posterior.kl(prior)
    return free_bits_clamp(kl, strategy, free_bits), kl.mean().detach()
