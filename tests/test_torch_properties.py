"""Property: measure, diagnose and recalibrate leave a torch model exactly as it was
(parameters, every buffer, modes, hooks, random state), over random module trees with
mixed modes, frozen parameters, user hooks, spectral norm (buffers changed in train
mode) and a module that fails, or interrupts, part-way through."""

import pytest

torch = pytest.importorskip("torch")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.parametrizations import spectral_norm  # noqa: E402
from torch_helpers import FunctionalDropout, assert_same_state, state  # noqa: E402

from varshift import diagnose, measure, recalibrate  # noqa: E402

C = 3


class Residual(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class Concat(nn.Module):
    def __init__(self, *branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.merge = nn.Conv2d(C * len(branches), C, 1)

    def forward(self, x):
        return self.merge(torch.cat([branch(x) for branch in self.branches], 1))


class Functional2d(FunctionalDropout):
    """FunctionalDropout for (N, C, H, W) input."""

    def __init__(self, p):
        super().__init__(C, p)

    def forward(self, x):
        return super().forward(x.transpose(1, 3)).transpose(1, 3)


class Bomb(nn.Module):
    """Raises ``error`` at its ``at``-th call (counting every call, also varshift's)."""

    def __init__(self, error, at):
        super().__init__()
        self.error, self.at, self.calls = error, at, 0

    def forward(self, x):
        self.calls += 1
        if self.error is not None and self.calls == self.at:
            raise self.error("boom")
        return x


LEAVES = [
    lambda: nn.BatchNorm2d(C), lambda: nn.BatchNorm2d(C, momentum=None),
    lambda: nn.BatchNorm2d(C, affine=False), lambda: nn.BatchNorm2d(C, track_running_stats=False),
    lambda: nn.Dropout(0.3), lambda: nn.Dropout2d(0.3), lambda: nn.AlphaDropout(0.2),
    lambda: nn.FeatureAlphaDropout(0.2), lambda: Functional2d(0.3), lambda: nn.ReLU(),
    lambda: nn.Tanh(), lambda: nn.Conv2d(C, C, 3, padding=1),
    lambda: spectral_norm(nn.Conv2d(C, C, 1)),
]


@st.composite
def models(draw):
    def block(depth):
        kind = draw(st.sampled_from(["leaf", "leaf", "seq", "res", "cat"] if depth < 2 else ["leaf"]))
        if kind == "leaf":
            return draw(st.sampled_from(LEAVES))()
        children = [block(depth + 1) for _ in range(draw(st.integers(1, 3)))]
        if kind == "seq":
            return nn.Sequential(*children)
        return Residual(nn.Sequential(*children)) if kind == "res" else Concat(*children)

    torch.manual_seed(draw(st.integers(0, 1000)))
    layers = [block(0) for _ in range(draw(st.integers(1, 4)))]
    error = draw(st.sampled_from([None, None, RuntimeError, KeyboardInterrupt]))
    layers.insert(draw(st.integers(0, len(layers))), Bomb(None, draw(st.integers(1, 12))))
    model = nn.Sequential(nn.Conv2d(1, C, 3, padding=1), *layers, nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(C, 2))
    modules = list(model.modules())
    for m in modules:  # mixed, non-default modes and frozen parameters must survive too
        m.training = draw(st.booleans())
    for p in model.parameters():
        p.requires_grad_(draw(st.booleans()))
    for m in draw(st.lists(st.sampled_from(modules), max_size=3)):  # the user's own hooks
        m.register_forward_hook(lambda module, args, out: None)
        m.register_forward_pre_hook(lambda module, args: None)
    return model, error


@given(models(), st.sampled_from(["measure", "diagnose", "recalibrate"]), st.integers(0, 3))
def test_nothing_of_the_model_changes(case, call, seed):
    model, error = case
    x = torch.randn(12, 1, 5, 5, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model(x[:4])  # move running statistics, spectral norm vectors
    for m in model.modules():
        if isinstance(m, Bomb):  # armed now
            m.error = error
    before = state(model)
    run = {"measure": lambda: measure(model, x, batch_size=4, seed=seed),
           "diagnose": lambda: diagnose(model, x, batch_size=4, seed=seed),
           "recalibrate": lambda: recalibrate(model, x, batch_size=4, seed=seed)}[call]
    try:
        run()
    except (RuntimeError, KeyboardInterrupt) as err:
        assert error is not None and isinstance(err, error) and "boom" in str(err)
        assert_same_state(model, before)
        return
    assert_same_state(model, before, except_running_stats=call == "recalibrate")
