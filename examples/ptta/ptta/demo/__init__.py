"""`ptta demo`: every stage in turn (curate, cache, train, sample) on a small set and the tiny model,
and the summary page. The top of the pipeline: nothing imports it."""
