"""The Whisper text decoder, run token by token over one encoded 30 s window.

openai-whisper's ``decode`` grows its key/value cache by concatenation (forward hooks) and
projects every step onto the whole vocabulary in float32. On a CPU a decoding step is bound by
memory traffic, and that projection alone reads the full embedding matrix (tiny: 51,864 x 384
floats, 80 MB) once per token: half the step. Here the text's keys and values sit in buffers
allocated once, the window's cross-attention keys and values are computed once (and shared by a
best-of-n group), and on a CPU each step projects with an int8 copy of the matrix (a quarter of
the bytes), bounds every token's error, and recomputes in float32 each token whose float32 logit
could reach the best one. The chosen token is therefore the one a float32 projection chooses;
timestamp and special-token logits are float32 throughout, so Whisper's timestamp rules see the
numbers they would see in float32.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from whisper.decoding import DecodingOptions, DecodingResult, DecodingTask, SuppressTokens
from whisper.model import ResidualAttentionBlock, Whisper
from whisper.utils import compression_ratio

# The screening kernel takes x rounded to bfloat16 and returns bfloat16: together at most
# 2^-8 |x| |w| (2^-9 for each rounding); 2^-7 leaves room for its float32 sums.
ROUNDING_ERROR = 2.0**-7


@dataclass
class Projection:
    """The decoder's output projection (the token embedding, transposed), in the forms a step uses."""

    weight: Tensor  # [vocab, D], the decoder's dtype
    int8: Tensor | None  # the same rounded to int8 per row, for screening (CPU, float32 only)
    scale: Tensor | None  # [vocab] bfloat16: a row is scale * int8
    quantisation_error: Tensor | None  # [vocab] largest |w - scale * int8| of each row
    row_norm: Tensor | None  # [vocab] |w| of each row

    @classmethod
    def of(cls, model: Whisper, dtype: torch.dtype) -> Projection:
        weight = model.decoder.token_embedding.weight.detach().to(dtype)
        if weight.device.type != "cpu" or dtype != torch.float32:
            return cls(weight, None, None, None, None)
        scale = (weight.abs().amax(dim=-1) / 127).clamp(min=1e-12).to(torch.bfloat16)
        int8 = (weight / scale.float()[:, None]).round().clamp(-127, 127).to(torch.int8)
        error = (weight - int8.float() * scale.float()[:, None]).abs().amax(dim=-1)
        return cls(weight, int8, scale, error, weight.norm(dim=-1))


_projections: weakref.WeakKeyDictionary[Whisper, dict[torch.dtype, Projection]] = weakref.WeakKeyDictionary()


def projection(model: Whisper, dtype: torch.dtype) -> Projection:
    by_dtype = _projections.setdefault(model, {})
    if dtype not in by_dtype:
        by_dtype[dtype] = Projection.of(model, dtype)
    return by_dtype[dtype]


def _heads(x: Tensor, n_head: int) -> Tensor:
    """[B, T, D] -> [B, heads, T, D / heads]"""
    return x.view(*x.shape[:2], n_head, -1).transpose(1, 2)


def _attend(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
    """Scaled dot-product attention of [B, heads, T, d] tensors, back to [B, T, D]."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).flatten(start_dim=2)


class TextDecoderState:
    """The decoder's running state over one window for ``n_group`` token sequences that share a
    prompt: the prompt runs once, and the group shares the window's cross-attention keys and values."""

    def __init__(self, model: Whisper, features: Tensor, n_group: int):
        decoder = model.decoder
        self.decoder = decoder
        self.n_head = model.dims.n_text_head
        self.length = 0
        xa = features.unsqueeze(0)
        self.cross = [(_heads(block.cross_attn.key(xa), self.n_head).contiguous(),
                       _heads(block.cross_attn.value(xa), self.n_head).contiguous()) for block in decoder.blocks]
        shape = (n_group, self.n_head, model.dims.n_text_ctx, model.dims.n_text_state // self.n_head)
        self.keys = [features.new_empty(shape) for _ in decoder.blocks]
        self.values = [features.new_empty(shape) for _ in decoder.blocks]

    def step(self, tokens: Tensor) -> Tensor:
        """Feed ``tokens`` [G, T] (the prompt first, as one row, then one token per row at a time);
        the final layer norm's output [G, T, D]."""
        decoder, start, count = self.decoder, self.length, tokens.shape[1]
        x = decoder.token_embedding(tokens) + decoder.positional_embedding[start : start + count]
        x = x.to(self.cross[0][0].dtype)
        for index, block in enumerate(decoder.blocks):
            x = x + self._self_attention(index, block, block.attn_ln(x))
            x = x + self._cross_attention(index, block, block.cross_attn_ln(x))
            x = x + block.mlp(block.mlp_ln(x))
        self.length += count
        if start == 0:  # the prompt: every sequence of the group starts from it
            for keys, values in zip(self.keys, self.values):
                keys[1:, :, :count] = keys[:1, :, :count]
                values[1:, :, :count] = values[:1, :, :count]
        return decoder.ln(x)

    def keep(self, rows: Tensor) -> None:
        """Go on with the rows where ``rows`` [G] is true only (the others have ended)."""
        self.keys = [keys[rows] for keys in self.keys]
        self.values = [values[rows] for values in self.values]

    def _self_attention(self, index: int, block: ResidualAttentionBlock, x: Tensor) -> Tensor:
        attention, rows, start, end = block.attn, x.shape[0], self.length, self.length + x.shape[1]
        keys, values = self.keys[index][:rows], self.values[index][:rows]
        keys[:, :, start:end] = _heads(attention.key(x), self.n_head)
        values[:, :, start:end] = _heads(attention.value(x), self.n_head)
        q = _heads(attention.query(x), self.n_head)
        return attention.out(_attend(q, keys[:, :, :end], values[:, :, :end], causal=x.shape[1] > 1))

    def _cross_attention(self, index: int, block: ResidualAttentionBlock, x: Tensor) -> Tensor:
        """Every query of every row against the one window: the group's rows go in as more query
        positions of a single sequence, so the window's keys and values are read once per step."""
        assert block.cross_attn is not None
        key, value = self.cross[index]
        q = _heads(block.cross_attn.query(x).reshape(1, -1, x.shape[-1]), self.n_head)
        return block.cross_attn.out(_attend(q, key, value, causal=False).view(x.shape))


class Logits:
    """One step's logits [G, vocab]: on a CPU screened with the int8 projection, with a proven
    bound on each token's error, and recomputed in float32 wherever a decision could depend on it."""

    def __init__(self, weights: Projection, hidden: Tensor, first_exact: int):
        self.weights = weights
        self.hidden = hidden
        if weights.int8 is None:
            self.values = F.linear(hidden, weights.weight).float()
            self.error = None
            return
        x = hidden.to(torch.bfloat16)
        self.values = torch.ops.aten._weight_int8pack_mm(x, weights.int8, weights.scale).float()
        self.values[:, first_exact:] = F.linear(hidden, weights.weight[first_exact:])
        # |screened - float32| <= |x|_1 max|w - scale * int8| + rounding
        self.error = (x.float().abs().sum(dim=-1, keepdim=True) * weights.quantisation_error
                      + ROUNDING_ERROR * hidden.norm(dim=-1, keepdim=True) * weights.row_norm)
        self.error[:, first_exact:] = 0

    def make_exact(self, floor: Tensor, stop: int | None = None) -> None:
        """Recompute in float32 every token (below ``stop``) whose float32 logit could be ``floor`` [G] or more."""
        if self.error is None:
            return
        for row in range(self.values.shape[0]):
            values, error = self.values[row, :stop], self.error[row, :stop]
            tokens = ((values + error >= floor[row]) & (error > 0) & torch.isfinite(values)).nonzero().squeeze(1)
            if len(tokens):
                self.values[row, tokens] = F.linear(self.hidden[row], self.weights.weight[tokens])
                self.error[row, tokens] = 0

    def surely_reached(self, stop: int | None = None) -> Tensor:
        """Of each row, the largest value some token's float32 logit surely reaches [G]."""
        values = self.values[:, :stop]
        return values.max(dim=-1).values if self.error is None else (values - self.error[:, :stop]).max(dim=-1).values

    def best(self) -> Tensor:
        """The argmax token of each row, the one a float32 projection gives."""
        self.make_exact(self.surely_reached())
        return self.values.argmax(dim=-1)

    def sample(self, temperature: float, generator: torch.Generator | None) -> Tensor:
        """A token of each row drawn from softmax(logits / temperature). Every token that could
        be the most probable is exact; the others are at least the error margin less likely than
        the best and differ from float32 by less than that margin."""
        self.make_exact(self.surely_reached())
        cumulative = torch.softmax(self.values / temperature, dim=-1).cumsum(dim=-1)
        # a point in (0, total]: it never lands on a token of probability zero
        point = (1 - torch.rand(len(cumulative), 1, generator=generator, device=cumulative.device)) * cumulative[:, -1:]
        return torch.searchsorted(cumulative, point).squeeze(1).clamp(max=cumulative.shape[-1] - 1)


@torch.no_grad()
def run_task(task: DecodingTask, features: Tensor, generator: torch.Generator | None = None) -> DecodingResult:
    """Sample (greedy, or best-of-n at a temperature) one window's text as ``task.run`` does, from
    encoded ``features`` [n_audio_ctx, D], with the cheaper decoder above. Beam search is not here."""
    options: DecodingOptions = task.options
    assert options.beam_size is None, "beam search runs through DecodingTask.run"
    tokenizer, n_group, temperature = task.tokenizer, task.n_group, options.temperature
    dtype = torch.float16 if options.fp16 else torch.float32
    features = features.to(dtype)
    weights = projection(task.model, dtype)
    state = TextDecoderState(task.model, features, n_group)
    # the fixed suppressions first, so that the exact best text token is one that may be chosen
    static_suppress = [f.suppress_tokens for f in task.logit_filters if isinstance(f, SuppressTokens)]
    other_filters = [f for f in task.logit_filters if not isinstance(f, SuppressTokens)]

    tokens = torch.tensor([task.initial_tokens], device=features.device)
    hidden = state.step(tokens)[0]
    no_speech_prob = float("nan")
    if tokenizer.no_speech is not None:
        at_sot = F.linear(hidden[task.sot_index], weights.weight).float()
        no_speech_prob = float(at_sot.softmax(dim=-1)[tokenizer.no_speech])
    tokens, hidden = tokens.repeat(n_group, 1), hidden[-1].expand(n_group, -1)
    sum_logprobs = torch.zeros(n_group, device=features.device)
    unfinished = torch.arange(n_group, device=features.device)  # rows still sampling; the others repeat EOT
    for _ in range(task.sample_len):
        logits = Logits(weights, hidden, tokenizer.eot)
        for suppress in static_suppress:
            logits.values[:, suppress] = -np.inf
        # the best text token exact, as the timestamp rule compares its probability
        logits.make_exact(logits.surely_reached(stop=tokenizer.eot), stop=tokenizer.eot)
        for logit_filter in other_filters:
            logit_filter.apply(logits.values, tokens[unfinished])
        chosen = logits.best() if temperature == 0 else logits.sample(temperature, generator)
        logprobs = F.log_softmax(logits.values, dim=-1)
        sum_logprobs[unfinished] += logprobs[torch.arange(len(chosen)), chosen]
        next_tokens = torch.full_like(tokens[:, 0], tokenizer.eot)
        next_tokens[unfinished] = chosen
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=-1)
        going_on = chosen != tokenizer.eot
        if not going_on.any() or tokens.shape[-1] > task.n_ctx:
            break
        if not going_on.all():
            unfinished = unfinished[going_on]
            state.keep(going_on)
        hidden = state.step(chosen[going_on][:, None])[:, -1]

    samples = [row[task.sample_begin :].tolist() for row in tokens]
    samples = [row[: row.index(tokenizer.eot)] if tokenizer.eot in row else row for row in samples]
    sums = sum_logprobs.tolist()
    pick = task.sequence_ranker.rank([[torch.tensor(s) for s in samples]], [sums])[0]
    text = tokenizer.decode(samples[pick]).strip()
    return DecodingResult(
        audio_features=features,
        language=options.language or "en",
        tokens=samples[pick],
        text=text,
        avg_logprob=sums[pick] / (len(samples[pick]) + 1),
        no_speech_prob=no_speech_prob,
        temperature=temperature,
        compression_ratio=compression_ratio(text),
    )
