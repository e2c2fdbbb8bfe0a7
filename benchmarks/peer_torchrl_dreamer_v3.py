"""
Seconds per DreamerV3 training update with TorchRL (0.14.1), on the work that ``benchmarks/update_time.py --algo
dreamer_v3`` times for ours (``sb3_rssm.DreamerV3``). It runs in the virtual environment of
``benchmarks/peer_torchrl_dreamer.py`` (torch 2.13.0, torchrl 0.14.1, tensordict 0.14.3; see there):

    ~/.venvs/torchrl-peer/bin/python benchmarks/peer_torchrl_dreamer_v3.py --size size1m --obs state \
        --batch 16 --seq 16 --horizon 15 --autocast off --updates 3 --threads 2 --device cpu

and beside it, for ours (``--cnn-strided`` for pixels: see the first difference below)::

    python -m benchmarks.update_time --algo dreamer_v3 --size size1m --obs state --batch 16 --seq 16 --threads 2

The work: a random but correctly shaped batch of ``--batch`` sequences of ``--seq`` steps (64x64x3 uint8 pixels,
stored channel first as TorchRL's image modules take them, or a 24-dim vector; 6-dim actions in [-1, 1]; rewards;
no episode ends: ``is_init`` set at each sequence's first step, ``done`` and ``terminated`` false), the model sizes of
ours (``--size``: ``MODEL_SIZES`` of ``sb3_rssm/dreamer_v3/policies.py``, danijar/dreamerv3's presets: 32 categorical
latents of ``classes`` classes, a block GRU of 8 blocks, RMSNorm + SiLU layers; encoder and decoder MLPs of 3 layers,
reward and continuation heads of 1 hidden layer, actor and critic of 3; 255 two-hot bins; unimix 0.01), and one
DreamerV3 update as TorchRL 0.14.1 packages it, one loss and one backward pass:

- ``torchrl.objectives.DreamerV3Loss``, the sum of
  - ``DreamerV3ModelLoss`` through the world model (encoder, ``RSSMRolloutV3`` of ``RSSMPriorV3`` with the block GRU
    and ``RSSMPosteriorV3``, decoder, two-hot reward head, continuation head): reconstruction (squared error summed
    over each observation; pixels against ``x / 255``, vectors in symlog space), two-hot reward cross-entropy,
    continuation BCE against ``(1 - terminated) * (1 - 1/333)``, and the KL terms with ``kl_mode="separate"``: dynamics
    0.5 and representation 0.1 (ours' ``dyn_scale`` and ``rep_scale``; TorchRL's default dynamics weight is 1), each
    clamped at 1 free nat per (batch, time) step;
  - ``DreamerV3ActorLoss``: ``--horizon`` steps imagined from every one of the ``batch x seq`` posterior states
    (detached) in a ``DreamerEnv`` (the prior and the reward head as an environment, the actor as its policy); lambda
    returns (lambda 0.95) with the predicted continuations as discounts (gamma 1: the continuation head learns the
    discount, as in ours); REINFORCE on advantages divided by ``max(1, EMA(P95 - P5))`` of the returns (rate 0.01);
    entropy bonus 3e-4; weights the cumulative product of the continuations;
  - ``DreamerV3ValueLoss``: two-hot critic cross-entropy towards the imagined returns plus the slow-critic regulariser
    (weight 1), and its ``replay_value_loss`` (weight 0.3) on the replayed sequence, bootstrapped with each posterior
    state's first imagined return, whose gradient reaches the world model;
- the backward pass of that sum, then ``torchrl.trainers.algorithms.DreamerV3Optimizer`` (LaProp after adaptive
  gradient clipping: lr 4e-5, clipping 0.3, eps 1e-20, 1000 warm-up updates, one optimizer over all parameters) and
  ``SoftUpdate(tau=0.02)`` of the slow critic: ``DreamerV3OptimizationStepper.step`` (``torchrl.trainers.algorithms``)
  runs the forward pass, backward pass, optimizer step and soft update.

The modules are built from TorchRL's public API as its recipe (pytorch/rl ``sota-implementations/dreamer_v3/``, a
proprioceptive recipe; the pixel encoder and decoder are TorchRL's ``DreamerV3ImageEncoder`` and
``DreamerV3ImageDecoder``) wires them, at our sizes: the actor is a small module of this script (``DreamerV3MLP``
with a 1%-scale output layer, then DreamerV3's bounded Normal parameters, as the recipe's actor), sampled through
TorchRL's ``IndependentNormal``. At ``size1m`` the trained parameters (``params=`` in the last line) number exactly
ours': 640,867 from vectors, 784,638 from pixels (ours with ``--cnn-strided``). Eagerly by default (ours too).
``--compile`` is the stepper's ``compile_train_step=True`` (``torch.compile`` of the forward and backward pass, with
the RSSM rollout switched to TorchRL's higher-order scan, unrolled 8 steps; 5 untimed warm-up passes, whose seconds
are printed), ``--cudagraph`` its CUDA-graph capture of the forward and backward pass; both leave the optimizer step
and soft update eager (ours' ``compile_update="losses"`` compiles the forward pass, eager optimizers). ``--compile``
is unverified: on a CPU, at the smallest settings (``size1m``, 2 x 2, horizon 2, one thread), its warm-up had not
finished compiling after a minute of CPU time, where it was stopped (no error until then). ``--autocast bf16`` runs
the forward pass under bfloat16 autocast: on CUDA through the stepper's ``mixed_precision=True``; the stepper
autocasts on CUDA only, so on the CPU this script runs the same forward pass, backward pass, optimizer step and soft
update itself, under CPU autocast (ours autocasts on both).

Each update's seconds end after a device sync. Sampling from a replay buffer is not timed (nor is it in ours). One
untimed warm-up update comes first (its optimizer step has a learning rate of 0: TorchRL's warm-up starts at 0);
``--check`` also prints, for every update, its losses and the share of parameter tensors it changed.

What differs from ours (``sb3_rssm.DreamerV3``), by what is computed rather than how fast:

- image convolutions: TorchRL's encoder and decoder are stride-2 convolutions and transposed convolutions only (the
  reference's ``strided: True``); ours by default convolves at stride 1 before a 2x2 max-pool (encoder) and after a
  2x nearest upsampling (decoder), four times the convolution FLOPs. Compare pixels with ours' ``--cnn-strided``,
  which builds the same layers. TorchRL's decoder output is linear (``+ 0.5``), ours a sigmoid; its input layer is
  dense here (``num_blocks=1``, as ours; TorchRL's default is 8 blocks, the reference's block-linear layer);
- vector reconstruction: TorchRL's decoder predicts the symlog of the vector, the recipe turns it into a vector
  (``symexp``) and the loss takes its symlog again; ours compares the prediction with the target's symlog directly
  (the same loss up to rounding, one symexp and one symlog more);
- the posterior rollout: the same block GRU, prior (2 layers) and posterior (1 layer), reset at the first step.
  TorchRL evaluates the prior head at every step inside the loop and draws a categorical sample of it that it
  discards (to keep its random stream equal across its two rollout paths); ours runs the prior head once over the
  sequence after the loop and draws no prior sample. Ours also computes the embeddings' share of the posterior's
  first layer for the whole sequence in one matmul, TorchRL per step on the concatenation (the same FLOPs). The world
  model also decodes its predicted rewards (``("next", "reward")``), which no loss reads;
- imagination: from the same ``batch x seq`` detached posterior states, but through ``DreamerEnv.rollout`` (TensorDict
  environment steps) with autograd on: the world model is held out (its parameters' ``requires_grad`` off), yet the
  actor's reparameterised samples carry gradient, so the rollout records a graph through the prior, the reward and
  continuation heads and the critic's target and baseline passes that no loss backpropagates through (REINFORCE
  re-evaluates the actor on detached states and actions, the critic learns on detached ones); ours imagines under
  ``no_grad``. TorchRL's actor also computes each sampled action's log-probability in the rollout
  (``return_log_prob``, unused by REINFORCE);
- network evaluations on imagined states: TorchRL runs the critic on s_1..s_H (return targets), again on
  s_0..s_{H-1} (the baseline), again with gradient on s_0..s_{H-1} (its loss), and the slow critic on s_0..s_{H-1};
  the reward head inside each environment step, the continuation head on s_0 and then on s_1..s_H. Ours: the critic
  once with gradient on s_0..s_H (the values detached for targets and baseline), the slow critic once on s_0..s_H,
  reward and continuation heads once each on s_0..s_H after the rollout. About two critic passes more in TorchRL;
- the return scale's EMA takes every batch in TorchRL; ours skips a batch with non-finite returns. The KL: TorchRL
  computes it in the dtype autocast leaves the logits in, ours in float32;
- optimizer: the same LaProp arithmetic, one optimizer in TorchRL, three in ours (world model, actor, critic, with
  the same settings); TorchRL's warm-up gives learning rate 0 at the first step (ours lr / 1000) and counts steps in
  a Python int. Ours also computes each group's gradient norm and skips, on the device, a group's step whose loss or
  gradient is non-finite (and the slow critic's update with the critic's), which TorchRL does not;
- autocast: TorchRL's stepper runs bfloat16 autocast on CUDA only (the CPU path here is this script's), and keeps
  no float16 mode; ours autocasts on both devices (``mixed_precision``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Optional

import tensordict
import torch
import torchrl
from tensordict import TensorDict, TensorDictBase
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
    DreamerV3ImageDecoder,
    DreamerV3ImageEncoder,
    DreamerV3MLP,
    IndependentNormal,
    RSSMPosteriorV3,
    RSSMPriorV3,
    RSSMRolloutV3,
    SymExpTwoHot,
    WorldModelWrapper,
)
from torchrl.objectives import (
    DreamerV3ActorLoss,
    DreamerV3Loss,
    DreamerV3ModelLoss,
    DreamerV3ValueLoss,
    SoftUpdate,
    ValueEstimators,
    symexp,
    symlog,
)
from torchrl.trainers.algorithms import DreamerV3OptimizationStepper, DreamerV3Optimizer

#: ours' model sizes (``sb3_rssm.dreamer_v3.policies.MODEL_SIZES``): deterministic (GRU) size, RSSM hidden width,
#: classes per latent, conv depth, width of every MLP
MODEL_SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "size1m": (512, 64, 4, 4, 64),
    "size12m": (2048, 256, 16, 16, 256),
    "size25m": (3072, 384, 24, 24, 384),
    "size50m": (4096, 512, 32, 32, 512),
    "size100m": (6144, 768, 48, 48, 768),
    "size200m": (8192, 1024, 64, 64, 1024),
    "size400m": (12288, 1536, 96, 96, 1536),
}
STOCHASTIC = 32  # categorical latents
BLOCKS = 8  # groups of the block GRU
UNIMIX = 0.01
MLP_LAYERS = 3  # vector encoder and decoder
HEAD_LAYERS = 1  # reward and continuation heads
ACTOR_LAYERS = CRITIC_LAYERS = 3
BINS = 255
ACTION_SIZE = 6
VECTOR_SIZE = 24
IMAGE_SHAPE = (3, 64, 64)
LEARNING_RATE, AGC, EPS, LR_WARMUP = 4e-5, 0.3, 1e-20, 1000
FREE_NATS, DYN_SCALE, REP_SCALE = 1.0, 0.5, 0.1
HORIZON_STEPS = 333.0  # discount 1 - 1/333
LAMBDA = 0.95
ENTROPY = 3e-4
SLOW_CRITIC_RATE, SLOW_CRITIC_REGULARIZATION = 0.02, 1.0
REPLAY_VALUE_SCALE = 0.3
ACTOR_MIN_STD, ACTOR_MAX_STD = 0.1, 1.0


def to_float(value: torch.Tensor) -> torch.Tensor:
    """Logits to float32 before decoding or a loss (they may be bfloat16 under autocast), as the recipe casts them."""
    return value.float()


def cast_float(key: Any) -> TensorDictModule:
    """:func:`to_float` in place on the tensordict entry ``key``."""
    return TensorDictModule(to_float, in_keys=[key], out_keys=[key])


class BoundedNormalActor(nn.Module):
    """
    DreamerV3's continuous actor: a ``DreamerV3MLP`` whose output layer (1% scale) gives a raw mean and a raw std per
    action; the mean is ``tanh(raw mean)``, the std ``(max - min) * sigmoid(raw std + 2) + min`` (float32).

    :param in_features: model-state size
    :param units: hidden width
    :param layers: hidden layers
    :param action_size: action dimensions
    :param device: where the parameters live
    """

    def __init__(self, in_features: int, units: int, layers: int, action_size: int, device: torch.device) -> None:
        super().__init__()
        self.net = DreamerV3MLP(in_features, 2 * action_size, depth=layers, num_cells=units, outscale=0.01, device=device)

    def forward(self, state: torch.Tensor, belief: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_mean, raw_std = self.net(state, belief).float().chunk(2, dim=-1)
        std = (ACTOR_MAX_STD - ACTOR_MIN_STD) * torch.sigmoid(raw_std + 2.0) + ACTOR_MIN_STD
        return raw_mean.tanh(), std


def two_hot_head(network: nn.Module, in_keys: list[Any], logits_key: Any, out_key: Any) -> TensorDictSequential:
    """A network writing two-hot logits, cast to float32 and decoded to a scalar (``SymExpTwoHot``)."""
    return TensorDictSequential(
        TensorDictModule(network, in_keys=in_keys, out_keys=[logits_key]),
        cast_float(logits_key),
        TensorDictModule(SymExpTwoHot(BINS), in_keys=[logits_key], out_keys=[out_key]),
    )


class PeerUpdate:
    """
    TorchRL's DreamerV3 learner at one of ours' model sizes: world model, actor, critic, the loss, the optimizer, the
    slow critic's soft update and the stepper that runs an update.

    :param size: a key of :data:`MODEL_SIZES`
    :param obs: ``"pixels"`` or ``"state"``
    :param horizon: imagination horizon
    :param autocast: ``"off"`` or ``"bf16"``
    :param compile_step: the stepper's ``compile_train_step``
    :param cudagraph: the stepper's ``cudagraph`` (CUDA only)
    :param device: where everything runs
    """

    def __init__(
        self, size: str, obs: str, horizon: int, autocast: str, compile_step: bool, cudagraph: bool, device: torch.device
    ) -> None:
        self.device = device
        self.pixels = obs == "pixels"
        deter, hidden, classes, depth, units = MODEL_SIZES[size]
        self.stoch_size, self.deter_size = STOCHASTIC * classes, deter
        features = self.stoch_size + deter
        latent = ["state", "belief"]
        nxt = [("next", "state"), ("next", "belief")]

        # --- world model ---
        if self.pixels:
            self.obs_key, reco_key = "pixels", "reco_pixels"
            image_encoder = DreamerV3ImageEncoder(in_channels=IMAGE_SHAPE[0], depth=depth, device=device)
            embed_size = image_encoder.output_features(IMAGE_SHAPE)
            encoder: nn.Module = TensorDictModule(
                image_encoder, in_keys=[("next", "pixels")], out_keys=[("next", "encoded_latents")]
            )
            decoder: nn.Module = TensorDictModule(
                DreamerV3ImageDecoder(features, IMAGE_SHAPE, depth=depth, num_blocks=1, device=device),
                in_keys=nxt,
                out_keys=[("next", reco_key)],
            )
        else:
            self.obs_key, reco_key = "observation", "reco_observation"
            embed_size = units
            encoder = TensorDictSequential(
                TensorDictModule(symlog, in_keys=[("next", "observation")], out_keys=[("next", "symlog_observation")]),
                TensorDictModule(
                    # the last hidden layer's activation is the embedding (no output layer)
                    DreamerV3MLP(VECTOR_SIZE, None, depth=MLP_LAYERS, num_cells=units, device=device),
                    in_keys=[("next", "symlog_observation")],
                    out_keys=[("next", "encoded_latents")],
                ),
            )
            decoder = TensorDictSequential(
                TensorDictModule(
                    DreamerV3MLP(features, VECTOR_SIZE, depth=MLP_LAYERS, num_cells=units, device=device),
                    in_keys=nxt,
                    out_keys=[("next", "reco_symlog_observation")],
                ),
                cast_float(("next", "reco_symlog_observation")),
                TensorDictModule(symexp, in_keys=[("next", "reco_symlog_observation")], out_keys=[("next", reco_key)]),
            )
        prior_net = RSSMPriorV3(
            action_shape=(ACTION_SIZE,),
            hidden_dim=hidden,
            rnn_hidden_dim=deter,
            num_categoricals=STOCHASTIC,
            num_classes=classes,
            action_dim=ACTION_SIZE,
            recurrent_model="block_gru",
            num_blocks=BLOCKS,
            num_layers=1,
            prior_num_layers=2,
            unimix=UNIMIX,
            device=device,
        )
        posterior_net = RSSMPosteriorV3(
            hidden_dim=hidden,
            num_categoricals=STOCHASTIC,
            num_classes=classes,
            rnn_hidden_dim=deter,
            obs_embed_dim=embed_size,
            use_rms_norm=True,
            num_layers=1,
            unimix=UNIMIX,
            device=device,
        )
        # TorchRL's standard key wiring, which its rollout runs on tensors (and can switch to a scan)
        rollout = RSSMRolloutV3(
            TensorDictModule(
                prior_net,
                in_keys=["state", "belief", "action"],
                out_keys=[("next", "prior_logits"), ("next", "state"), ("next", "belief")],
            ),
            TensorDictModule(
                posterior_net,
                in_keys=[("next", "belief"), ("next", "encoded_latents")],
                out_keys=[("next", "posterior_logits"), ("next", "state")],
            ),
            reset_key="is_init",
        )
        reward_net = DreamerV3MLP(features, BINS, depth=HEAD_LAYERS, num_cells=units, outscale=0.0, device=device)
        continuation_net = DreamerV3MLP(features, 1, depth=HEAD_LAYERS, num_cells=units, device=device)
        self.world_model = TensorDictSequential(
            encoder,
            rollout,
            decoder,
            two_hot_head(reward_net, nxt, ("next", "reward_logits"), ("next", "reward")),
            TensorDictModule(continuation_net, in_keys=nxt, out_keys=[("next", "continue_pred")]),
            cast_float(("next", "continue_pred")),
        )

        # --- imagination: the prior and the reward head as an environment, the continuation head beside it ---
        action_spec = Bounded(-1.0, 1.0, (ACTION_SIZE,), device=device)
        env = DreamerEnv(
            world_model=WorldModelWrapper(
                TensorDictSequential(TensorDictModule(prior_net, in_keys=[*latent, "action"], out_keys=["_", *latent])),
                two_hot_head(reward_net, latent, "reward_logits", "reward"),
            ),
            prior_shape=torch.Size([self.stoch_size]),
            belief_shape=torch.Size([deter]),
            device=device,
        )
        # set here rather than copied from a real environment (``set_specs_from_env`` in the recipe): there is none
        latent_specs = dict(state=Unbounded((self.stoch_size,), device=device), belief=Unbounded((deter,), device=device))
        env.observation_spec = Composite(**latent_specs, device=device)
        env.state_spec = Composite(**{key: spec.clone() for key, spec in latent_specs.items()}, device=device)
        env.action_spec = action_spec
        env.reward_spec = Unbounded((1,), device=device)
        continuation_model = TensorDictSequential(
            TensorDictModule(continuation_net, in_keys=latent, out_keys=["continue_logits"]),
            cast_float("continue_logits"),
            TensorDictModule(nn.Sigmoid(), in_keys=["continue_logits"], out_keys=["continuation"]),
        )

        # --- actor and critic ---
        self.actor = ProbabilisticTensorDictSequential(
            TensorDictModule(
                BoundedNormalActor(features, units, ACTOR_LAYERS, ACTION_SIZE, device),
                in_keys=latent,
                out_keys=["loc", "scale"],
            ),
            ProbabilisticTensorDictModule(
                in_keys=["loc", "scale"],
                out_keys=["action"],
                default_interaction_type=InteractionType.RANDOM,
                distribution_class=IndependentNormal,
                return_log_prob=True,
                log_prob_key="action_log_prob",
            ),
        )
        critic_net = DreamerV3MLP(features, BINS, depth=CRITIC_LAYERS, num_cells=units, outscale=0.0, device=device)
        self.value = two_hot_head(critic_net, latent, "state_value_logits", "state_value")

        # --- losses, optimizer, slow critic, stepper ---
        model_loss = DreamerV3ModelLoss(
            self.world_model,
            kl_mode="separate",
            lambda_dynamic=DYN_SCALE,
            lambda_representation=REP_SCALE,
            unimix=UNIMIX,
            free_bits=FREE_NATS,
            lambda_continue=1.0,
            continue_target_scale=1.0 - 1.0 / HORIZON_STEPS,
            # pixels against x / 255 (uint8 targets are divided here), vectors in symlog space
            reco_symlog=not self.pixels,
            num_reward_bins=BINS,
            global_average=False,
            # the replay value loss trains the representations
            detach_output=False,
        )
        model_loss.set_keys(pixels=self.obs_key, reco_pixels=reco_key)
        actor_loss = DreamerV3ActorLoss(
            self.actor,
            self.value,
            env,
            continuation_model=continuation_model,
            imagination_horizon=horizon,
            discount_loss=True,
            entropy_bonus=ENTROPY,
            use_reinforce=True,
            return_normalization=True,
        )
        # gamma 1: the continuations carry the discount, learned into the continuation head
        actor_loss.make_value_estimator(ValueEstimators.TDLambda, gamma=1.0, lmbda=LAMBDA)
        value_loss = DreamerV3ValueLoss(
            self.value,
            value_loss="two_hot",
            num_value_bins=BINS,
            actor_loss=actor_loss,
            slow_critic_regularization=SLOW_CRITIC_REGULARIZATION,
        )
        self.loss_module = DreamerV3Loss(
            model_loss,
            actor_loss,
            value_loss,
            replay_value_loss_weight=REPLAY_VALUE_SCALE,
            continuation_horizon=HORIZON_STEPS,
            lmbda=LAMBDA,
        ).to(device)
        self.target_updater = SoftUpdate(value_loss, tau=SLOW_CRITIC_RATE)
        self.parameters = list(self.loss_module.parameters())
        self.optimizer = DreamerV3Optimizer(self.parameters, lr=LEARNING_RATE, agc=AGC, eps=EPS, warmup_steps=LR_WARMUP)
        self.bf16 = autocast == "bf16"
        # the stepper autocasts on CUDA only: on the CPU, bfloat16 updates run in cpu_autocast_update
        self.by_hand = self.bf16 and device.type != "cuda"
        self.stepper = DreamerV3OptimizationStepper(
            self.loss_module,
            self.optimizer,
            self.target_updater,
            compile_train_step=compile_step,
            cudagraph=cudagraph,
            mixed_precision=self.bf16,
        )
        self.warmed_up = not (compile_step or cudagraph)

    def parameter_count(self) -> int:
        """Trained parameters (each shared module counted once, as the optimizer holds them)."""
        return sum(p.numel() for p in self.parameters)

    def make_batch(self, batch: int, seq: int) -> TensorDict:
        """
        A random batch as the recipe's replay stores it: uint8 pixels (channel first) or float vectors under
        ``next``, actions in [-1, 1], rewards, no episode end, ``is_init`` at each sequence's first step, and the zero
        ``state`` and ``belief`` the posterior rollout starts from.
        """
        shape, device = (batch, seq), self.device
        if self.pixels:
            observation = torch.randint(0, 256, (*shape, *IMAGE_SHAPE), dtype=torch.uint8, device=device)
        else:
            observation = torch.randn(*shape, VECTOR_SIZE, device=device)
        is_init = torch.zeros(*shape, 1, dtype=torch.bool, device=device)
        is_init[:, 0] = True
        no_end = torch.zeros(*shape, 1, dtype=torch.bool, device=device)
        return TensorDict(
            {
                "state": torch.zeros(*shape, self.stoch_size, device=device),
                "belief": torch.zeros(*shape, self.deter_size, device=device),
                "action": torch.rand(*shape, ACTION_SIZE, device=device) * 2 - 1,
                "is_init": is_init,
                "next": {
                    self.obs_key: observation,
                    "reward": torch.randn(*shape, 1, device=device),
                    "done": no_end,
                    "terminated": no_end.clone(),
                },
            },
            batch_size=shape,
            device=device,
        )

    def warm_up(self, sample: TensorDictBase) -> None:
        """The stepper's compile or capture warm-up (untimed forward and backward passes, no optimizer step)."""
        if not self.warmed_up:
            self.stepper.warmup(sample)
            self.warmed_up = True

    def cpu_autocast_update(self, sample: TensorDictBase) -> TensorDictBase:
        """The stepper's update, with its forward pass under CPU bfloat16 autocast (which the stepper leaves off)."""
        sample = sample.select(*self.loss_module.in_keys, strict=False)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
            losses = self.loss_module(sample)
            total = sum(value for key, value in losses.items() if isinstance(key, str) and key.startswith("loss_"))
        self.optimizer.zero_grad(set_to_none=False)
        total.backward()
        self.optimizer.step()
        self.target_updater.step()
        return losses.detach()

    def update(self, sample: TensorDictBase) -> TensorDictBase:
        """One update: loss, backward pass, optimizer step, slow-critic update. Returns the detached losses."""
        if self.by_hand:
            return self.cpu_autocast_update(sample)
        return self.stepper.step(None, sample)


def changed(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    """The fraction of parameter tensors that an update changed."""
    return sum(not torch.equal(b, a) for b, a in zip(before, after)) / len(before)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--size", choices=list(MODEL_SIZES), default="size12m", help="ours' model size preset")
    parser.add_argument("--obs", choices=["pixels", "state"], default="pixels")
    parser.add_argument("--batch", type=int, default=16, help="sequences per batch")
    parser.add_argument("--seq", type=int, default=64, help="sequence length (the paper's 64; ours' presets 16)")
    parser.add_argument("--horizon", type=int, default=15, help="imagination horizon")
    parser.add_argument("--autocast", choices=["off", "bf16"], default="off")
    parser.add_argument("--compile", action="store_true", help="the stepper's compile_train_step (torch.compile)")
    parser.add_argument("--cudagraph", action="store_true", help="the stepper's CUDA-graph capture (CUDA only)")
    parser.add_argument("--updates", type=int, default=3, help="timed updates (after one untimed warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch's intra-op threads (0: torch's default)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--check", action="store_true", help="also print each update's losses and changed parameters")
    args = parser.parse_args(argv)
    if args.updates < 1:
        parser.error("--updates must be at least 1")
    if args.cudagraph and args.device != "cuda":
        parser.error("--cudagraph needs --device cuda")
    if args.compile and args.autocast == "bf16" and args.device != "cuda":
        parser.error("TorchRL's stepper autocasts on CUDA only: --compile --autocast bf16 needs --device cuda")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    peer = PeerUpdate(args.size, args.obs, args.horizon, args.autocast, args.compile, args.cudagraph, device)
    sample = peer.make_batch(args.batch, args.seq)

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    start = now()
    peer.warm_up(sample)
    stepper_warmup_s = now() - start
    if args.compile or args.cudagraph:
        print(f"stepper warm-up (compile or capture): {stepper_warmup_s:.1f}s", flush=True)
    totals = []
    for i in range(args.updates + 1):
        before = [p.detach().clone() for p in peer.parameters] if args.check else []
        start = now()
        losses = peer.update(sample)
        total = now() - start
        if args.check:
            share = changed(before, [p.detach() for p in peer.parameters])
            values = " ".join(f"{key}={float(value):.4g}" for key, value in losses.items() if key.startswith("loss_"))
            print(f"changed={share:.2f} {values}", flush=True)
        if i == 0:
            print(f"warm-up update: {total:.3f}s", flush=True)
            continue
        totals.append(total)
        print(f"update {i - 1}: {total:.3f}s", flush=True)
    fields = dict(
        torchrl=torchrl.__version__,
        tensordict=tensordict.__version__,
        torch=torch.__version__,
        device=args.device,
        threads=torch.get_num_threads(),
        size=args.size,
        obs=args.obs,
        batch=args.batch,
        seq=args.seq,
        horizon=args.horizon,
        autocast=args.autocast,
        compile=args.compile,
        cudagraph=args.cudagraph,
        params=peer.parameter_count(),
    )
    extra = " ".join(f"{key}={value}" for key, value in fields.items())
    print(f"torchrl_dreamer_v3_update_s={statistics.median(totals):.4f} {extra}", flush=True)


if __name__ == "__main__":
    main()
