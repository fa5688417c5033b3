"""Where the words land: cross-attention maps of the latent text-to-image model (chapter 7).

At each cross-attention layer, every latent position (a query) spreads one unit of attention
over the caption's tokens (the keys).  The map of one token is how much each position reads
from it: drawn over the digit, it shows where the word acts (Hertz et al., 2022, drew such
maps to edit images by editing prompts).  The book's latent is 8 x 8, each cell covering 4 x 4
pixels of the 32 x 32 canvas the digit sits in, so the maps are coarse but aligned.

* :func:`attention_record` samples captions with the maps kept and the predicted clean
  latents decoded at every step;
* :func:`attention_figure` draws one sample's maps, token by token and level by level;
* :class:`CrossAttentionExplorer` precomputes every frame for a few captions and links its
  controls (caption, token, level, step) to nested stacks in the browser
  (:mod:`unet_edu.widgets.frames`), so it works on the static website too.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as W
import torch
import torch.nn.functional as F

from ..style import CMAPS
from .frames import (caption_html, colorbar_html, compact_png, frame_image, frame_style,
                     html_style, lines_height, linked_stack, state_bytes, value_slider)
from .inputs import check_finite, check_model_finite

__all__ = ["AttentionRecord", "attention_record", "attention_figure", "select_steps",
           "CrossAttentionExplorer", "CAPTIONS"]

CAPTIONS = ("thick seven", "thin wide zero", "two slanted left", "narrow one slanted right")
CSS_CLASS = "unet-edu-xattn"
BOX = 224  # CSS pixels of each picture's box
LEVELS_OF_GREY = 64


@dataclass
class AttentionRecord:
    """Captions sampled with their cross-attention maps kept.

    ``captions[b]`` was sampled into ``canvas[b]`` (the 32 x 32 decoded digit in [0, 1]);
    ``tokens[b]`` are its tokens; ``timesteps`` the DDIM steps; ``x0[i]`` ``(B, 32, 32)`` the
    decoded prediction of the clean digit at step ``i``; ``maps[side]`` ``(steps, B, L, side,
    side)`` the cross-attention weights averaged over the heads and the layers of that
    resolution (conditional branch of guidance).
    """

    captions: list
    tokens: list
    timesteps: list
    x0: list
    canvas: torch.Tensor
    maps: dict
    guidance_scale: float

    @property
    def sides(self) -> list[int]:
        return sorted(self.maps, reverse=True)


@torch.no_grad()
def attention_record(pipe, captions=CAPTIONS, *, steps: int = 20, guidance_scale: float = 3.0,
                     seed: int = 0) -> AttentionRecord:
    """Sample ``captions`` (one digit each, one batch) with ``pipe``
    (:class:`~unet_edu.latent_diffusion.LatentDiffusion`) and keep every step's maps."""
    captions = [captions] if isinstance(captions, str) else list(captions)
    if not captions:
        raise ValueError(f"captions is empty; give at least one, e.g. {list(CAPTIONS[:2])}")
    out = pipe.sample(captions, steps=steps, guidance_scale=guidance_scale, seed=seed,
                      keep_attention=True, return_trajectory=True)
    att = out.attention
    x0 = [((pipe.decode(z, crop=False)[:, 0].cpu() + 1) / 2) for z in out.z0_pred]
    canvas = (pipe.decode(out.latents, crop=False)[:, 0].cpu() + 1) / 2
    return AttentionRecord(captions, att.tokens, att.timesteps, x0, canvas,
                           {side: att.at_side(side) for side in att.levels()},
                           float(guidance_scale))


def select_steps(n: int, frames: int) -> list[int]:
    """At most ``frames`` evenly spaced step indices out of ``n``, the first and last included."""
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if frames == 1:
        return [n - 1]
    return sorted(set(torch.linspace(0, n - 1, min(frames, n)).round().long().tolist()))


def _shown_tokens(record: AttentionRecord, sample: int) -> list[int]:
    """Token positions worth drawing: <start>, the words, <end> (not the padding)."""
    return [i for i, tok in enumerate(record.tokens[sample]) if tok != "<pad>"]


def attention_figure(record: AttentionRecord, sample: int = 0, step: int = -1, alpha: float = 0.6):
    """One sample's cross-attention maps at one step: a row per resolution, a column per token
    (``<start>``, the words, ``<end>``), each map laid over the final digit.  Returns the figure.

    Colours share one scale per row (its colour bar on the right), so the columns compare how
    much each token is read.
    """
    import matplotlib.pyplot as plt

    from ..style import colorbar

    if not 0 <= sample < len(record.captions):
        raise ValueError(f"sample must lie in 0..{len(record.captions) - 1}, got {sample}")
    n_steps = len(record.timesteps)
    if not -n_steps <= step < n_steps:
        raise ValueError(f"step must lie in {-n_steps}..{n_steps - 1}, got {step}")
    tokens = _shown_tokens(record, sample)
    sides = record.sides
    fig, axes = plt.subplots(len(sides), len(tokens), squeeze=False, layout="constrained",
                             figsize=(1.45 * len(tokens) + 0.8, 1.6 * len(sides) + 0.4))
    digit = record.canvas[sample]
    size = digit.shape[-1]
    for r, side in enumerate(sides):
        maps = record.maps[side][step, sample]  # (L, side, side)
        top = float(maps[tokens].max())
        for c, k in enumerate(tokens):
            ax = axes[r, c]
            up = F.interpolate(maps[k][None, None], size=(size, size), mode="nearest")[0, 0]
            ax.imshow(digit.numpy(), cmap="gray", vmin=0, vmax=1)
            im = ax.imshow(up.numpy(), cmap=CMAPS["gate"], vmin=0, vmax=top, alpha=alpha)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(record.tokens[sample][k], fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{side} x {side}", fontsize=9)
        colorbar(im, ax=list(axes[r]), label="attention")
    t = record.timesteps[step]
    fig.suptitle(f"\u201c{record.captions[sample]}\u201d: cross-attention at step "
                 f"{step % n_steps + 1} of {n_steps} (t = {t}), guidance {record.guidance_scale:g}",
                 fontsize=10)
    return fig


def _token_options(tokens: list) -> list[tuple[str, int]]:
    """Token buttons for one caption: its non-padding tokens by position, labels unique."""
    options, seen = [], {}
    for i, tok in enumerate(tokens):
        if tok == "<pad>":
            continue
        seen[tok] = seen.get(tok, 0) + 1
        options.append((tok if seen[tok] == 1 else f"{tok} ({seen[tok]})", i))
    return options


def _check_pipe(pipe, where: str) -> None:
    for name in ("model", "autoencoder"):
        part = getattr(pipe, name, None)
        if part is None:
            raise ValueError(f"{where}: pipe must be a LatentDiffusion (with .model and "
                             f".autoencoder), got {type(pipe).__name__}; use "
                             f"LatentDiffusion.from_pretrained()")
        check_model_finite(part, name, where)


class CrossAttentionExplorer(W.VBox):
    """Cross-attention maps of a few captions, every control precomputed.

    Controls: the caption; the token (``<start>``, the caption's words, ``<end>``; one row of
    buttons per caption); the resolution of the maps; and the timestep ``t`` of the sampling
    step.  Left: the model's prediction of the clean digit at that step; right: how much each
    latent position attends to the token.  One colour scale serves every map (0 to the largest
    weight recorded), so tokens, steps and resolutions compare.  ``pipe`` defaults to the
    shipped model (:meth:`~unet_edu.latent_diffusion.LatentDiffusion.from_pretrained`);
    ``frames`` of the ``steps`` DDIM steps are kept (the first and the last included).
    """

    def __init__(self, pipe=None, captions=CAPTIONS, *, steps: int = 20, frames: int = 8,
                 guidance_scale: float = 3.0, seed: int = 0, record: AttentionRecord | None = None):
        where = "CrossAttentionExplorer"
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ValueError(f"{where}: frames must be a whole number of at least 1 (the steps "
                             f"kept, the first and the last among them), got {frames!r}")
        if record is None:
            if pipe is None:
                from ..latent_diffusion import LatentDiffusion

                pipe = LatentDiffusion.from_pretrained()
            _check_pipe(pipe, where)
            record = attention_record(pipe, captions, steps=steps, guidance_scale=guidance_scale,
                                      seed=seed)
        for side, maps in record.maps.items():
            check_finite(maps, f"the {side} x {side} attention maps", where)
        self.record = record
        n_captions = len(record.captions)
        self.steps = select_steps(len(record.timesteps), frames)
        self.sides = record.sides
        self.token_options = [_token_options(record.tokens[b]) for b in range(n_captions)]
        self.value_max = max(float(m.max()) for m in record.maps.values()) or 1.0
        self.digit_pngs = {(b, k): compact_png(record.x0[i][b], (0.0, 1.0), levels=LEVELS_OF_GREY)
                           for b in range(n_captions) for k, i in enumerate(self.steps)}
        self.map_pngs = {}
        for b in range(n_captions):
            for _, pos in self.token_options[b]:
                for side in self.sides:
                    for k, i in enumerate(self.steps):
                        self.map_pngs[(b, pos, side, k)] = compact_png(
                            record.maps[side][i, b, pos], (0.0, self.value_max),
                            cmap=CMAPS["gate"], levels=LEVELS_OF_GREY)
        wide = W.Layout(width="100%", max_width="460px")
        self.caption = W.Dropdown(options=[(c, i) for i, c in enumerate(record.captions)],
                                  index=0, description="caption", layout=wide)
        self.tokens = [W.ToggleButtons(options=opts, index=min(1, len(opts) - 1),
                                       description="token", style={"button_width": "auto"})
                       for opts in self.token_options]
        self.level = W.ToggleButtons(options=[(f"{s} x {s}", s) for s in self.sides], index=0,
                                     description="maps", style={"button_width": "auto"})
        self.step = value_slider("t", [str(record.timesteps[i]) for i in self.steps],
                                 index=len(self.steps) - 1, layout=wide)
        shared, box, half = W.Layout(), W.Layout(width="100%"), W.Layout(width="50%")

        def by_step(pngs):
            return linked_stack([frame_image(png, CSS_CLASS, shared) for png in pngs], self.step,
                                "index", box)

        k_all = range(len(self.steps))
        digits = linked_stack([by_step([self.digit_pngs[(b, k)] for k in k_all])
                               for b in range(n_captions)], self.caption, "index", half)
        maps = linked_stack(
            [linked_stack(
                [linked_stack([by_step([self.map_pngs[(b, pos, s, k)] for k in k_all])
                               for s in self.sides], self.level, "index", box)
                 for _, pos in self.token_options[b]], self.tokens[b], "index", box)
             for b in range(n_captions)], self.caption, "index", half)
        self.token_row = linked_stack(self.tokens, self.caption, "index", box)
        self.view = W.HBox([digits, maps], layout=W.Layout(width="100%",
                                                            max_width=f"{2 * BOX + 8}px"))
        style = html_style()
        texts = [_step_text(record, i) for i in self.steps]
        height = W.Layout(height=lines_height(texts, 330))
        self.step_lines = linked_stack([W.HTML(caption_html(t), layout=height, style=style)
                                        for t in texts], self.step, "index", height)
        header = W.HTML("predicted clean digit at this step &nbsp;|&nbsp; attention to the token")
        note = W.HTML(colorbar_html(CMAPS["gate"], 0.0, self.value_max, "attention weight",
                                    2 * BOX)
                      + caption_html("<small>Each map cell is one latent position, 4 x 4 pixels "
                                     "of the 32 x 32 canvas around the digit; at each position "
                                     "the weights over the caption's tokens add up to 1. "
                                     "Frames are precomputed, so the controls also work "
                                     "without a kernel.</small>"),
                      layout=W.Layout(max_width=f"{2 * BOX + 8}px"))
        super().__init__([self.caption, self.token_row, self.level, self.step, self.step_lines,
                          header, self.view, note, frame_style(CSS_CLASS, BOX, BOX)])

    def controls(self) -> list:
        """The visible controls: caption, the shown caption's token buttons, maps, t."""
        return [self.caption, self.tokens[self.caption.index], self.level, self.step]

    def shown_key(self) -> tuple:
        """``(caption index, token position, side, frame)`` the controls select now."""
        b = self.caption.index
        return (b, self.token_options[b][self.tokens[b].index][1], self.sides[self.level.index],
                self.step.index)

    def shown_pngs(self) -> tuple[bytes, bytes]:
        """The digit and map PNGs the controls select now."""
        b, p, s, k = self.shown_key()
        return self.digit_pngs[(b, k)], self.map_pngs[(b, p, s, k)]

    def state_bytes(self) -> int:
        """Bytes the explorer adds to a saved notebook or book page (its widget state)."""
        return state_bytes(self)


def _step_text(record: AttentionRecord, i: int) -> str:
    n = len(record.timesteps)
    last = " (the last: its prediction is the sample)" if i == n - 1 else ""
    return (f"<b>step {i + 1} of {n}</b>, t = {record.timesteps[i]}{last}; guidance "
            f"{record.guidance_scale:g}")
