"""Window packing against its peers, in one process on the same clips, model and settings (issue 19).

Usage::

    .venv/bin/python -m bench.packing [--model tiny.en] [--repeats 3] [--batch 8] [--out run.json]

Sides, each over the clip set of :func:`bench.clips.build_clips` kept to clips of 3 to 30 s (JFK, hotwords and
espeak-ng speech at known texts), with ``TranscriptionSettings()`` decoding choices (greedy, the disfluency prompt,
word timestamps):

* ``direct``: ``WhisperModel.transcribe`` on each clip in turn (faster-whisper's sequential decoder);
* ``batched``: faster-whisper's ``BatchedInferencePipeline.transcribe`` over the clips concatenated, with one
  ``clip_timestamps`` entry per clip and ``batch_size=--batch``: the maintainers' workaround for many short files
  (faster-whisper #915); every clip still has a window of its own;
* ``engine, unpacked`` and ``engine, packed``: :class:`transcription.engine.BatchTranscriber` on the clips in groups
  of ``--batch`` (the worker's ``batch_max_messages``), with ``pack_windows`` off and on.

Passes of the sides are interleaved, ``--repeats`` each; the best pass counts (audio seconds per wall second), the
median is kept beside it. WER is pooled over the clips (jiwer, lower case, punctuation removed). Prints one line per
side, ``direct: X audio s/s, WER Y %``. Without a Kafka broker or HTTP: the pipeline around the engine is measured
by ``bench/transcription.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.clips import Clip, build_clips
from bench.host import loadavg, machine
from bench.transcription import corpus_wer
from transcription.audio import TARGET_SAMPLE_RATE, decode_audio
from transcription.engine import AudioItem, BatchTranscriber, TranscriptionResult, load_whisper_model
from transcription.settings import TranscriptionSettings

__all__ = ["main"]


def _sides(
    settings: TranscriptionSettings, clips: list[Clip], batch: int
) -> dict[str, Callable[[], tuple[list[str], dict[str, Any]]]]:
    loaded = load_whisper_model(settings)
    audio = [decode_audio(clip.path).samples for clip in clips]
    kwargs = settings.transcribe_kwargs()
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(loaded.model)

    def direct() -> tuple[list[str], dict[str, Any]]:
        texts = []
        for samples in audio:
            segments, _ = loaded.model.transcribe(samples, **kwargs)
            texts.append("".join(segment.text for segment in segments).strip())
        return texts, {}

    def batched() -> tuple[list[str], dict[str, Any]]:
        joined = np.concatenate(audio)
        bounds, start = [], 0.0
        for samples in audio:
            end = start + samples.size / TARGET_SAMPLE_RATE
            bounds.append({"start": start, "end": end})
            start = end
        shared = ("language", "beam_size", "temperature", "initial_prompt", "word_timestamps")
        options = {key: value for key, value in kwargs.items() if key in shared}
        segments, _ = pipeline.transcribe(joined, clip_timestamps=bounds, batch_size=batch, **options)
        texts = [""] * len(audio)
        for segment in segments:
            middle = (segment.start + segment.end) / 2
            index = next((i for i, b in enumerate(bounds) if middle < b["end"]), len(bounds) - 1)
            texts[index] += segment.text
        return [text.strip() for text in texts], {}

    def engine(pack: bool) -> Callable[[], tuple[list[str], dict[str, Any]]]:
        transcriber = BatchTranscriber(settings.model_copy(update={"pack_windows": pack}), loaded=loaded)
        transcriber.warmup()

        def run() -> tuple[list[str], dict[str, Any]]:
            texts, packed, redecoded = [], 0, 0
            for start in range(0, len(clips), batch):
                items = [
                    AudioItem(c.name, a)
                    for c, a in zip(clips[start : start + batch], audio[start : start + batch], strict=True)
                ]
                for result in transcriber.transcribe_batch(items):
                    ok = isinstance(result, TranscriptionResult)
                    texts.append(result.text if ok else "")
                    packed += ok and result.packed_with > 0
                    redecoded += result.redecoded_chunks if ok else 0
            return texts, {"answers_packed": packed, "redecoded_chunks": redecoded}

        return run

    return {"direct": direct, "batched": batched, "engine, unpacked": engine(False), "engine, packed": engine(True)}


def main(argv: list[str] | None = None) -> int:
    """Run the sides, print one line per side and write the JSON to ``--out``; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--clips", type=int, default=18, help="clips built before those over 30 s are left out")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    clips = [c for c in build_clips(args.clips, Path(tempfile.mkdtemp(prefix="bench-packing-"))) if c.duration_s <= 30]
    settings = TranscriptionSettings(model=args.model)
    sides = _sides(settings, clips, args.batch)
    audio_s = sum(c.duration_s for c in clips)
    walls: dict[str, list[float]] = {name: [] for name in sides}
    texts: dict[str, list[str]] = {}
    extra: dict[str, dict[str, Any]] = {}
    load_start = loadavg()
    for _ in range(args.repeats):
        for name, run in sides.items():
            started = time.perf_counter()
            texts[name], extra[name] = run()
            walls[name].append(round(time.perf_counter() - started, 3))
    references = [c.text for c in clips]
    report: dict[str, Any] = {
        "machine": machine(),
        "model": args.model,
        "batch": args.batch,
        "clips": [{"name": c.name, "duration_s": round(c.duration_s, 2)} for c in clips],
        "audio_s": round(audio_s, 2),
        "load": {"start": load_start, "end": loadavg()},
        "sides": {},
    }
    for name in sides:
        wer = corpus_wer(references, texts[name])
        best, median = min(walls[name]), statistics.median(walls[name])
        report["sides"][name] = {
            "wall_s_all": walls[name],
            "audio_s_per_s": round(audio_s / best, 2),
            "audio_s_per_s_median": round(audio_s / median, 2),
            "wer": round(wer, 4),
            **extra[name],
            "texts": texts[name],
        }
        print(f"{name}: {audio_s / best:.1f} audio s/s (median {audio_s / median:.1f}), WER {100 * wer:.1f} %")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
