"""The 2015 segmentation recipe and how to score it.

* Metrics for binary masks: :func:`iou`, :func:`dice`, :func:`boundary_accuracy` (accuracy on
  the thin band around the true boundary, where blurry predictions fail first), and for
  touching cells :func:`touching_gaps`, :func:`gap_background_rate` and
  :func:`separated_instances` (how many true cells come out as their own connected component).
* The loss: :func:`weighted_cross_entropy`, cross-entropy where each pixel counts ``w(x)``
  times (the weight map of :func:`unet_edu.data.unet_weight_map`).
* Augmentation: :func:`elastic_deform` warps an image and its label image with *one*
  displacement field, the paper's (:func:`elastic_field`: random vectors on a 3 x 3 lattice,
  10 pixels standard deviation, bicubic in between), through torchvision's ``elastic`` applied
  to an ``Image`` and a ``Mask``, so the mask is resampled with nearest neighbours and keeps
  its integer labels.
* Prediction on large images: :func:`overlap_tile_predict` cuts the image into output tiles,
  gives each tile the real surrounding context the network eats (mirror-padding only at the
  image border), and stitches the outputs.  With ``overlap=False`` each tile only gets a mirror
  of itself as context, which shows the seams the overlap-tile strategy avoids.
* Training from one large annotated image: :func:`augmented_tiles` cuts a batch of tiles at
  given places and augments them afresh on every call (one elastic field over the whole image,
  then a random flip or quarter turn per tile), the paper's augmentation on the fly.
* Counting objects: :func:`match_instances` splits a predicted mask into connected components
  and matches them one to one with the true objects (IoU above 0.5), with a result per true
  object; :func:`touching_instances` names the objects that touch another one.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = [
    "iou",
    "dice",
    "boundary_band",
    "boundary_accuracy",
    "touching_gaps",
    "gap_background_rate",
    "separated_instances",
    "weighted_cross_entropy",
    "training_tiles",
    "elastic_field",
    "elastic_deform",
    "mirror_pad",
    "tile_margin",
    "overlap_tile_predict",
    "augmented_tiles",
    "touching_instances",
    "InstanceMatch",
    "match_instances",
]


def _bool(x, name: str = "mask", where: str = "mask") -> torch.Tensor:
    """A binary mask as bool: integer/bool masks as they are, probabilities thresholded at 0.5.

    Floats outside [0, 1] are almost always logits, whose threshold is 0, not 0.5: they are
    an error rather than a quietly wrong score.
    """
    x = torch.as_tensor(x)
    if x.dtype == torch.bool or not x.is_floating_point():
        return x.bool()
    if x.numel() and not torch.isfinite(x).all():
        raise ValueError(f"{where}: {name} contains NaN or infinite values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(
            f"{where}: {name} holds floats from {x.min().item():.3g} to {x.max().item():.3g}, "
            f"so they look like logits, not probabilities in [0, 1]; pass torch.sigmoid({name}) "
            f"or the mask {name} > 0")
    return x > 0.5


def _pair(pred, target, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two masks of the *same* shape: broadcasting would compare the wrong pixels."""
    p, t = _bool(pred, "pred", where), _bool(target, "target", where)
    if p.shape != t.shape:
        raise ValueError(
            f"{where}: pred has shape {tuple(p.shape)} but target {tuple(t.shape)}; they must "
            f"match pixel for pixel (squeeze a channel axis with pred[:, 0] or crop the "
            f"prediction to the target)")
    return p, t


def _whole(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


def iou(pred, target) -> float:
    """Intersection over union of two binary masks of the same shape (1.0 when both are empty).

    Masks are bool or integer (nonzero is foreground) or probabilities in [0, 1] (above 0.5 is
    foreground); logits and mismatched shapes are a ``ValueError``.
    """
    p, t = _pair(pred, target, "iou")
    union = (p | t).sum().item()
    return 1.0 if union == 0 else (p & t).sum().item() / union


def dice(pred, target) -> float:
    """Dice coefficient ``2|P & T| / (|P| + |T|)`` of two binary masks (1.0 when both are empty).

    The masks are read as in :func:`iou`.
    """
    p, t = _pair(pred, target, "dice")
    total = p.sum().item() + t.sum().item()
    return 1.0 if total == 0 else 2 * (p & t).sum().item() / total


def boundary_band(mask, width: int = 1) -> torch.Tensor:
    """Pixels within ``width`` pixels (chessboard distance) of a foreground/background change.

    ``mask`` is ``(H, W)`` or ``(N, H, W)``; the result has the same shape (bool).
    """
    m = _bool(mask).float()
    squeeze = m.dim() == 2
    m = m.reshape(-1, 1, *m.shape[-2:])
    k = 2 * width + 1
    # A pixel is near the boundary if its (2w+1)^2 window holds both classes.
    hi = F.max_pool2d(F.pad(m, (width,) * 4, mode="replicate"), k, stride=1)
    lo = -F.max_pool2d(F.pad(-m, (width,) * 4, mode="replicate"), k, stride=1)
    band = (hi != lo)[:, 0]
    return band[0] if squeeze else band


def boundary_accuracy(pred, target, width: int = 1) -> float:
    """Fraction of pixels in the boundary band of ``target`` that ``pred`` labels correctly."""
    p, t = _pair(pred, target, "boundary_accuracy")
    _whole("width", width, 1)
    band = boundary_band(t, width)
    n = band.sum().item()
    return 1.0 if n == 0 else (p[band] == t[band]).float().mean().item()


def touching_gaps(instances) -> torch.Tensor:
    """Background pixels that have two *different* cells among their 8 neighbours.

    These are the one-pixel gaps between touching cells in the ground truth; a network that
    merges the cells paints them as foreground.  ``instances`` is ``(H, W)`` or ``(N, H, W)``.
    """
    inst = torch.as_tensor(instances).long()
    squeeze = inst.dim() == 2
    x = inst.reshape(-1, 1, *inst.shape[-2:]).float()
    big = float(inst.max().item() + 1)
    hi = F.max_pool2d(F.pad(x, (1,) * 4), 3, stride=1)
    lo = -F.max_pool2d(F.pad(-torch.where(x > 0, x, torch.full_like(x, big)), (1,) * 4, value=-big), 3, stride=1)
    gap = ((x == 0) & (hi > 0) & (lo < big) & (hi != lo))[:, 0]
    return gap[0] if squeeze else gap


def gap_background_rate(pred, instances) -> float:
    """Fraction of the touching-cell gap pixels that ``pred`` correctly calls background."""
    gaps = touching_gaps(instances)
    p = _bool(pred, "pred", "gap_background_rate")
    if p.shape != gaps.shape:
        raise ValueError(f"gap_background_rate: pred has shape {tuple(p.shape)} but instances "
                         f"{tuple(gaps.shape)}; they must match pixel for pixel")
    n = gaps.sum().item()
    return 1.0 if n == 0 else (~p[gaps]).float().mean().item()


def separated_instances(pred, instances, threshold: float = 0.5) -> tuple[int, int]:
    """How many true cells are recovered as their own connected component of ``pred``.

    The predicted foreground is split into 4-connected components (``scipy.ndimage.label``); a
    true cell counts as separated when one component overlaps it with IoU above ``threshold``
    (two merged cells share one component, so neither passes).  Returns ``(separated, total)``
    summed over the batch.
    """
    pred = _bool(pred, "pred", "separated_instances").cpu().numpy()
    inst = torch.as_tensor(instances).cpu().numpy()
    if pred.shape != inst.shape:
        raise ValueError(f"separated_instances: pred has shape {pred.shape} but instances "
                         f"{inst.shape}; they must match pixel for pixel")
    if inst.ndim == 2:
        pred, inst = pred[None], inst[None]
    found = total = 0
    for p, t in zip(pred.reshape(inst.shape), inst):
        comps, _ = ndimage.label(p)
        for cell in np.unique(t[t > 0]):
            total += 1
            region = t == cell
            ids, counts = np.unique(comps[region], return_counts=True)
            best = max(((c, i) for i, c in zip(ids, counts) if i > 0), default=(0, 0))
            if best[0] == 0:
                continue
            comp = comps == best[1]
            if best[0] / np.logical_or(comp, region).sum() > threshold:
                found += 1
    return found, total


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                           weight: torch.Tensor | None = None
                           ) -> torch.Tensor:
    """Mean over pixels of ``w(x) * CE(x)``; with ``weight=None`` the plain
    cross-entropy.

    ``logits`` ``(N, K, H, W)``, ``target`` ``(N, H, W)`` class indices,
    ``weight`` ``(N, H, W)``.
    """
    ce = F.cross_entropy(logits, target.long(), reduction="none")
    if weight is None:
        return ce.mean()
    if weight.shape != ce.shape:
        raise ValueError(
            f"weight must have the target's shape {tuple(ce.shape)}, "
            f"got {tuple(weight.shape)}")
    return (weight * ce).mean()


def elastic_field(height: int, width: int, grid: int = 3, sd: float = 10.0,
                  seed: int = 0) -> torch.Tensor:
    """The smooth random displacement field of :func:`elastic_deform`, in
    pixels, ``(2, H, W)``.

    Ronneberger et al. (2015, section 3.1): random displacement vectors on
    a coarse ``grid`` x ``grid`` lattice spanning the image, each component
    drawn from a Gaussian with standard deviation ``sd`` pixels, and
    per-pixel displacements by bicubic interpolation between them.
    Channel 0 is the horizontal component, channel 1 the vertical one.
    """
    _whole("grid", grid, 2)
    if (not isinstance(sd, (int, float)) or isinstance(sd, bool)
            or not math.isfinite(sd) or sd < 0):
        raise ValueError(
            f"sd must be a displacement in pixels >= 0, got {sd!r}; "
            f"the paper uses 10")
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 2, grid, grid, generator=gen,
                         dtype=torch.float64) * sd
    # align_corners: the lattice's outer vectors sit on the image's corner
    # pixels.
    return F.interpolate(coarse, size=(height, width), mode="bicubic",
                         align_corners=True)[0].float()


def elastic_deform(image: torch.Tensor, labels: torch.Tensor | None,
                   grid: int = 3, sd: float = 10.0, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Warp ``image`` ``(C, H, W)`` and its label image ``labels``
    ``(H, W)`` with one field.

    The field is :func:`elastic_field` (the 2015 paper's recipe: a 3 x 3
    lattice of random displacements with a standard deviation of 10
    pixels, interpolated bicubically).  Both go through torchvision's
    ``elastic`` with that one field: the image is resampled bilinearly,
    the labels (as a ``tv_tensors.Mask``) with nearest neighbours, so cell
    ids stay integers.  ``labels=None`` warps the image alone (e.g. a
    grid, to draw the field).  ``seed`` makes it repeatable.
    """
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as TF

    h, w = image.shape[-2:]
    field = elastic_field(h, w, grid, sd, seed)
    # torchvision wants (1, H, W, 2) in normalised coordinates, where the
    # image spans 2 units.
    # Output pixel p samples the input at p + displacement.
    displacement = (field * torch.tensor([2 / w, 2 / h]).view(2, 1, 1)
                    ).permute(1, 2, 0)[None]
    img = TF.elastic(tv_tensors.Image(image),
                     displacement).as_subclass(torch.Tensor)
    if labels is None:
        return img, None
    lab = TF.elastic(tv_tensors.Mask(labels[None]),
                     displacement).as_subclass(torch.Tensor)[0]
    return img, lab


def training_tiles(images: torch.Tensor, instances: torch.Tensor,
                   out: int, margin: int,
                   per_image: int = 12, deform: bool = True, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random training tiles in the paper's layout: an input window and its
    central labels.

    ``images`` ``(N, C, H, W)`` and their instance labels ``(N, H, W)``
    (0 is background).  With ``deform=True`` every image also gets one
    :func:`elastic_deform` copy (seed = its index), and the weight map is
    recomputed from the *deformed* labels, since the gaps between cells
    move with them.  From each image ``per_image`` output tiles of side
    ``out`` are drawn at random; each comes with ``margin`` pixels of
    context per side (mirrored at the image border, as in the paper), so
    the inputs are ``out + 2 margin`` wide.

    Returns ``(tiles (M, C, out+2m, out+2m), masks (M, out, out) long,
    weights (M, out, out))``.
    """
    import numpy as np

    from .data import unet_weight_map

    _whole("out", out, 1)
    _whole("margin", margin, 0)
    _whole("per_image", per_image, 1)
    if (images.dim() != 4
            or instances.shape != (images.shape[0], *images.shape[-2:])):
        raise ValueError(
            f"images must be (N, C, H, W) and instances (N, H, W) of the "
            f"same N, H, W; got {tuple(images.shape)} and "
            f"{tuple(instances.shape)}")
    h, w = images.shape[-2:]
    if out > min(h, w):
        raise ValueError(
            f"an output tile of {out} does not fit in {h} x {w} images; "
            f"use out <= {min(h, w)}")
    imgs, labs = [images], [instances]
    if deform:
        for i in range(len(images)):
            a, b = elastic_deform(images[i], instances[i], seed=i)
            imgs.append(a[None])
            labs.append(b[None])
    imgs, labs = torch.cat(imgs), torch.cat(labs)
    weights = torch.stack([unet_weight_map(lab) for lab in labs])
    padded = mirror_pad(imgs, margin)
    rng = np.random.default_rng(seed)
    side = out + 2 * margin
    tiles, masks, tile_weights = [], [], []
    for i in range(len(imgs)):
        for r, c in rng.integers(0, [h - out + 1, w - out + 1],
                                 size=(per_image, 2)):
            tiles.append(padded[i, :, r:r + side, c:c + side])
            masks.append((labs[i, r:r + out, c:c + out] > 0).long())
            tile_weights.append(weights[i, r:r + out, c:c + out])
    return torch.stack(tiles), torch.stack(masks), torch.stack(tile_weights)


def mirror_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Mirror ``x`` ``(N, C, H, W)`` by ``pad`` pixels on each side, as the paper does at borders.

    ``pad`` must be a whole number >= 0 (to crop, slice instead: ``x[..., p:-p, p:-p]``).
    """
    _whole("pad", pad, 0)
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"mirror_pad needs a batch (N, C, H, W), got {shape}; "
                         f"use x[None] to add a batch axis")
    if pad and min(x.shape[-2:]) < 2:
        raise ValueError(f"mirror_pad cannot mirror an image of size {tuple(x.shape[-2:])}; "
                         f"it needs at least 2 pixels per side")
    if pad == 0:
        return x
    while pad >= min(x.shape[-2:]):  # reflection needs pad < size: mirror in stages
        step = min(x.shape[-2:]) - 1
        x, pad = F.pad(x, (step,) * 4, mode="reflect"), pad - step
    return F.pad(x, (pad,) * 4, mode="reflect")


def tile_margin(model, tile: int) -> int:
    """The context (pixels per side) ``model`` needs around an output tile of side ``tile``.

    Zero for a ``padding="same"`` model; for a ``padding="valid"`` :class:`UNet2015`, the
    ``m`` with ``model.output_size(tile + 2m) == tile`` (ValueError if there is none).
    """
    _whole("tile", tile, 1)
    if model.config.get("padding", "same") == "same":
        return 0
    for m in range(1, 4 * tile + 256):
        if model.output_size(tile + 2 * m) == tile:
            return m
    raise ValueError(f"no input size gives an output tile of {tile}; try a tile like {[t for t in range(tile, tile + 16) if any(model.output_size(t + 2 * m) == t for m in range(1, 200))][:3]}")


@torch.no_grad()
def overlap_tile_predict(model, image: torch.Tensor, tile: int,
                         overlap: bool = True) -> torch.Tensor:
    """Predict ``image`` ``(N, C, H, W)`` tile by tile and stitch the
    outputs.

    The output is cut into ``tile x tile`` tiles (the image is
    mirror-padded up to a multiple of ``tile`` and cropped back).  With
    ``overlap=True`` each tile is predicted from the tile plus
    :func:`tile_margin` pixels of real context taken from the
    (mirror-padded) whole image, so the input windows of neighbouring
    tiles overlap and the result has no seams.  With ``overlap=False``
    each tile is predicted alone, padded with a mirror of *itself*: what
    the network sees at the tile's edge is not the neighbouring image, and
    seams appear.
    """
    _whole("tile", tile, 1)
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        shape = (tuple(image.shape) if isinstance(image, torch.Tensor)
                 else type(image).__name__)
        hint = ("; add the batch axis with image[None]"
                if getattr(image, "ndim", 0) == 3 else "")
        raise ValueError(
            f"overlap_tile_predict needs an image batch (N, C, H, W), got "
            f"{shape}{hint}")
    if not image.is_floating_point():
        raise ValueError(
            f"overlap_tile_predict needs floating-point pixels, got "
            f"{image.dtype}; normalise a microscope image first, e.g. "
            f"unet_edu.data.normalize_percentiles(raw)[None, None], or "
            f"use image.float() / 255 for 8-bit images")
    n, c, h, w = image.shape
    if tile > min(h, w):
        raise ValueError(
            f"a tile of {tile} is larger than the {h} x {w} image; use a "
            f"tile of at most {min(h, w)} pixels, or predict the image in "
            f"one pass: "
            f"model(mirror_pad(image, tile_margin(model, size)))")
    m = tile_margin(model, tile)
    H, W = -(-h // tile) * tile, -(-w // tile) * tile
    base = (F.pad(image, (0, W - w, 0, H - h), mode="reflect")
            if (H, W) != (h, w) else image)
    full = mirror_pad(base, m)
    out = None
    for top in range(0, H, tile):
        for left in range(0, W, tile):
            if overlap:
                window = full[..., top : top + tile + 2 * m,
                              left : left + tile + 2 * m]
            else:
                own = base[..., top : top + tile, left : left + tile]
                window = mirror_pad(own, m)
            pred = model(window)
            if out is None:
                out = image.new_zeros(n, pred.shape[1], H, W)
            out[..., top : top + tile, left : left + tile] = pred
    return out[..., :h, :w]


# --------------------------------------------------------------------------------------------
# Training from one large annotated image, and counting objects
# --------------------------------------------------------------------------------------------
def _warp_together(image: torch.Tensor, maps: torch.Tensor, field: torch.Tensor):
    """Warp ``image`` (bilinear) and label-like ``maps`` ``(K, H, W)`` (nearest) by ``field``.

    The same conversion as :func:`elastic_deform`: torchvision wants the displacement in
    normalised coordinates, where the image spans 2 units.
    """
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as TF

    h, w = image.shape[-2:]
    displacement = (field * torch.tensor([2 / w, 2 / h]).view(2, 1, 1)).permute(1, 2, 0)[None]
    img = TF.elastic(tv_tensors.Image(image), displacement).as_subclass(torch.Tensor)
    lab = TF.elastic(tv_tensors.Mask(maps), displacement).as_subclass(torch.Tensor)
    return img, lab


def augmented_tiles(image: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor,
                    corners: torch.Tensor, out: int, margin: int, generator: torch.Generator,
                    deform: bool = True, flips: bool = True, grid: int = 3, sd: float = 10.0
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of training tiles from one annotated image, augmented afresh on every call.

    The 2015 paper trained from a few large images and augmented them on the fly
    (Ronneberger et al., 2015, sections 3 and 3.1): new shifts, rotations and elastic
    deformations for every tile it showed the network.  This does the same for one image:

    1. with ``deform=True``, one :func:`elastic_field` (``grid`` x ``grid`` random vectors of
       standard deviation ``sd`` pixels, the paper's 3 and 10, spread over the whole image)
       warps the image (bilinear) and its ``masks`` and ``weights`` (nearest neighbour, so
       classes stay whole numbers and every pixel keeps the weight of the label it carries:
       the heavy gaps between cells move with the cells);
    2. one output tile of side ``out`` is cut at each of ``corners`` ``(B, 2)`` (row, column of
       the tile's top-left pixel, from ``(0, 0)`` to ``(H - out, W - out)``), with ``margin``
       pixels of context per side; the image is mirrored at its border, as in the paper, and
       never extended with anything else;
    3. with ``flips=True``, each tile is turned by a random multiple of 90 degrees and possibly
       mirrored (the 8 symmetries of a square, which need no interpolation).

    ``image`` ``(C, H, W)`` float, ``masks`` ``(H, W)`` class indices, ``weights`` ``(H, W)``;
    every random choice comes from ``generator``, so a seeded run repeats exactly.  Returns
    ``(tiles (B, C, out + 2 margin, out + 2 margin), masks (B, out, out) long,
    weights (B, out, out))``.
    """
    _whole("out", out, 1)
    _whole("margin", margin, 0)
    _whole("grid", grid, 2)
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"augmented_tiles needs one image (C, H, W), got {shape}; take one "
                         f"image of a batch with images[0]")
    if not image.is_floating_point():
        raise ValueError(f"augmented_tiles needs floating-point pixels, got {image.dtype}; "
                         f"normalise the image first, e.g. with "
                         f"unet_edu.data.normalize_percentiles")
    h, w = image.shape[-2:]
    for name, t in (("masks", masks), ("weights", weights)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (h, w):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"augmented_tiles: {name} has shape {shape} but the image is "
                             f"{h} x {w}; they must match pixel for pixel (pass the labels of "
                             f"this image, as (H, W), cut to the same part)")
    if out > min(h, w):
        raise ValueError(f"an output tile of {out} does not fit in the {h} x {w} image; use "
                         f"out <= {min(h, w)}")
    if not isinstance(corners, torch.Tensor) or corners.dim() != 2 or corners.shape[1] != 2 \
            or corners.is_floating_point() or len(corners) == 0:
        raise ValueError("corners must be a non-empty (B, 2) integer tensor of (row, column) "
                         "positions, e.g. torch.tensor([[0, 0], [10, 20]])")
    corners = corners.cpu()
    if (corners < 0).any() or (corners[:, 0] > h - out).any() or (corners[:, 1] > w - out).any():
        raise ValueError(f"corners must lie between (0, 0) and ({h - out}, {w - out}) so that a "
                         f"tile of {out} fits in the {h} x {w} image")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}; "
                         f"e.g. torch.Generator().manual_seed(0)")
    if not isinstance(sd, (int, float)) or isinstance(sd, bool) or not math.isfinite(sd) \
            or sd < 0:
        raise ValueError(f"sd must be a displacement in pixels >= 0, got {sd!r}; the paper "
                         f"uses 10")
    maps = torch.stack([masks.float(), weights.float()])
    # Warp a frame a little larger than the displacements, so that no pixel a tile uses is
    # pulled in from outside the mirrored image.
    extra = math.ceil(3 * sd) if deform else 0
    big = mirror_pad(image.float()[None], margin + extra)[0]
    lab = mirror_pad(maps[None], margin + extra)[0]
    if deform:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        field = elastic_field(big.shape[-2], big.shape[-1], grid, float(sd), seed)
        big, lab = _warp_together(big, lab, field)
    if extra:
        big, lab = big[:, extra:-extra, extra:-extra], lab[:, extra:-extra, extra:-extra]
    side = out + 2 * margin
    turns = torch.randint(0, 8, (len(corners),), generator=generator) if flips else None
    tiles, tile_masks, tile_weights = [], [], []
    for i, (r, c) in enumerate(corners.tolist()):
        x = big[:, r:r + side, c:c + side]
        y = lab[:, r + margin:r + margin + out, c + margin:c + margin + out]
        if turns is not None:
            k = int(turns[i])
            x, y = torch.rot90(x, k % 4, (-2, -1)), torch.rot90(y, k % 4, (-2, -1))
            if k >= 4:
                x, y = x.flip(-1), y.flip(-1)
        tiles.append(x)
        tile_masks.append(y[0].round().long())
        tile_weights.append(y[1])
    return torch.stack(tiles), torch.stack(tile_masks), torch.stack(tile_weights)


def _labels(x, name: str, where: str) -> np.ndarray:
    """A 2-D integer label image (0 background) as numpy, or a ValueError naming the fix."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{where}: {name} must be one 2-D label image (H, W), got shape "
                         f"{arr.shape}; take one image of a batch with {name}[0]")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{where}: {name} must hold integer labels (0 = background), got "
                         f"dtype {arr.dtype}; label a mask first, e.g. "
                         f"scipy.ndimage.label(mask > 0.5)[0]")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{where}: {name} holds negative labels; use 0 for the background")
    return arr.astype(np.int64)


def touching_instances(instances, distance: int = 2) -> np.ndarray:
    """The ids of the objects that come within ``distance`` pixels of another object.

    Distance is counted in steps to the 8 neighbours, so ``distance=1`` finds objects whose
    pixels touch (also diagonally) and the default 2 also those separated by a one-pixel gap,
    as after :func:`unet_edu.data.separate_touching`: the pairs a network must split.
    ``instances`` is an ``(H, W)`` label image; returns the sorted ids.
    """
    labels = _labels(instances, "instances", "touching_instances")
    _whole("distance", distance, 1)
    size = 2 * distance + 1
    big = labels.max() + 1 if labels.size else 1
    hi = ndimage.maximum_filter(labels, size=size, mode="constant", cval=0)
    lo = ndimage.minimum_filter(np.where(labels > 0, labels, big), size=size, mode="constant",
                                cval=big)
    near = (labels > 0) & ((hi > labels) | (lo < labels))
    return np.unique(labels[near])


class InstanceMatch(NamedTuple):
    """Predicted objects matched one to one with the true ones (see :func:`match_instances`).

    Per true object, in the order of ``ids``: ``iou``, the best IoU of any predicted
    component with it (0 when none overlaps), ``matched`` (that IoU is above the threshold:
    the object came out as its own component) and ``merged`` (not matched, because more than
    half of it lies in a component that also holds more than half of another true object).  Counts:
    ``n_true`` scored objects, ``n_pred`` predicted components, ``true_positives`` (matched
    pairs), ``false_positives`` (components matching no object) and ``false_negatives``
    (objects matching no component).
    """

    ids: np.ndarray
    iou: np.ndarray
    matched: np.ndarray
    merged: np.ndarray
    n_true: int
    n_pred: int
    true_positives: int
    false_positives: int
    false_negatives: int

    def counts(self) -> str:
        """One line: true objects, components, and what they became."""
        return (f"{self.n_true} true, {self.n_pred} predicted: {self.true_positives} matched, "
                f"{self.false_positives} predicted objects match nothing, "
                f"{self.false_negatives} true objects missed ({int(self.merged.sum())} of them "
                f"merged with a neighbour)")


def match_instances(pred, instances, threshold: float = 0.5, ignore=None) -> InstanceMatch:
    """Count objects the way a biologist would: split the prediction into connected
    components and match them with the true objects.

    ``pred`` is a binary mask ``(H, W)`` (bool, 0/1, or probabilities in [0, 1] read at 0.5,
    as in :func:`iou`); its 8-connected components (``scipy.ndimage.label``) are the predicted
    objects: pixels that touch only at a corner belong together, so the one-pixel gaps of
    :func:`unet_edu.data.separate_touching`, which leave no two objects touching even
    diagonally, are exactly what a prediction must reproduce to keep them apart.  A component and a true object of ``instances`` ``(H, W)`` match when their IoU
    is above ``threshold``; above 0.5 no component can match two objects nor an object two
    components, so the matching is one to one without a search.  Two touching nuclei painted
    as one blob match neither (each covers about half of it), and ``merged`` records why.

    ``ignore`` ``(H, W)`` bool marks pixels not to score (e.g. nuclei that the split line cut
    in two): true objects with any pixel there are left out, and so are components that reach
    into it.  The result holds one entry per scored true object, so scores can be resampled
    over objects for an interval (:func:`unet_edu.claims.compare`).
    """
    where = "match_instances"
    truth = _labels(instances, "instances", where)
    p = _bool(pred, "pred", where).cpu().numpy()
    if p.shape != truth.shape:
        raise ValueError(f"{where}: pred has shape {p.shape} but instances {truth.shape}; they "
                         f"must match pixel for pixel (crop both to the same part, and take "
                         f"one image of a batch with [0])")
    skip = np.zeros(truth.shape, dtype=bool)
    if ignore is not None:
        skip = _bool(ignore, "ignore", where).cpu().numpy()
        if skip.shape != truth.shape:
            raise ValueError(f"{where}: ignore has shape {skip.shape} but instances "
                             f"{truth.shape}; they must match pixel for pixel")
    if not isinstance(threshold, (int, float)) or not 0.5 <= threshold < 1:
        raise ValueError(f"{where}: threshold must lie in [0.5, 1), got {threshold!r}; below "
                         f"0.5 one component could match two objects")
    comps, n_comps = ndimage.label(p, structure=np.ones((3, 3), dtype=bool))
    true_ids = np.unique(truth[truth > 0])
    ids = np.setdiff1d(true_ids, np.unique(truth[skip]))
    counted = np.setdiff1d(np.arange(1, n_comps + 1), np.unique(comps[skip]))
    # Overlap table: pixels shared by each (true object, component) pair, from one pass.
    both = (truth > 0) & (comps > 0)
    pairs, shared = np.unique(np.stack([truth[both], comps[both]]), axis=1,
                              return_counts=True)
    true_area = np.bincount(truth.ravel(), minlength=truth.max() + 1)
    comp_area = np.bincount(comps.ravel(), minlength=n_comps + 1)
    union = true_area[pairs[0]] + comp_area[pairs[1]] - shared
    pair_iou = shared / union
    best = np.zeros(truth.max() + 1)
    match_of = np.zeros(truth.max() + 1, dtype=np.int64)
    for (t, c), v in zip(pairs.T, pair_iou):
        if v > best[t]:
            best[t], match_of[t] = v, c
    # A component "holds" a true object when more than half of the object lies in it.
    holds = shared > true_area[pairs[0]] / 2
    held = np.bincount(pairs[1][holds], minlength=n_comps + 1)
    merged_obj = np.zeros(truth.max() + 1, dtype=bool)
    merged_obj[pairs[0][holds & (held[pairs[1]] >= 2)]] = True
    iou_scores = best[ids]
    matched = iou_scores > threshold
    merged = merged_obj[ids] & ~matched
    hit = set(match_of[ids][matched].tolist())
    tp = int(matched.sum())
    fp = int(sum(1 for c in counted.tolist() if c not in hit))
    return InstanceMatch(ids=ids, iou=iou_scores, matched=matched, merged=merged,
                         n_true=len(ids), n_pred=len(counted), true_positives=tp,
                         false_positives=fp, false_negatives=len(ids) - tp)
