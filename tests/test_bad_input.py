"""Bad input never passes silently (issue 18): every case asserts the exception type and that the message
names the offending tensor, field, value, name or file. Files go to ``tmp_path`` only, and the cases that
write check that nothing is left behind."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import srlib
from srlib.attention.enla import ENLA, ENLCA
from srlib.attention.gla import GLA
from srlib.attention.hspa import HSPA
from srlib.attention.lcoa import LCoA
from srlib.attention.nla import NonLocalAttention, non_local_attention
from srlib.attention.nlsa import NonLocalSparseAttention
from srlib.data import default_eval_set, default_train_set
from srlib.data.download import UnsafeArchiveError, safe_extract
from srlib.inference import super_resolve
from srlib.models import build_model
from srlib.models.enlcn import ENLCNConfig
from srlib.models.lcoan import LCoANConfig
from srlib.models.nlsn import NLSNConfig
from srlib.train import TrainConfig, train


# ------------------------------------------------------------------------------------------- helpers
def _attention(name: str) -> nn.Module:
    """The six mechanisms at their default chunk / window sizes (144), 8 channels, in eval mode."""
    return {
        "NLA": lambda: NonLocalAttention(channel=8, reduction=2),
        "NLSA": lambda: NonLocalSparseAttention(n_hashes=2, channels=8, reduction=4, chunk_size=144),
        "ENLCA": lambda: ENLCA(channel=8, reduction=4),
        "GLA": lambda: GLA(n_hashes=2, channels=8, reduction=4, chunk_size=144),
        "HSPA": lambda: HSPA(channel=8, reduction=2, topk=16),
        "LCoA": lambda: LCoA(channels=8, reduction=2, n_clusters=4, window_size=144),
    }[name]().eval()


MECHANISMS = ("NLA", "NLSA", "ENLCA", "GLA", "HSPA", "LCoA")


def _out(y):
    return y[0] if isinstance(y, tuple) else y


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# ------------------------------------------------------------------ 1. NaN / Inf into every attention
@pytest.mark.parametrize("name", MECHANISMS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_attention_refuses_non_finite_input(name, bad):
    x = torch.rand(1, 8, 12, 12)
    x[0, 3, 2, 5] = bad
    x[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=rf"input x has 2 non-finite values of {x.numel()}"):
        _attention(name)(x)


def test_enla_kernel_names_the_non_finite_tensor():
    q, k, v = torch.rand(1, 10, 4), torch.rand(1, 10, 4), torch.rand(1, 10, 6)
    v[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"ENLA values v has 1 non-finite values of 60 \(1 NaN, 0 Inf\)"):
        ENLA(4, 16)(q, k, v)


def test_input_checks_can_be_switched_off_and_restored():
    x = torch.rand(1, 8, 4, 4)
    x[0, 0, 0, 0] = float("nan")
    m = _attention("NLA")
    previous = srlib.set_input_checks(False)
    try:
        assert torch.isnan(m(x)).any()  # the old behaviour, on request
    finally:
        srlib.set_input_checks(previous)
    assert srlib.input_checks_enabled()
    with pytest.raises(ValueError, match="1 non-finite"):
        m(x)


def test_trained_network_through_super_resolve_refuses_nan():
    net = srlib.pretrained("nlsn-small-x2")
    lr = torch.rand(3, 10, 10)
    lr[1, 4, 4] = float("nan")
    with pytest.raises(ValueError, match=r"super_resolve: lr input image has 1 non-finite values of 300"):
        super_resolve(net, lr)


def test_super_resolve_refuses_a_network_that_returns_nan():
    net = build_model("edsr", preset="small").eval()
    with torch.no_grad():
        net.tail[-1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"output of EDSR .* 768 non-finite values of 768"):
        super_resolve(net, torch.rand(1, 3, 8, 8))


class _Patches(Dataset):
    def __init__(self, nan_at: int | None = None):
        self.nan_at = nan_at

    def __len__(self):
        return 4

    def __getitem__(self, i):
        hr = torch.rand(3, 8, 8)
        return {"lr": F.avg_pool2d(hr[None], 2)[0], "hr": hr, "name": f"p{i}"}


def test_training_stops_at_the_nan_loss_iteration_without_saving_it(tmp_path):
    cfg = TrainConfig(iterations=6, batch_size=2, milestones=(4,), val_every=0, ckpt_every=1, log_every=100, seed=1)
    net = build_model("edsr", preset="small")

    def nan_from_iteration_3(output, batch):  # 0-based iteration 2 = the 3rd step
        return torch.tensor(float("nan") if batch["iteration"] >= 2 else 0.0)

    with pytest.raises(FloatingPointError, match=r"non-finite training loss at iteration 3; stopped without saving"):
        train(net, _Patches(), None, cfg, tmp_path / "run", extra_loss=nan_from_iteration_3, progress=False)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["iteration"] == 2  # the last good step; iteration 3 was never written
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    assert not any(p.name.endswith((".tmp", ".part")) for p in (tmp_path / "run").iterdir())


def test_training_names_the_iteration_where_nan_reaches_the_network(tmp_path):
    class NanOnThirdCall(nn.Module):  # the 3rd LR batch (2 x 3 x 4 x 4) reaches the NLSN as NaN
        def __init__(self):
            super().__init__()
            self.net = build_model("nlsn", preset="small", n_resblocks=0)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return self.net(x * float("nan") if self.calls == 3 else x)

    cfg = TrainConfig(iterations=5, batch_size=2, milestones=(4,), val_every=0, ckpt_every=10, log_every=10, seed=1)
    with pytest.raises(FloatingPointError, match=r"iteration 3: NLSN input image has 96 non-finite values of 96"):
        train(NanOnThirdCall(), _Patches(), None, cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


# ------------------------------------------------------------------ 2. data-set names and scales
def _fake_benchmark(root, name="Set5", scales=(2,)):
    from srlib.data import save_image

    for s in scales:
        folder = root / "benchmark" / name / f"image_SRF_{s}"
        save_image(torch.rand(3, 4 * s, 4 * s), folder / f"img_001_SRF_{s}_HR.png")
        save_image(torch.rand(3, 4, 4), folder / f"img_001_SRF_{s}_LR.png")


def test_misspelled_benchmark_name_lists_the_valid_names(tmp_path, monkeypatch):
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown benchmark 'set5' \(did you mean 'Set5'\?\); valid names: Set5, "):
        default_eval_set(2, "set5")
    assert _files(tmp_path) == []


def test_missing_benchmark_scale_names_the_folder_looked_for(tmp_path, monkeypatch):
    _fake_benchmark(tmp_path, "B100", scales=(2,))
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no data for scale 3: neither .*B100[/\\]image_SRF_3"):
        default_eval_set(3, "B100")
    ds, label = default_eval_set(2, "B100")
    assert label == "B100 x2" and len(ds) == 1


def test_eval_fallback_announces_itself_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path))
    ds, label = default_eval_set(2, "Urban100", fallback_names=("chelsea",))
    err = capsys.readouterr().err.splitlines()
    assert label == "sample photographs x2 (offline fallback)" and len(ds) == 1
    assert len(err) == 1 and "benchmark Urban100 not found" in err[0] and "(chelsea)" in err[0]


def test_train_fallback_announces_itself_and_present_data_is_silent(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path))
    default_train_set(2, 16, fallback_names=("coffee",))
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "no training photos in" in err[0] and "(coffee)" in err[0]
    _fake_benchmark(tmp_path, "Set5")
    default_eval_set(2, "Set5")
    assert capsys.readouterr().err == ""


def test_unknown_fallback_photograph_lists_the_available_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown sample image 'lena'; available: \['astronaut'"):
        default_eval_set(2, "Set5", fallback_names=("lena",))


def test_a_single_string_of_names_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path))
    with pytest.raises(ValueError, match=r"got the string 'chelsea'; write names=\('chelsea',\)"):
        default_eval_set(2, "Set5", fallback_names="chelsea")
    with pytest.raises(ValueError, match=r"names is empty: name at least one sample image of \['astronaut'"):
        default_train_set(2, 16, fallback_names=())


# ------------------------------------------------------------------ 3. impossible hyper-parameters
@pytest.mark.parametrize("model", ["edsr", "nlsn", "enlcn", "dlsn", "hspan", "lcoan"])
def test_negative_block_count_is_refused_at_config_time(model):
    with pytest.raises(ValueError, match=r"Config\.n_resblocks must be an integer >= 0, got -1"):
        build_model(model, preset="small", n_resblocks=-1)


@pytest.mark.parametrize("field, value, match", [
    ("amplification", -1, r"ENLCNConfig\.amplification must be a finite number > 0, got -1"),
    ("amplification", float("nan"), r"ENLCNConfig\.amplification must be a finite number > 0, got nan"),
    ("n_features", 0, r"ENLCNConfig\.n_features must be an integer >= 1, got 0"),
    ("loss_variant", "hinge", r"ENLCNConfig\.loss_variant must be one of .*got 'hinge'"),
    ("redraw_every", -5, r"ENLCNConfig\.redraw_every must be an integer >= 0, got -5"),
])
def test_enlcn_config_fields_name_their_range(field, value, match):
    with pytest.raises(ValueError, match=match):
        ENLCNConfig.small(**{field: value})


@pytest.mark.parametrize("cls, field, value, match", [
    (NLSNConfig, "chunk_size", 0, r"NLSNConfig\.chunk_size must be an integer >= 1, got 0"),
    (NLSNConfig, "n_hashes", 2.5, r"NLSNConfig\.n_hashes must be an integer >= 1, got 2\.5"),
    (NLSNConfig, "scale", 5, r"unsupported upscaling factor NLSNConfig\.scale=5; supported: 2, 3, 4, 8"),
    (NLSNConfig, "reduction", 3, r"NLSNConfig\.n_feats \(32\) must be divisible by reduction \(3\)"),
    (NLSNConfig, "rgb_range", 0, r"NLSNConfig\.rgb_range must be a finite number > 0, got 0"),
    (LCoANConfig, "window_size", -48, r"LCoANConfig\.window_size must be an integer >= 1, got -48"),
    (LCoANConfig, "ema_decay", 1.5, r"LCoANConfig\.ema_decay must be a finite number >= 0 and <= 1, got 1\.5"),
])
def test_network_config_fields_name_their_range(cls, field, value, match):
    with pytest.raises(ValueError, match=match):
        cls.small(**{field: value})


@pytest.mark.parametrize("build, match", [
    (lambda: NonLocalSparseAttention(chunk_size=0),
     r"NonLocalSparseAttention\.chunk_size must be an integer >= 1, got 0"),
    (lambda: ENLCA(channel=8, reduction=4, amplification=-1),
     r"ENLCA\.amplification must be a finite number > 0, got -1"),
    (lambda: GLA(channels=8, reduction=2, k_size=2), r"GLA\.k_size must be an odd integer >= 1, got 2"),
    (lambda: LCoA(channels=8, reduction=2, n_clusters=0),
     r"LearnableCollaborativeAttention\.n_clusters must be an integer >= 1, got 0"),
    (lambda: HSPA(channel=-2, reduction=2), r"HSPA\.channel must be an integer >= 1, got -2"),
    (lambda: NonLocalAttention(channel=8, reduction=2, res_scale=float("inf")),
     r"NonLocalAttention\.res_scale must be a finite number >= 0, got inf"),
])
def test_attention_constructors_name_the_bad_field(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# ------------------------------------------------------------------ 4. wrong image tensors
@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return build_model("hspan", preset="small").eval()


def test_one_channel_image_says_how_to_make_rgb(small_net):
    with pytest.raises(ValueError, match=r"lr expects .* 3 channels in dim -3, got 1 channels.*repeat_interleave"):
        super_resolve(small_net, torch.rand(1, 12, 12))


def test_uint8_image_says_how_to_convert(small_net):
    with pytest.raises(ValueError, match=r"got dtype torch\.uint8; pass x\.float\(\) / 255"):
        super_resolve(small_net, torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8))


def test_0_255_float_image_names_its_range(small_net):
    with pytest.raises(ValueError, match=r"expects values in \[0, 1\] \(rgb_range\), got values in \[0, 255\] "
                                          r"\(a 0-255 image\? divide it by 255\)"):
        super_resolve(small_net, torch.linspace(0, 255, 3 * 12 * 12).view(3, 12, 12))


def test_network_called_directly_checks_dtype_and_layout(small_net):
    with pytest.raises(ValueError, match=r"HSPAN expects a floating point image in \[0, 1\], got dtype torch\.uint8"):
        small_net(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"got 8 channels, shape \(1, 8, 8, 3\) \(channels last\?"):
        small_net(torch.rand(1, 8, 8, 3))


# ------------------------------------------------------------------ 5. archives leave nothing behind
def _zip(path, members):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_slip_leaves_no_target_folder(tmp_path):
    arc = _zip(tmp_path / "evil.zip", {"ok.txt": b"fine", "../escape.txt": b"bad"})
    dest = tmp_path / "new" / "target"
    with pytest.raises(UnsafeArchiveError, match=r"evil\.zip: member '\.\./escape\.txt' points outside"):
        safe_extract(arc, dest)
    assert _files(tmp_path) == ["evil.zip"]


def test_bad_crc_leaves_no_target_folder(tmp_path):
    arc = _zip(tmp_path / "damaged.zip", {"a.txt": b"A" * 100, "b.txt": b"payload-payload"})
    raw = bytearray(arc.read_bytes())
    raw[raw.index(b"payload-payload")] ^= 0xFF  # one stored byte of b.txt flipped: its CRC no longer matches
    arc.write_bytes(bytes(raw))
    with pytest.raises(zipfile.BadZipFile, match="Bad CRC-32 for file 'b.txt'"):
        safe_extract(arc, tmp_path / "target")
    assert _files(tmp_path) == ["damaged.zip"]


def test_tar_with_a_link_leaves_an_existing_target_untouched(tmp_path):
    dest = tmp_path / "target"
    dest.mkdir()
    (dest / "keep.txt").write_text("old")
    arc = tmp_path / "link.tar"
    with tarfile.open(arc, "w") as tf:
        data = b"new"
        info = tarfile.TarInfo("keep.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("sneaky")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    with pytest.raises(UnsafeArchiveError, match=r"link\.tar: member 'sneaky' is a link"):
        safe_extract(arc, dest)
    assert _files(tmp_path) == ["link.tar", "target", "target/keep.txt"]
    assert (dest / "keep.txt").read_text() == "old"


def test_complete_extraction_is_moved_into_place(tmp_path):
    arc = _zip(tmp_path / "good.zip", {"Set5/HR/a.png": b"1", "top.txt": b"2"})
    written = safe_extract(arc, tmp_path / "deep" / "target")
    assert [p.relative_to(tmp_path).as_posix() for p in written] == ["deep/target/Set5/HR/a.png", "deep/target/top.txt"]
    assert not [p for p in (tmp_path / "deep").iterdir() if p.name.startswith(".")]  # no staging folder left


# ------------------------------------------------------------------ 6. one small-map rule for all six
@pytest.mark.parametrize("name", MECHANISMS)
@pytest.mark.parametrize("hw", [(3, 3), (5, 7), (1, 1)])
def test_tiny_and_odd_maps_run_for_every_mechanism(name, hw):
    x = torch.rand(2, 8, *hw)
    with torch.no_grad():
        y = _out(_attention(name)(x))
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_nlsa_on_a_map_dividing_the_chunk_is_dense_attention():
    m = NonLocalSparseAttention(n_hashes=2, channels=8, reduction=4, chunk_size=144).double()
    x = torch.randn(1, 8, 3, 3, dtype=torch.float64)  # 9 positions, repeated 16 times to fill the chunk
    emb = m.conv_match(x).flatten(2).transpose(1, 2)
    val = m.conv_assembly(x).flatten(2).transpose(1, 2)
    k = F.normalize(emb, dim=-1, eps=5e-5)
    dense = non_local_attention(emb, k, val, lambda s: torch.softmax(s, -1))
    torch.testing.assert_close(m(x), dense.transpose(1, 2).reshape(1, 8, 3, 3) + x, rtol=1e-12, atol=1e-12)
