"""The transcribe stage's recognizers on real speech (espeak-ng) and on bytes that are not audio.

- pocketsphinx (the offline profile's recognizer) hears the words this module names in a
  sentence espeak-ng says with its default English voice, each timed inside the voice.
- The tiny random Whisper gives the same transcript, language and segments in process (vLLM
  engine) and from ``vllm serve``, with the language given or detected.
- Every backend refuses a FLAC that is not audio with PermanentError("invalid_audio").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
import pytest_asyncio

from tests.speech_media import ESPEAK_RATE, speech
from workers.localstack import free_port, stop_process
from workers.localstack.vllm_server import start_vllm_server, wait_for_vllm
from workers.offline_profile import offline_whisper_env
from workers.runtime.errors import PermanentError
from workers.settings import TranscribeSettings
from workers.transcribe.backend import INVALID_AUDIO, encode_speech, make_transcribe_backend
from workers.transcribe.sphinx import PocketsphinxBackend
from workers.transcribe.whisper import OpenAIWhisperBackend, VllmWhisperBackend, vllm_serve_whisper_args

# What pocketsphinx reliably gets right from espeak-ng's default voice (workers.transcribe.sphinx).
SENTENCE = "The company will open a new restaurant in Washington"
RELIABLE_WORDS = ("company", "restaurant", "washington")
LEAD_S = 0.5  # silence before the voice, as a speech chunk's padding

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def spoken() -> tuple[bytes, float, float]:
    """A 16 kHz FLAC of SENTENCE with LEAD_S of silence at both ends; where the voice is."""
    said = speech(SENTENCE)
    pad = np.zeros(int(LEAD_S * ESPEAK_RATE), dtype=np.float32)
    flac = encode_speech(np.concatenate([pad, said, pad]), ESPEAK_RATE)
    return flac, LEAD_S, LEAD_S + said.size / ESPEAK_RATE


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sphinx() -> AsyncIterator[PocketsphinxBackend]:
    # One recognizer process: every chunk meets the decoder state the chunks before it left.
    backend = make_transcribe_backend(TranscribeSettings(transcribe_backend="pocketsphinx", transcribe_max_batch=1))
    assert isinstance(backend, PocketsphinxBackend) and backend.processes == 1
    await backend.start()
    yield backend
    await backend.close()


async def test_pocketsphinx_hears_the_words(sphinx: PocketsphinxBackend, spoken: tuple[bytes, float, float]) -> None:
    flac, voice_start, voice_end = spoken
    result = await sphinx.transcribe(flac, None)
    heard = result.text.split()
    assert all(word in heard for word in RELIABLE_WORDS), result.text
    assert result.language == "en"
    assert sphinx.name == "pocketsphinx" and sphinx.model == "cmusphinx/en-us"
    timed = {w.text: w for w in result.words}
    for word in RELIABLE_WORDS:
        assert voice_start - 0.1 <= timed[word].start_s < timed[word].end_s <= voice_end + 0.1, timed[word]
    assert [w.text for w in result.words] == heard
    starts = [w.start_s for w in result.words]
    assert starts == sorted(starts)
    [segment] = result.segments
    assert segment.text == result.text
    assert segment.start_s == result.words[0].start_s and segment.end_s == result.words[-1].end_s
    assert 0 < result.latency_s < 10
    other = encode_speech(speech("The hospital has a problem with the computer"), ESPEAK_RATE)
    assert "computer" in (await sphinx.transcribe(other, None)).text
    again = await sphinx.transcribe(flac, "en")
    assert again.text == result.text  # one chunk, one transcript, whatever came before it


async def test_pocketsphinx_silence_is_no_words(sphinx: PocketsphinxBackend) -> None:
    result = await sphinx.transcribe(encode_speech(np.zeros(16000, dtype=np.float32)), None)
    assert result.words == [] or all(w.text for w in result.words)
    empty = await sphinx.transcribe(encode_speech(np.zeros(0, dtype=np.float32)), None)
    assert empty.text == "" and empty.words == [] and empty.segments == []


@pytest.mark.parametrize("garbage", [b"not audio at all", b"fLaC" + bytes(200)], ids=["text", "bad-flac"])
async def test_pocketsphinx_refuses_what_is_not_audio(sphinx: PocketsphinxBackend, garbage: bytes) -> None:
    with pytest.raises(PermanentError) as refused:
        await sphinx.transcribe(garbage, None)
    assert refused.value.reason == INVALID_AUDIO
    assert (await sphinx.transcribe(encode_speech(np.zeros(1600, dtype=np.float32)), None)).language == "en"


# --- Whisper: in-process engine and `vllm serve`, the tiny random Whisper (junk words) ---------


@pytest.fixture(scope="module")
def whisper_env() -> Iterator[dict[str, str]]:
    env = offline_whisper_env()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def whisper_engine(whisper_env: dict[str, str]) -> AsyncIterator[VllmWhisperBackend]:
    backend = make_transcribe_backend(TranscribeSettings())
    assert isinstance(backend, VllmWhisperBackend)
    await backend.start()
    yield backend
    await backend.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def whisper_server(
    whisper_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[OpenAIWhisperBackend]:
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-whisper") / "vllm.log"
    proc = start_vllm_server(
        whisper_env["CAPSTREAM_TRANSCRIBE_MODEL"],
        port,
        log,
        served_model_name=whisper_env["CAPSTREAM_TRANSCRIBE_MODEL_NAME"],
        extra_args=[*vllm_serve_whisper_args(), "--enforce-eager"],
        env=whisper_env,
    )
    try:
        wait_for_vllm(f"http://127.0.0.1:{port}", process=proc)
        backend = make_transcribe_backend(
            TranscribeSettings(transcribe_backend="openai", transcribe_openai_url=f"http://127.0.0.1:{port}/v1")
        )
        assert isinstance(backend, OpenAIWhisperBackend)
        await backend.start()
        yield backend
        await backend.close()
    finally:
        stop_process(proc)


@pytest.mark.e2e
async def test_whisper_engine_and_server_agree(
    whisper_engine: VllmWhisperBackend, whisper_server: OpenAIWhisperBackend, spoken: tuple[bytes, float, float]
) -> None:
    flac, _, _ = spoken
    noise = encode_speech(np.random.default_rng(7).normal(0, 0.05, 16000 * 4).astype(np.float32))
    for audio in (flac, noise):
        for language in ("en", "de", None):
            local = await whisper_engine.transcribe(audio, language)
            remote = await whisper_server.transcribe(audio, language)
            assert (remote.text, remote.language, remote.segments) == (local.text, local.language, local.segments)
            assert local.language == (language or local.language) and local.language
            assert all(0 <= s.start_s <= s.end_s <= 30.0 for s in local.segments)
            assert local.text.split() == " ".join(s.text for s in local.segments).split()
    assert whisper_engine.name == "vllm" and whisper_server.name == "openai"
    assert whisper_engine.model == whisper_server.model == "capstream/tiny-random-whisper"


@pytest.mark.e2e
async def test_whisper_refuses_what_is_not_audio(
    whisper_engine: VllmWhisperBackend, whisper_server: OpenAIWhisperBackend
) -> None:
    for backend in (whisper_engine, whisper_server):
        with pytest.raises(PermanentError) as refused:
            await backend.transcribe(b"not audio at all", "en")
        assert refused.value.reason == INVALID_AUDIO
