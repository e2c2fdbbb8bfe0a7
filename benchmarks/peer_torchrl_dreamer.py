"""
Seconds per DreamerV1 training update with TorchRL (0.14.1), on the work that ``benchmarks/update_time.py`` times
for ours, for ``benchmarks/run.py`` to compare (``peer_update``). It runs in its own virtual environment:

    python3 -m venv ~/.venvs/torchrl-peer
    ~/.venvs/torchrl-peer/bin/pip install torch==2.13.0   # first: on these machines a CPU build, from disk
    ~/.venvs/torchrl-peer/bin/pip install torch==2.13.0 torchrl==0.14.1 "tensordict>=0.14.3,<0.15"
    ~/.venvs/torchrl-peer/bin/python benchmarks/peer_torchrl_dreamer.py --obs pixels --batch 50 --seq 50 \
        --horizon 15 --autocast off --updates 3 --threads 2 --device cpu

(installing torch 2.13.0 alone first keeps torchrl from pulling a CUDA build of torch into the venv).

The work: a random but correctly shaped batch of ``--batch`` sequences of ``--seq`` steps (64x64x3 uint8 pixels or a
24-dim vector, 6-dim actions in [-1, 1], rewards), the paper's sizes (RSSM stochastic 30, deterministic 200, hidden 200;
conv encoder and decoder of depth 32; reward 2x400, actor 4x400, value 3x400, ELU; Adam with learning rates 6e-4 for
the world model and 8e-5 for the actor and the value, gradients clipped at a norm of 100), and the update of TorchRL's
Dreamer recipe (``sota-implementations/dreamer/dreamer.py``):

- ``to_float``: the uint8 pixels to float as TorchRL's ``ToTensorImage`` scales them (``x / 255``); the recipe does
  this when it stores frames (or in the env on a GPU), so its update starts from float pixels. Nothing for vectors;
- ``model``: ``DreamerModelLoss`` (free nats 3, KL scale 1) through the world model (``ObsEncoder``, ``RSSMRollout``
  of ``RSSMPrior`` and ``RSSMPosterior``, ``ObsDecoder`` and the reward ``MLP``), backward, clip, Adam step;
- ``actor``: ``DreamerActorLoss``, which imagines ``--horizon`` steps from every state of the batch in a
  ``DreamerEnv`` (the RSSM prior and the reward model as an environment, the actor as its policy), TD(lambda)
  targets (lambda 0.95, gamma 0.99) and the discount-weighted loss; backward, clip, Adam step;
- ``value``: ``DreamerValueLoss`` on the imagined states, backward, clip, Adam step.

The modules are built as the recipe's ``make_dreamer`` builds them (``torchrl.modules``: ``ObsEncoder``,
``ObsDecoder``, ``RSSMPrior``, ``RSSMPosterior``, ``RSSMRollout``, ``MLP``, ``DreamerActor`` with a ``TanhNormal``,
``WorldModelWrapper``; ``torchrl.envs.model_based.dreamer.DreamerEnv``; ``torchrl.objectives.dreamer``), eagerly
(the recipe can compile its losses; not here, nor ours), with two sizes set to ours instead of the recipe's: the actor
has 4 hidden layers (the paper's; the recipe's has 3) and the vector encoder is 24-400-400 with ELU on its output, an
embedding of 400 as ours (the recipe's is 24-400-400-1024, linear output). ``--autocast bf16|fp16`` runs the
forward passes under ``torch.autocast`` (the RSSM's GRU cell stays in float32, as ``RSSMPrior`` has it), with a
``GradScaler`` for float16 only (the recipe scales bfloat16 losses too, which changes nothing but a multiply): one
per optimizer as in the recipe (ours shares one); in both the first float16 updates may skip a step while the scale,
65536 at first, comes down to one that does not overflow.

Each phase's seconds end after a device sync. Sampling from a replay buffer is not timed (nor is it in ours). One
untimed warm-up update comes first; ``--check`` also prints, for every update, the share of each optimizer's parameter
tensors that changed (the prior's mean and scale head gets no gradient while every step's KL is under the free nats,
as on a random batch, and does not move).

What differs from ours (``sb3_rssm.DreamerV1``), by what is computed rather than how fast:

- pixels are scaled to [0, 1] (``x / 255``), ours to [-0.5, 0.5]; ours converts them inside its world-model phase;
- the reconstruction and reward losses are squared errors summed over each observation (twice the unit-Gaussian
  negative log-likelihood that ours uses, less its constant: the same gradient direction, twice its weight next to
  the KL). For vectors ``DreamerModelLoss`` sums over the last three dimensions, here batch, time and features, so the
  vector loss is a sum over the batch rather than a mean (its scale only);
- the KL is clamped at the free nats for every (batch, time) step before the mean (``delayed_clamp=False``, the
  recipe's and TorchRL's default; our ``kl_strategy="free_bits_per_step"``); ours clamps the batch mean (Dreamer v1);
- the posterior rollout starts from the batch's stored ``state`` and ``belief`` (zeros here; in the recipe those the
  collecting actor wrote) rather than resetting where an episode begins; it runs ``--seq`` prior and posterior steps
  as ours does. Imagination starts from the state before each step (the stored one, then the posteriors of steps
  1..T-1), ``batch x seq`` starts as ours (ours starts from the T posteriors);
- the actor sees the imagined states undetached, so the actor loss's backward pass also runs through the actor's
  input into the dynamics (ours, as danijar/dreamer, detaches the actor's input: its gradient reaches the dynamics
  only through the sampled action); the world model and the value net are held out of the actor's backward pass in
  both (no parameter gradients for them);
- in imagination TorchRL runs under ``ExplorationType.RANDOM``, so the reward and value heads, unit-variance
  ``IndependentNormal`` modules, give samples (``loc`` + unit noise) rather than means to the lambda targets;
- TD(lambda) targets for all ``--horizon`` imagined steps (each bootstrapped with the value of its next state, the last
  with V(s_H)), the actor loss the negative sum over the horizon of the discount-weighted targets (ours: the mean of
  ``--horizon - 1`` lambda returns over the imagined states, bootstrapped with V(s_H)). The value net regresses
  V(s_0..s_{H-1}), the start state included, with a discount-weighted squared error (ours: V(s_1..s_{H-1}), a
  weighted unit-Gaussian log-likelihood): one more state per start in both targets and values;
- each optimizer steps right after its own backward pass, so the actor imagines with the world model that has just
  been stepped (ours steps all three after the three backward passes, as danijar/dreamer); the same arithmetic;
- Adam: TorchRL's defaults (eps 1e-8; fused on CUDA, as the recipe; ``foreach`` on the CPU), ours eps 1e-7, fused
  wherever torch has the kernel (the CPU included);
- the pixel decoder has a ReLU after its dense layer (ours, as danijar/dreamer, none); ours also computes the actor's
  entropy (detached, for its metrics).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from typing import Any, Callable, Optional

import tensordict
import torch
import torchrl
from tensordict import TensorDict
from tensordict.nn import (
    InteractionType,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictSequential,
)
from torch import nn
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs.model_based.dreamer import DreamerEnv
from torchrl.modules import (
    MLP,
    DreamerActor,
    IndependentNormal,
    ObsDecoder,
    ObsEncoder,
    RSSMPosterior,
    RSSMPrior,
    RSSMRollout,
    SafeModule,
    SafeProbabilisticModule,
    SafeProbabilisticTensorDictSequential,
    SafeSequential,
    TanhNormal,
    WorldModelWrapper,
)
from torchrl.objectives.dreamer import DreamerActorLoss, DreamerModelLoss, DreamerValueLoss

STATE_SIZE = 30  # stochastic
BELIEF_SIZE = 200  # deterministic (GRU)
HIDDEN_SIZE = 200  # RSSM hidden layers
CNN_DEPTH = 32
UNITS = 400  # reward, actor, value and vector MLPs
ACTION_SIZE = 6
VECTOR_SIZE = 24
IMAGE_SHAPE = (3, 64, 64)
MODEL_LR, ACTOR_LR, VALUE_LR = 6e-4, 8e-5, 8e-5
GRAD_CLIP = 100.0
FREE_NATS = 3.0
GAMMA, LMBDA = 0.99, 0.95
AUTOCAST_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def unit_normal_head(network: nn.Module, in_keys: list[Any], loc_key: Any, out_key: Any, event_dim: int) -> nn.Module:
    """
    A network whose output is the mean of a unit-variance ``IndependentNormal`` (TorchRL's decoder, reward and value
    heads).

    :param network: the network, from ``in_keys`` to the mean
    :param in_keys: the tensordict keys of its inputs
    :param loc_key: the key of the mean
    :param out_key: the key of the prediction (the mean, or a sample under ``ExplorationType.RANDOM``)
    :param event_dim: the distribution's event dimensions (3 for images)
    :return: the probabilistic module
    """
    return ProbabilisticTensorDictSequential(
        TensorDictModule(network, in_keys=in_keys, out_keys=[loc_key]),
        ProbabilisticTensorDictModule(
            in_keys=[loc_key],
            out_keys=[out_key],
            distribution_class=IndependentNormal,
            distribution_kwargs={"scale": 1.0, "event_dim": event_dim},
        ),
    )


def build_world_model(pixels: bool, device: torch.device) -> dict[str, Any]:
    """
    The world model as TorchRL's Dreamer recipe assembles it, at the paper's sizes.

    :param pixels: 64x64x3 images (conv encoder and decoder) rather than a 24-dim vector (MLPs)
    :param device: where the parameters live
    :return: the ``WorldModelWrapper`` and its parts (``rssm_prior``, ``reward_module``, ``obs_key``, ``reco_key``)
    """
    action_spec = Bounded(-1.0, 1.0, (ACTION_SIZE,), device=device)
    if pixels:
        obs_key, reco_key, event_dim = "pixels", "reco_pixels", 3
        encoder: nn.Module = ObsEncoder(channels=CNN_DEPTH, in_channels=IMAGE_SHAPE[0], device=device)
        # four convolutions (kernel 4, stride 2): 64 -> 31 -> 14 -> 6 -> 2, 8 * depth channels
        embed_size = CNN_DEPTH * 8 * 2 * 2
        decoder: nn.Module = ObsDecoder(
            channels=CNN_DEPTH, latent_dim=STATE_SIZE + BELIEF_SIZE, out_channels=IMAGE_SHAPE[0], device=device
        )
    else:
        obs_key, reco_key, event_dim = "observation", "reco_observation", 1
        embed_size = UNITS
        # ours: 24 -> 400 -> 400, ELU after both (the recipe: 24 -> 400 -> 400 -> 1024, linear output)
        encoder = MLP(
            in_features=VECTOR_SIZE,
            out_features=embed_size,
            depth=1,
            num_cells=UNITS,
            activation_class=nn.ELU,
            activate_last_layer=True,
            device=device,
        )
        decoder = MLP(
            in_features=STATE_SIZE + BELIEF_SIZE,
            out_features=VECTOR_SIZE,
            depth=2,
            num_cells=UNITS,
            activation_class=nn.ELU,
            device=device,
        )
    rssm_prior = RSSMPrior(
        action_spec,
        hidden_dim=HIDDEN_SIZE,
        rnn_hidden_dim=BELIEF_SIZE,
        state_dim=STATE_SIZE,
        action_dim=ACTION_SIZE,
        device=device,
    )
    rssm_posterior = RSSMPosterior(
        hidden_dim=HIDDEN_SIZE,
        state_dim=STATE_SIZE,
        rnn_hidden_dim=BELIEF_SIZE,
        obs_embed_dim=embed_size,
        device=device,
    )
    reward_module = MLP(
        in_features=STATE_SIZE + BELIEF_SIZE, out_features=1, depth=2, num_cells=UNITS, activation_class=nn.ELU, device=device
    )
    # one step: the prior advances the belief from (state, belief, action), the posterior samples the next state
    # from the new belief and the next observation's embedding; RSSMRollout loops over time
    rollout = RSSMRollout(
        TensorDictModule(
            rssm_prior,
            in_keys={"state": "state", "belief": "belief", "action": "action", "noise": "prior_noise"},
            out_keys=[("next", "prior_mean"), ("next", "prior_std"), "_", ("next", "belief")],
            out_to_in_map=True,
        ),
        TensorDictModule(
            rssm_posterior,
            in_keys={"belief": ("next", "belief"), "obs_embedding": ("next", "encoded_latents"), "noise": "posterior_noise"},
            out_keys=[("next", "posterior_mean"), ("next", "posterior_std"), ("next", "state")],
            out_to_in_map=True,
        ),
    )
    transition = TensorDictSequential(
        TensorDictModule(encoder, in_keys=[("next", obs_key)], out_keys=[("next", "encoded_latents")]),
        rollout,
        unit_normal_head(decoder, [("next", "state"), ("next", "belief")], "loc", ("next", reco_key), event_dim),
    )
    reward = unit_normal_head(
        reward_module, [("next", "state"), ("next", "belief")], ("next", "loc"), ("next", "reward"), event_dim=1
    )
    return dict(
        world_model=WorldModelWrapper(transition, reward),
        rssm_prior=rssm_prior,
        reward_module=reward_module,
        obs_key=obs_key,
        reco_key=reco_key,
        action_spec=action_spec,
    )


def build_imagination_env(rssm_prior: nn.Module, reward_module: nn.Module, action_spec: Bounded) -> DreamerEnv:
    """
    The model-based environment that ``DreamerActorLoss`` imagines in: the RSSM prior steps ``(state, belief)`` with
    the action, the reward head predicts the reward of the new state. Its specs are set here rather than copied from
    a real environment (``set_specs_from_env`` in the recipe), since there is none.

    :param rssm_prior: the world model's prior (shared, not copied)
    :param reward_module: the world model's reward network (shared)
    :param action_spec: the actions' spec
    :return: the environment
    """
    device = action_spec.device
    transition = SafeSequential(
        SafeModule(rssm_prior, in_keys=["state", "belief", "action"], out_keys=["_", "_", "state", "belief"])
    )
    reward = SafeProbabilisticTensorDictSequential(
        SafeModule(reward_module, in_keys=["state", "belief"], out_keys=["loc"]),
        SafeProbabilisticModule(
            in_keys=["loc"],
            out_keys=["reward"],
            distribution_class=IndependentNormal,
            distribution_kwargs={"scale": 1.0, "event_dim": 1},
        ),
    )
    env = DreamerEnv(
        world_model=WorldModelWrapper(transition, reward),
        prior_shape=torch.Size([STATE_SIZE]),
        belief_shape=torch.Size([BELIEF_SIZE]),
        device=device,
    )
    latent = dict(state=Unbounded((STATE_SIZE,), device=device), belief=Unbounded((BELIEF_SIZE,), device=device))
    env.observation_spec = Composite(**latent, device=device)
    env.state_spec = Composite(**{key: spec.clone() for key, spec in latent.items()}, device=device)
    env.action_spec = action_spec
    env.reward_spec = Unbounded((1,), device=device)
    return env


def build_actor(action_spec: Bounded, device: torch.device) -> SafeProbabilisticTensorDictSequential:
    """
    The actor (imagination's policy) as the recipe builds it: ``DreamerActor`` (4x400 ELU here, the paper's; mean and
    ``biased_softplus_5`` scale) and a ``TanhNormal`` with ``tanh_loc`` (mean ``5 tanh(x / 5)``), sampled in
    imagination.

    :param action_spec: the actions' spec
    :param device: where the parameters live
    :return: the probabilistic actor
    """
    network = DreamerActor(ACTION_SIZE, depth=4, num_cells=UNITS, activation_class=nn.ELU, device=device)
    loc_scale = Composite(loc=Unbounded((ACTION_SIZE,), device=device), scale=Unbounded((ACTION_SIZE,), device=device))
    actor = SafeProbabilisticTensorDictSequential(
        SafeModule(network, in_keys=["state", "belief"], out_keys=["loc", "scale"], spec=loc_scale),
        SafeProbabilisticModule(
            in_keys=["loc", "scale"],
            out_keys=["action"],
            default_interaction_type=InteractionType.RANDOM,
            distribution_class=TanhNormal,
            distribution_kwargs={"tanh_loc": True},
            spec=Composite(action=action_spec),
        ),
    )
    # DreamerActor's MLP is lazy (it takes no input size): one call sizes it, as the recipe's first call does
    with torch.no_grad():
        latent = dict(state=torch.zeros(1, STATE_SIZE, device=device), belief=torch.zeros(1, BELIEF_SIZE, device=device))
        actor(TensorDict(latent, batch_size=[1], device=device))
    return actor


def build_value(device: torch.device) -> ProbabilisticTensorDictSequential:
    """
    The value network as the recipe builds it: a 3x400 ELU MLP, the mean of a unit-variance ``IndependentNormal``.

    :param device: where the parameters live
    :return: the value module, writing ``state_value``
    """
    network = MLP(
        in_features=STATE_SIZE + BELIEF_SIZE, out_features=1, depth=3, num_cells=UNITS, activation_class=nn.ELU, device=device
    )
    return unit_normal_head(network, ["state", "belief"], "loc", "state_value", event_dim=1)


class PeerUpdate:
    """
    TorchRL's Dreamer losses, optimizers and update, as the recipe's training loop runs them.

    :param obs: ``"pixels"`` or ``"state"``
    :param horizon: imagination horizon
    :param autocast: ``"off"``, ``"bf16"`` or ``"fp16"``: the forward passes under ``torch.autocast``
    :param device: where everything runs
    """

    def __init__(self, obs: str, horizon: int, autocast: str, device: torch.device) -> None:
        self.device = device
        self.pixels = obs == "pixels"
        parts = build_world_model(self.pixels, device)
        self.world_model = parts["world_model"]
        self.obs_key = parts["obs_key"]
        self.actor = build_actor(parts["action_spec"], device)
        self.value = build_value(device)
        env = build_imagination_env(parts["rssm_prior"], parts["reward_module"], parts["action_spec"])
        self.model_loss = DreamerModelLoss(self.world_model, free_nats=FREE_NATS)
        self.model_loss.set_keys(pixels=parts["obs_key"], reco_pixels=parts["reco_key"])
        self.actor_loss = DreamerActorLoss(self.actor, self.value, env, imagination_horizon=horizon, discount_loss=True)
        self.actor_loss.make_value_estimator(gamma=GAMMA, lmbda=LMBDA)
        self.value_loss = DreamerValueLoss(self.value, discount_loss=True, gamma=GAMMA)
        fused = device.type == "cuda"
        self.groups = {
            "model": (list(self.world_model.parameters()), MODEL_LR),
            "actor": (list(self.actor.parameters()), ACTOR_LR),
            "value": (list(self.value.parameters()), VALUE_LR),
        }
        self.optimizers = {name: torch.optim.Adam(params, lr=lr, fused=fused) for name, (params, lr) in self.groups.items()}
        self.dtype = AUTOCAST_DTYPES[autocast]
        # float16 needs loss scaling; bfloat16 has float32's range
        self.scalers = {
            name: torch.amp.GradScaler(device.type) if self.dtype == torch.float16 else None for name in self.groups
        }

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward passes' autocast context (none with ``--autocast off``)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def make_batch(self, batch: int, seq: int) -> dict[str, torch.Tensor]:
        """
        A random batch as stored: uint8 pixels (channel first) or float vectors, actions in [-1, 1], rewards, and the
        zero ``state`` and ``belief`` that prime the posterior rollout.
        """
        shape = (batch, seq)
        if self.pixels:
            observation = torch.randint(0, 256, (*shape, *IMAGE_SHAPE), dtype=torch.uint8, device=self.device)
        else:
            observation = torch.randn(*shape, VECTOR_SIZE, device=self.device)
        return dict(
            observation=observation,
            action=torch.rand(*shape, ACTION_SIZE, device=self.device) * 2 - 1,
            reward=torch.randn(*shape, 1, device=self.device),
            state=torch.zeros(*shape, STATE_SIZE, device=self.device),
            belief=torch.zeros(*shape, BELIEF_SIZE, device=self.device),
        )

    def to_tensordict(self, stored: dict[str, torch.Tensor]) -> TensorDict:
        """
        The batch as TorchRL's losses take it; pixels scaled to [0, 1] as ``ToTensorImage`` does. A new tensordict
        every update: ``DreamerModelLoss`` renames ``("next", "reward")`` in the nested tensordict it is given.
        """
        observation = stored["observation"]
        if self.pixels:
            observation = observation.float().div(255)
        return TensorDict(
            {
                "state": stored["state"],
                "belief": stored["belief"],
                "action": stored["action"],
                "next": {self.obs_key: observation, "reward": stored["reward"]},
            },
            batch_size=stored["action"].shape[:2],
            device=self.device,
        )

    def step(self, name: str, loss: torch.Tensor) -> None:
        """Backward pass of ``loss``, gradient clipping and the optimizer step of group ``name``, as the recipe does."""
        params, _ = self.groups[name]
        optimizer, scaler = self.optimizers[name], self.scalers[name]
        optimizer.zero_grad()
        if scaler is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            scaler.step(optimizer)
            scaler.update()

    def update(self, stored: dict[str, torch.Tensor], now: Callable[[], float]) -> list[float]:
        """
        One update: the world model, then the actor (imagining from the world model's states), then the value.

        :param stored: the batch as :meth:`make_batch` made it
        :param now: the clock (synchronising the device first)
        :return: the clock at the start and after each phase (to_float, model, actor, value)
        """
        times = [now()]
        data = self.to_tensordict(stored)
        times.append(now())
        with self.autocast():
            model_losses, data = self.model_loss(data)
            loss = model_losses["loss_model_kl"] + model_losses["loss_model_reco"] + model_losses["loss_model_reward"]
        self.step("model", loss.squeeze(-1))
        times.append(now())
        with self.autocast():
            actor_losses, imagined = self.actor_loss(data.reshape(-1))
        self.step("actor", actor_losses["loss_actor"])
        times.append(now())
        with self.autocast():
            value_losses, _ = self.value_loss(imagined)
        self.step("value", value_losses["loss_value"])
        times.append(now())
        return times


def changed(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    """The fraction of parameter tensors that an update changed."""
    return sum(not torch.equal(b, a) for b, a in zip(before, after)) / len(before)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--obs", choices=["pixels", "state"], default="pixels")
    parser.add_argument("--batch", type=int, default=50, help="sequences per batch")
    parser.add_argument("--seq", type=int, default=50, help="sequence length")
    parser.add_argument("--horizon", type=int, default=15, help="imagination horizon")
    parser.add_argument("--autocast", choices=list(AUTOCAST_DTYPES), default="off")
    parser.add_argument("--updates", type=int, default=3, help="timed updates (after one untimed warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch's intra-op threads (0: torch's default)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--check", action="store_true", help="also report the share of parameters each update changed")
    args = parser.parse_args(argv)
    if args.updates < 1:
        parser.error("--updates must be at least 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    peer = PeerUpdate(args.obs, args.horizon, args.autocast, device)
    stored = peer.make_batch(args.batch, args.seq)

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    totals = []
    for i in range(args.updates + 1):
        before = (
            {name: [p.detach().clone() for p in params] for name, (params, _) in peer.groups.items()} if args.check else {}
        )
        times = peer.update(stored, now)
        if args.check:
            shares = {name: changed(before[name], [p.detach() for p in params]) for name, (params, _) in peer.groups.items()}
            print("changed: " + " ".join(f"{name}={share:.2f}" for name, share in shares.items()), flush=True)
        if i == 0:  # warm-up
            continue
        to_float, model, actor, value = (end - start for start, end in zip(times, times[1:]))
        total = times[-1] - times[0]
        totals.append(total)
        phases = f"to_float={to_float:.3f} model={model:.3f} actor={actor:.3f} value={value:.3f}"
        print(f"update {i - 1}: total={total:.3f}s ({phases})", flush=True)
    fields = dict(
        torchrl=torchrl.__version__,
        tensordict=tensordict.__version__,
        torch=torch.__version__,
        device=args.device,
        threads=torch.get_num_threads(),
        obs=args.obs,
        batch=args.batch,
        seq=args.seq,
        horizon=args.horizon,
        autocast=args.autocast,
    )
    extra = " ".join(f"{key}={value}" for key, value in fields.items())
    print(f"torchrl_dreamer_update_s={statistics.median(totals):.4f} {extra}", flush=True)


if __name__ == "__main__":
    main()
