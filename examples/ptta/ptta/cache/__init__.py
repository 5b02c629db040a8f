"""PTTA stage 2, `ptta cache`: VAE latents and text embeddings of the curated clips.

Reads the curation's manifest (ptta.curate writes it); writes the cache folder that `ptta train`
reads: frame/resolution buckets (buckets.py), the selected clips (manifest.py), the shards (build.py).
"""
