"""Text for a text-to-image model: a word tokenizer and a small transformer text encoder.

Stable Diffusion reads its prompt in two steps.  A tokenizer turns the text into a fixed-length
row of integer ids (CLIP's: byte-pair pieces, a start and an end token, padding to 77), and a
text encoder (CLIP ViT-L/14's text transformer, Radford et al., 2021) turns the ids into one
vector per token.  The U-Net never sees words, only those vectors, through cross-attention.

The book's captions use a vocabulary of a few dozen words, so :class:`Tokenizer` simply
numbers whole words, with three special tokens: ``<pad>`` (0), ``<start>`` (1) and ``<end>``
(2).  :class:`TextEncoder` is CLIP's text transformer in miniature: token embeddings plus
learned position embeddings, a few pre-norm :class:`~unet_edu.blocks.TransformerBlock` layers
(self-attention that ignores the padding, a GEGLU feed-forward layer) and a final LayerNorm.
It is trained together with the U-Net, as the text encoder of the latent diffusion paper's
text-to-image model was (Rombach et al., 2022, eq. 3); Stable Diffusion instead keeps a
pretrained CLIP encoder frozen, which brings the meaning of words learnt from 400 million
captioned images.

Classifier-free guidance needs an "empty" prompt: Stable Diffusion encodes the empty string.
Here the *null caption* is ``None`` (``<start> <end>`` and padding), while an empty or blank
string is refused as a probable mistake.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from .blocks import TransformerBlock
from .models.config import RecordsConfig

__all__ = ["Tokenizer", "TextEncoder", "SPECIAL_TOKENS", "null_tokens"]

SPECIAL_TOKENS = ("<pad>", "<start>", "<end>")
PAD, START, END = 0, 1, 2


def null_tokens(n: int, max_length: int) -> torch.Tensor:
    """``n`` rows of the null caption's ids, ``<start> <end> <pad> ...``, ``(n, max_length)``."""
    out = torch.full((n, max_length), PAD, dtype=torch.long)
    out[:, 0], out[:, 1] = START, END
    return out


class Tokenizer:
    """Whole-word tokenizer over a fixed vocabulary.

    ``words`` are the caption words (special tokens are added in front); captions are
    lower-cased, commas count as spaces, and every caption becomes ``<start> w1 ... wk <end>``
    padded with ``<pad>`` to ``max_length`` ids.  ``None`` stands for the null caption.
    """

    def __init__(self, words, max_length: int = 8):
        words = [str(w) for w in words]
        dupes = sorted({w for w in words if words.count(w) > 1})
        if dupes or any(w in SPECIAL_TOKENS for w in words):
            raise ValueError(f"Tokenizer: words must be unique and not special tokens "
                             f"{SPECIAL_TOKENS}; got repeated or reserved words "
                             f"{dupes or [w for w in words if w in SPECIAL_TOKENS]}")
        if any(not w or w != w.lower() or " " in w or "," in w for w in words):
            raise ValueError("Tokenizer: words must be single lower-case words without commas")
        if max_length < 3:
            raise ValueError(f"Tokenizer: max_length={max_length} leaves no room for a word "
                             f"between <start> and <end>; use at least 3")
        self.vocabulary = list(SPECIAL_TOKENS) + words
        self.ids = {w: i for i, w in enumerate(self.vocabulary)}
        self.max_length = int(max_length)

    def __len__(self) -> int:
        return len(self.vocabulary)

    def __repr__(self) -> str:
        return f"Tokenizer({len(self)} tokens, max_length={self.max_length})"

    def words(self, caption: str) -> list[str]:
        """The words of one caption, checked: unknown words and empty captions are errors."""
        if not isinstance(caption, str):
            raise ValueError(f"a caption must be a string (or None for the null caption), got "
                             f"{type(caption).__name__} {caption!r}")
        words = caption.lower().replace(",", " ").split()
        if not words:
            raise ValueError(f"the caption {caption!r} is empty; write one such as 'thick seven' "
                             f"or pass None for the null caption that classifier-free guidance "
                             f"uses")
        for w in words:
            if w not in self.ids or w in SPECIAL_TOKENS:
                close = difflib.get_close_matches(w, self.vocabulary[len(SPECIAL_TOKENS):], n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(
                    f"the caption {caption!r} has the unknown word {w!r}; {hint}the vocabulary "
                    f"is: {', '.join(self.vocabulary[len(SPECIAL_TOKENS):])}")
        if len(words) + 2 > self.max_length:
            raise ValueError(
                f"the caption {caption!r} has {len(words)} words, but the text encoder reads at "
                f"most {self.max_length - 2} (max_length={self.max_length} ids including "
                f"<start> and <end>); shorten it")
        return words

    def encode(self, captions) -> torch.Tensor:
        """Token ids ``(B, max_length)`` (int64) of a caption or a list of captions.

        ``None`` (alone or in the list) is the null caption ``<start> <end> <pad> ...``.
        """
        if captions is None or isinstance(captions, str):
            captions = [captions]
        captions = list(captions)
        if not captions:
            raise ValueError("Tokenizer.encode got an empty list of captions; pass at least one "
                             "caption (or None for the null caption)")
        out = torch.full((len(captions), self.max_length), PAD, dtype=torch.long)
        for row, caption in enumerate(captions):
            ids = [] if caption is None else [self.ids[w] for w in self.words(caption)]
            ids = [START, *ids, END]
            out[row, :len(ids)] = torch.tensor(ids)
        return out

    def null(self, n: int = 1) -> torch.Tensor:
        """``n`` copies of the null caption's ids."""
        return null_tokens(n, self.max_length)

    def decode(self, tokens: torch.Tensor) -> list[list[str]]:
        """The tokens of each row of ids, special tokens included (e.g. for axis labels)."""
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 1:
            tokens = tokens[None]
        bad = tokens[(tokens < 0) | (tokens >= len(self))]
        if len(bad):
            raise ValueError(f"token ids must lie in 0..{len(self) - 1}, got {bad.tolist()[:5]}")
        return [[self.vocabulary[i] for i in row] for row in tokens.tolist()]


class TextEncoder(RecordsConfig, nn.Module):
    """Token ids ``(B, L)`` -> one vector per token ``(B, L, width)``.

    ``h = token_embedding(ids) + position_embedding[:L]``, then ``layers``
    pre-norm transformer layers (self-attention over the non-padding tokens,
    GEGLU feed-forward) and a final LayerNorm, as in CLIP's text
    transformer.  Every token's vector can depend on every other word of the
    caption: "thin" next to "seven" is not the same vector as "thin" next to
    "zero".  Padding positions get vectors too (they read the words), and
    the U-Net cross-attends to all ``L`` positions, as Stable Diffusion does
    with its 77.
    """

    def __init__(self, vocab_size: int, max_length: int = 8,
                 width: int = 32, layers: int = 2, num_heads: int = 4):
        super().__init__()
        if (vocab_size <= len(SPECIAL_TOKENS) or max_length < 3
                or layers < 0 or width < 1):
            raise ValueError(
                f"TextEncoder needs vocab_size > {len(SPECIAL_TOKENS)} "
                f"(the special tokens), max_length >= 3, width >= 1 and "
                f"layers >= 0; got vocab_size={vocab_size}, "
                f"max_length={max_length}, width={width}, layers={layers}")
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(
            torch.randn(max_length, width) * 0.01)
        self.layers = nn.ModuleList(TransformerBlock(width, num_heads)
                                    for _ in range(layers))
        self.final_norm = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            got = (tuple(tokens.shape) if isinstance(tokens, torch.Tensor)
                   else type(tokens).__name__)
            raise ValueError(
                f"TextEncoder expects token ids of shape (B, L) with L <= "
                f"{cfg['max_length']}, got {got}; use "
                f"Tokenizer.encode(captions)")
        if tokens.dtype != torch.long:
            raise ValueError(f"TextEncoder expects int64 token ids, got "
                             f"{tokens.dtype}; use tokens.long()")
        if not 1 <= tokens.shape[1] <= cfg["max_length"]:
            raise ValueError(
                f"TextEncoder reads at most {cfg['max_length']} tokens, "
                f"got {tokens.shape[1]}; build it with "
                f"max_length={tokens.shape[1]}")
        mask = tokens != PAD  # self-attention skips the padding
        h = (self.token_embedding(tokens)
             + self.position_embedding[: tokens.shape[1]])
        for layer in self.layers:
            h = layer(h, mask=mask)
        return self.final_norm(h)
