"""WebDataset shards of 3D hand-object labels: writer, manifest, and a torch reader.

One output directory per fitting method holds `<prefix>-<tag>-<index:06d>.tar` shards (one
sample per fitted frame: `json` metadata, `npz` arrays, optional `jpg` frame and `png` mask)
and a `manifest.json` listing shards (sample count, sha256), finished clips, config and
hodata version. See `writer` for the sample schema and durability rules, `reader` for loading.

    with ShardWriter("out/joint", worker_id=0, config=cfg) as writer:
        for clip in clips:
            if clip.clip_id in writer.done_clips:
                continue                      # resume: finished in an earlier run
            writer.write_clip(fit_clip(clip), images=frames, masks=masks)
            writer.flush()                    # a crash now loses at most the next clip

    loader = DataLoader(load("out/joint"), batch_size=32, num_workers=2, collate_fn=collate_hand_object)
"""

from hodata.shards.manifest import MANIFEST_NAME, SCHEMA_VERSION, read_manifest
from hodata.shards.reader import (
    ShardCorruptError,
    ShardDataset,
    collate_hand_object,
    fit_results_from_shards,
    load,
    read_shard,
    sample_quality,
)
from hodata.shards.writer import (
    EncodedFrames,
    OutputWriteError,
    ShardWriter,
    clear_output,
    done_clips,
    encode_clip,
    frame_qualities,
    quality_score,
    sample_key,
)

__all__ = [
    "ShardWriter", "EncodedFrames", "OutputWriteError", "done_clips", "clear_output", "encode_clip", "frame_qualities", "quality_score",
    "sample_key", "load", "sample_quality", "ShardDataset", "ShardCorruptError", "read_shard", "collate_hand_object",
    "fit_results_from_shards", "read_manifest", "MANIFEST_NAME", "SCHEMA_VERSION",
]
