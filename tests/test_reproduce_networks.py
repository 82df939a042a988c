"""The reproduction's 1-D networks: the committed builders unchanged, ResNeXt's grouped
bottlenecks, width at fixed depth, and the noise where each placement declares it."""

import hashlib

import numpy as np
import pytest

from varshift import nn, optim
from varshift.reproduce import experiments
from varshift.reproduce.networks import ARCHITECTURES, preresnet, resnext, wide_resnet

# Computed with the committed builders (f36648d, before ResNeXt and ``widen`` existed):
# (architecture, placement, rate, noise) -> (parameters, sha256 of the seed-7 weights
# and their keys, sha256 of the layer classes in walk order, seed-7 logits[:, :3] in
# inference mode on INPUTS). The cached tasks are keyed by architecture name, so these
# networks must not change. The weights are drawn by NumPy's Generator: a NumPy release
# that changed its uniform stream would trip the hash without any change here.
COMMITTED = {
    ("PreResNet", "a", 0.0, "dropout"): (5194, "e0955b68f436cbb6", "8f6abec0719c95f7"),
    ("PreResNet", "a", 0.5, "dropout"): (5194, "0e64aa21dc405781", "3b82c9d56405945f"),
    ("PreResNet", "b", 0.3, "dropout"): (5194, "ab457388b98d926c", "8f270d388cdc0382"),
    ("PreResNet", "b", 0.2, "uout"): (5194, "ab457388b98d926c", "dbd94ce05e829602"),
    ("PreResNet", "head", 0.2, "dropout"): (5194, "3e77c9345551ea9c", "52b89c4d62005ba8"),
    ("WRN", "a", 0.0, "dropout"): (29098, "a288bdfe8f328d0d", "1cc224992d2eda3d"),
    ("WRN", "a", 0.5, "dropout"): (29098, "46078eb10f22f13f", "8c000d5708881a88"),
    ("WRN", "b", 0.3, "dropout"): (29098, "a5bd06748ee05443", "dea966936420c269"),
    ("WRN", "b", 0.2, "uout"): (29098, "a5bd06748ee05443", "37c76400f58d56bc"),
    ("WRN", "head", 0.2, "dropout"): (29098, "4eea9a03bf5ab3b6", "ea26bbe84506802d"),
    ("DenseNet", "a", 0.0, "dropout"): (7978, "d35fd674b3e2c9af", "058c4b415d496701"),
    ("DenseNet", "a", 0.5, "dropout"): (7978, "e2f80688ef2d7dfb", "c980ea4b73383e57"),
    ("DenseNet", "b", 0.3, "dropout"): (7978, "d94dad0bded9c848", "0bb834dc9fe9cb01"),
    ("DenseNet", "b", 0.2, "uout"): (7978, "d94dad0bded9c848", "4f69dcf7c08a4211"),
    ("DenseNet", "head", 0.2, "dropout"): (7978, "623eb126cb67e29e", "9b7117a22efab442"),
}
COMMITTED_LOGITS = {  # the same for every placement and rate: noise is off in inference
    "PreResNet": [[-0.048762, 0.168939, -0.140163], [-0.141609, 0.12721, -0.350814],
                  [-0.073935, 0.135209, -0.154529], [-0.073434, 0.164927, -0.113382]],
    "WRN": [[-0.124095, -0.011775, 0.115022], [-0.194668, 0.065794, -0.015707],
            [-0.15252, 0.023826, 0.11867], [-0.136764, 0.018741, 0.156227]],
    "DenseNet": [[0.01379, 0.13711, -0.012617], [-0.053299, 0.13916, -0.094425],
                 [0.002068, 0.136261, -0.028302], [0.033748, 0.148005, 0.016611]],
}
AFTER_ONE_TRAIN_FORWARD = {  # rate 0, seed 7: train-mode logits[:2, :3] on INPUTS, then
    # inference-mode ones with the running statistics that forward updated (BatchNorm's
    # momentum and eps, which the weights do not show)
    "PreResNet": ([[0.059861, 0.154714, -0.35441], [-0.02772, 0.197819, -0.308983]],
                  [[-0.032549, 0.183202, -0.147577], [-0.12179, 0.146026, -0.352628]]),
    "WRN": ([[-0.058774, -0.137483, 0.049209], [-0.342824, 0.038883, 0.020615]],
            [[-0.113214, -0.037096, 0.114311], [-0.188224, 0.039189, -0.012622]]),
    "DenseNet": ([[-0.09307, 0.261852, -0.033116], [-0.247751, 0.275796, -0.114053]],
                 [[0.009881, 0.133808, -0.001636], [-0.05736, 0.137523, -0.085885]]),
}
INPUTS = np.random.default_rng(0).standard_normal((4, 1, 40)).astype(np.float32)
WIDENS = (1, 2, 4, 8)


def n_parameters(model):
    return sum(p.size for _, p, _ in model.named_parameters())


def weights_digest(model):
    digest = hashlib.sha256()
    for key, value in model.state_dict(buffers=False).items():
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()[:16]


def classes_digest(model):
    names = " ".join(type(layer).__name__ for _, layer in model.walk())
    return hashlib.sha256(names.encode()).hexdigest()[:16]


def count(model, kind):
    return sum(layer.kind == kind for _, layer in model.walk())


def convs(model):
    return [layer for _, layer in model.walk() if layer.kind == "conv"]


def blocks_of(model):
    """The residual blocks' bodies, in order."""
    return [layer.body for _, layer in model.walk() if isinstance(layer, nn.Residual)]


def noise_sites(model):
    """``(sequence, index)`` of every noise layer: its Sequential's layers and its place."""
    for _, container in model.walk():
        if isinstance(container, nn.Sequential):
            for i, layer in enumerate(container.layers):
                if layer.kind == "dropout":
                    yield container.layers, i


def eval_logits(model):
    with nn.modes(model, default="eval"):
        return model(INPUTS)


# ------------------------------------------------------------------ committed builders
@pytest.mark.parametrize("key", sorted(COMMITTED))
def test_the_committed_networks_are_unchanged(key):
    arch, placement, rate, noise = key
    model = ARCHITECTURES[arch](placement, rate, noise=noise, seed=7)
    assert (n_parameters(model), weights_digest(model), classes_digest(model)) == COMMITTED[key]
    np.testing.assert_allclose(eval_logits(model)[:, :3], COMMITTED_LOGITS[arch], atol=2e-6)


@pytest.mark.parametrize("arch", sorted(AFTER_ONE_TRAIN_FORWARD))
def test_the_committed_networks_normalise_as_before(arch):
    model = ARCHITECTURES[arch]("a", 0.0, seed=7)
    with nn.modes(model, default="train"):
        train = model(INPUTS)
    expected_train, expected_eval = AFTER_ONE_TRAIN_FORWARD[arch]
    np.testing.assert_allclose(train[:2, :3], expected_train, atol=2e-6)
    np.testing.assert_allclose(eval_logits(model)[:2, :3], expected_eval, atol=2e-6)


def test_widen_defaults_keep_preresnet_and_wrn():
    for placement, rate in (("a", 0.0), ("a", 0.5), ("b", 0.3)):
        default, explicit = preresnet(placement, rate, seed=3), preresnet(placement, rate, widen=1, seed=3)
        assert weights_digest(default) == weights_digest(explicit)
        wrn = wide_resnet(placement, rate, seed=3)
        assert weights_digest(wrn) == weights_digest(preresnet(placement, rate, width=48, blocks=2,
                                                               seed=3))
        assert weights_digest(wrn) == weights_digest(preresnet(placement, rate, widen=3, blocks=2,
                                                               seed=3))


# ------------------------------------------------------------------ shapes and training
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("placement", ["a", "b", "head"])
def test_forward_shapes_in_both_modes(arch, placement):
    model = ARCHITECTURES[arch](placement, 0.3, seed=1)
    for mode in ("train", "eval"):
        with nn.modes(model, default=mode):
            out = model(INPUTS)
        assert out.shape == (4, 10) and np.isfinite(out).all(), (arch, placement, mode)


@pytest.mark.parametrize("widen", WIDENS)
def test_widened_forward_shapes(widen):
    out = eval_logits(preresnet("b", 0.3, widen=widen, seed=1))
    assert out.shape == (4, 10) and np.isfinite(out).all()


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("placement", ["a", "b"])
def test_one_training_step_updates_every_weight(arch, placement):
    model = ARCHITECTURES[arch](placement, 0.3, seed=2)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 1, 40)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    before = {k: v.copy() for k, v in model.state_dict(buffers=False).items()}
    loss_fn, opt = nn.CrossEntropyLoss(), optim.Adam(model, lr=1e-2)
    model.train()
    loss = loss_fn(model(x), y)
    model.backward(loss_fn.backward())
    opt.step()
    assert np.isfinite(loss)
    after = model.state_dict(buffers=False)
    unchanged = [k for k in before if np.array_equal(before[k], after[k])]
    assert unchanged == [], (arch, placement, unchanged)


# ------------------------------------------------------------------ placements
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_placement_a_puts_the_noise_right_before_the_last_batchnorm(arch):
    model = ARCHITECTURES[arch]("a", 0.3, seed=0)
    sites = list(noise_sites(model))
    assert len(sites) == _noisy_blocks(arch, model)
    for layers, i in sites:
        rest = layers[i + 1:]
        assert rest[0].kind == "batchnorm", (arch, [type(x).__name__ for x in layers])
        assert [x.kind for x in rest].count("batchnorm") == 1  # the block's last
        assert rest[-1].kind == "conv"  # and it is inside a block, not the head


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_placement_b_puts_the_noise_right_before_the_last_convolution(arch):
    model = ARCHITECTURES[arch]("b", 0.3, seed=0)
    sites = list(noise_sites(model))
    assert len(sites) == _noisy_blocks(arch, model)
    for layers, i in sites:
        assert layers[i + 1].kind == "conv" and i + 1 == len(layers) - 1, \
            (arch, [type(x).__name__ for x in layers])


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_placement_head_puts_one_noise_layer_before_the_classifier(arch):
    model = ARCHITECTURES[arch]("head", 0.3, seed=0)
    sites = list(noise_sites(model))
    assert len(sites) == 1
    layers, i = sites[0]
    assert [type(x).__name__ for x in layers[i - 1:]] == ["GlobalAvgPool", "Dropout", "Dense"]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_rate_zero_has_no_noise_layer(arch):
    assert list(noise_sites(ARCHITECTURES[arch]("a", 0.0, seed=0))) == []


def _noisy_blocks(arch, model):
    """Blocks that carry a noise layer: every residual block, every DenseNet layer."""
    if arch == "DenseNet":
        return sum(isinstance(layer, nn.Concat) for _, layer in model.walk())
    return len(blocks_of(model))


# ------------------------------------------------------------------ ResNeXt
def test_resnext_blocks_are_bottlenecks_with_a_grouped_middle_convolution():
    model = resnext("a", 0.3, seed=0)
    bodies = blocks_of(model)
    assert len(bodies) == len(blocks_of(preresnet("a", 0.3))) == 3
    for body in bodies:
        layers = convs(body)
        assert [c.kernel_size for c in layers] == [(1,), (3,), (1,)]
        assert [c.groups for c in layers] == [1, 8, 1]
        assert [(c.in_channels, c.out_channels) for c in layers] == [(16, 32), (32, 32), (32, 16)]
        assert layers[1].params["weight"].shape == (32, 4, 3)  # 4 input channels per group
    other = convs(blocks_of(resnext("a", 0.3, cardinality=4, group_width=2))[0])[1]
    assert (other.groups, other.in_channels) == (4, 8)


def test_resnext_noise_sits_around_the_grouped_convolution_as_declared():
    """(a): grouped conv -> noise -> BN; (b): BN -> ReLU -> noise -> 1x1 conv."""
    for layers, i in noise_sites(resnext("a", 0.3, seed=0)):
        assert (layers[i - 1].kind, layers[i - 1].groups) == ("conv", 8)
    for layers, i in noise_sites(resnext("b", 0.3, seed=0)):
        assert [type(x).__name__ for x in layers[i - 2:i]] == ["BatchNorm", "ReLU"]
        assert (layers[i + 1].groups, layers[i + 1].kernel_size) == (1, (1,))


def test_resnext_keeps_preresnets_stem_and_head():
    ours, theirs = resnext("head", 0.3, seed=0), preresnet("head", 0.3, seed=0)
    first = lambda m: m.layers[0]  # noqa: E731
    assert first(ours).get_config() == first(theirs).get_config()
    tail = lambda m: [(type(x).__name__, x.get_config()) for x in m.layers[-5:]]  # noqa: E731
    assert tail(ours) == tail(theirs)
    pools = lambda m: [i for i, x in enumerate(m.layers) if isinstance(x, nn.MaxPool1D)]  # noqa: E731
    assert pools(ours) == pools(theirs)


def test_resnext_parameter_count_is_in_preresnets_range():
    ours, theirs = n_parameters(resnext("a", 0.0)), n_parameters(preresnet("a", 0.0))
    assert (ours, theirs) == (5242, 5194)  # the numbers the docstring states
    assert abs(ours / theirs - 1) < 0.05


def test_resnext_arms_are_paired_by_seed():
    base = resnext("a", 0.0, seed=4).state_dict(buffers=False)
    for placement, rate, noise in (("a", 0.5, "dropout"), ("b", 0.3, "uout"), ("head", 0.2, "dropout")):
        arm = resnext(placement, rate, noise=noise, seed=4).state_dict(buffers=False)
        assert [v.tobytes() for v in arm.values()] == [v.tobytes() for v in base.values()]


@pytest.mark.parametrize("placement", ["a", "b"])
def test_resnext_theory_points_avoid_the_grouped_convolution(placement):
    """The task measures a theory point per noise layer; (b)'s weight layer is the 1x1
    expansion, so the refusal of grouped convolutions does not stop a ResNeXt task."""
    model = resnext(placement, 0.3, seed=0)
    x = np.random.default_rng(1).standard_normal((64, 1, 40)).astype(np.float32)
    with np.errstate(all="ignore"):  # dead ReLU units at initialisation: nan correlations
        points = experiments._theory_points(model, x, seed=0)
    assert [p["case"] for p in points] == [placement] * 3
    if placement == "b":
        assert {p["d"] for p in points} == {32}  # 1x1 over the 32 bottleneck channels


# ------------------------------------------------------------------ width at fixed depth
def test_widen_changes_channels_not_depth():
    reference = preresnet("b", 0.3, seed=0)
    sizes = []
    for widen in WIDENS:
        model = preresnet("b", 0.3, widen=widen, seed=0)
        assert [type(x).__name__ for _, x in model.walk()] == \
            [type(x).__name__ for _, x in reference.walk()], widen
        assert count(model, "batchnorm") == count(reference, "batchnorm") == 7
        assert count(model, "conv") == count(reference, "conv") == 7
        assert len(blocks_of(model)) == 3
        assert {x.num_features for _, x in model.walk() if x.kind == "batchnorm"} == {16 * widen}
        assert [c.out_channels for c in convs(model)] == [16 * widen] * 7
        assert [c.kernel_size for c in convs(model)] == [c.kernel_size for c in convs(reference)]
        sizes.append(n_parameters(model))
    assert sizes[0] == 5194 and sizes == sorted(sizes) and len(set(sizes)) == 4


def test_widen_composes_with_blocks_and_width():
    model = preresnet("a", 0.0, width=8, widen=4, blocks=2)
    assert [c.out_channels for c in convs(model)] == [32] * 5
    assert len(blocks_of(model)) == 2


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                        (True, TypeError), ("2", TypeError)])
def test_bad_widen_is_refused_by_name(bad, error):
    with pytest.raises(error, match=r"preresnet: widen must be a positive integer, got"):
        preresnet("a", 0.3, widen=bad)
    with pytest.raises(error, match=r"widen must be a positive integer"):
        wide_resnet("b", 0.3, widen=bad)


@pytest.mark.parametrize("argument", ["cardinality", "group_width"])
def test_bad_resnext_sizes_are_refused_by_name(argument):
    with pytest.raises(ValueError, match=rf"resnext: {argument} must be a positive integer, got 0"):
        resnext("a", 0.3, **{argument: 0})
    with pytest.raises(TypeError, match=rf"resnext: {argument} must be a positive integer"):
        resnext("a", 0.3, **{argument: 2.0})


def test_unknown_placement_is_refused():
    with pytest.raises(ValueError, match=r"placement must be 'a', 'b' or 'head', got 'c'"):
        resnext("c", 0.3)


def test_network_without_widen_is_the_architectures_own_and_widen_is_preresnets_only():
    for arch in ("PreResNet", "WRN", "DenseNet", "ResNeXt"):
        same = [p.copy() for _, p, _ in nn.seeded(experiments.network(arch, "b", 0.3), 7).named_parameters()]
        ref = [p for _, p, _ in nn.seeded(ARCHITECTURES[arch]("b", 0.3), 7).named_parameters()]
        assert all(np.array_equal(x, y) for x, y in zip(same, ref)) and len(same) == len(ref)
    with pytest.raises(ValueError, match="widen applies to arch 'PreResNet' only"):
        experiments.network("WRN", "a", 0.0, widen=2)
    with pytest.raises(ValueError, match="arch must be one of"):
        experiments.network("ResNet", "a", 0.0)
    assert experiments.initial_weights("PreResNet", 0, 2)[1]["d"] == 96
