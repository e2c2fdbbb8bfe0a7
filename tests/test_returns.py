"""Lambda-returns with per-step lambdas, and DreamerV3's percentile return normalization."""

import torch as th

from sb3_rssm.common.returns import ReturnNormalizer, lambda_return


def test_lambda_return_with_per_step_lambdas():
    g = th.Generator().manual_seed(0)
    rewards, values, bootstrap = th.randn(2, 5, generator=g), th.randn(2, 5, generator=g), th.randn(2, generator=g)
    discounts = th.full((2, 5), 0.9)
    # a constant tensor of lambdas is the scalar lambda
    th.testing.assert_close(
        lambda_return(rewards, values, discounts, bootstrap, th.full((2, 5), 0.7)),
        lambda_return(rewards, values, discounts, bootstrap, 0.7),
    )
    # lambda 0 at step 2: the return there bootstraps from the next value and looks no further
    lambdas = th.ones(2, 5)
    lambdas[:, 2] = 0.0
    returns = lambda_return(rewards, values, discounts, bootstrap, lambdas)
    th.testing.assert_close(returns[:, 2], rewards[:, 2] + 0.9 * values[:, 3])
    th.testing.assert_close(returns[:, 1], rewards[:, 1] + 0.9 * returns[:, 2])


def test_return_normalizer_tracks_percentiles_with_a_floor():
    normalizer = ReturnNormalizer(rate=0.5, limit=1.0)
    assert normalizer.scale() == 1.0  # starts at 0 and 0: the floor
    returns = th.arange(101.0)  # 5th percentile 5, 95th 95
    normalizer.update(returns)
    assert normalizer.low_average.item() == 2.5 and normalizer.high_average.item() == 47.5
    assert normalizer.scale().item() == 45.0
    normalizer.update(returns)
    assert normalizer.scale().item() == 67.5
    normalizer.update(th.tensor([1.0, float("nan")]))  # a non-finite batch changes nothing
    assert normalizer.scale().item() == 67.5
    small = ReturnNormalizer(rate=1.0)
    small.update(th.linspace(0.0, 0.1, 11))
    assert small.scale().item() == 1.0  # a spread below the limit does not blow up small advantages
    assert set(small.state_dict()) == {"low_average", "high_average"}  # saved with the policy
