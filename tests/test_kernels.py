"""The Numba kernels against their NumPy references (the oracle)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from varshift import nn
from varshift.kernels import Window, batchnorm, optim, window, workspace


@st.composite
def geometries(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    h_min = max(1, dh * (kh - 1) + 1 - sum(pads[0]))
    w_min = max(1, dw * (kw - 1) + 1 - sum(pads[1]))
    h, w = draw(st.integers(h_min, h_min + 6)), draw(st.integers(w_min, w_min + 6))
    win = Window((kh, kw), (draw(st.integers(1, 3)), draw(st.integers(1, 3))), pads, (dh, dw))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w)
    return win, shape


@given(geometries(), st.sampled_from([np.float32, np.float64]), st.sampled_from([0.0, -np.inf]))
def test_im2col_numba_matches_numpy(geom, dtype, pad_value):
    win, shape = geom
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    expected = window.im2col_numpy(x, win, pad_value)
    got = window.im2col_numba(x, win, pad_value)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)


@given(geometries(), st.sampled_from([np.float32, np.float64]))
def test_col2im_numba_matches_numpy_and_is_the_adjoint(geom, dtype):
    win, shape = geom
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    cols = rng.standard_normal(window.im2col_numpy(x, win).shape)
    dx = window.col2im_numba(cols.astype(dtype), shape, win)
    # each element sums its taps in the same order: the same value, bit for bit
    np.testing.assert_array_equal(dx, window.col2im_numpy(cols.astype(dtype), shape, win))
    # <im2col(x), cols> == <x, col2im(cols)>: col2im is im2col's transpose
    lhs = np.sum(window.im2col_numpy(x, win) * cols)
    rhs = np.sum(x * window.col2im_numpy(cols, shape, win))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


@given(geometries(), st.sampled_from([np.float32, np.float64]))
def test_im2row_is_im2col_channels_last_and_numba_matches_numpy(geom, dtype):
    win, shape = geom
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    rows = window.im2row_numpy(x, win)
    n, c = shape[:2]
    kh, kw = win.kernel
    cols = window.im2col_numpy(x, win).reshape(c, kh, kw, -1)
    np.testing.assert_array_equal(rows, cols.transpose(3, 1, 2, 0).reshape(rows.shape))
    got = window.im2row_numba(x, win)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, rows)


@pytest.mark.parametrize("name", ["im2col", "im2row"])
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_patches_written_into_out(name, backend):
    win = Window((3, 2), (2, 1), ((1, 1), (0, 1)), (1, 1))
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(np.float32)
    build = getattr(window, f"{name}_{backend}")
    expected = build(x, win)
    out = np.full(expected.shape, np.nan, np.float32)
    got = build(x, win, out) if name == "im2row" else build(x, win, 0.0, out)
    assert got is out
    np.testing.assert_array_equal(out, expected)
    wrong = np.empty((expected.shape[0] + 1, expected.shape[1]), np.float32)
    with pytest.raises(ValueError, match=r"out must be a C-contiguous float32 array of shape"):
        build(x, win, wrong) if name == "im2row" else build(x, win, 0.0, wrong)


def test_scratch_is_reused_per_slot_and_per_thread():
    import threading

    a = workspace.scratch("test-a", (4, 5), np.float32)
    again = workspace.scratch("test-a", (2, 3), np.float64)
    other = workspace.scratch("test-b", (4, 5), np.float32)
    assert a.shape == (4, 5) and a.dtype == np.float32 and a.flags.c_contiguous
    assert again.shape == (2, 3) and again.dtype == np.float64
    assert np.shares_memory(a, again) and not np.shares_memory(a, other)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(workspace.scratch("test-a", (4, 5), np.float32)))
    thread.start()
    thread.join()
    assert not np.shares_memory(seen[0], a)
    big = (workspace.MAX_BYTES // 4 + 1,)
    first, second = workspace.scratch("test-a", big, np.float32), workspace.scratch("test-a", big, np.float32)
    assert not np.shares_memory(first, second)  # too large to keep: new each time


@given(geometries(), st.sampled_from([np.float32, np.float64]))
def test_row2im_numba_matches_numpy_and_is_the_adjoint(geom, dtype):
    win, shape = geom
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    rows = rng.standard_normal(window.im2row_numpy(x, win).shape)
    dx = window.row2im_numba(rows.astype(dtype), shape, win)
    assert dx.dtype == dtype
    # both sum each element's taps in the same order
    np.testing.assert_array_equal(dx, window.row2im_numpy(rows.astype(dtype), shape, win))
    lhs = np.sum(window.im2row_numpy(x, win) * rows)
    rhs = np.sum(x * window.row2im_numpy(rows, shape, win))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


def test_window_output_size_matches_pytorch_formula():
    win = Window((3, 5), (2, 1), ((1, 1), (0, 2)), (1, 2))
    assert win.output_size(10, 12) == ((10 + 2 - 2 - 1) // 2 + 1, (12 + 2 - 8 - 1) // 1 + 1)


@pytest.mark.parametrize("shape", [(7, 3, 1), (4, 5, 11), (2, 2, 36)])
@pytest.mark.parametrize("batch_stats", [True, False])
def test_batchnorm_kernels_match(shape, batch_stats, rng):
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    c = shape[1]
    mean_ref, var_ref = batchnorm.moments_numpy(x)
    mean, var = batchnorm.moments_numba(x)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-12)
    np.testing.assert_allclose(var, var_ref, rtol=1e-12)
    np.testing.assert_allclose(mean_ref, x.astype(np.float64).mean(axis=(0, 2)), rtol=1e-12)
    gamma = rng.uniform(0.5, 2, c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    inv_std = (1 / np.sqrt(var + 1e-5)).astype(np.float32)
    args = (x, mean.astype(np.float32), inv_std, gamma, beta)
    np.testing.assert_allclose(batchnorm.normalize_numba(*args), batchnorm.normalize_numpy(*args),
                               rtol=1e-5, atol=1e-5)
    grad_args = (dout, x, mean.astype(np.float32), inv_std, gamma, batch_stats)
    got = batchnorm.backward_numba(*grad_args)
    ref = batchnorm.backward_numpy(*grad_args)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_one_pass_moments_stay_accurate_far_from_zero(rng):
    x = (1e4 + rng.standard_normal((50, 2, 40))).astype(np.float32)
    mean, var = batchnorm.moments_numba(x)
    ref_mean, ref_var = batchnorm.moments_numpy(x)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-12)
    np.testing.assert_allclose(var, ref_var, rtol=1e-9)


def test_adam_kernel_matches_reference(rng):
    p = rng.standard_normal(1000)
    states = [[p.copy(), np.zeros_like(p), np.zeros_like(p)] for _ in range(2)]
    for step in range(1, 4):
        g = rng.standard_normal(1000)
        optim.adam_numpy(*[s for s in states[0][:1]], g, *states[0][1:], 1e-2, 0.9, 0.999, 1e-8, step, 0.01)
        optim.adam_numba(*[s for s in states[1][:1]], g, *states[1][1:], 1e-2, 0.9, 0.999, 1e-8, step, 0.01)
    for a, b in zip(*states):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert not np.allclose(states[0][0], p)


@pytest.mark.parametrize("slope", [0.0, 0.2, -0.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_leaky_relu_kernels_match(slope, dtype, rng):
    from varshift.kernels import elementwise
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    x[0, 0, :2] = 0.0
    d = rng.standard_normal(x.shape).astype(dtype)
    np.testing.assert_array_equal(elementwise.leaky_relu_numba(x, slope), elementwise.leaky_relu_numpy(x, dtype(slope)))
    np.testing.assert_array_equal(elementwise.leaky_relu_backward_numba(d, x, slope),
                                  elementwise.leaky_relu_backward_numpy(d, x, dtype(slope)))


@pytest.mark.parametrize("alpha", [1.0, 0.3, 2.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elu_kernels_match_bit_for_bit(alpha, dtype, rng):
    from varshift.kernels import elementwise
    x = (3 * rng.standard_normal((4, 5, 50))).astype(dtype)
    x[0, 0, :4] = [0.0, -0.0, np.nan, -np.inf]
    d = rng.standard_normal(x.shape).astype(dtype)
    out = elementwise.elu_numba(x, alpha)
    expected = elementwise.elu_numpy(x, dtype(alpha))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out.view(np.uint8), expected.view(np.uint8))  # also -0, NaN
    np.testing.assert_array_equal(elementwise.elu_backward_numba(d, x, out, alpha).view(np.uint8),
                                  elementwise.elu_backward_numpy(d, x, expected, dtype(alpha)).view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["cc", "fc", "cf", "ff", "strided"])
def test_blas_matmul_matches_numpy(dtype, layout, rng):
    from varshift.kernels import gemm
    a = rng.standard_normal((7, 5)).astype(dtype)
    b = rng.standard_normal((5, 9)).astype(dtype)
    if layout[0] == "f":
        a = np.asfortranarray(a)
    if layout[1:] == "f":
        b = np.asfortranarray(b)
    if layout == "strided":
        a = rng.standard_normal((7, 10)).astype(dtype)[:, ::2]
    c = gemm.matmul_blas(a, b)
    assert c.dtype == dtype and c.flags.c_contiguous
    np.testing.assert_allclose(c, gemm.matmul_numpy(a, b), rtol=1e-5 if dtype == np.float32 else 1e-13)
    assert gemm.matmul_blas(a[:0], b).shape == (0, 9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["cc", "fc", "cf", "ff", "strided"])
@pytest.mark.parametrize("shape", [(64, 300, 900), (3, 40, 257), (900, 300, 64), (257, 40, 3)])
def test_a_product_split_over_threads_matches_one_blas_call(dtype, layout, shape, rng):
    """Blocks of columns (the result wider than tall) or of rows, on every layout of the
    operands, with an odd number of rows or columns and more blocks than rows."""
    from varshift.kernels import gemm

    m, k, n = shape
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    if layout[0] == "f":
        a = np.asfortranarray(a)
    if layout[1:] == "f":
        b = np.asfortranarray(b)
    if layout == "strided":
        a = rng.standard_normal((m, 2 * k)).astype(dtype)[:, ::2]
    gemm.matmul_blas(a[:1], b[:, :1])  # loads BLAS
    one = gemm._product(a, b, 1)
    for blocks in (2, 5):
        split = gemm._product(a, b, blocks)
        assert split.dtype == dtype and split.flags.c_contiguous
        if dtype == np.float32 and min(m, n) > 8:  # same kernel on row or column slices
            np.testing.assert_array_equal(split, one)
        np.testing.assert_allclose(split, one, rtol=1e-5 if dtype == np.float32 else 1e-13,
                                   atol=1e-5 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("shape", [(6, 3, 1), (6, 3, 5)])
def test_reassociated_reductions_still_propagate_non_finite_values(shape):
    x = np.ones(shape, np.float32)
    x[2, 1, 0] = np.nan
    x[3, 2, 0] = np.inf
    mean, var = batchnorm.moments_numba(x)
    assert np.isfinite(mean[0]) and np.isnan(mean[1]) and not np.isfinite(mean[2])
    assert np.isnan(var[1]) and not np.isfinite(var[2])


def test_thread_policy_runs_small_work_serially_and_restores_the_limits():
    import numba

    from varshift.kernels import threads

    seen = []

    def kernel(x):
        seen.append(numba.get_num_threads())
        return x

    def blas_threads():
        return [lib.get_num_threads() for lib in threads._blas_libraries()]

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two Numba threads")
    restore = threads.limit(2)
    try:
        before = blas_threads()
        run = threads.sized(kernel, lambda x: x)
        run(threads.PARALLEL_MIN_ITEMS - 1)
        run(threads.PARALLEL_MIN_ITEMS)
        assert seen == [1, 2] and numba.get_num_threads() == 2
        def product(blocks):
            return blocks, blas_threads(), numba.get_num_threads()

        # BLAS runs on one thread in every product; a large one is split over Numba's
        small = threads.product(product, 2, 2, 2)
        large = threads.product(product, threads.PARALLEL_MIN_FLOPS, 1, 1)
        assert max(before) == 2 and blas_threads() == before
        assert small[:2] == (1, [1] * len(before)) and large == (2, [1] * len(before), 2)
    finally:
        restore()
    one = threads.limit(1)  # a process-wide limit of one thread is never exceeded
    try:
        seen.clear()
        run(threads.PARALLEL_MIN_ITEMS)
        assert seen == [1] and set(blas_threads()) == {1}
        assert threads.product(lambda blocks: blocks, threads.PARALLEL_MIN_FLOPS, 1, 1) == 1
    finally:
        one()


def test_batched_calls_switch_threads_once_and_restore_them(monkeypatch):
    import numba

    from varshift.kernels import threads

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two Numba threads")
    seen, sets = [], []
    real_set = numba.set_num_threads
    monkeypatch.setattr(numba, "set_num_threads", lambda n: (sets.append(n), real_set(n))[1])

    def blas_threads():
        return [lib.get_num_threads() for lib in threads._blas_libraries()]

    run = threads.sized(lambda x: seen.append(numba.get_num_threads()), lambda x: x)
    small, large = threads.PARALLEL_MIN_ITEMS - 1, threads.PARALLEL_MIN_ITEMS

    @threads.batched
    def work(nested, fail=False):
        run(small)
        run(small)
        blas_in_small = threads.product(lambda blocks: blas_threads(), 2, 2, 2)
        if nested:
            work(False)  # an inner batched call gives nothing back itself
        run(large)
        run(small)
        if fail:
            raise RuntimeError("boom")
        return blas_in_small

    restore = threads.limit(2)
    try:
        before = blas_threads()
        sets.clear()
        assert work(True) == [1] * len(before)
        # no switch between consecutive serial kernels (the nested call's included):
        # to 1 at the first, back to 2 for each large kernel and to 1 after it, and
        # back to 2 when the outermost call returns
        assert seen == [1, 1, 1, 1, 2, 1, 2, 1] and sets == [1, 2, 1, 2, 1, 2]
        assert numba.get_num_threads() == 2 and blas_threads() == before
        with pytest.raises(RuntimeError):
            work(False, fail=True)
        assert numba.get_num_threads() == 2 and blas_threads() == before
        seen.clear()
        run(small)  # outside a batched call: switched and given back per call
        assert seen == [1] and numba.get_num_threads() == 2
    finally:
        restore()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_windows_kernels_match(dtype, rng):
    from varshift.kernels import pooling

    windows = rng.standard_normal((6, 4, 5)).astype(dtype)
    windows[0, :, 0] = -np.inf  # an all-padding window: tap 0
    windows[1, 1:3, 1] = np.nan  # the first NaN is the maximum
    windows[2, :, 2] = windows[2, 1, 2]  # ties: the first tap
    windows[3, 0, 3] = np.nan
    out, argmax = pooling.max_windows_numba(windows)
    expected_out, expected_argmax = pooling.max_windows_numpy(windows)
    np.testing.assert_array_equal(argmax, expected_argmax)
    np.testing.assert_array_equal(out, expected_out)
    dout = rng.standard_normal(out.shape).astype(dtype)
    np.testing.assert_array_equal(pooling.max_windows_backward_numba(dout, argmax, 4),
                                  pooling.max_windows_backward_numpy(dout, argmax, 4))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_add_bias_nchw_kernels_match(dtype, channels_last, rng):
    from varshift.kernels import gemm

    product = rng.standard_normal((3, 7, 4) if channels_last else (4, 3, 7)).astype(dtype)
    product[0, 0, 0] = -0.0  # + a zero bias gives +0, in both
    view = product.transpose(0, 2, 1) if channels_last else product.transpose(1, 0, 2)
    bias = rng.standard_normal(4).astype(dtype)
    for b in (bias, np.zeros_like(bias)):
        got, expected = (np.empty((3, 4, 7), dtype) for _ in range(2))
        gemm.add_bias_nchw_numba(product, b, got, channels_last)
        gemm.add_bias_nchw_numpy(product, b, expected, channels_last)
        np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))
        np.testing.assert_array_equal(got, view + b[:, None])


def _conv_step(layer, x, dout):
    out = layer(x)
    return out, layer.backward(dout), dict(layer.grads)


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Conv2D(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2),
     (3, 4, 8, 7)),  # im2col
    (lambda: nn.Conv2D(6, 6, 3, stride=2, padding=1, groups=6),
     (3, 6, 7, 9)),  # depthwise, im2row
    (lambda: nn.Conv1D(8, 4, 3, padding="same", dilation=2, groups=4), (3, 8, 10)),
    (lambda: nn.Conv1D(4, 8, 2, stride=2, groups=2), (3, 4, 9)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grouped_conv_agrees_on_numba_and_numpy_kernels(make, shape, dtype, monkeypatch):
    """The layer's whole step on each backend's kernels (whichever VARSHIFT_KERNELS
    selected for the rest of the suite)."""
    from varshift import kernels
    from varshift.kernels import gemm

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    results = {}
    for backend, product in (("numpy", gemm.matmul_numpy), ("numba", gemm.matmul_blas)):
        monkeypatch.setattr(kernels, "matmul", product)
        monkeypatch.setattr(kernels, "add_bias_nchw", getattr(gemm, f"add_bias_nchw_{backend}"))
        for name in ("im2col", "col2im", "im2row", "row2im"):
            monkeypatch.setattr(kernels, name, getattr(window, f"{name}_{backend}"))
        layer = make().initialize(0).astype(dtype)
        dout = np.random.default_rng(1).standard_normal(layer(x).shape).astype(dtype)
        results[backend] = _conv_step(layer, x, dout)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    (out, dx, grads), (out_ref, dx_ref, grads_ref) = results["numba"], results["numpy"]
    np.testing.assert_allclose(out, out_ref, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(dx, dx_ref, rtol=rtol, atol=rtol)
    assert set(grads) == set(grads_ref) == {"weight", "bias"}
    for key in grads:
        assert grads[key].dtype == dtype
        np.testing.assert_allclose(grads[key], grads_ref[key], rtol=rtol, atol=rtol)
