"""From video files to the two-stream I3D features the loader reads (see README, "Your own videos").

Modules, one idea each: ``decode`` (PyAV, 25-fps resampling, crops), ``flow`` (TV-L1, OpenCV
and batched PyTorch), ``i3d`` (the network, with the PyTorch port's parameter names),
``pipeline`` (:class:`~feature_extraction.pipeline.FeatureExtractor`), ``annotations``
(ActivityNet-style JSON and CSV importers), ``synthetic`` (generated videos and stand-in
weights for tests and the README's sample run).
"""

#: The choices of the extraction, here so that the command lines (``options.py``) can offer them
#: without importing a video library: TV-L1 implementations (``flow``), flow quantizations
#: (``flow``), frame-to-input modes (``decode``).
FLOW_METHODS = ("opencv", "torch")
QUANTIZE_MODES = ("none", "uint8", "jpeg")
SAMPLE_MODES = ("resize", "center_crop", "oversample")
