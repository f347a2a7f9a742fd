"""spectral.cg_direction_errors against known answers.

Known answers: a dense Galerkin (Krylov) solve written in NumPy (the K-th CG iterate minimizes
the H-norm error over span{b, ..., H^(K-1) b}), the Krylov property that CG is exact after as
many steps as the right-hand side has distinct eigenvalues, the explicit first CG step
``(b.b / b.Hb) b``, and the pseudoinverse solution from ``np.linalg.pinv``.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from bilevel_lib import spectral


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _psd(seed, eigenvalues):
    rng = np.random.default_rng(seed)
    n = len(eigenvalues)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.asarray(eigenvalues, float)
    return (q * lam) @ q.T, q, lam, rng


def _galerkin(hess, b, steps):
    """The K-th CG iterate as a dense Galerkin solve on the orthonormalized Krylov space."""
    krylov = np.stack([np.linalg.matrix_power(hess, j) @ b for j in range(steps)], axis=1)
    basis, _ = np.linalg.qr(krylov)
    return basis @ np.linalg.solve(basis.T @ hess @ basis, basis.T @ b)


def _errors_in_basis(q, lam, v, v_star):
    """|u_i^T (v - v*)| in the basis of ``q``, columns sorted by eigenvalue."""
    order = np.argsort(lam)
    return np.abs(q[:, order].T @ (v - v_star))


EIGS = (0.05, 0.2, 0.7, 1.5, 3.0, 8.0)


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_errors_match_a_dense_galerkin_solve(steps):
    hess, q, lam, rng = _psd(0, EIGS)
    b = rng.standard_normal(6)
    v_star = np.linalg.solve(hess, b)
    want = _errors_in_basis(q, lam, _galerkin(hess, b, steps), v_star)
    got_lam, errors, exact = spectral.cg_direction_errors(hess, b, max_steps=5)
    np.testing.assert_allclose(got_lam, np.sort(lam), rtol=1e-12)
    np.testing.assert_allclose(errors[steps], want, atol=1e-9)
    np.testing.assert_allclose(exact, np.abs(q[:, np.argsort(lam)].T @ v_star), rtol=1e-10)


def test_row_zero_is_the_exact_answer_and_row_one_is_the_first_cg_step():
    hess, q, lam, rng = _psd(1, EIGS)
    b = rng.standard_normal(6)
    v_star = np.linalg.solve(hess, b)
    _, errors, exact = spectral.cg_direction_errors(hess, b, max_steps=2)
    np.testing.assert_allclose(errors[0], exact, rtol=1e-12)
    v_1 = (b @ b) / (b @ hess @ b) * b
    np.testing.assert_allclose(errors[1], _errors_in_basis(q, lam, v_1, v_star), atol=1e-12)


def test_exact_after_as_many_steps_as_distinct_eigenvalues_and_not_before():
    """Three distinct eigenvalues in dimension 6: CG is exact at K = 3, not at K = 2."""
    hess, _, _, rng = _psd(2, (0.3, 0.3, 1.0, 1.0, 1.0, 5.0))
    b = rng.standard_normal(6)
    _, errors, exact = spectral.cg_direction_errors(hess, b, max_steps=6)
    scale = float(np.max(exact))
    assert float(np.max(errors[2])) > 1e-3 * scale
    assert float(np.max(errors[3:])) < 1e-10 * scale


def test_consistent_singular_system_converges_to_the_pseudoinverse_answer():
    hess, q, lam, rng = _psd(3, (0.0, 0.0, 0.5, 1.0, 2.0, 4.0))
    b = hess @ rng.standard_normal(6)  # b in range(H)
    v_star = np.linalg.pinv(hess) @ b
    got_lam, errors, exact = spectral.cg_direction_errors(hess, b, max_steps=6)
    null = np.abs(np.asarray(got_lam)) < 1e-12
    np.testing.assert_allclose(exact, np.abs(q[:, np.argsort(lam)].T @ v_star), atol=1e-12)
    assert np.all(np.asarray(exact)[null] < 1e-12)
    assert float(np.max(np.asarray(errors)[:, null])) < 1e-10   # CG never leaves range(H)
    assert float(np.max(errors[4:])) < 1e-10 * float(np.max(exact))


def test_inconsistent_singular_system_puts_weight_in_the_null_space():
    """With a null-space component in b, CG's iterate grows a null component (pinv: 0)."""
    hess, q, lam, rng = _psd(4, (0.0, 0.01, 0.5, 1.0, 2.0, 4.0))
    b = rng.standard_normal(6)
    got_lam, errors, exact = spectral.cg_direction_errors(hess, b, max_steps=3)
    null = np.abs(np.asarray(got_lam)) < 1e-12
    assert float(np.asarray(exact)[null][0]) < 1e-12
    # After one step v_1 = (b.b / b.Hb) b: its null component is that multiple of b's.
    c_null = float(np.abs(q[:, np.argsort(lam)][:, null].T @ b)[0])
    np.testing.assert_allclose(np.asarray(errors)[1, null][0],
                               (b @ b) / (b @ hess @ b) * c_null, rtol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(hess=np.ones((2, 3)), rhs=np.ones(2), max_steps=1), "hess"),
        (dict(hess=np.eye(2), rhs=np.ones(3), max_steps=1), "rhs"),
        (dict(hess=np.eye(2), rhs=np.ones(2), max_steps=0), "max_steps"),
    ],
)
def test_rejects_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        spectral.cg_direction_errors(**kwargs)
