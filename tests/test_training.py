"""fit, evaluate and the hand-composed training loop."""

import numpy as np
import pytest

from varshift import evaluate, fit, nn, optim


def blobs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 5)).astype(np.float32) + 3 * np.eye(3, 5, dtype=np.float32)[y]
    return x, y


def mlp(seed=0, dropout=0.2):
    return nn.Sequential(nn.Dense(5, 16), nn.BatchNorm(16), nn.ReLU(), nn.Dropout(dropout),
                         nn.Dense(16, 3), seed=seed)


def test_fit_learns_and_reports_both_modes():
    x, y = blobs()
    model = mlp()
    history = fit(model, (x, y), nn.CrossEntropyLoss(), optim.Adam(model, lr=1e-2), epochs=5,
                  batch_size=32, validation_data=blobs(200, seed=1))
    assert set(history.metrics) == {"loss", "accuracy", "eval_loss", "eval_accuracy",
                                    "val_loss", "val_accuracy"}
    assert all(len(v) == 5 for v in history.metrics.values())
    assert history.steps == 5 * 13
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] > 0.9
    assert model.training  # fit leaves the model in train mode


def test_fit_is_deterministic_given_seeds():
    x, y = blobs()
    runs = []
    for _ in range(2):
        model = mlp(seed=3)
        fit(model, (x, y), nn.CrossEntropyLoss(), optim.SGD(model, lr=0.1, momentum=0.9),
            epochs=2, batch_size=50, seed=7, eval_train=False)
        runs.append(model.state_dict())
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_fit_partial_batches_and_drop_last():
    x, y = blobs(90)
    model = mlp()
    assert fit(model, (x, y), nn.CrossEntropyLoss(), optim.Adam(model), batch_size=32).steps == 3
    assert fit(model, (x, y), nn.CrossEntropyLoss(), optim.Adam(model), batch_size=32,
               drop_last=True).steps == 2


def test_regression_with_mse_has_no_accuracy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 12))
    model = nn.Sequential(nn.Dense(12, 8), nn.Dense(8, 12), seed=0)
    history = fit(model, (x, x), nn.MSELoss(), optim.Adam(model, lr=1e-2), epochs=20, batch_size=32)
    assert "accuracy" not in history.metrics
    assert history["eval_loss"][-1] < history["eval_loss"][0]


def test_evaluate_restores_modes_and_matches_manual_computation():
    x, y = blobs(100)
    model = mlp().train()
    result = evaluate(model, (x, y), nn.CrossEntropyLoss(), batch_size=7)
    assert model.training
    model.eval()
    logits = model(x)
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))
    assert result["loss"] == pytest.approx(nn.CrossEntropyLoss()(logits, y), rel=1e-5)


def test_evaluate_with_batch_statistics_leaves_the_model_unchanged():
    x, y = blobs(120)
    model = nn.Sequential(nn.Dense(x.shape[1], 16), nn.BatchNorm(16), nn.ReLU(), nn.Dropout(0.5),
                          nn.Dense(16, 3), seed=0)
    fit(model, (x, y), nn.CrossEntropyLoss(), optim.Adam(model, lr=1e-2), epochs=1,
        batch_size=30)
    model.eval()
    state = {k: v.copy() for k, v in model.state_dict().items()}
    rng = model.rng_state()
    loss = nn.CrossEntropyLoss()
    batch = evaluate(model, (x, y), loss, batch_size=40, batchnorm="train")
    with nn.modes(model, batchnorm="train"):  # the same by hand, on a copy of the stats
        manual = np.mean([loss(model(x[i:i + 40]), y[i:i + 40]) for i in range(0, 120, 40)])
    model.load_state_dict(state)
    assert batch["loss"] == pytest.approx(manual, rel=1e-5)
    assert batch["loss"] != pytest.approx(evaluate(model, (x, y), loss)["loss"], rel=1e-6)
    noisy = [evaluate(model, (x, y), loss, dropout="train", seed=s)["loss"] for s in (1, 1, 2)]
    assert noisy[0] == noisy[1] != noisy[2]  # Dropout masks from the seed
    assert all(np.array_equal(v, model.state_dict()[k]) for k, v in state.items())
    assert model.rng_state() == rng and not any(layer.training for _, layer in model.walk())
    with pytest.raises(ValueError, match="batchnorm"):
        evaluate(model, (x, y), loss, batchnorm="sometimes")


def test_hand_composed_training_step():
    x, y = blobs(64)
    model = mlp()
    loss = nn.CrossEntropyLoss()
    opt = optim.Adam(model, lr=1e-2)
    values = []
    for _ in range(30):
        values.append(loss(model(x), y))
        opt.zero_grad()
        model.backward(loss.backward())
        opt.step()
    assert values[-1] < 0.5 * values[0]
