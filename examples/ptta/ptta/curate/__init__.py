"""Curation (paper section 3.1): raw animation videos -> shot-split, scored, filtered, captioned clips.

One decode pass per video finds shots, lays 3-5 s clips inside them, scores each clip's motion
(flow.py) and look (aesthetic.py), keeps clips with S = alpha*flow + (1-alpha)*aesthetic >= theta
and re-encodes only those. Captions (caption.py) are added afterwards to the kept clips.
See docs/ptta-curation.md for the flow unit and its calibration.
"""
