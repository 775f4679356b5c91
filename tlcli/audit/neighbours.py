"""Near-duplicates: pairs of images whose embeddings point the same way and whose thumbnails agree.

Candidates are pairs whose L2-normalised embeddings have a cosine similarity of at least `GREY`, searched blockwise
(`BLOCK` rows against all rows at a time, keeping at most `PER_SPLIT` neighbours per row and split), so memory grows
with the number of images, never with its square. Cosine alone never decides: plain images (a calm sea) reach 0.998
without being copies (measured on eurosat), so a candidate is a near-duplicate only when the pixel check
(`tlcli.audit.pixels`) confirms it. Tolerated, measured by benchmarks/trust_calibrate.py on MobileNetV2 at 224 px:
resized, recompressed, brightened or colour-shifted copies, crops keeping 75-100% of each side (centred, in a corner
or shifted), and mirrored copies, which count (a model trained with flips has seen them); rotated copies mostly do
not. Candidates at `LOOKALIKE` or above that the pixels contradict are listed as unconfirmed look-alikes, never
counted. Confirmed pairs group into clusters (union-find); a confirmed pair across splits is leakage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from tlcli.audit import pixels

BLOCK = 1024  # rows multiplied against all rows at once: a BLOCK x n float32 matrix at a time
PER_SPLIT = 8  # neighbours kept per row and split (a bound on memory when many images are alike)
CROWDED_CHUNK = 128  # rows with more than PER_SPLIT neighbours, ranked this many at a time
GREY = 0.75  # cosine from which a pair is a candidate (copies: >= 0.78; measured)
PIXEL = 0.93  # thumbnail correlation that confirms a candidate (copies: >= 0.93; other images: <= 0.91 at >= GREY)
SHIFTED_COSINE = 0.85  # from this cosine, an off-centre crop is searched for (shifted copies: >= 0.86)
SHIFTED_PIXEL = 0.90  # the shifted crop's correlation that confirms
LOOKALIKE = 0.95  # cosine from which an unconfirmed candidate is listed (not counted)
DECODERS = 4  # threads decoding thumbnails of candidate pairs


def normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32; a zero row stays zero)."""
    x = np.asarray(features, dtype=np.float32)
    x = x.reshape(len(x), int(np.prod(x.shape[1:])))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def similar_pairs(
    features: np.ndarray,
    groups: Sequence[int] | np.ndarray,
    threshold: float,
    *,
    per_group: int = PER_SPLIT,
    block: int = BLOCK,
    across_only: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) whose cosine similarity is at least `threshold`: for each row, its `per_group` most similar rows
    of each group (a split) above the threshold; a pair is kept when either of its rows keeps it. `across_only`:
    rows of other groups only (leakage, without the pairs inside a split).

    Memory: a `block` x n similarity matrix at a time, and the pairs kept (at most n x groups x per_group).

    Returns:
        (i, j, similarity) arrays, sorted by similarity, highest first.
    """
    x = normalise(features)
    groups = np.asarray(groups)
    order = np.argsort(groups, kind="stable")  # each group's columns contiguous
    x, sorted_groups = x[order], groups[order]
    bounds = np.flatnonzero(np.diff(sorted_groups)) + 1
    ranges = list(zip(np.r_[0, bounds], np.r_[bounds, len(x)]))
    found_i, found_j, found_s = [np.zeros(0, int)], [np.zeros(0, int)], [np.zeros(0, np.float32)]
    for start in range(0, len(x), block):
        sims = x[start : start + block] @ x.T
        rows = np.arange(start, start + len(sims))
        sims[rows - start, rows] = -np.inf  # not its own neighbour
        for low, high in ranges:
            if across_only:  # a row's own group: out of reach
                own = (rows >= low) & (rows < high)
                sims[own, low:high] = -np.inf
            i, j, s = _top_above(sims[:, low:high], threshold, per_group)
            found_i.append(i + start)
            found_j.append(j + low)
            found_s.append(s)
    return _unique_pairs(order, np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_s))


def _top_above(sims: np.ndarray, threshold: float, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, value) of each row's k largest values that reach `threshold` (rows with more than k: their k
    largest, by `argpartition` a few rows at a time, so even a folder of identical images stays within memory)."""
    if sims.shape[1] == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0, np.float32)
    above = sims >= threshold
    count = above.sum(axis=1)
    plain = np.flatnonzero((count > 0) & (count <= k))
    found_rows, cols = np.nonzero(above[plain])
    rows, columns = [plain[found_rows]], [cols]
    crowded = np.flatnonzero(count > k)
    for start in range(0, len(crowded), CROWDED_CHUNK):  # rare: many images alike
        chunk = crowded[start : start + CROWDED_CHUNK]
        rows.append(np.repeat(chunk, k))
        columns.append(np.argpartition(-sims[chunk], k - 1, axis=1)[:, :k].ravel())
    rows, cols = np.concatenate(rows), np.concatenate(columns)
    return rows, cols, sims[rows, cols]


def _unique_pairs(order, i, j, s) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Back to the caller's row numbers, each pair once as (low, high), highest similarity first."""
    a, b = order[i], order[j]
    low, high = np.minimum(a, b), np.maximum(a, b)
    keys = low.astype(np.int64) * (len(order) + 1) + high
    _, first = np.unique(keys, return_index=True)
    low, high, s = low[first], high[first], s[first].astype(np.float32)
    by = np.lexsort((high, low, -s))
    return low[by], high[by], s[by]


def brute_force_pairs(features: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference `similar_pairs` is proven against: every pair of the full n x n matrix above `threshold`."""
    x = normalise(features)
    sims = x @ x.T
    i, j = np.nonzero(np.triu(sims >= threshold, k=1))
    s = sims[i, j].astype(np.float32)
    by = np.lexsort((j, i, -s))
    return i[by], j[by], s[by]


def clusters_of(n: int, i: np.ndarray, j: np.ndarray) -> list[list[int]]:
    """Connected groups of the pairs (union-find), each sorted, largest first; singletons left out."""
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(i.tolist(), j.tolist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for x in sorted(set(i.tolist()) | set(j.tolist())):
        members.setdefault(root(x), []).append(x)
    return sorted(members.values(), key=lambda c: (-len(c), c[0]))


# ----------------------------------------------------------------------------- the pixel check


@dataclass(frozen=True)
class ScoredPair:
    """A candidate pair (row numbers into the stacked embeddings), its cosine and its thumbnail score."""

    a: int
    b: int
    similarity: float
    thumbnail: float
    confirmed: bool


def confirm(similarity: float, a: np.ndarray | None, b: np.ndarray | None) -> tuple[float, bool]:
    """The thumbnail score of two grey squares (`tlcli.audit.pixels`) and whether it confirms the candidate: the
    views agree (>= PIXEL), or, for textured images at a cosine of SHIFTED_COSINE or more, a shifted crop does
    (>= SHIFTED_PIXEL)."""
    if a is None or b is None:
        return -1.0, False
    score = pixels.view_score(a, b)
    if score >= PIXEL:
        return score, True
    if similarity >= SHIFTED_COSINE and pixels.textured(a) and pixels.textured(b):
        shifted = pixels.shifted_crop_score(a, b)
        return max(score, shifted), shifted >= SHIFTED_PIXEL
    return score, False


def score_pairs(
    paths: Sequence[str],
    i: np.ndarray,
    j: np.ndarray,
    sims: np.ndarray,
    *,
    squares: Callable[[str], np.ndarray | None] = pixels.grey_square,
) -> list[ScoredPair]:
    """Each candidate pair with its thumbnail score (each image decoded once, only if it is in a candidate pair, by
    DECODERS threads: Pillow releases the GIL while it decodes; 4 KB kept per image)."""
    from concurrent.futures import ThreadPoolExecutor

    rows = sorted(set(i.tolist()) | set(j.tolist()))
    with ThreadPoolExecutor(max_workers=DECODERS) as pool:
        cache = dict(zip(rows, pool.map(lambda row: squares(paths[row]), rows)))
    scored = []
    for a, b, s in zip(i.tolist(), j.tolist(), sims.tolist()):
        score, confirmed = confirm(s, cache[a], cache[b])
        scored.append(ScoredPair(a, b, float(s), score, confirmed))
    return scored


# ----------------------------------------------------------------------------- the findings

LOOKALIKES_LISTED = 50  # unconfirmed look-alikes listed at most (plain images can make thousands)


@dataclass(frozen=True)
class NearDuplicatePair:
    """Two images, their splits, the cosine of their embeddings and the thumbnail score; `confirmed`: a near-duplicate
    (else a look-alike the thumbnails contradict, not counted)."""

    a: str
    b: str
    split_a: str
    split_b: str
    similarity: float
    thumbnail: float
    confirmed: bool

    @property
    def cross_split(self) -> bool:
        return self.split_a != self.split_b

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NearDuplicatePair:
        return cls(
            str(data["a"]),
            str(data["b"]),
            str(data["split_a"]),
            str(data["split_b"]),
            float(data["similarity"]),
            float(data["thumbnail"]),
            bool(data["confirmed"]),
        )


@dataclass(frozen=True)
class DuplicateCluster:
    """Images connected by confirmed pairs (a copy of a copy is in its source's cluster), and the split of each."""

    paths: tuple[str, ...]
    splits: tuple[str, ...]

    @property
    def cross_split(self) -> bool:
        return len(set(self.splits)) > 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DuplicateCluster:
        return cls(tuple(str(p) for p in data["paths"]), tuple(str(s) for s in data["splits"]))


@dataclass(frozen=True)
class NearDuplicates:
    """Confirmed near-duplicate pairs (highest similarity first, then the look-alikes) and their clusters."""

    pairs: tuple[NearDuplicatePair, ...]
    clusters: tuple[DuplicateCluster, ...]
    candidates: int  # pairs whose cosine reached GREY (each had its thumbnails compared)
    lookalikes: int  # unconfirmed candidates at LOOKALIKE or above (at most LOOKALIKES_LISTED are in `pairs`)

    @property
    def confirmed(self) -> tuple[NearDuplicatePair, ...]:
        return tuple(p for p in self.pairs if p.confirmed)

    @property
    def leakage(self) -> int:
        """Confirmed pairs across splits."""
        return sum(p.cross_split for p in self.confirmed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "leakage": self.leakage,
            "confirmed": len(self.confirmed),
            "candidates": self.candidates,
            "lookalikes": self.lookalikes,
            "thresholds": {
                "cosine": GREY,
                "thumbnail": PIXEL,
                "shifted_cosine": SHIFTED_COSINE,
                "shifted_thumbnail": SHIFTED_PIXEL,
                "lookalike": LOOKALIKE,
            },
            "tolerates": (
                "resized, recompressed, brightness/colour/contrast changes, crops keeping 75-100% of each side, "
                "mirrored (counted as duplicates); not rotations"
            ),
            "pairs": [asdict(p) | {"cross_split": p.cross_split} for p in self.pairs],
            "clusters": [
                {"paths": list(c.paths), "splits": list(c.splits), "cross_split": c.cross_split} for c in self.clusters
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NearDuplicates:
        """What `to_dict` wrote (its counts and thresholds are derived, not read)."""
        return cls(
            tuple(NearDuplicatePair.from_dict(p) for p in data["pairs"]),
            tuple(DuplicateCluster.from_dict(c) for c in data["clusters"]),
            int(data["candidates"]),
            int(data["lookalikes"]),
        )


def find_near_duplicates(
    paths: Sequence[str],
    splits: Sequence[str],
    features: np.ndarray,
    *,
    squares: Callable[[str], np.ndarray | None] = pixels.grey_square,
    across_only: bool = False,
    per_split: int = PER_SPLIT,
) -> NearDuplicates:
    """Near-duplicates among the images (`paths[i]` in split `splits[i]` has embedding `features[i]`); `across_only`:
    only pairs across splits (leakage), each image's `per_split` nearest images of every other split examined."""
    names = sorted(set(splits))
    split_ids = np.array([names.index(s) for s in splits], dtype=np.int64)
    i, j, s = similar_pairs(features, split_ids, GREY, per_group=per_split, across_only=across_only)
    scored = score_pairs(paths, i, j, s, squares=squares)
    confirmed = [p for p in scored if p.confirmed]
    lookalikes = [p for p in scored if not p.confirmed and p.similarity >= LOOKALIKE]

    def pair(p: ScoredPair) -> NearDuplicatePair:
        return NearDuplicatePair(
            paths[p.a], paths[p.b], splits[p.a], splits[p.b], round(p.similarity, 4), round(p.thumbnail, 4), p.confirmed
        )

    groups = clusters_of(len(paths), np.array([p.a for p in confirmed], int), np.array([p.b for p in confirmed], int))
    return NearDuplicates(
        tuple(pair(p) for p in confirmed + lookalikes[:LOOKALIKES_LISTED]),
        tuple(DuplicateCluster(tuple(paths[k] for k in g), tuple(splits[k] for k in g)) for g in groups),
        len(scored),
        len(lookalikes),
    )
