"""
Online planning in the latent space of a world model: the cross-entropy method (CEM) of PlaNet,
and the :class:`LatentModel` protocol that states what a planner needs from a model.
"""

from __future__ import annotations

from typing import Literal, Protocol, Union, overload

import torch as th

from sb3_rssm.common.distributions import one_hot_of, sample_one_hot
from sb3_rssm.common.rssm import RSSMState


class LatentDynamics(Protocol):
    """The transition part of a :class:`LatentModel` (satisfied by :class:`sb3_rssm.common.rssm.RSSM`)."""

    def imagine_step(self, state: RSSMState, action: th.Tensor, sample: bool = True) -> RSSMState: ...


class LatentModel(Protocol):
    """
    What a planner needs from a world model (satisfied by :class:`sb3_rssm.common.world_model.WorldModel`):

    * ``rssm.imagine_step(state, action, sample=...)``: one prior transition, batch in, batch out
    * ``reward(features)``: predicted reward of ``state.features``, with the last dimension removed
    """

    @property
    def rssm(self) -> LatentDynamics: ...

    def reward(self, features: th.Tensor) -> th.Tensor: ...


PlanOutput = Union[th.Tensor, tuple[th.Tensor, th.Tensor, th.Tensor]]


class CEMPlanner:
    """
    Cross-entropy method over action sequences in latent space
    (Hafner et al., 2019, "Learning Latent Dynamics for Planning from Pixels").

    Each iteration samples ``num_candidates`` action sequences per env from the current
    distribution, scores each by the sum of rewards the model predicts along ``horizon`` imagined
    prior steps, and refits the distribution to the ``num_elites`` best. The action returned is
    the first step of the final distribution (model-predictive control: replan at every env step).

    * Continuous actions live in the normalized space [-1, 1]: a diagonal Gaussian per time step,
      starting at mean 0 and std 1; candidates are clipped to [-1, 1] before they are scored.
    * Discrete actions (``discrete=True``) are one-hot vectors: an independent categorical per
      time step, starting uniform and refitted to the elites' action frequencies.

    :param action_size: length of the action vector (number of actions when discrete)
    :param discrete: plan over one-hot actions instead of continuous ones
    :param horizon: number of imagined steps each candidate sequence is scored over
    :param num_candidates: action sequences sampled per env and iteration
    :param num_elites: best sequences per env that the distribution is refitted to
    :param iterations: refitting iterations
    :param min_std: lower bound of the refitted std (continuous only); keeps the search from
        collapsing on a single sequence too early. Ignored when discrete.
    :param sample_latents: draw the imagined stochastic states from the prior, as PlaNet does,
        rather than using the prior mean (passed as ``sample`` to ``imagine_step``)
    """

    def __init__(
        self,
        action_size: int,
        discrete: bool = False,
        horizon: int = 12,
        num_candidates: int = 1000,
        num_elites: int = 100,
        iterations: int = 10,
        min_std: float = 0.0,
        sample_latents: bool = True,
    ) -> None:
        for name, value in (
            ("action_size", action_size),
            ("horizon", horizon),
            ("num_candidates", num_candidates),
            ("num_elites", num_elites),
            ("iterations", iterations),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CEMPlanner: {name} must be a positive integer, got {value!r}")
        if num_elites > num_candidates:
            raise ValueError(
                f"CEMPlanner: num_elites ({num_elites}) must not exceed num_candidates ({num_candidates}): "
                "the elites are the best of the sampled candidates."
            )
        if not min_std >= 0.0:
            raise ValueError(f"CEMPlanner: min_std must be >= 0, got {min_std!r}")
        self.action_size = action_size
        self.discrete = discrete
        self.horizon = horizon
        self.num_candidates = num_candidates
        self.num_elites = num_elites
        self.iterations = iterations
        self.min_std = float(min_std)
        self.sample_latents = sample_latents
        #: diagnostics of the last plan, per env (see :meth:`plan`); tensors, so reading them is the caller's choice
        self.statistics: dict[str, th.Tensor] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(action_size={self.action_size}, discrete={self.discrete}, horizon={self.horizon}, "
            f"num_candidates={self.num_candidates}, num_elites={self.num_elites}, iterations={self.iterations}, "
            f"min_std={self.min_std}, sample_latents={self.sample_latents})"
        )

    def _evaluate(self, model: LatentModel, start: RSSMState, candidates: th.Tensor) -> th.Tensor:
        """
        Sum of predicted rewards of each candidate sequence.

        :param start: belief repeated once per candidate, fields (n_envs * num_candidates, ...)
        :param candidates: (n_envs * num_candidates, horizon, action_size), rows in the order of ``start``
        :return: (n_envs * num_candidates,) returns
        """
        state = start
        returns = candidates.new_zeros(candidates.shape[0])
        for t in range(self.horizon):
            state = model.rssm.imagine_step(state, candidates[:, t], sample=self.sample_latents)
            returns = returns + model.reward(state.features)
        return returns

    @overload
    def plan(self, model: LatentModel, belief: RSSMState, return_distribution: Literal[False] = ...) -> th.Tensor: ...

    @overload
    def plan(
        self, model: LatentModel, belief: RSSMState, return_distribution: Literal[True]
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]: ...

    def plan(self, model: LatentModel, belief: RSSMState, return_distribution: bool = False) -> PlanOutput:
        """
        Plan from the current belief of every env.

        :param model: the world model to imagine with (see :class:`LatentModel`)
        :param belief: current latent state, fields of shape (n_envs, ...)
        :param return_distribution: also return the final distribution over action sequences

        Afterwards :attr:`statistics` holds, per env: ``candidate_return_std``, the std of the predicted returns
        of the first iteration's candidates (how much the model tells random sequences apart);
        ``elite_return`` and ``elite_return_std``, the mean and std of the last iteration's elites' returns.
        :return: the action to take now, (n_envs, action_size): the first-step mean in [-1, 1] when
            continuous, a float one-hot of the first step's most probable action when discrete.
            With ``return_distribution=True``, ``(action, mean, std)`` where ``mean`` and ``std`` have
            shape (n_envs, horizon, action_size): the Gaussian's parameters when continuous; when
            discrete, ``mean`` is the categorical probabilities (the mean of the one-hot vectors) and
            ``std`` the per-component std of those one-hot vectors, ``sqrt(p * (1 - p))``.
        """
        n_envs = belief.deterministic.shape[0]
        n, c, h, a, k = n_envs, self.num_candidates, self.horizon, self.action_size, self.num_elites
        reference = belief.deterministic
        with th.inference_mode():
            # Candidates of env i occupy rows [i * c, (i + 1) * c): the layout that view(n, c) undoes below.
            start = RSSMState(*(x.repeat_interleave(c, dim=0) for x in belief))
            if self.discrete:
                probs = reference.new_full((n, h, a), 1.0 / a)
            else:
                mean = reference.new_zeros((n, h, a))
                std = reference.new_ones((n, h, a))
            for iteration in range(self.iterations):
                if self.discrete:
                    # one uniform number per step of each candidate (torch's Categorical samples through
                    # multinomial, which checks the probabilities on the host); log(0) = -inf is never drawn
                    log_probs = probs.unsqueeze(1).expand(n, c, h, a).log()
                    candidates = sample_one_hot(log_probs, straight_through=False).to(reference.dtype)
                else:
                    noise = th.randn((n, c, h, a), dtype=reference.dtype, device=reference.device)
                    candidates = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp(-1.0, 1.0)
                returns = self._evaluate(model, start, candidates.reshape(n * c, h, a)).view(n, c)
                elite_returns, elite_index = th.topk(returns, k, dim=1, sorted=False)
                if iteration == 0:
                    # how much the model tells apart sequences drawn from the initial distribution
                    first_spread = returns.std(dim=1)
                elites = candidates.gather(1, elite_index.view(n, k, 1, 1).expand(n, k, h, a))
                if self.discrete:
                    probs = elites.mean(dim=1)
                else:
                    mean = elites.mean(dim=1)
                    # The population std of the elites (as in PlaNet); finite even with a single elite.
                    std = elites.std(dim=1, unbiased=False).clamp(min=self.min_std)
            self.statistics = dict(
                candidate_return_std=first_spread,
                elite_return=elite_returns.mean(dim=1),
                elite_return_std=elite_returns.std(dim=1, unbiased=False),
            )
            if self.discrete:
                action = one_hot_of(probs[:, 0].argmax(dim=-1), a, reference.dtype)
                mean, std = probs, (probs * (1.0 - probs)).clamp(min=0.0).sqrt()
            else:
                action = mean[:, 0].clone()
        if return_distribution:
            return action, mean, std
        return action
