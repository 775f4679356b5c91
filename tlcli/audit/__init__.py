"""Stage 6.5, data you can trust: what a pretrained base's embeddings tell about a labelled folder.

Near-duplicates within and across splits (`neighbours`), likely label errors from out-of-fold
probabilities (`labels`), and per-class learning curves that say which classes need more images
(`curve`). Embeddings come from the same feature cache training uses (`embed`); `audit_dataset`
(`api`) runs them all, `write_check_folder` (`report`) writes what they found,
and `init_config` (`starter`) writes a starting config for a folder (`tlcli init`).
"""

from tlcli.audit.api import AUDIT_VERSION, audit_dataset, audit_embeddings, audit_fingerprint
from tlcli.audit.curve import ClassCurve, LearningCurve, learning_curve, plot_learning_curve
from tlcli.audit.embed import Embeddings, SplitEmbeddings, embed_splits, embedding_config
from tlcli.audit.labels import LabelSuspect, LabelSuspects, OutOfFold, find_label_suspects, out_of_fold_probabilities
from tlcli.audit.neighbours import (
    DuplicateCluster,
    NearDuplicatePair,
    NearDuplicates,
    brute_force_pairs,
    find_near_duplicates,
    similar_pairs,
)
from tlcli.audit.report import AuditReport, SuspectFindings, SuspectRow, read_audit_report, write_check_folder
from tlcli.audit.starter import InitResult, advice_from_curve, init_config

__all__ = [
    "AUDIT_VERSION",
    "AuditReport",
    "ClassCurve",
    "DuplicateCluster",
    "Embeddings",
    "InitResult",
    "LabelSuspect",
    "LabelSuspects",
    "LearningCurve",
    "NearDuplicatePair",
    "NearDuplicates",
    "OutOfFold",
    "SplitEmbeddings",
    "SuspectFindings",
    "SuspectRow",
    "advice_from_curve",
    "audit_dataset",
    "audit_embeddings",
    "audit_fingerprint",
    "brute_force_pairs",
    "embed_splits",
    "embedding_config",
    "find_label_suspects",
    "find_near_duplicates",
    "init_config",
    "learning_curve",
    "out_of_fold_probabilities",
    "plot_learning_curve",
    "read_audit_report",
    "similar_pairs",
    "write_check_folder",
]
