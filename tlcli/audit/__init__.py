"""Stage 6.5, data you can trust: what a pretrained base's embeddings tell about a labelled folder.

Near-duplicates within and across splits (`neighbours`), likely label errors from out-of-fold
probabilities (`labels`), and per-class learning curves that say which classes need more images
(`curve`). Embeddings come from the same feature cache training uses (`embed`).
"""

__all__: list[str] = []
