"""zarr's codec pipelines as its configuration names them, for the places that choose one
(the xarray engine for its reads, builders for the arrays they load)."""

from __future__ import annotations

__all__ = ["FUSED_PIPELINE"]

#: zarr's synchronous, bulk codec pipeline (``codec_pipeline.path``); ManifestStore serves
#: its ``get_sync`` calls, and it decodes chunks without a coroutine and thread hop each
FUSED_PIPELINE = "zarr.core.codec_pipeline.FusedCodecPipeline"
