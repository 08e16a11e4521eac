"""Prompts as AUTOMATIC1111 reads them: `(word:1.3)`, `(word)`, `[word]`, `BREAK`, at any length.

The syntax is parsed here (compel's own syntax differs: `(word)1.3`, `word+`, `.and()`); the weighting
and the encoding in 77-token windows are compel's. A prompt longer than one window is cut into
chunks of 75 tokens, each encoded on its own between its start and end markers and the results
laid end to end, as A1 does, so nothing past the 75th token is lost.
"""

import re
from collections.abc import Sequence

import torch
from compel import EmbeddingsProvider
from compel.embeddings_provider import SplitLongTextMode

from .errors import UnsupportedSettingError

# A1: (text) multiplies the attention paid to text by 1.1, [text] divides it by 1.1, and nesting multiplies.
EMPHASIS = 1.1
# A1 ends a chunk at the last comma among its final 20 tokens, so a phrase is not split in two.
COMMA_BACKTRACK = 20

_PARTS = re.compile(
    r"""
    \\[\\()\[\]]                                      # an escaped bracket or backslash: the character itself
    | [(\[]                                           # an opening bracket
    | :\s*(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+))\s*\)   # ":1.3)" closes a round bracket with its weight
    | [)\]]                                           # a closing bracket
    | [^\\()\[\]:]+                                   # plain text
    | [\\:]                                           # a lone backslash or colon: plain text
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")

Fragment = tuple[str, float]


def parse_prompt(prompt: str) -> list[list[Fragment]]:
    """The prompt as segments (BREAK ends one: the next starts a new chunk), each a list of (text,
    weight) fragments in order, neighbours of equal weight merged. A bracket left open applies to
    the rest of the prompt, a stray closing one is text, as in A1.

    >>> parse_prompt("a (red:1.5) [fox]")
    [[('a ', 1.0), ('red', 1.5), (' ', 1.0), ('fox', 0.9090909090909091)]]
    """
    fragments: list[list | None] = []  # [text, weight], or None where BREAK stood
    round_opened: list[int] = []
    square_opened: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for fragment in fragments[start:]:
            if fragment is not None:
                fragment[1] *= factor

    for match in _PARTS.finditer(prompt):
        part, weight = match.group(0), match.group("weight")
        if len(part) == 2 and part.startswith("\\"):
            fragments.append([part[1], 1.0])
        elif part == "(":
            round_opened.append(len(fragments))
        elif part == "[":
            square_opened.append(len(fragments))
        elif weight is not None and round_opened:
            multiply(round_opened.pop(), float(weight))
        elif part == ")" and round_opened:
            multiply(round_opened.pop(), EMPHASIS)
        elif part == "]" and square_opened:
            multiply(square_opened.pop(), 1 / EMPHASIS)
        else:
            for index, text in enumerate(_BREAK.split(part)):
                if index:
                    fragments.append(None)
                if text:
                    fragments.append([text, 1.0])
    for start in round_opened:
        multiply(start, EMPHASIS)
    for start in square_opened:
        multiply(start, 1 / EMPHASIS)

    segments: list[list[Fragment]] = [[]]
    for fragment in fragments:
        if fragment is None:
            segments.append([])
        elif segments[-1] and segments[-1][-1][1] == fragment[1]:
            segments[-1][-1] = (segments[-1][-1][0] + fragment[0], fragment[1])
        else:
            segments[-1].append((fragment[0], fragment[1]))
    return [segment or [("", 1.0)] for segment in segments]


class _Embedder(EmbeddingsProvider):
    """compel's embeddings provider for one text encoder, reading the layer clip skip names and
    chunking as A1 does.

    Both override compel internals (pinned in requirements.txt): compel reads only the last or the
    penultimate layer, through a `text_model` attribute that transformers 5's CLIPTextModel no
    longer has (diffusers' own `clip_skip` fails on it for the same reason).
    """

    def __init__(self, *, layer: int, normalized: bool, **options) -> None:
        super().__init__(**options)
        self.layer, self.normalized = layer, normalized  # layer: 1 is the last
        encoder = self.text_encoder
        self.final_layer_norm = getattr(encoder, "text_model", encoder).final_layer_norm
        self.comma = self.tokenizer.convert_tokens_to_ids(",</w>")

    def _encode_token_ids_to_embeddings(self, token_ids: torch.Tensor, attention_mask=None) -> torch.Tensor:
        last = self.layer == 1 and self.normalized
        output = self.text_encoder(token_ids, attention_mask, output_hidden_states=not last, return_dict=True)
        if last:
            return output.last_hidden_state
        # hidden_states[-1] is the last layer's output before the final norm (the last hidden state
        # is that, normalised): SD 1.x and 2.x read an earlier layer normalised the same way, as A1
        # and diffusers do; SDXL reads it as it is.
        hidden = output.hidden_states[-self.layer]
        return self.final_layer_norm(hidden) if self.normalized else hidden

    def _find_next_best_split_point(self, token_ids: list[int], max_length: int, *_) -> int:
        if len(token_ids) <= max_length:
            return max_length
        window = token_ids[:max_length]
        for index in range(max_length - 1, max_length - 1 - COMMA_BACKTRACK, -1):
            if window[index] == self.comma:
                return index + 1
        return max_length


class PromptEncoder:
    """Turns prompts into the text embeddings a pipeline is called with, by its own tokenizers and
    text encoders, reading the layer that clip skip names (A1's count: 1 is the model's own).

    SD 1.x and 2.x have one text encoder, read at its last layer, normalised. SDXL has two, read at
    their penultimate layers as they are and laid side by side, and it also takes the second one's
    pooled embedding of the prompt: of its first 75 tokens, without weights (as compel and A1 do;
    the pooled embedding is one vector for the whole text). A clip skip of n reads n - 1 layers
    before the model's own, in both families (diffusers' `clip_skip` is n - 1).
    """

    def __init__(self, pipe, *, clip_skip: int) -> None:
        pairs = [(pipe.tokenizer, pipe.text_encoder)]
        if getattr(pipe, "text_encoder_2", None) is not None:
            pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
        self.pooled = len(pairs) > 1
        layers = min(encoder.config.num_hidden_layers for _, encoder in pairs)
        if clip_skip > layers:
            raise UnsupportedSettingError(
                f"This model's text encoder has {layers} layers: choose a clip skip of at most {layers}."
            )
        # SDXL's own choice for a prompt without a negative one: nothing at all, not the empty text.
        self.zeros_for_empty = self.pooled and bool(pipe.config.get("force_zeros_for_empty_prompt", False))
        self.device = pairs[0][1].device
        self._embedders = [
            _Embedder(
                tokenizer=tokenizer,
                text_encoder=text_encoder,
                layer=clip_skip + 1 if self.pooled else clip_skip,
                normalized=not self.pooled,
                truncate=False,
                split_long_text_mode=SplitLongTextMode.BRUTAL,  # our split point decides (see _Embedder)
                device=self.device,
            )
            for tokenizer, text_encoder in pairs
        ]
        self._known: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _encoded(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if prompt not in self._known:
            segments = parse_prompt(prompt)
            embeds = torch.cat(
                [
                    torch.cat(
                        [
                            embedder.get_embeddings_for_weighted_prompt_fragments(
                                text_batch=[[text for text, _ in segment]],
                                fragment_weights_batch=[[weight for _, weight in segment]],
                                device=self.device,
                            )[0]
                            for embedder in self._embedders
                        ],
                        dim=-1,
                    )
                    for segment in segments
                ]
            )
            pooled = None
            if self.pooled:
                text = "".join(text for text, _ in segments[0])
                pooled = self._embedders[-1].get_pooled_embeddings([text], device=self.device)[0]
            self._known[prompt] = embeds, pooled
        return self._known[prompt]

    def encode(self, prompt: str) -> torch.Tensor:
        """The prompt's embeddings: (tokens, features), the tokens a multiple of the window (77)."""
        return self._encoded(prompt)[0]

    def length(self, *prompts: str) -> int:
        """How many tokens the longest of these prompts takes once encoded, windows and all."""
        return max(len(self.encode(prompt)) for prompt in prompts)

    def encode_batch(self, prompts: Sequence[str], negative_prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The pipeline's prompt_embeds and negative_prompt_embeds for a batch, one row per image
        (and SDXL's pooled_prompt_embeds and negative_pooled_prompt_embeds).

        Every row is padded to the longest with the empty prompt's embeddings, as A1 pads a short
        negative prompt: classifier-free guidance sets each prompt beside its negative one.
        """
        texts = [*prompts, *negative_prompts]
        encoded = [self._encoded(text) for text in texts]
        rows = [embeds for embeds, _ in encoded]
        length = max(len(row) for row in rows)
        empty = torch.cat([embedder.empty_z[0] for embedder in self._embedders], dim=-1).to(rows[0].dtype)
        padded = torch.stack([torch.cat([row, *[empty] * ((length - len(row)) // len(empty))]) for row in rows])
        count = len(prompts)
        embeddings = {"prompt_embeds": padded[:count], "negative_prompt_embeds": padded[count:]}
        if self.pooled:
            pooled = torch.stack([vector for _, vector in encoded])
            if self.zeros_for_empty:
                nothing = torch.tensor([index >= count and not text for index, text in enumerate(texts)])
                padded = torch.where(nothing[:, None, None], torch.zeros_like(padded), padded)
                pooled = torch.where(nothing[:, None], torch.zeros_like(pooled), pooled)
                embeddings |= {"prompt_embeds": padded[:count], "negative_prompt_embeds": padded[count:]}
            embeddings |= {"pooled_prompt_embeds": pooled[:count], "negative_pooled_prompt_embeds": pooled[count:]}
        return embeddings
