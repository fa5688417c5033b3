"""Latents and latent diffusion: the autoencoder, the scale factor, caption guidance, the
measuring functions, the training command's helpers, and the shipped pair when present."""

import json
import math

import pytest
import torch

from unet_edu import captions as cap
from unet_edu.diffusion import NoiseSchedule
from unet_edu.latent import (DiagonalGaussian, DigitAutoencoder, encode_dataset,
                             latent_range, latent_scale_factor, latent_statistics,
                             reconstruction_error, vae_loss)
from unet_edu.latent_diffusion import (LatentDiffusion, caption_sample, caption_training_loss,
                                       latent_sampler_score, prompt_study, step_cost,
                                       text_diffusion_loss)
from unet_edu.models import TextConditionedUNet, count_parameters
from unet_edu.pretrained import path_of


def digits(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1


def test_autoencoder_shapes_and_size():
    vae = DigitAutoencoder()
    assert count_parameters(vae) < 200_000  # "a few hundred thousand parameters or fewer"
    post = vae.encode(digits(3))
    assert post.mean.shape == (3, 4, 8, 8) and vae.latent_shape == (4, 8, 8)
    assert vae.decode(post.mode()).shape == (3, 1, 28, 28)
    assert vae.decode(post.mode(), crop=False).shape == (3, 1, 32, 32)
    small = DigitAutoencoder(channels=(8, 8), norm_groups=4)
    assert small.latent_shape == (4, 16, 16)


def test_autoencoder_input_errors():
    vae = DigitAutoencoder(channels=(8, 8, 8), norm_groups=4)
    with pytest.raises(ValueError, match=r"shape \(B, 4, 8, 8\), got \(2, 4, 7, 7\)"):
        vae.decode(torch.randn(2, 4, 7, 7))
    with pytest.raises(ValueError, match="28 x 28"):
        vae.encode(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="input channel"):
        vae.encode(torch.zeros(1, 3, 28, 28))
    with pytest.raises(ValueError, match=r"x \* 2 - 1"):
        reconstruction_error(vae, torch.full((2, 1, 28, 28), 255.0))
    with pytest.raises(ValueError, match="kl_weight"):
        vae_loss(vae, digits(2), kl_weight=float("nan"))
    with pytest.raises(ValueError, match="channels"):
        DigitAutoencoder(channels=())


def test_kl_of_the_diagonal_gaussian_is_the_closed_form():
    mean, logvar = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8) * 0.5
    post = DiagonalGaussian(torch.cat([mean, logvar], 1))
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0))
    torch.testing.assert_close(post.kl(), ref.flatten(1).sum(1))
    unit = DiagonalGaussian(torch.zeros(1, 8, 2, 2))
    assert float(unit.kl()) == 0.0
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(post.sample(g1), post.sample(g2))


def test_the_autoencoder_learns_a_batch():
    from unet_edu.data import mnist

    torch.manual_seed(0)
    vae = DigitAutoencoder(channels=(8, 8, 8), norm_groups=4)
    x = mnist("train", source="bundled").images[:8] * 2 - 1
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = float(vae_loss(vae, x, g).detach())
    for _ in range(40):
        loss = vae_loss(vae, x, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(vae_loss(vae, x, g).detach()) < 0.6 * first


def test_the_scale_factor_is_one_over_the_latents_std():
    torch.manual_seed(0)
    vae = DigitAutoencoder(channels=(8, 8, 8), norm_groups=4).eval()
    x = digits(40)
    scale = latent_scale_factor(vae, x, torch.Generator().manual_seed(1))
    mean, std = encode_dataset(vae, x)
    z = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    assert scale == pytest.approx(1 / float(z.flatten().std()), rel=1e-6)
    assert float((scale * z).flatten().std()) == pytest.approx(1.0, rel=1e-5)
    # latents five times larger get a scale factor five times smaller, as SD's 0.18215
    with torch.no_grad():
        conv_out = vae.encoder[-1]
        conv_out.weight[:4] *= 5  # the means
        conv_out.bias[:4] *= 5
        conv_out.bias[4:] += 2 * math.log(5)  # the log-variances: standard deviations x 5
    assert latent_scale_factor(vae, x, torch.Generator().manual_seed(1)) == pytest.approx(
        scale / 5, rel=1e-4)
    stats = latent_statistics(vae, x, torch.Generator().manual_seed(1))
    assert stats["scale_factor"] == pytest.approx(1 / stats["std"])
    assert len(stats["channel_std"]) == 4 and stats["kl_per_image"] > 0


def test_reconstruction_error_is_measured_on_the_pixel_scale():
    torch.manual_seed(0)
    vae = DigitAutoencoder(channels=(8, 8, 8), norm_groups=4).eval()
    x = digits(6)
    err = reconstruction_error(vae, x)
    with torch.no_grad():
        rec = vae.decode(vae.encode(x).mean).clamp(-1, 1)
    assert err["l1"] == pytest.approx(float(((rec - x) / 2).abs().mean()), rel=1e-5)
    assert err["psnr"] == pytest.approx(-10 * math.log10(err["rmse"] ** 2), rel=1e-6)
    assert err["l1_per_image"].shape == (6,)


def test_the_latent_range_holds_every_scaled_training_latent_per_channel():
    torch.manual_seed(0)
    vae = DigitAutoencoder(channels=(8, 8, 8), norm_groups=4).eval()
    x = digits(12)
    bounds = latent_range(vae, x, 0.5)
    mean, _ = encode_dataset(vae, x)
    z = 0.5 * mean
    assert bounds.shape == (2, 4) and (bounds[0] < bounds[1]).all()
    for c in range(4):
        assert bounds[0, c] == z[:, c].min() and bounds[1, c] == z[:, c].max()
    assert torch.equal(latent_range(vae, x, 1.0), 2 * bounds)  # it scales with the factor
    with pytest.raises(ValueError, match="latent_scale_factor"):
        latent_range(vae, x, 0.0)


# --- latent diffusion with captions -----------------------------------------------------------
@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    tok = cap.tokenizer()
    model = TextConditionedUNet(
        len(tok), max_length=8, text_width=16, text_layers=1, text_heads=2, in_channels=4,
        out_channels=4, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
        attention_levels=(0, 1), num_heads=2, norm_groups=4, transformer_depth=1,
        num_timesteps=50)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj_out" in name:  # zero at the start; random here, so captions matter
                p.normal_(0, 0.3)
    vae = DigitAutoencoder(channels=(8, 8, 8), norm_groups=4)
    return LatentDiffusion(vae.eval(), model.eval(), NoiseSchedule("cosine", 50), 0.8)


def test_sampling_is_seeded_and_reads_the_caption(pipe):
    a = pipe.sample(["thick seven", "two"], steps=5, seed=3, return_trajectory=True)
    b = pipe.sample(["thick seven", "two"], steps=5, seed=3)
    c = pipe.sample(["thin seven", "two"], steps=5, seed=3, return_trajectory=True)
    assert a.images.shape == (2, 1, 28, 28) and a.latents.shape == (2, 4, 8, 8)
    assert float(a.images.abs().max()) <= 1
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.zt[0], c.zt[0])  # the same starting noise for every caption
    assert not torch.allclose(a.latents[0], c.latents[0])
    torch.testing.assert_close(a.latents[1], c.latents[1])  # the other sample is unchanged


def test_guidance_zero_ignores_the_caption_and_one_is_the_conditional_model(pipe):
    tokens = pipe.encode(["thick seven", "wide zero upright"])
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    blind = [caption_sample(pipe.model, pipe.schedule, tokens[i:i + 1], steps=4,
                            guidance_scale=0.0, generator=gen()).latents for i in (0, 1)]
    torch.testing.assert_close(blind[0], blind[1])  # both read only the null caption
    plain = caption_sample(pipe.model, pipe.schedule, tokens, steps=1, guidance_scale=1.0,
                           generator=gen())
    x = torch.randn((2, 4, 8, 8), generator=gen())
    t = torch.full((2,), 49)
    with torch.no_grad():
        eps = pipe.model(x, t, tokens)
    a = pipe.schedule.alphas_cumprod[49].item()
    torch.testing.assert_close(plain.latents, (x - math.sqrt(1 - a) * eps) / math.sqrt(a))


@pytest.mark.parametrize("bad, message", [
    (float("nan"), "guidance_scale must be a finite number, got nan"),
    (float("inf"), "guidance_scale must be a finite number"),
    ("3", "guidance_scale must be a finite number, got '3'"),
])
def test_bad_guidance_scales_are_refused(pipe, bad, message):
    with pytest.raises(ValueError, match=message):
        pipe.sample(["seven"], steps=2, guidance_scale=bad)


def test_sampler_input_errors(pipe):
    with pytest.raises(ValueError, match="empty; write one"):
        pipe.sample([""], steps=2)
    with pytest.raises(ValueError, match="unknown word 'sevn'"):
        pipe.sample(["sevn"], steps=2)
    with pytest.raises(ValueError, match=r"int64 ids of shape \(1, 8\)"):
        caption_sample(pipe.model, pipe.schedule, torch.zeros(1, 8), steps=2)
    with pytest.raises(ValueError, match="ids must lie in 0..20"):
        caption_sample(pipe.model, pipe.schedule, torch.full((1, 8), 40), steps=2)
    with pytest.raises(ValueError, match="num_timesteps=50"):
        caption_sample(pipe.model, NoiseSchedule("cosine", 1000), pipe.encode("seven"), steps=2)
    with pytest.raises(ValueError, match="eta must lie"):
        caption_sample(pipe.model, pipe.schedule, pipe.encode("seven"), steps=2, eta=2)
    with pytest.raises(ValueError, match=r"got \(1, 4, 7, 7\); decode what this autoencoder"):
        pipe.decode(torch.zeros(1, 4, 7, 7))
    with pytest.raises(ValueError, match=r"shape \(B, 4, 8, 8\), got \(4, 8, 8\)"):
        pipe.decode(torch.zeros(4, 8, 8))  # one latent without its batch axis


def test_the_sampler_clips_the_predicted_clean_latent_to_the_given_range(pipe):
    tokens = pipe.encode(["seven", "thin zero"])
    low = torch.tensor([-0.3, -0.2, -0.1, -0.4])
    bounds = torch.stack([low, -low])
    kw = dict(steps=5, guidance_scale=3.0)
    clipped = caption_sample(pipe.model, pipe.schedule, tokens, clip_z0=bounds,
                             generator=torch.Generator().manual_seed(0),
                             return_trajectory=True, **kw)
    free = caption_sample(pipe.model, pipe.schedule, tokens, clip_z0=None,
                          generator=torch.Generator().manual_seed(0), **kw)
    for z0 in clipped.z0_pred:  # every step's prediction lies in the range, per channel
        assert (z0 >= low.view(1, 4, 1, 1) - 1e-4).all()  # up to rounding
        assert (z0 <= -low.view(1, 4, 1, 1) + 1e-4).all()
    # the last step lands on the predicted clean latent: the samples lie in the range too
    assert (clipped.latents.abs() <= bounds[1].view(1, 4, 1, 1) + 1e-4).all()
    assert free.latents.abs().max() > 0.5  # this random model leaves the range unclipped
    with pytest.raises(ValueError, match=r"\(2, 4\) tensor with low < high.*latent_range"):
        caption_sample(pipe.model, pipe.schedule, tokens, clip_z0=torch.zeros(2, 4), **kw)
    with pytest.raises(ValueError, match="latent_range"):
        caption_sample(pipe.model, pipe.schedule, tokens, clip_z0=torch.ones(3), **kw)
    # LatentDiffusion passes its range on
    ranged = LatentDiffusion(pipe.autoencoder, pipe.model, pipe.schedule, pipe.scale_factor,
                             latent_range=bounds)
    out = ranged.sample(["seven", "thin zero"], seed=0, **kw)
    assert torch.allclose(out.latents, clipped.latents)


def test_attention_maps_are_kept_per_site_and_the_layers_switched_back(pipe):
    out = pipe.sample(["thick seven"], steps=3, keep_attention=True)
    att = out.attention
    assert [(s.path, s.level, s.side) for s in att.sites] == [
        ("down", 0, 8), ("down", 1, 4), ("middle", 1, 4), ("up", 1, 4), ("up", 1, 4),
        ("up", 0, 8), ("up", 0, 8)]
    assert att.maps[0].shape == (3, 1, 8, 8, 8) and att.levels() == [8, 4]
    torch.testing.assert_close(att.at_side(4).sum(2), torch.ones(3, 1, 4, 4))
    assert att.upsampled(8).shape == (3, 1, 8, 8, 8)
    assert att.tokens[0][:4] == ["<start>", "thick", "seven", "<end>"]
    assert all(not m.keep_weights and m.last_weights is None
               for m in pipe.model.modules() if hasattr(m, "keep_weights"))
    with pytest.raises(ValueError, match="no cross-attention at side 2"):
        att.at_side(2)
    plain = TextConditionedUNet(21, max_length=8, text_width=16, text_layers=1, text_heads=2,
                                base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                num_heads=2, norm_groups=4, num_timesteps=50,
                                transformer_depth=None)
    with pytest.raises(ValueError, match="needs a U-Net with transformer blocks"):
        caption_sample(plain, pipe.schedule, pipe.encode("seven"), steps=2, keep_attention=True)


def test_caption_dropout_and_the_loss_train_the_model():
    torch.manual_seed(0)
    tok = cap.tokenizer()
    model = TextConditionedUNet(
        len(tok), max_length=8, text_width=16, text_layers=1, text_heads=2, in_channels=4,
        out_channels=4, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
        attention_levels=(0, 1), num_heads=2, norm_groups=4, transformer_depth=1,
        num_timesteps=50)
    schedule = NoiseSchedule("cosine", 50)
    z0 = torch.randn(8, 4, 8, 8)
    tokens = tok.encode(["seven", "thick two"] * 4)
    g = torch.Generator().manual_seed(0)
    loss = text_diffusion_loss(model, schedule, z0, tokens, g, p_uncond=0.5)
    loss.backward()
    # proj_out starts at zero, so the text gets no gradient before the first step ...
    assert model.text_encoder.token_embedding.weight.grad.abs().sum() == 0
    assert model.unet.down[0]["attns"][0][0].proj_out.weight.grad.abs().sum() > 0
    words = model.text_encoder.token_embedding.weight.detach().clone()
    with pytest.raises(ValueError, match="p_uncond is a probability"):
        text_diffusion_loss(model, schedule, z0, tokens, p_uncond=1.5)
    with pytest.raises(ValueError, match="num_timesteps=50"):
        text_diffusion_loss(model, NoiseSchedule("cosine", 60), z0, tokens)
    from unet_edu.train import fit

    loss_fn = caption_training_loss(schedule, scale_factor=0.8)
    data = (torch.randn(32, 4, 8, 8), torch.full((32, 4, 8, 8), 0.01), torch.arange(32) % 10,
            torch.randint(-1, 3, (32, 3)))
    history = fit(model, loss_fn, data, steps=60, batch_size=16, lr=3e-3, progress=False)
    first, last = sum(history.losses[:10]) / 10, sum(history.losses[-10:]) / 10
    assert last < 0.9 * first
    # ... and learns with the U-Net once the cross-attention has opened
    assert not torch.allclose(model.text_encoder.token_embedding.weight, words)
    with pytest.raises(ValueError, match="scale_factor must be a positive number"):
        caption_training_loss(schedule, scale_factor=0.0)


def test_prompt_study_measures_every_prompt_and_scale(pipe):
    from unet_edu.metrics import DigitClassifier

    clf = DigitClassifier(width=4, feature_dim=8).eval()
    prompts = cap.prompts_varying("thickness", 7)
    rows = prompt_study(pipe, prompts, n=3, guidance_scales=(1.0, 4.0), steps=2, classifier=clf,
                        batch_size=2)
    assert [(r["prompt"], r["guidance"]) for r in rows] == [
        ("seven", 1.0), ("seven", 4.0), ("thin seven", 1.0), ("thin seven", 4.0),
        ("thick seven", 1.0), ("thick seven", 4.0)]
    assert rows[2]["asked"]["thickness"] == "thin"
    for r in rows:
        assert r["thickness"].shape == r["slant"].shape == r["predicted"].shape == (3,)
    from unet_edu.latent_diffusion import class_agreement, prompt_effects

    effects = prompt_effects(rows, prompts)  # the study's rows feed the verdicts directly
    assert len(effects) == 12 and {e.verdict for e in effects} <= {"apart", "not resolved"}
    assert [r["prompt"] for r in class_agreement(rows)] == [r["prompt"] for r in rows]
    with pytest.raises(ValueError, match="at least one prompt"):
        prompt_study(pipe, [])
    with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
        prompt_study(pipe, ["seven"], guidance_scales=(float("nan"),))


def _study(n=60, seed=0):
    """Rows as prompt_study returns them, for "seven", "thin seven" and "thick seven" at two
    guidance scales: thickness moves with the word by -0.4 / +0.4 px (plus a little noise of
    its own), width does not move, slant gets a lot of extra noise."""
    g = torch.Generator().manual_seed(seed)
    thick0 = 2.5 + 0.6 * torch.randn(n, generator=g)  # the starting noises differ a lot ...
    width0 = 12 + 2 * torch.randn(n, generator=g)
    slant0 = 5 * torch.randn(n, generator=g)
    rows = []
    for text, shift in (("seven", 0.0), ("thin seven", -0.4), ("thick seven", 0.4)):
        for scale in (1.0, 3.0):
            k = scale / 3  # ... but a prompt shifts every one of them alike
            rows.append({"prompt": text, "guidance": scale, "asked": cap.parse_caption(text),
                         "thickness": thick0 + k * shift + 0.05 * torch.randn(n, generator=g),
                         "width": width0 + 0.01 * torch.randn(n, generator=g),
                         "slant": slant0 + 3 * torch.randn(n, generator=g),
                         "predicted": torch.where(torch.arange(n) < n - 6 * k, 7, 1)})
    return rows


def test_prompt_effects_pair_the_samples_and_give_the_three_verdicts():
    from unet_edu.latent_diffusion import prompt_effect, prompt_effects

    rows = _study()
    thick = prompt_effect(rows, "seven", "thick seven", "thickness", guidance=3.0)
    assert thick.verdict == "apart" and 0.35 < thick.low < thick.effect < thick.high < 0.45
    assert thick.n == 60 and thick.effect == pytest.approx(
        float((rows[5]["thickness"] - rows[1]["thickness"]).mean()))
    # paired by starting noise: unpaired, the spread of the noises (0.6 px) would swamp 0.4
    assert thick.high - thick.low < 0.1
    width = prompt_effect(rows, "seven", "thick seven", "width", guidance=3.0, margin=0.5)
    assert width.verdict == "equivalent" and width.equivalent
    slant = prompt_effect(rows, "seven", "thick seven", "slant", guidance=3.0, margin=0.1)
    assert slant.verdict == "not resolved" and not slant.equivalent
    assert str(thick).startswith("thickness: \u201cthick seven\u201d - \u201cseven\u201d = +0.39 "
                                 "px [0.37, 0.41] (95%, 60 pairs, guidance 3)")
    assert str(thick).endswith("apart") and "equivalent within ±0.5 px" in str(width)
    effects = prompt_effects(rows, cap.prompts_varying("thickness", 7),
                             margins={"width": 0.5, "slant": 2.0})
    assert len(effects) == 2 * 2 * 3  # two words, two scales, three attributes
    thin = [e for e in effects if e.prompt == "thin seven" and e.attribute == "thickness"]
    assert [e.guidance for e in thin] == [1.0, 3.0] and all(e.effect < 0 for e in thin)
    # a blank sample (NaN) leaves its pair out
    rows[5]["thickness"][:4] = float("nan")
    assert prompt_effect(rows, "seven", "thick seven", "thickness", guidance=3.0).n == 56


def test_prompt_effect_errors():
    from unet_edu.latent_diffusion import prompt_effect, prompt_effects

    rows = _study(n=5)
    with pytest.raises(ValueError, match="guidance scales \\[1.0, 3.0\\]; pick one"):
        prompt_effect(rows, "seven", "thick seven", "thickness")
    with pytest.raises(ValueError, match="no row of the prompt study has the prompt 'wide seven'"):
        prompt_effect(rows, "seven", "wide seven", "width", guidance=1.0)
    with pytest.raises(ValueError, match="not sampled at guidance 2.0"):
        prompt_effect(rows, "seven", "thick seven", "width", guidance=2.0)
    with pytest.raises(ValueError, match="attribute must be one of"):
        prompt_effect(rows, "seven", "thick seven", "size", guidance=1.0)
    with pytest.raises(ValueError, match="margin must be a positive number in px"):
        prompt_effect(rows, "seven", "thick seven", "width", guidance=1.0, margin=float("nan"))
    with pytest.raises(ValueError, match="exactly one of them without its word"):
        prompt_effects(rows, cap.prompts_varying("thickness", 7)[1:])
    with pytest.raises(ValueError, match="unknown attributes \\['size'\\]"):
        prompt_effects(rows, cap.prompts_varying("thickness", 7), margins={"size": 1.0})
    rows[1]["thickness"][:] = float("nan")
    with pytest.raises(ValueError, match="only 0 pair"):
        prompt_effect(rows, "seven", "thick seven", "thickness", guidance=3.0)


def test_class_agreement_has_wilson_intervals():
    from unet_edu.latent_diffusion import class_agreement

    rows = [{"prompt": "seven", "guidance": 3.0, "asked": cap.parse_caption("seven"),
             "predicted": torch.tensor([7] * 90 + [1] * 10)}]
    (row,) = class_agreement(rows)
    assert row["rate"] == pytest.approx(0.9) and row["n"] == 100
    assert (row["low"], row["high"]) == pytest.approx((0.8256, 0.9448), abs=1e-4)
    rows[0]["predicted"] = torch.full((20,), 7)
    assert class_agreement(rows)[0]["high"] == 1.0 and class_agreement(rows)[0]["low"] < 1.0
    with pytest.raises(ValueError, match="classifier="):
        class_agreement([{"prompt": "seven", "guidance": 1.0, "asked": {"digit": 7}}])
    with pytest.raises(ValueError, match="names no digit"):
        class_agreement([{"prompt": "thick", "guidance": 1.0, "asked": {"digit": None},
                          "predicted": torch.zeros(3)}])


def test_pixel_and_latent_are_put_side_by_side_and_matched_on_quality():
    from unet_edu.latent_diffusion import matched_quality, pixel_vs_latent, sampling_cost
    from unet_edu.metrics import SamplerScore

    part = lambda flops, seconds: {"flops": flops, "seconds": seconds, "digits": 10}  # noqa: E731
    costs = {"pixel U-Net step": part(1000, 1.0), "latent U-Net step": part(200, 0.3),
             "text encoder (once)": part(50, 0.05), "decoder (once)": part(30, 0.05)}
    assert sampling_cost(costs, "pixel", 20) == pytest.approx({"flops": 2000, "seconds": 2.0})
    assert sampling_cost(costs, "latent", 20) == pytest.approx({"flops": 408, "seconds": 0.61})
    pixel = [{"sampler": "ddim", "steps": 10, "fd": 8.1, "fd_sd": 1.4, "label_accuracy": 0.92},
             {"sampler": "ddim", "steps": 20, "fd": 3.4, "fd_sd": 0.8, "label_accuracy": 0.96}]
    latent = [SamplerScore("ddim-latent", 10, 500, 3.0, 5.0, 0.9, 1.0, 1.0),
              SamplerScore("ddim-latent", 50, 500, 3.0, 3.0, 0.95, 4.0, 0.7)]
    rows = pixel_vs_latent(costs, pixel, latent)
    assert [(r["model"], r["steps"]) for r in rows] == [("pixel", 10), ("pixel", 20),
                                                         ("latent", 10), ("latent", 50)]
    assert rows[3]["flops"] == pytest.approx(50 * 20 + 8) and rows[2]["fd_sd"] == 1.0
    match = matched_quality(rows, fd_target=4.0)
    assert match["pixel"]["steps"] == 20 and match["latent"]["steps"] == 50
    assert match["flops_ratio"] == pytest.approx(2000 / 1008)
    assert matched_quality(rows, fd_target=1.0)["flops_ratio"] is None
    with pytest.raises(ValueError, match="model must be 'pixel' or 'latent'"):
        sampling_cost(costs, "vae", 3)
    with pytest.raises(ValueError, match="steps must be a whole number"):
        sampling_cost(costs, "pixel", 0)
    with pytest.raises(ValueError, match="costs has no"):
        sampling_cost({}, "latent", 3)
    with pytest.raises(ValueError, match="lacks \\['fd'\\]"):
        pixel_vs_latent(costs, [{"steps": 3}], [])
    with pytest.raises(ValueError, match="fd_target must be a positive"):
        matched_quality(rows, float("nan"))


def test_step_cost_counts_flops_and_times():
    lin = torch.nn.Linear(10, 20)
    cost = step_cost(lambda: lin(torch.randn(4, 10)), repeats=3)
    assert cost["flops"] == 2 * 4 * 10 * 20 and cost["seconds_min"] <= cost["seconds"]
    with pytest.raises(ValueError, match="repeats"):
        step_cost(lambda: None, repeats=0)


def test_pixel_and_latent_step_costs_are_measured_part_by_part(pipe):
    from unet_edu.latent_diffusion import compare_step_costs
    from unet_edu.models import DiffusionUNet

    pixel = DiffusionUNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, num_classes=10,
                          norm_groups=4, num_heads=2, num_timesteps=50)
    costs = compare_step_costs(pixel, pipe, batch=4, repeats=2)
    assert list(costs) == ["pixel U-Net step", "latent U-Net step", "text encoder (once)",
                           "decoder (once)"]
    assert all(c["flops"] > 0 and c["seconds"] > 0 and c["digits"] == 4 for c in costs.values())
    # the same U-Net on a 28 x 28 picture and on an 8 x 8 latent: the latent step is cheaper
    assert costs["latent U-Net step"]["flops"] < costs["pixel U-Net step"]["flops"]
    with pytest.raises(ValueError, match="batch must be a whole number"):
        compare_step_costs(pixel, pipe, batch=0)


def test_latent_sampler_score_uses_class_words(pipe):
    from unet_edu.metrics import DigitClassifier, classifier_features

    clf = DigitClassifier(width=4, feature_dim=8).eval()
    real = classifier_features(clf, torch.rand(30, 1, 28, 28))[0]
    score = latent_sampler_score(pipe, clf, real, n=20, steps=2, batch_size=10)
    assert score.n == 20 and score.sampler == "ddim-latent" and score.fd >= 0
    assert 0 <= score.label_accuracy <= 1 and score.variety is not None


def test_the_studies_are_stored_once_and_read_back_as_prompt_study_rows(pipe, tmp_path):
    from tools.train_latent import write_studies
    from unet_edu.latent_diffusion import (STUDY_DIGITS, class_agreement, prompt_effects,
                                           shipped_studies)
    from unet_edu.metrics import DigitClassifier

    clf = DigitClassifier(width=4, feature_dim=8).eval()
    path = write_studies(pipe, clf, tmp_path / "studies.json", n=3, guidance_scales=(1.0, 4.0),
                         steps=2, fd_steps=(2, 3), fd_n=20)
    data = shipped_studies(path)
    assert data["settings"]["n"] == 3 and data["settings"]["study_digits"] == STUDY_DIGITS
    studies = data["prompt_studies"]
    assert [len(studies[a]) for a in ("thickness", "width", "slant")] == [6, 6, 8]
    row = studies["slant"][2]
    assert row["prompt"] == "two slanted left" and row["guidance"] == 1.0
    assert row["asked"]["slant"] == "slanted left" and row["slant"].shape == (3,)
    assert row["predicted"].dtype == torch.long
    assert len(prompt_effects(studies["width"], cap.prompts_varying("width", 0))) == 12
    assert len(class_agreement(studies["thickness"])) == 6
    assert [s["steps"] for s in data["latent_scores"]] == [2, 3]
    assert data["latent_scores"][0]["sampler"] == "ddim-latent"
    with pytest.raises(SystemExit, match="never overwritten"):
        write_studies(pipe, clf, path, n=3)
    path.write_text('{"settings": {}}')
    with pytest.raises(ValueError, match="tools.train_latent studies"):
        shipped_studies(path)
    with pytest.raises(FileNotFoundError, match="tools.train_latent studies"):
        shipped_studies(tmp_path / "missing.json")


# --- the training command's helpers --------------------------------------------------------------
def test_history_is_thinned_to_block_means():
    from tools.train_latent import thin_history
    from unet_edu.train import History

    h = History(list(range(1, 10_001)), [float(i) for i in range(10_000)])
    thin, block = thin_history(h, points=2000)
    assert block == 5 and len(thin.losses) == 2000
    assert thin.steps[:2] == [5, 10] and thin.losses[0] == 2.0 and thin.steps[-1] == 10_000
    short, block = thin_history(History([1, 2], [0.5, 0.25]))
    assert block == 1 and short.losses == [0.5, 0.25]


def test_a_finished_file_is_never_overwritten(tmp_path):
    from tools.train_latent import _refuse_overwrite

    done = tmp_path / "digits-vae.safetensors"
    done.write_bytes(b"finished")
    with pytest.raises(SystemExit, match="never overwritten"):
        _refuse_overwrite(done, force=False)
    _refuse_overwrite(done, force=True)
    _refuse_overwrite(tmp_path / "new.safetensors", force=False)


def test_a_run_cut_short_writes_no_shipped_file():
    from tools.train_latent import _machine, _stop_if_unfinished

    with pytest.raises(SystemExit, match="stopped at step 3 of 5 after 2 min.*--resume"):
        _stop_if_unfinished("digits-vae", 3, 5, {"elapsed_s": 120.0})
    _stop_if_unfinished("digits-vae", 5, 5, {"elapsed_s": 120.0})  # finished: no complaint
    machine = _machine({"elapsed_s": 10.0, "cpu_s": 5.0})
    assert machine["cpu_s_per_wall_s"] == 0.5 and machine["cpu_count"] >= 1


def test_a_working_checkpoint_is_not_discarded_without_restart(tmp_path):
    from tools.train_latent import _train_chunks_with_drop
    from unet_edu.train import read_checkpoint_info

    model = DigitAutoencoder(channels=(8, 8), norm_groups=4)
    tr = dict(batch_size=4, lr=1e-3, lr_drop_at=0.5, seed=0, grad_clip=1.0)
    x = digits(8)

    def loss_fn(m, batch, gen):
        return vae_loss(m, batch[0], gen)

    history, done, log = _train_chunks_with_drop(model, loss_fn, (x,), tr, 4, 2, tmp_path,
                                                 "tiny", False, 60.0)
    assert done == 4 and len(history.losses) == 4 and log["cpu_s"] > 0
    assert read_checkpoint_info(tmp_path / "tiny-state.safetensors").step == 4
    with pytest.raises(SystemExit, match="stopped at step 4; pass --resume"):
        _train_chunks_with_drop(model, loss_fn, (x,), tr, 4, 2, tmp_path, "tiny", False, 60.0)
    history, done, _ = _train_chunks_with_drop(model, loss_fn, (x,), tr, 6, 2, tmp_path, "tiny",
                                               True, 60.0)
    assert done == 6 and history.steps == [1, 2, 3, 4, 5, 6]
    _, done, _ = _train_chunks_with_drop(model, loss_fn, (x,), tr, 2, 2, tmp_path, "tiny", False,
                                         60.0, restart=True)
    assert done == 2


# --- the shipped models (once trained with python -m tools.train_latent) ----------------------
SHIPPED = path_of("digits-vae").exists() and path_of("digits-ldm").exists()
needs_shipped = pytest.mark.skipif(
    not SHIPPED, reason="train them with python -m tools.train_latent vae, then ... ldm")


@needs_shipped
def test_the_shipped_models_are_small_and_their_records_complete():
    total = 0
    for name in ("digits-vae", "digits-ldm"):
        path = path_of(name)
        side = path.with_name(path.name + ".json")
        total += path.stat().st_size + side.stat().st_size
        record = json.loads(side.read_text())
        # the readable copy summarises the history; the weights file holds it in full
        assert record["history"]["recorded_steps"] <= 2000
        assert record["extra"]["converged"], f"{name} did not converge"
    from unet_edu.latent_diffusion import STUDIES_FILE, shipped_studies

    studies = path_of("digits-ldm").with_name(STUDIES_FILE)
    assert studies.exists(), "write it with python -m tools.train_latent studies"
    total += studies.stat().st_size
    assert total < 3_000_000  # weights, records and studies of chapter 7 together
    assert shipped_studies()["settings"]["n"] >= 100
    ldm = json.loads(path_of("digits-ldm").with_name("digits-ldm.safetensors.json").read_text())
    assert ldm["extra"]["fd_settled"] and len(ldm["extra"]["fd_history"]) >= 3


@needs_shipped
def test_the_shipped_scale_factor_is_reproduced():
    from unet_edu.data import mnist
    from unet_edu.pretrained import load

    vae = load("digits-vae", device="cpu")
    x = mnist("train", source="bundled").images * 2 - 1
    seed = vae.info.extra["training"]["seed"]
    scale = latent_scale_factor(vae.model, x, torch.Generator().manual_seed(seed))
    assert scale == pytest.approx(vae.info.extra["scale_factor"], rel=1e-4)
    pipe = LatentDiffusion.from_pretrained(device="cpu")
    assert pipe.scale_factor == pytest.approx(scale, rel=1e-4)
    recorded = torch.tensor(load("digits-ldm").info.extra["training"]["latent_range"])
    assert torch.allclose(pipe.latent_range, recorded, atol=1e-4)  # the range it trained with
    assert pipe.tokenizer.vocabulary == load("digits-ldm").info.extra["training"]["vocabulary"]


def test_from_trained_refuses_a_record_without_scale_or_thresholds():
    from unet_edu.latent import DigitAutoencoder

    with pytest.raises(ValueError, match=r"lacks \['caption_thresholds'\].*info.extra"):
        LatentDiffusion.from_trained(DigitAutoencoder(), None, None, {"scale_factor": 0.7})


def test_run_studies_assembles_the_pipeline_as_from_pretrained(tmp_path, monkeypatch):
    import tools.train_latent as tl
    from unet_edu.pretrained import HERE

    for name in ("digits-vae", "digits-ldm"):
        (tmp_path / f"{name}.safetensors").symlink_to(HERE / f"{name}.safetensors")
    seen = {}

    def fake_write(pipe, classifier, target, force):
        seen["pipe"] = pipe
        target.write_text("{}")
        return target

    monkeypatch.setattr(tl, "write_studies", fake_write)
    monkeypatch.setattr(tl, "_remind_checksums", lambda path: None)
    tl.run_studies(tmp_path)
    ref = LatentDiffusion.from_pretrained(device="cpu")
    pipe = seen["pipe"]
    assert pipe.scale_factor == ref.scale_factor
    assert torch.equal(pipe.latent_range.cpu(), ref.latent_range.cpu())
    assert pipe.thresholds == ref.thresholds and pipe.schedule.num_steps == 1000
