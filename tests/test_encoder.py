import pytest
import torch

from asr_zoo.config import ConfigError, compose
from asr_zoo.data.features import add_deltas
from asr_zoo.nn.encoder import build_encoder
from asr_zoo.nn.frontend import subsampled_lengths


def _encoder(*overrides):
    cfg = compose(["encoder.d_model=32", "encoder.num_heads=4", "encoder.ffn_dim=64", "encoder.num_layers=2",
                   "encoder.frontend_channels=8", *overrides])
    return build_encoder(20, cfg.encoder, cfg.attention).eval()


@pytest.mark.parametrize("overrides", [(), ("encoder.frontend=imputer_conv",), ("encoder=conformer",),
                                       ("encoder.pre_ln=false",)])
def test_shapes_lengths_and_padding_invariance(overrides):
    torch.manual_seed(0)
    enc = _encoder(*overrides, "encoder.d_model=32", "encoder.num_heads=4", "encoder.ffn_dim=64",
                   "encoder.num_layers=2", "encoder.frontend_channels=8")
    x = torch.randn(2, 37, 20)
    lengths = torch.tensor([37, 21])
    y, out_len = enc(x, lengths)
    assert y.shape == (2, 10, 32) and out_len.tolist() == [10, 6]
    assert out_len.tolist() == [(37 + 3) // 4, (21 + 3) // 4]
    # the shorter utterance alone gives the same valid outputs as inside the padded batch
    alone, _ = enc(x[1:, :21], lengths[1:])
    torch.testing.assert_close(alone[0, :6], y[1, :6], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("frontend", ["conv2d", "imputer_conv"])
def test_time_subsampling_2_keeps_twice_the_frames(frontend):
    """``encoder.time_subsampling=2``: ceil(T / 2) frames, lengths as the encoder reports them, the
    same padding invariance; CTC's length filter counts the same frames."""
    from asr_zoo.objectives.ctc import ctc_length_filter_for

    torch.manual_seed(0)
    enc = _encoder("encoder.time_subsampling=2", f"encoder.frontend={frontend}")
    x, lengths = torch.randn(2, 37, 20), torch.tensor([37, 21])
    y, out_len = enc(x, lengths)
    assert y.shape == (2, 19, 32) and out_len.tolist() == [19, 11] == enc.output_lengths(lengths).tolist()
    alone, _ = enc(x[1:, :21], lengths[1:])
    torch.testing.assert_close(alone[0, :11], y[1, :11], atol=1e-5, rtol=1e-5)
    two, four = (compose([f"encoder.time_subsampling={k}"]) for k in (2, 4))
    ids = [5, 6, 7, 8, 9, 10, 11, 12, 13]  # 9 labels: 9 frames needed
    assert ctc_length_filter_for(two)(20, ids) is None and "5 encoder frames < 9" in ctc_length_filter_for(four)(20, ids)
    with pytest.raises(ConfigError, match="encoder.time_subsampling=3; valid choices: 4, 2"):
        compose(["encoder.time_subsampling=3"])


def test_extra_input_is_added_after_subsampling():
    enc = _encoder()
    x, lengths = torch.randn(1, 16, 20), torch.tensor([16])
    base, _ = enc(x, lengths)
    shifted, _ = enc(x, lengths, extra=torch.ones(1, 4, 32))
    assert not torch.allclose(base, shifted)


def test_subsampled_lengths_matches_conv_arithmetic():
    for t in range(1, 50):
        assert int(subsampled_lengths(torch.tensor(t))) == -(-t // 4)


def test_deltas_match_kaldi_formula():
    x = torch.randn(9, 3)
    d = add_deltas(x)
    assert d.shape == (9, 9)
    p = torch.cat([x[:1], x[:1], x, x[-1:], x[-1:]])
    t = 4
    expect = (1 * (p[t + 3] - p[t + 1]) + 2 * (p[t + 4] - p[t])) / 10
    torch.testing.assert_close(d[t, 3:6], expect)
