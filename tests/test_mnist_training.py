"""The reference convnet on the real MNIST files (slow: about a minute on 2 cores)."""

import pytest

from varshift import evaluate, fit, nn, optim
from varshift.datasets import load_mnist
from varshift.models import reference_convnet


@pytest.mark.slow
def test_reference_convnet_reaches_98_5_percent(mnist_dir):
    x_train, y_train, x_test, y_test = load_mnist(mnist_dir)
    model = reference_convnet(dropout=0.3, seed=0)
    loss = nn.CrossEntropyLoss()
    history = fit(model, (x_train, y_train), loss, optim.Adam(model, lr=1e-3), epochs=3,
                  batch_size=200, seed=0, eval_train=False)
    test = evaluate(model, (x_test, y_test), loss)
    print(f"MNIST reference convnet: test accuracy {test['accuracy']:.4f}, history {history}")
    assert test["accuracy"] >= 0.985
