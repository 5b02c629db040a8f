"""PTTA evaluation: score videos (VideoScore, VideoScore2, weight-free metrics, CLIPScore) by
method and prompt, and report them in the paper's Table 1 / Table 2 layouts (`ptta evaluate`,
`ptta ablate`). See docs/ptta-evaluation.md."""
