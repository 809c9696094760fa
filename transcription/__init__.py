"""Transcription: audio decoding, Silero VAD and faster-whisper with batching across messages.

Modules:

* :mod:`transcription.audio`: any container → 16 kHz mono float32 (PyAV), ``UndecodableAudio`` /
  ``EmptyAudio``.
* :mod:`transcription.models`: which CTranslate2 Whisper directory ``COACH_TRANSCRIPTION_MODEL`` means
  (``tiny.en`` bundled, ``base`` reassembled from two packages, or a path).
* :mod:`transcription.settings`: ``TranscriptionSettings`` (``COACH_TRANSCRIPTION_*``).
* :mod:`transcription.engine`: ``BatchTranscriber``, the batched engine a consumer-group worker runs.

The names below are imported lazily, so ``import transcription.audio`` does not load CTranslate2.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transcription.audio import AudioError, DecodedAudio, EmptyAudio, UndecodableAudio, decode_audio
    from transcription.engine import (
        NO_SPEECH,
        AudioItem,
        BatchTranscriber,
        DecodedSegment,
        EngineTimings,
        LoadedModel,
        TranscriptionFailure,
        TranscriptionResult,
        load_whisper_model,
    )
    from transcription.models import ModelUnavailable, ResolvedModel, resolve_model
    from transcription.settings import TranscriptionSettings

_EXPORTS = {
    "AudioError": "transcription.audio",
    "DecodedAudio": "transcription.audio",
    "EmptyAudio": "transcription.audio",
    "UndecodableAudio": "transcription.audio",
    "decode_audio": "transcription.audio",
    "NO_SPEECH": "transcription.engine",
    "AudioItem": "transcription.engine",
    "BatchTranscriber": "transcription.engine",
    "DecodedSegment": "transcription.engine",
    "EngineTimings": "transcription.engine",
    "LoadedModel": "transcription.engine",
    "TranscriptionFailure": "transcription.engine",
    "TranscriptionResult": "transcription.engine",
    "load_whisper_model": "transcription.engine",
    "ModelUnavailable": "transcription.models",
    "ResolvedModel": "transcription.models",
    "resolve_model": "transcription.models",
    "TranscriptionSettings": "transcription.settings",
}

__all__ = [
    "AudioError",
    "AudioItem",
    "BatchTranscriber",
    "DecodedAudio",
    "DecodedSegment",
    "EmptyAudio",
    "EngineTimings",
    "LoadedModel",
    "ModelUnavailable",
    "NO_SPEECH",
    "ResolvedModel",
    "TranscriptionFailure",
    "TranscriptionResult",
    "TranscriptionSettings",
    "UndecodableAudio",
    "decode_audio",
    "load_whisper_model",
    "resolve_model",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'transcription' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
