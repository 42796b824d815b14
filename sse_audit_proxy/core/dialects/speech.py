"""OpenAI speech streams (`/v1/audio/speech` with `stream_format: "sse"`): typed events.

`speech.audio.delta` carries a piece of the audio (content); `speech.audio.done` ends the
stream and carries usage. Speech is made a sentence at a time and each sentence's audio is
written at once, so clumps of frames after silences are its nature: `bursty` is not judged;
nor `buffered`: a one-sentence answer arrives whole after its wait, as from a gateway that
buffered it (its TTFT still shows the wait).
"""

from __future__ import annotations

from sse_audit_proxy.core.dialects.typed import NamedEvents


class Speech(NamedEvents):
    route = "audio_speech"
    empty_event_raises = False  # the SDKs hand speech over as bytes, not events
    path_suffixes = ("/audio/speech",)
    content_events = frozenset({"speech.audio.delta"})
    end_events = frozenset({"speech.audio.done"})
    paced_by_tokens = False

    __slots__ = ()

    @classmethod
    def loses_to_bom(cls, line: bytes) -> bool:
        return False  # the SDKs hand speech over as bytes
