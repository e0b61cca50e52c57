"""Dense NLA and NLSA modules: reference equality, hashing, injectable randomness, degenerate cases, errors."""

import pytest
import torch

from srlib.attention.hashing import argmax_hash, gaussian_rotations, spherical_lsh, with_round_offsets
from srlib.attention.nla import NonLocalAttention, non_local_attention
from srlib.attention.nlsa import NonLocalSparseAttention
from srlib.reference import load_case


def test_sdpa_path_equals_explicit_softmax_path():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 2, 30, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 30, 5, generator=g, dtype=torch.float64)
    fused = non_local_attention(q, k, v)
    explicit, weights = non_local_attention(q, k, v, return_map=True)
    torch.testing.assert_close(fused, explicit, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 30, dtype=torch.float64))
    # Eq. (4) written out for one query
    s = q[0, 3] @ k[0].T
    torch.testing.assert_close(explicit[0, 3], torch.softmax(s, 0) @ v[0])


def test_nla_keeps_map_and_swaps_normaliser():
    torch.manual_seed(0)
    m = NonLocalAttention(channel=8, reduction=2, res_scale=1.0).double()
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64)
    m.keep_map = True
    y = m(x)
    assert m.last_map.shape == (1, 30, 30)
    m.keep_map = False
    torch.testing.assert_close(m(x), y)
    m.normalizer = lambda s: torch.full_like(s, 1.0 / s.shape[-1])  # uniform weights = mean of values
    q, k, v = m.embed(x)
    expected = v.mean(1, keepdim=True).expand(-1, 30, -1).transpose(1, 2).reshape(1, 8, 5, 6) + x
    torch.testing.assert_close(m(x), expected)


def test_spherical_lsh_reproduces_official_codes(reference_root):
    case = load_case(reference_root / "modules" / "nlsa_case1.pt")
    torch.set_default_dtype(torch.float64)
    m = NonLocalSparseAttention(**case["config"])
    m.load_state_dict(case["state_dict"])
    emb = m.conv_match(case["input"]).flatten(2).transpose(1, 2)
    codes, _, n_buckets = m.hash(emb, case["rotations"])
    assert n_buckets == case["n_buckets"]
    assert torch.equal(with_round_offsets(codes, n_buckets), case["hash_codes"])


def test_argmax_is_scale_invariant_so_normalising_changes_nothing():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 50, 8, generator=g)
    rot = gaussian_rotations(8, 3, 5, generator=g)
    a = argmax_hash(x, rot, signed=True)
    b = argmax_hash(torch.nn.functional.normalize(x, dim=-1) * 7.0, rot, signed=True)
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() < 10


def test_spherical_lsh_variants_and_errors():
    x = torch.randn(1, 20, 4)
    codes, rot = spherical_lsh(x, 6, 2, variant="paper", generator=torch.Generator().manual_seed(0))
    assert rot.shape == (4, 2, 6) and codes.max() < 6
    codes, rot = spherical_lsh(x, 6, 2, generator=torch.Generator().manual_seed(0))
    assert rot.shape == (4, 2, 3)
    with pytest.raises(ValueError, match="even"):
        spherical_lsh(x, 5, 2)
    with pytest.raises(ValueError, match="rotations must have shape"):
        spherical_lsh(x, 6, 2, rotations=torch.randn(4, 2, 6))
    with pytest.raises(ValueError, match="variant"):
        spherical_lsh(x, 6, 2, variant="nope")


def test_same_rotation_pair_hashes_opposite_vectors_to_opposite_buckets():
    rot = torch.eye(3).view(3, 1, 3)
    x = torch.tensor([[[1.0, 0.2, 0.1], [-1.0, -0.2, -0.1]]])
    codes = argmax_hash(x, rot, signed=True)
    assert codes.tolist() == [[[0, 3]]]  # bucket j and its antipode j + m/2


def _nlsa(**kw):
    cfg = dict(n_hashes=2, channels=8, k_size=3, reduction=2, chunk_size=10, res_scale=1.0)
    cfg.update(kw)
    torch.manual_seed(3)
    return NonLocalSparseAttention(**cfg).double()


def test_nlsa_generator_makes_forward_reproducible():
    m = _nlsa()
    x = torch.randn(1, 8, 8, 9, dtype=torch.float64)
    m.generator = torch.Generator().manual_seed(11)
    a = m(x)
    m.generator = torch.Generator().manual_seed(11)
    b = m(x)
    m.generator = torch.Generator().manual_seed(12)
    c = m(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_nlsa_with_a_single_chunk_is_dense_attention():
    m = _nlsa(chunk_size=30, n_hashes=3)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)  # L = 30 = one chunk
    emb = m.conv_match(x).flatten(2).transpose(1, 2)
    val = m.conv_assembly(x).flatten(2).transpose(1, 2)
    k = torch.nn.functional.normalize(emb, dim=-1, eps=5e-5)
    dense = non_local_attention(emb, k, val, lambda s: torch.softmax(s, -1))
    expected = dense.transpose(1, 2).reshape(2, 8, 5, 6) + x
    torch.testing.assert_close(m(x), expected, rtol=1e-12, atol=1e-12)


def test_nlsa_details_for_visualisation():
    m = _nlsa()
    m.keep_details = True
    m(torch.randn(1, 8, 8, 9, dtype=torch.float64))
    d = m.details
    assert d["codes"].shape == (1, 2, 72)
    assert d["n_buckets"] == 8  # 72 // 10 = 7 -> even 8
    assert d["score"].shape == (1, 2, 8, 10, 30)


def test_nlsa_input_smaller_than_a_chunk_is_one_chunk():
    m = _nlsa(chunk_size=144)  # 100 positions < 144: the official code fails, here one cyclically filled chunk
    m.keep_details = True
    assert m(torch.randn(1, 8, 10, 10, dtype=torch.float64)).shape == (1, 8, 10, 10)
    assert m.details["n_buckets"] == 2 and m.details["layout"].n_chunks == 1
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        m(torch.randn(8, 10, 10, dtype=torch.float64))


# --- the fused path really is fused (no L x L matrix) and exact ---------------------------------------------

@pytest.mark.parametrize("d,dv", [(16, 64), (64, 16), (32, 32)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_softmax_attention_equals_explicit(d, dv, dtype):
    from srlib.attention.nla import fused_softmax_attention
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 300, d, generator=g, dtype=dtype), torch.randn(2, 300, d, generator=g, dtype=dtype)
    v = torch.randn(2, 300, dv, generator=g, dtype=dtype)
    want = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v
    got = fused_softmax_attention(q, k, v)
    assert got.shape == (2, 300, dv)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)


def test_fused_softmax_attention_takes_a_fused_kernel():
    """With the math fallback disabled, SDPA raises unless the inputs qualify for the flash kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from srlib.attention.nla import fused_softmax_attention
    g = torch.Generator().manual_seed(4)
    q, k, v = torch.randn(1, 200, 16, generator=g), torch.randn(1, 200, 16, generator=g), torch.randn(1, 200, 64, generator=g)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        out = fused_softmax_attention(q, k.transpose(1, 2).contiguous().transpose(1, 2), v)  # a strided view
        with pytest.raises(RuntimeError):  # what the module passed before: 3-D, unequal widths -> math only
            torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0)
    torch.testing.assert_close(out, torch.softmax(q @ k.transpose(1, 2), -1) @ v, rtol=0, atol=1e-5)
