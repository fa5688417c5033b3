"""The caption tokenizer, the text encoder and the text-conditioned U-Net."""

import pytest
import torch

from unet_edu import captions as cap
from unet_edu.models import TextConditionedUNet, build_model, count_parameters
from unet_edu.text import TextEncoder, Tokenizer, null_tokens


@pytest.fixture(scope="module")
def tok():
    return cap.tokenizer()


def test_captions_become_start_words_end_and_padding(tok):
    ids = tok.encode(["thick seven", "Two, slanted left"])
    assert ids.dtype == torch.long and ids.shape == (2, 8)
    assert tok.decode(ids) == [
        ["<start>", "thick", "seven", "<end>", "<pad>", "<pad>", "<pad>", "<pad>"],
        ["<start>", "two", "slanted", "left", "<end>", "<pad>", "<pad>", "<pad>"]]
    assert len(tok) == 21 and tok.vocabulary[:3] == ["<pad>", "<start>", "<end>"]
    assert torch.equal(tok.encode("seven"), tok.encode(["seven"]))


def test_none_is_the_null_caption(tok):
    null = tok.encode([None, "seven"])[0]
    assert null.tolist() == [1, 2, 0, 0, 0, 0, 0, 0]
    assert torch.equal(tok.null(3), null.expand(3, 8))
    assert torch.equal(null_tokens(2, 5), torch.tensor([[1, 2, 0, 0, 0]] * 2))


@pytest.mark.parametrize("caption, message", [
    ("", "is empty; write one such as 'thick seven' or pass None"),
    ("   ", "is empty"),
    ("thick sevn", "unknown word 'sevn'; did you mean 'seven'?"),
    ("a seven", "unknown word 'a'"),
    ("<end> seven", "unknown word '<end>'"),
    ("thick wide seven slanted left upright thin",
     "has 7 words, but the text encoder reads at most 6"),
    (7, "must be a string"),
])
def test_bad_captions_name_the_problem_and_the_fix(tok, caption, message):
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("(", r"\(")):
        tok.encode([caption])


def test_every_word_of_the_vocabulary_and_the_longest_caption_fit(tok):
    longest = "thick narrow eight slanted right"
    assert tok.decode(tok.encode(longest))[0][:7] == ["<start>", *longest.split(), "<end>"]
    for word in cap.VOCABULARY:
        if word not in ("slanted", "left", "right"):
            assert tok.decode(tok.encode(word))[0][1] == word
    with pytest.raises(ValueError, match="empty list"):
        tok.encode([])


def test_tokenizer_construction_checks():
    with pytest.raises(ValueError, match="unique"):
        Tokenizer(["one", "one"])
    with pytest.raises(ValueError, match="reserved"):
        Tokenizer(["one", "<pad>"])
    with pytest.raises(ValueError, match="max_length"):
        Tokenizer(["one"], max_length=2)
    with pytest.raises(ValueError, match="token ids must lie"):
        Tokenizer(["one"]).decode(torch.tensor([5]))


@pytest.fixture(scope="module")
def encoder(tok):
    torch.manual_seed(0)
    return TextEncoder(len(tok), max_length=8, width=16, layers=2, num_heads=2).eval()


def test_the_encoder_gives_one_vector_per_token(encoder, tok):
    out = encoder(tok.encode(["thick seven", None]))
    assert out.shape == (2, 8, 16)
    assert encoder.config == {"vocab_size": 21, "max_length": 8, "width": 16, "layers": 2,
                              "num_heads": 2}


def test_padding_does_not_change_the_words_vectors(encoder, tok):
    ids = tok.encode("thick seven")  # 4 real tokens, 4 padding
    with torch.no_grad():
        padded = encoder(ids)
        short = encoder(ids[:, :4])
    torch.testing.assert_close(padded[:, :4], short)


def test_a_words_vector_depends_on_its_neighbours(encoder, tok):
    with torch.no_grad():
        a = encoder(tok.encode("thin seven"))[0, 1]
        b = encoder(tok.encode("thin zero"))[0, 1]
        c = TextEncoder(21, 8, 16, layers=0, num_heads=2).eval()
        c.load_state_dict({k: v for k, v in encoder.state_dict().items()
                           if not k.startswith("layers.")})
        a0, b0 = c(tok.encode("thin seven"))[0, 1], c(tok.encode("thin zero"))[0, 1]
    assert not torch.allclose(a, b, atol=1e-4)  # self-attention mixes the words
    torch.testing.assert_close(a0, b0)  # without layers, each token stands alone


def test_encoder_input_errors(encoder):
    with pytest.raises(ValueError, match="int64 token ids"):
        encoder(torch.zeros(1, 8))
    with pytest.raises(ValueError, match=r"shape \(B, L\)"):
        encoder(torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="at most 8 tokens"):
        encoder(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="vocab_size"):
        TextEncoder(3)


UNET = dict(in_channels=4, out_channels=4, base_channels=8, channel_mult=(1, 2),
            num_res_blocks=1, attention_levels=(0, 1), num_heads=2, norm_groups=4,
            transformer_depth=1, num_timesteps=50)
TEXT = dict(vocab_size=21, max_length=8, text_width=16, text_layers=1, text_heads=2)


def test_the_text_conditioned_unet_reads_the_caption(tok):
    torch.manual_seed(0)
    model = TextConditionedUNet(**TEXT, **UNET).eval()
    assert model.unet.config["context_dim"] == 16 and model.num_timesteps == 50
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj_out" in name:  # zero at the start: make the cross-attention count
                p.normal_(0, 0.3)
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 10])
    with torch.no_grad():
        a = model(z, t, tok.encode(["thick seven", "thick seven"]))
        b = model(z, t, tok.encode(["thin seven", None]))
    assert a.shape == (2, 4, 8, 8)
    assert not torch.allclose(a, b)
    twin = build_model("TextConditionedUNet", model.config)
    assert count_parameters(twin) == count_parameters(model)


def test_a_checkpoint_rebuilds_the_pair_from_its_flat_config(tmp_path, tok):
    from unet_edu.train import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = TextConditionedUNet(**TEXT, **UNET).eval()
    # one flat record of plain values: what a checkpoint's config may hold
    assert all(not isinstance(v, dict) for v in model.config.values())
    assert model.config["text_width"] == 16 and model.config["transformer_depth"] == 1
    path = save_checkpoint(tmp_path / "ldm.safetensors", model, step=3)
    again, info = load_checkpoint(path)
    assert type(again).__name__ == "TextConditionedUNet" and info.step == 3
    z, t, ids = torch.randn(1, 4, 8, 8), torch.tensor([5]), tok.encode("thick seven")
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(z, t, ids), model(z, t, ids))


def test_text_conditioned_unet_errors(tok):
    with pytest.raises(TypeError, match="context_dim"):
        TextConditionedUNet(**TEXT, **UNET, context_dim=32)  # the text width sets it
    model = TextConditionedUNet(**TEXT, **UNET)
    with pytest.raises(ValueError, match=r"one row of ids per latent, shape \(2, L\)"):
        model(torch.randn(2, 4, 8, 8), torch.tensor([1, 1]), tok.encode("seven"))
