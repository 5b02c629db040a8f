"""`ptta cache` on a curated folder whose clips have no caption says how to add them (#17 item 5)."""

from __future__ import annotations

import json

import pytest

from ptta.cache.manifest import ManifestError, read_selected_clips


def test_uncaptioned_clips_name_the_captioner_options(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    records = [{"id": f"a-0000000{i}-0000", "selected": True, "clip_path": f"clips/{i}.mp4", "caption": ""}
               for i in range(2)]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(ManifestError) as error:
        read_selected_clips(manifest)
    message = str(error.value)
    assert "2 selected clip(s) have no caption" in message
    assert "--captioner sidecar" in message and "--captioner qwen --caption-model DIR" in message
