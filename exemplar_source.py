"""Where SCL exemplar videos come from (docs/METHOD.md#3-scl, step 1): :class:`ExemplarSource`.

It keeps the training snippets of the exemplar pools in one device-resident tensor and
draws the exemplar videos by tensor indexing, so that the only host-to-device copy of a
training step is the sampled batch and the (small) exemplar index array; pools that do
not fit the device (or a memory-mapped store on the CPU) stay on the host instead. The
draw itself (which videos, which snippets) is ``wsad_dataset.SampleDataset.exemplar_draw``.
It is the one source of exemplar videos: training draws once per step (``main.py``),
evaluation builds its bank from draws (``inference.evaluation_bank``, for main.py, test.py
and localize.py).
"""
from __future__ import annotations

import numpy as np
import torch


class ExemplarSource:
    """Where SCL exemplar videos come from (docs/METHOD.md#3-scl, step 1).

    Args:
        dataset: a :class:`wsad_dataset.SampleDataset`; the snippets of its exemplar-pool
            videos are read from ``dataset.store`` (in memory or memory-mapped).
        num_exemplars: M videos per class.
        placement: where the pools are kept between draws:
            ``device``: on ``device``, once (in the store's dtype); a draw is a gather there,
            and the only host-to-device copy is the (C, M, N) index array. On the CPU an
            in-memory store is used as it is, without a copy.
            ``host``: where the dataset keeps them (RAM or the memory-mapped file); a draw
            gathers its (C, M, N, D) snippets on the host (into a pinned buffer on CUDA)
            and copies them to the device.
            ``auto``: ``device``, except for a memory-mapped store on the CPU, and for
            pools that do not fit in half the free memory of a CUDA device.
    """

    PLACEMENTS = ("auto", "device", "host")

    @classmethod
    def from_options(cls, dataset, args, device: torch.device) -> "ExemplarSource":
        """The source of the options: M = ``--num-exemplars``, placement ``--exemplar-pool``."""
        return cls(dataset, args.num_exemplars, device, args.exemplar_pool)

    def __init__(self, dataset, num_exemplars: int, device: torch.device, placement: str = "auto"):
        if placement not in self.PLACEMENTS:
            raise ValueError(f"placement must be one of {self.PLACEMENTS}, got {placement!r}")
        self.dataset, self.num_exemplars, self.device = dataset, num_exemplars, torch.device(device)
        store = self.store = dataset.store
        pool = np.unique(np.concatenate(dataset.class_train_index))  # every video an exemplar can come from
        pool_bytes = int(store.lengths[pool].sum()) * store.feature_size * store.snippets.dtype.itemsize
        self.placement = self._resolve(placement, pool_bytes)
        self._staging = None
        if self.placement == "host":
            self._base = store.offsets[:-1]
        elif self.device.type == "cpu" and not store.mapped:
            self._base, self.snippets = store.offsets[:-1], torch.from_numpy(store.snippets)
        else:  # only the pool videos, packed, one video at a time (a mapped store is never read whole)
            self._base = np.zeros(len(store), dtype=np.int64)
            self._base[pool] = np.concatenate([[0], np.cumsum(store.lengths[pool])[:-1]])
            dtype = torch.from_numpy(store.snippets[:1].copy()).dtype
            self.snippets = torch.empty(int(store.lengths[pool].sum()), store.feature_size, dtype=dtype,
                                        device=self.device)
            for video in pool:
                rows = store.snippets[store.offsets[video]:store.offsets[video + 1]]
                self.snippets[self._base[video]:self._base[video] + len(rows)] = torch.from_numpy(np.array(rows))

    def _resolve(self, placement: str, pool_bytes: int) -> str:
        if placement != "auto":
            return placement
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return "device" if pool_bytes <= free // 2 else "host"
        return "host" if self.store.mapped else "device"

    def draw(self, rng: np.random.Generator) -> torch.Tensor:
        """M random training videos per class, random-perturbed to N: (C, M, N, D) float32."""
        videos, samples = self.dataset.exemplar_draw(self.num_exemplars, rng)  # (C, M), (C, M, N)
        rows = self._base[videos][..., None] + samples
        if self.placement == "device":
            return self.snippets[torch.as_tensor(rows, device=self.device)].float()
        if self.device.type != "cuda":
            return torch.from_numpy(self.store.gather(rows))
        return self._copy_from_host(rows)

    def _copy_from_host(self, rows: np.ndarray) -> torch.Tensor:
        """Gather rows on the host into a pinned buffer (store dtype), copy it to the GPU, as float32."""
        shape = (*rows.shape, self.store.feature_size)
        if self._staging is None or self._staging[0].shape != shape:
            buffer = torch.from_numpy(np.empty(shape, dtype=self.store.snippets.dtype)).pin_memory()
            self._staging = (buffer, torch.cuda.Event())
        buffer, copied = self._staging
        copied.synchronize()  # the previous draw's copy has left the buffer
        self.store.gather(rows, out=buffer.numpy())
        videos = buffer.to(self.device, non_blocking=True)
        copied.record()
        return videos.float()
