"""The segmentation network: a VB-Net-like MONAI 3D network trained by the site, behind the segmenter interface.

Design (SPEC section 2: the study segmented with a VB-Net, a V-Net with bottleneck residual blocks):

- The network predicts **vertebral bodies as one foreground class** (:mod:`.architecture`). Level classes
  would need every level in the training data many times over (a site starts with a few reviewed cases,
  phantoms and one or two imported label maps), and a per-level network still confuses neighbours that look
  alike (T10 and T11 differ by their ribs, not by their bodies). The level of each body is therefore named
  by the project's anatomy rules (ribs and sacrum anchors, counting along the spine), which the network
  leaves unchanged (:mod:`.naming`).
- Preprocessing is deterministic (:mod:`.preprocess`): SimpleITK resamples any orientation and spacing to an
  LPS-aligned grid of fixed spacing using the input's direction cosines, HU are clipped to a window and
  scaled to 0..1; the probability map goes back to the input grid the same way.
- Inference (:mod:`.inference`) is MONAI's sliding-window inference with Gaussian blending; on CUDA with
  mixed precision and the aggregation on the GPU, on CPU the same code in float32.
- Training (:mod:`.training`) runs as an RQ job on the ``gpu`` queue (slowly on CPU), checkpointing every
  epoch so that a killed job resumes where it stopped.
- Segmenters are chosen by name through :mod:`.registry`: the rule-based one, a trained
  :class:`analysis.models.SegmenterVersion`, or a MONAI bundle folder (:mod:`.bundle`).

torch and monai are imported inside functions only: the web process never loads them.
"""
