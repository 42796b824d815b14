"""OpenAI image streams (`/v1/images/generations`, `/v1/images/edits` with `stream: true`).

Each `*.partial_image` event carries a partial image (content: the first one is the time to
first token of an image stream); `*.completed` carries the final image and usage, and ends
the stream. Their frames are images in base64, often larger than `--max-frame-bytes`: such a
frame is relayed unread, and its `event:` line (or without one, the `"type"` its data begins
with) still says whether it was the end.
"""

from __future__ import annotations

from sse_audit_proxy.core.dialects.typed import NamedEvents


class Images(NamedEvents):
    route = "images"
    path_suffixes = ("/images/generations", "/images/edits")
    content_events = frozenset({"image_generation.partial_image", "image_edit.partial_image"})
    end_events = frozenset({"image_generation.completed", "image_edit.completed"})
    # Two partial images in one release after the wait are a withheld stream: each is seconds
    # of work apart (LiteLLM's pass-through held back image edits, three partials at once).
    buffered_min_frames = 2

    __slots__ = ()
