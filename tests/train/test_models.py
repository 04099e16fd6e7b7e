"""The nn.Modules on their own: analytic gradients equal autograd's, unknown ids, output range, dropout."""

from __future__ import annotations

import pytest
import torch

from xlcf.models import MODELS, build_model, offset_for


def random_model(name, y_range, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = build_model(name, 7, 9, 4, y_range=y_range, offset=offset_for(3.5, y_range))
    model.init_random(gen, scheme="normal", scale=0.5)
    return model, gen


@pytest.mark.parametrize("name", ["dot", "bias"])
@pytest.mark.parametrize("y_range", [None, (0.5, 5.5)])
@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_analytic_gradient_matches_autograd(name, y_range, l2):
    fast, gen = random_model(name, y_range)
    slow, _ = random_model(name, y_range)
    u = torch.randint(0, 7, (50,), generator=gen, dtype=torch.int32)  # repeated rows on purpose
    m = torch.randint(0, 9, (50,), generator=gen, dtype=torch.int32)
    r = torch.rand(50, generator=gen) * 4.5 + 0.5
    loss_fast, mse_fast = fast.loss_and_grads(u, m, r, l2)
    err = slow(u, m) - r
    loss = err.square().mean() + l2 * slow.embedding_penalty(u, m).mean()
    loss.backward()
    assert torch.isclose(loss_fast, loss.detach(), rtol=1e-6)
    assert torch.isclose(mse_fast, err.square().mean().detach(), rtol=1e-6)
    for (pname, p_fast), p_slow in zip(fast.named_parameters(), slow.parameters()):
        torch.testing.assert_close(p_fast.grad, p_slow.grad, rtol=1e-5, atol=1e-6, msg=pname)


@pytest.mark.parametrize("name", ["dot", "bias"])
def test_sparse_sgd_step_equals_torch_sgd(name):
    fast, gen = random_model(name, (0.5, 5.5))
    slow, _ = random_model(name, (0.5, 5.5))
    u = torch.randint(0, 7, (40,), generator=gen)
    m = torch.randint(0, 9, (40,), generator=gen)
    r = torch.rand(40, generator=gen) * 4.5 + 0.5
    fast.loss_and_grads(u, m, r, 0.1, sgd_lr=0.7)
    opt = torch.optim.SGD(slow.parameters(), lr=0.7)
    slow.loss_and_grads(u, m, r, 0.1)
    opt.step()
    for p_fast, p_slow in zip(fast.parameters(), slow.parameters()):
        torch.testing.assert_close(p_fast.detach(), p_slow.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(MODELS))
def test_unknown_ids_fall_back_to_mean_and_known_bias(name):
    model, gen = random_model(name, (0.5, 5.5))
    if hasattr(model, "user_bias"):  # biases start at 0 under the normal scheme: give them values to check
        with torch.no_grad():
            model.user_bias.normal_(0.0, 0.5, generator=gen)
            model.movie_bias.normal_(0.0, 0.5, generator=gen)
    model.eval()
    u = torch.tensor([-1, -1, 2])
    m = torch.tensor([-1, 3, -1])
    out = model.forward_safe(u, m)
    assert torch.all(torch.isfinite(out))
    assert torch.isclose(out[0], torch.tensor(3.5), atol=1e-4)  # both unknown: the global mean
    if name in ("bias", "nn"):  # one side unknown: global mean + the known side's bias (no factors, no net)
        expected = model.squash(model.movie_bias[3].detach().reshape(1))[0]
        assert torch.isclose(out[1], expected)
        expected = model.squash(model.user_bias[2].detach().reshape(1))[0]
        assert torch.isclose(out[2], expected)
    known = model.forward_safe(torch.tensor([2]), torch.tensor([3]))
    assert torch.isclose(known, model(torch.tensor([2]), torch.tensor([3]))).all()


@pytest.mark.parametrize("name", list(MODELS))
def test_sigmoid_range_bounds_predictions(name):
    model, _ = random_model(name, (0.5, 5.5))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(100)
    out = model(torch.arange(7).repeat(9), torch.arange(9).repeat_interleave(7))
    assert out.min() >= 0.5 and out.max() <= 5.5


def test_raw_sheet_model_is_exactly_the_sheet_formula():
    model, _ = random_model("bias", None)
    with torch.no_grad():
        model.offset.zero_()
    u = torch.arange(7).repeat_interleave(9)
    m = torch.arange(9).repeat(7)
    expected = model.user_factors @ model.movie_factors.T + model.user_bias[:, None] + model.movie_bias[None, :]
    torch.testing.assert_close(model(u, m).reshape(7, 9), expected)


def test_nn_dropout_uses_the_models_generator():
    model, _ = random_model("nn", (0.5, 5.5))
    model.train()
    u, m = torch.arange(7), torch.arange(7)
    model.generator = torch.Generator().manual_seed(3)
    a = model(u, m)
    model.generator = torch.Generator().manual_seed(3)
    b = model(u, m)
    torch.manual_seed(12345)  # the global RNG must not matter
    model.generator = torch.Generator().manual_seed(3)
    c = model(u, m)
    assert torch.equal(a, b) and torch.equal(a, c)
    model.eval()
    assert torch.equal(model(u, m), model(u, m))  # no dropout at evaluation


def test_nn_adds_user_and_movie_bias_to_the_net():
    model, gen = random_model("nn", (0.5, 5.5))
    model.eval()
    u, m = torch.arange(7), torch.arange(7)
    before = model.raw(u, m).detach()
    with torch.no_grad():
        model.user_bias.normal_(0.0, 0.5, generator=gen)
        model.movie_bias.normal_(0.0, 0.5, generator=gen)
    torch.testing.assert_close(model.raw(u, m).detach(), before + model.user_bias[u] + model.movie_bias[m])
    # The per-rating L2 covers the biases too.
    expected = (
        model.user_factors[u].square().sum(1)
        + model.movie_factors[m].square().sum(1)
        + model.user_bias[u].square()
        + model.movie_bias[m].square()
    )
    torch.testing.assert_close(model.embedding_penalty(u, m), expected)
