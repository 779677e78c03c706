"""The transcribe stage's recognizers on real speech (espeak-ng) and on bytes that are not audio.

- pocketsphinx (the offline profile's recognizer) hears the words this module names in a
  sentence espeak-ng says with its default English voice, each timed inside the voice.
- Every backend refuses a FLAC that is not audio with PermanentError("invalid_audio").
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio

from tests.speech_media import ESPEAK_RATE, speech
from workers.runtime.errors import PermanentError
from workers.settings import TranscribeSettings
from workers.transcribe.backend import INVALID_AUDIO, encode_speech, make_transcribe_backend
from workers.transcribe.sphinx import PocketsphinxBackend

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
