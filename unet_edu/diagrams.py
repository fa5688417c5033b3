"""Architecture diagrams drawn from the model objects themselves, so they cannot drift from the
code.

:func:`trace_unet` runs one forward pass of a U-shaped network and watches it from the outside:
a hook on every module records each block the network calls directly (its output channels and
spatial size), and a torch-function mode records every concatenation or sum that joins two of
those outputs.  From that record it reads off the U:

* a block whose output is about half (or twice) the size of its input moves one level down (up);
* the encoder ("down" path) ends at the first upsampling or at the first join, whichever comes
  first; everything after it is the decoder;
* a join whose inputs include the output of an earlier block, not the one just computed, is a
  skip connection, from that block's level to the level of the block that consumes it.

Nothing depends on the models' attribute names, so :func:`unet_diagram` draws the 2015 U-Net,
the diffusion U-Net, or any network of the same shape.  :func:`receptive_field_diagram` draws
how the receptive field grows along a chain of layers, from
:func:`~unet_edu.receptive_field.layer_table`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .receptive_field import layer_table

__all__ = ["Node", "Skip", "Level", "UNetTrace", "trace_unet", "unet_diagram",
           "receptive_field_diagram"]


@dataclass
class Node:
    """One block the network called directly, in call order."""

    name: str            # the module's qualified name (a label only)
    kind: str            # its class name, e.g. "DoubleConv", "ResBlock", "MaxPool2d"
    in_channels: int
    out_channels: int
    size: tuple          # output (height, width)
    level: int           # 0 = top of the U
    path: str            # "down" (encoder and bottleneck) or "up" (decoder)
    resample: int = 0    # -1: it halves the size, +1: it doubles it, 0: neither


@dataclass
class Skip:
    """A skip connection: the map of block ``source`` joined into the decoder at ``level``."""

    source: int          # index of the producing node
    target: int          # index of the node that consumes the join
    level: int
    channels: int
    size: tuple          # size of the map as produced
    joined_size: tuple   # size as joined (smaller when the map is cropped)
    mode: str            # "concat" or "add"


@dataclass
class Level:
    """One level of the U: widths and sizes on the way down and on the way up."""

    index: int
    down_channels: int | None = None
    down_size: tuple | None = None
    up_channels: int | None = None
    up_size: tuple | None = None
    down_blocks: list = field(default_factory=list)
    up_blocks: list = field(default_factory=list)


@dataclass
class UNetTrace:
    """What :func:`trace_unet` found: the blocks in call order, the skips, and the levels."""

    input_shape: tuple
    output_shape: tuple
    nodes: list
    skips: list
    levels: list

    @property
    def depth(self) -> int:
        """Number of levels (the bottleneck's level plus one)."""
        return len(self.levels)


class _Joins(TorchFunctionMode):
    """Records ``torch.cat`` and tensor sums called by the network's own forward (not inside a
    block): the places where a skip connection can join the decoder."""

    CAT = {torch.cat, torch.concat}
    ADD = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__}

    def __init__(self, tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.tracer.depth == 1:  # called by the root module's forward itself
            if func in self.CAT:
                tensors = list(args[0] if args else kwargs.get("tensors", []))
                self.tracer.join("concat", tensors)
            elif func in self.ADD and len(args) >= 2:
                if all(isinstance(a, torch.Tensor) for a in args[:2]):
                    self.tracer.join("add", list(args[:2]))
        return out


class _Tracer:
    def __init__(self, model: nn.Module):
        self.model = model
        self.depth = 0
        self.nodes: list[Node] = []
        self.outputs: list[torch.Tensor] = []   # kept alive so that ids stay unique
        self.produced: dict[int, int] = {}      # id(tensor) -> node index
        self.joins: list[tuple[str, list[tuple[int, tuple]], int]] = []  # (mode, skips, consumer)
        self.pending: list = []
        self.level = 0
        self.path = "down"
        self.names = {m: n for n, m in model.named_modules()}
        self.entry_inputs: dict[int, tuple] = {}

    # -- module hooks --------------------------------------------------------------------------
    def pre(self, module, args):
        self.depth += 1
        if self.depth == 2:
            x = next((a for a in args if isinstance(a, torch.Tensor) and a.dim() == 4), None)
            self.entry_inputs[id(module)] = None if x is None else tuple(x.shape)

    def post(self, module, args, output):
        if self.depth == 2 and isinstance(output, torch.Tensor) and output.dim() == 4:
            self.record(module, output)
        self.depth -= 1

    def record(self, module, output):
        shape_in = self.entry_inputs.get(id(module))
        in_channels = shape_in[1] if shape_in else output.shape[1]
        resample = 0
        if shape_in is not None:
            ratio = output.shape[-1] / shape_in[-1]
            resample = -1 if ratio < 0.75 else (1 if ratio > 1.5 else 0)
        if resample == 1 or (self.pending and self.path == "down"):
            self.path = "up"  # the first upsampling or the first join ends the encoder
        self.level -= resample
        index = len(self.nodes)
        self.nodes.append(Node(self.names.get(module, type(module).__name__), type(module).__name__,
                               int(in_channels), int(output.shape[1]), tuple(output.shape[-2:]),
                               self.level, self.path, resample))
        self.outputs.append(output)
        self.produced[id(output)] = index
        for mode, sources in self.pending:
            self.joins.append((mode, sources, index))
        self.pending = []

    # -- joins -----------------------------------------------------------------------------------
    def source_of(self, t: torch.Tensor) -> int | None:
        while t is not None:  # a cropped map is a view of the block's output
            if id(t) in self.produced:
                return self.produced[id(t)]
            t = t._base
        return None

    def join(self, mode: str, tensors: list):
        if len(tensors) < 2 or not all(isinstance(t, torch.Tensor) and t.dim() == 4
                                       for t in tensors):
            return
        found = [(self.source_of(t), tuple(t.shape[-2:])) for t in tensors]
        latest = len(self.nodes) - 1
        # The map computed just now flows on; any other block's output is a skip.
        skips = [(i, size) for i, size in found if i is not None and i != latest]
        if skips:
            self.pending.append((mode, skips))


def _default_inputs(model: nn.Module, x: torch.Tensor) -> dict:
    """Extra inputs a conditional model needs (from its public ``config``): timestep 0, the first
    class, an all-zero context of 4 tokens."""
    config = getattr(model, "config", {}) or {}
    kwargs = {}
    if config.get("time_conditioning") or "num_timesteps" in config:
        kwargs["t"] = torch.zeros(x.shape[0], dtype=torch.long)
    if config.get("num_classes"):
        kwargs["y"] = torch.zeros(x.shape[0], dtype=torch.long)
    if config.get("context_dim"):
        kwargs["context"] = torch.zeros(x.shape[0], 4, config["context_dim"])
    return kwargs


@torch.no_grad()
def trace_unet(model: nn.Module, input_shape, **inputs) -> UNetTrace:
    """Run ``model`` once on zeros of ``input_shape`` (``(C, H, W)`` or ``(B, C, H, W)``) and
    read off its levels, channels, sizes and skip connections.

    ``inputs`` are passed to the forward call (e.g. ``t=...``); by default a model with a
    ``config`` that names timesteps, classes or a context gets timestep 0, class 0 and a zero
    context.  The model itself is not changed: a copy is traced, on the CPU, or on the meta
    device if the model lives there.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) or (B, C, H, W), got {tuple(input_shape)}")
    # A model on PyTorch's meta device (shapes, no data) is traced there: the paper's
    # 31-million-parameter network then costs no memory and no time.  Anything else is traced
    # on a CPU copy.
    on_meta = any(p.is_meta for p in model.parameters())
    net = copy.deepcopy(model).eval()
    net = net if on_meta else net.cpu()
    x = torch.zeros(shape, device="meta" if on_meta else "cpu")
    inputs = {**_default_inputs(net, x), **inputs}
    tracer = _Tracer(net)
    handles = []
    for module in net.modules():
        handles.append(module.register_forward_pre_hook(tracer.pre))
        handles.append(module.register_forward_hook(tracer.post))
    try:
        with _Joins(tracer):
            out = net(x, **inputs)
    finally:
        for h in handles:
            h.remove()
    if not tracer.nodes:
        raise ValueError(f"{type(model).__name__} called no sub-modules on a 4-D input: nothing "
                         f"to draw; pass a convolutional network and an image shape (C, H, W)")
    nodes = tracer.nodes
    skips = []
    for mode, sources, target in tracer.joins:
        for source, joined in sources:
            n = nodes[source]
            skips.append(Skip(source, target, nodes[target].level, n.out_channels, n.size,
                              joined, mode))
    deepest = max(n.level for n in nodes)
    levels = [Level(i) for i in range(deepest + 1)]
    for i, n in enumerate(nodes):
        if not n.resample:  # a pool or an up-convolution belongs to the arrow, not to the level
            lv = levels[n.level]
            (lv.down_blocks if n.path == "down" else lv.up_blocks).append(i)
    for lv in levels:
        lv.down_channels, lv.down_size = _width(nodes, lv.down_blocks)
        lv.up_channels, lv.up_size = _width(nodes, lv.up_blocks)
    return UNetTrace(shape, tuple(out.shape), nodes, skips, levels)


def _width(nodes: list[Node], indices: list[int]):
    """A level's channels: the width most of its blocks produce (the wider one on a tie), so
    that a 1x1 output head or a normalisation layer does not stand for the level."""
    if not indices:
        return None, None
    counts: dict[int, int] = {}
    for i in indices:
        counts[nodes[i].out_channels] = counts.get(nodes[i].out_channels, 0) + 1
    channels = max(counts, key=lambda c: (counts[c], c))
    size = next(nodes[i].size for i in indices if nodes[i].out_channels == channels)
    return channels, size


# ------------------------------------------------------------------------------------------------
# Drawing
# ------------------------------------------------------------------------------------------------
# Text sizes in points.  At 96 dots per inch a 7.5-inch diagram is the 720-pixel column of the
# page, so MIN_FONT points are 10 pixels there: nothing smaller is drawn, and a label that
# does not fit its box wraps onto a second line or widens the box instead of shrinking.
MIN_FONT = 7.5
TITLE_FONT = 10.5
CHANNELS_FONT = 9.5
LABEL_FONT = 8


def _light(colour: str, amount: float = 0.82) -> str:
    from matplotlib.colors import to_hex, to_rgb

    return to_hex(tuple(c + (1 - c) * amount for c in to_rgb(colour)))


def _colours() -> dict:
    from .style import OKABE_ITO

    return {"down": _light(OKABE_ITO["blue"]), "up": _light(OKABE_ITO["orange"]),
            "skip": OKABE_ITO["vermillion"], "conv": OKABE_ITO["blue"],
            "pool": OKABE_ITO["bluish green"], "upconv": OKABE_ITO["orange"]}


def _blocks_label(trace: UNetTrace, indices: list[int]) -> str:
    kinds: dict[str, int] = {}
    for i in indices:
        kinds[trace.nodes[i].kind] = kinds.get(trace.nodes[i].kind, 0) + 1
    return " + ".join(f"{k} x{c}" if c > 1 else k for k, c in kinds.items())


def _size(size) -> str:
    return f"{size[0]}x{size[1]}" if size[0] != size[1] else f"{size[0]}²"


def _renderer(ax):
    fig = ax.figure
    return fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else None


def _extent(ax, renderer, artists) -> tuple[float, float]:
    """Width and height, in data units, of the box holding ``artists`` (texts)."""
    from matplotlib.transforms import Bbox

    boxes = [a.get_window_extent(renderer) for a in artists]
    inv = ax.transData.inverted()
    (x0, y0), (x1, y1) = inv.transform(Bbox.union(boxes).get_points())
    return abs(x1 - x0), abs(y1 - y0)


def _wrap(label: str, fits, sep: str = " + ") -> str:
    """``label`` in as few lines as ``fits(line)`` allows, broken only at ``sep``."""
    lines: list[str] = []
    for part in label.split(sep):
        if lines and fits(lines[-1] + sep + part):
            lines[-1] += sep + part
        else:
            lines.append(part)
    return "\n".join(lines)


def unet_diagram(model: nn.Module, input_shape, ax=None, title: str | None = None, **inputs):
    """Draw the U of ``model`` as traced by :func:`trace_unet`: one box per level on the way down
    (left) and up (right) with its channels, map size and blocks, the resampling steps between
    levels, and every skip connection (how many maps, their channels, cropped or not).

    Text is never smaller than :data:`MIN_FONT` points (10 pixels in the page's column); a box
    grows to hold its labels, a long list of blocks wraps onto a second line, and a skip's
    label wraps to fit between its two boxes, so no label leaves its box or covers another.
    Returns ``(ax, trace)`` so that the drawing and the numbers it shows can be checked.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    trace = trace_unet(model, input_shape, **inputs)
    depth = trace.depth
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 1.2 + 1.0 * depth), layout="constrained")
    ax.set_xlim(0, 10)
    ax.set_ylim(-depth + 0.5, 1.0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=TITLE_FONT)
    fig = ax.figure
    if fig.get_layout_engine() is not None:
        fig.draw_without_rendering()  # settle the layout before measuring text
    renderer = _renderer(ax)
    colours = _colours()

    widths = [lv.down_channels or lv.up_channels or 1 for lv in trace.levels]
    span = math.log2(max(widths)) - math.log2(min(widths)) or 1.0
    widest, pad = 3.1, 0.25  # the largest box (data units) and the room around its text

    def box(key, x, y, channels, size, blocks, colour):
        top = ax.text(x, y, f"{channels} ch, {_size(size)}", ha="center", va="bottom",
                      fontsize=CHANNELS_FONT, weight="bold", gid=key)
        low = ax.text(x, y - 0.02, blocks, ha="center", va="top", fontsize=LABEL_FONT,
                      color="0.2", gid=key, linespacing=1.15)
        if renderer is not None and _extent(ax, renderer, [low])[0] > widest - pad:

            def fits(line):
                low.set_text(line)
                return _extent(ax, renderer, [low])[0] <= widest - pad

            low.set_text(_wrap(blocks, fits))
        # Box width grows with log2(channels): a wider level reads as a wider box.
        w = 1.5 + 1.0 * (math.log2(channels) - math.log2(min(widths))) / span
        h = 0.64
        if renderer is not None:
            tw, th = _extent(ax, renderer, [top, low])
            w, h = max(w, tw + pad), max(h, th + 0.12)
            # centre the two lines in the box
            shift = (_extent(ax, renderer, [top])[1] - _extent(ax, renderer, [low])[1]) / 2
            top.set_y(y - shift)
            low.set_y(y - shift - 0.02)
        patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02",
                               fc=colour, ec="0.3", lw=0.8, gid=key, zorder=0)
        ax.add_patch(patch)
        return w, h

    down_x, up_x = 0.85 + widest / 2, 9.95 - widest / 2
    pos = {}
    for lv in trace.levels:
        y = -lv.index
        # The bottleneck sits in the middle when it has one half; with two it stays in the
        # columns, so that its skip label has room between them.
        bottom = lv.index == depth - 1 and not lv.up_blocks
        if lv.down_blocks:
            x = 5.0 if bottom else down_x
            w, h = box(f"box:down:{lv.index}", x, y, lv.down_channels, lv.down_size,
                       _blocks_label(trace, lv.down_blocks), colours["down"])
            pos[("down", lv.index)] = (x, y, w, h)
        if lv.up_blocks:
            x = up_x
            w, h = box(f"box:up:{lv.index}", x, y, lv.up_channels, lv.up_size,
                       _blocks_label(trace, lv.up_blocks), colours["up"])
            pos[("up", lv.index)] = (x, y, w, h)
        ax.text(0.02, y, f"level {lv.index}", va="center", fontsize=LABEL_FONT, color="0.35")

    arrow = dict(arrowstyle="-|>", color="0.35", lw=1.0)
    # Resampling arrows, labelled with the block that does it.
    for n in trace.nodes:
        if not n.resample:
            continue
        if n.resample == -1:
            a = pos.get(("down", n.level - 1))
            b = pos.get(("down", n.level)) or pos.get(("up", n.level))
        else:
            a = pos.get(("up", n.level + 1)) or pos.get(("down", n.level + 1))
            b = pos.get(("up", n.level))
        if a is None or b is None:
            continue
        if n.resample == -1:  # from the bottom of the box above to the top of the one below
            ax.annotate("", xy=(b[0], b[1] + b[3] / 2 + 0.01),
                        xytext=(a[0], a[1] - a[3] / 2 - 0.01), arrowprops=arrow)
        else:  # from the top of the box below to the bottom of the one above
            ax.annotate("", xy=(b[0], b[1] - b[3] / 2 - 0.01),
                        xytext=(a[0], a[1] + a[3] / 2 + 0.01), arrowprops=arrow)
        middle = ((a[1] - a[3] / 2) + (b[1] + b[3] / 2)) / 2 if n.resample == -1 else (
            (a[1] + a[3] / 2) + (b[1] - b[3] / 2)) / 2
        ax.text((a[0] + b[0]) / 2 + (0.15 if n.resample == -1 else -0.15), middle, n.kind,
                fontsize=MIN_FONT, color="0.3", ha="left" if n.resample == -1 else "right",
                va="center")
    # Skip connections, grouped per level.
    per_level: dict[int, list[Skip]] = {}
    for s in trace.skips:
        per_level.setdefault(s.level, []).append(s)
    for level, group in sorted(per_level.items()):
        a, b = pos.get(("down", level)), pos.get(("up", level))
        if a is None or b is None:
            continue
        left, right = a[0] + a[2] / 2, b[0] - b[2] / 2
        y = a[1] + min(a[3], b[3]) / 2 - 0.1
        ax.annotate("", xy=(right, y), xytext=(left, y),
                    arrowprops=dict(arrowstyle="-|>", color=colours["skip"], lw=1.2, ls="--"))
        chans = "+".join(str(s.channels) for s in group)
        cropped = any(s.size != s.joined_size for s in group)
        mode = group[0].mode
        label = f"{len(group)} skip{'s' if len(group) > 1 else ''} ({mode}, {chans} ch)"
        if cropped:
            label += f", cropped {_size(group[0].size)}→{_size(group[0].joined_size)}"
        text = ax.text((left + right) / 2, y + 0.06, label, ha="center", va="bottom",
                       fontsize=MIN_FONT, color=colours["skip"], linespacing=1.1)
        if renderer is not None:  # the first of these that fits between the two boxes
            head, rest = label.split(" (", 1)
            tries = [label, f"{head}\n({rest}", f"{head}\n({rest}".replace(", ", ",\n", 1)]
            if cropped:
                body, crop = rest.split(", cropped", 1)
                tries += [f"{head} ({body},\ncropped{crop}", f"{head}\n({body},\ncropped{crop}"]
            for candidate in tries:
                text.set_text(candidate)
                if _extent(ax, renderer, [text])[0] <= right - left - 0.1:
                    break
    ax.text(5.0, 0.78, f"input {trace.input_shape[1]} x {_size(trace.input_shape[-2:])}  →  "
            f"output {trace.output_shape[1]} x {_size(trace.output_shape[-2:])}", ha="center",
            va="center", fontsize=CHANNELS_FONT)
    return ax, trace


def receptive_field_diagram(layers, ax=None, title: str | None = None):
    """How the receptive field grows along a chain of layers: one bar per layer (its field, in
    input pixels) with the jump between neighbouring positions written on it.

    ``layers`` is what :func:`~unet_edu.receptive_field.layer_table` accepts (a model, or a list
    of layer specs).  Text is never smaller than :data:`MIN_FONT` points, and the axis is
    widened until the longest bar's label fits.  Returns ``(ax, rows)`` with the table the bars
    show.
    """
    import matplotlib.pyplot as plt

    rows = layer_table(layers)
    if not rows:
        raise ValueError("receptive_field_diagram needs at least one layer")
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.9 + 0.24 * len(rows)), layout="constrained")
    colours = _colours()
    kinds = {"conv": colours["conv"], "pool": colours["pool"], "up": colours["upconv"]}
    biggest = max(r["rf"] for r in rows)
    labels = []
    for i, row in enumerate(rows):
        kind = "up" if row["transposed"] else ("pool" if row["stride"] > 1 else "conv")
        ax.barh(i, row["rf"], color=kinds[kind], height=0.7)
        labels.append(ax.text(row["rf"] + biggest * 0.01, i,
                              f"{row['rf']} px (jump {row['jump']:g})", va="center",
                              fontsize=MIN_FONT))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["layer"] for r in rows], fontsize=MIN_FONT)
    ax.tick_params(axis="x", labelsize=LABEL_FONT)
    ax.invert_yaxis()
    ax.set_xlabel("receptive field (input pixels, side)", fontsize=LABEL_FONT + 1)
    ax.set_xlim(0, biggest * 1.25)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in kinds.values()]
    ax.legend(handles, ["convolution", "pool / strided", "up-convolution"], fontsize=LABEL_FONT,
              loc="upper right")
    if title:
        ax.set_title(title, fontsize=TITLE_FONT)
    fig = ax.figure
    if fig.get_layout_engine() is not None:
        fig.draw_without_rendering()
    renderer = _renderer(ax)
    if renderer is not None:  # widen the axis until every label ends inside it
        inv = ax.transData.inverted()
        right = max(inv.transform(t.get_window_extent(renderer).get_points())[1, 0]
                    for t in labels)
        if right > ax.get_xlim()[1]:
            ax.set_xlim(0, right * 1.03)
    return ax, rows
