"""Containers tag audio streams with ISO 639-2 codes ("eng", "deu"); Whisper and the
recognizers take ISO 639-1 ("en", "de"). The common languages Whisper transcribes well,
mapped; an unknown or undetermined tag ("und") means: let the recognizer decide."""

from __future__ import annotations

_ISO_639_2_TO_1 = {
    "ara": "ar", "ces": "cs", "cze": "cs", "chi": "zh", "zho": "zh", "dan": "da", "deu": "de", "ger": "de",
    "ell": "el", "gre": "el", "eng": "en", "fas": "fa", "per": "fa", "fin": "fi", "fra": "fr", "fre": "fr",
    "heb": "he", "hin": "hi", "hun": "hu", "ind": "id", "ita": "it", "jpn": "ja", "kor": "ko", "nld": "nl",
    "dut": "nl", "nor": "no", "pol": "pl", "por": "pt", "ron": "ro", "rum": "ro", "rus": "ru", "spa": "es",
    "swe": "sv", "tha": "th", "tur": "tr", "ukr": "uk", "vie": "vi",
}  # fmt: skip


def whisper_language(tag: str | None) -> str | None:
    """ISO 639-1 code of a container's language tag, or None (unknown, "und", absent)."""
    if not tag:
        return None
    tag = tag.strip().lower()
    if len(tag) == 2 and tag.isalpha():
        return tag
    return _ISO_639_2_TO_1.get(tag)
