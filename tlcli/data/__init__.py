"""Stage 2, the data: listing files (`listing`, `splits`), decoding them once (`images`,
`screening`, `decoded`), batches for Keras (`batches`), and what is wrong with a
folder (`problems`, the analysis behind `tlcli check`), groups kept on one side of a split (`groups`), a folder at a
glance and the starting config `tlcli init` writes for it (`survey`, `starter`)."""

from typing import TYPE_CHECKING

from tlcli.lazy import lazy_exports

_PUBLIC = {
    "tlcli.data.batches": ("ArrayBatches", "array_batches", "class_weights", "encode_targets", "make_dataset"),
    "tlcli.data.decoded": ("DecodedImages", "ScreenedSplit", "SkippedFile", "decode_samples"),
    "tlcli.data.groups": ("CrossingGroup", "crossing_groups", "group_folds", "groups_of"),
    "tlcli.data.images": ("ImageDecodeError", "ImageInfo", "decode_image"),
    "tlcli.data.listing": ("collect_images", "list_class_files"),
    "tlcli.data.problems": ("CheckReport", "DataProblems", "check_dataset", "find_problems"),
    "tlcli.data.splits": ("DataSplits", "Sample", "discover_splits", "hash_split", "split_bucket"),
    "tlcli.data.starter": ("StarterChoices", "starter_config"),
    "tlcli.data.survey": ("FolderSurvey", "ImageSizes", "survey_folder"),
}
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)

if TYPE_CHECKING:
    from tlcli.data.batches import ArrayBatches, array_batches, class_weights, encode_targets, make_dataset
    from tlcli.data.decoded import DecodedImages, ScreenedSplit, SkippedFile, decode_samples
    from tlcli.data.groups import CrossingGroup, crossing_groups, group_folds, groups_of
    from tlcli.data.images import ImageDecodeError, ImageInfo, decode_image
    from tlcli.data.listing import collect_images, list_class_files
    from tlcli.data.problems import CheckReport, DataProblems, check_dataset, find_problems
    from tlcli.data.splits import DataSplits, Sample, discover_splits, hash_split, split_bucket
    from tlcli.data.starter import StarterChoices, starter_config
    from tlcli.data.survey import FolderSurvey, ImageSizes, survey_folder

__all__ = [
    "ArrayBatches",
    "CheckReport",
    "CrossingGroup",
    "DataProblems",
    "DataSplits",
    "DecodedImages",
    "FolderSurvey",
    "ImageDecodeError",
    "ImageSizes",
    "ImageInfo",
    "Sample",
    "ScreenedSplit",
    "SkippedFile",
    "StarterChoices",
    "array_batches",
    "check_dataset",
    "class_weights",
    "collect_images",
    "crossing_groups",
    "decode_image",
    "decode_samples",
    "discover_splits",
    "encode_targets",
    "find_problems",
    "group_folds",
    "groups_of",
    "hash_split",
    "list_class_files",
    "make_dataset",
    "split_bucket",
    "starter_config",
    "survey_folder",
]
