"""Small models and data shared by the measurement tests."""

import numpy as np

from varshift import fit, nn, optim


def blobs(n=2000, d=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x, (x[:, :3].sum(axis=1) > 0).astype(np.int64)


def trained(model, data, epochs=4, batch_size=64, lr=1e-3):
    fit(model, data, nn.CrossEntropyLoss(), optim.Adam(model, lr=lr), epochs=epochs,
        batch_size=batch_size, eval_train=False)
    return model


def dropout_before_bn(rate=0.5, seed=0):
    """Li et al.'s case (a) twice: Dropout -> Dense -> BN, then Dropout -> BN."""
    return nn.Sequential(nn.Dense(20, 64), nn.ReLU(), nn.Dropout(rate), nn.Dense(64, 64),
                         nn.BatchNorm(64), nn.ReLU(), nn.Dropout(rate), nn.BatchNorm(64),
                         nn.Dense(64, 2), seed=seed)


def healthy(seed=0):
    """BatchNorm before Dropout: no variance shift expected."""
    return nn.Sequential(nn.Dense(20, 64), nn.BatchNorm(64), nn.ReLU(), nn.Dropout(0.5),
                         nn.Dense(64, 2), seed=seed)
