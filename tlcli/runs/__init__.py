"""Stage 3, the run folder as storage: atomic files (`atomic`), the folder itself (`folder`),
its records (`records`: run.json, model.json, labels.json; `metrics`: metrics.json),
resumable checkpoints (`checkpoints`), provenance (`provenance`), how a run ends
(`lifecycle`) and `tlcli runs` (`listing`)."""

from tlcli.runs.atomic import (
    atomic_folder,
    atomic_path,
    read_json,
    save_model_atomic,
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)
from tlcli.runs.folder import (
    RUN_FILES,
    TRUST_FILE,
    RunLock,
    create_run_dir,
    create_stamped_dir,
    is_complete,
    newest_run,
    require_model,
    resolve_run,
)
from tlcli.runs.listing import RunSummary, list_runs, summarize_run
from tlcli.runs.metrics import CacheUse, Metrics, TrainResult
from tlcli.runs.records import (
    ModelInfo,
    ResumeEntry,
    RunRecord,
    finish_run,
    read_labels,
    read_model_info,
    read_run_record,
    resume_run,
    start_run,
)

__all__ = [
    "RUN_FILES",
    "TRUST_FILE",
    "CacheUse",
    "Metrics",
    "ModelInfo",
    "ResumeEntry",
    "RunLock",
    "RunRecord",
    "RunSummary",
    "TrainResult",
    "atomic_folder",
    "atomic_path",
    "create_run_dir",
    "create_stamped_dir",
    "finish_run",
    "is_complete",
    "list_runs",
    "newest_run",
    "read_json",
    "read_labels",
    "read_model_info",
    "read_run_record",
    "require_model",
    "resolve_run",
    "resume_run",
    "save_model_atomic",
    "start_run",
    "summarize_run",
    "write_bytes_atomic",
    "write_csv_atomic",
    "write_json_atomic",
    "write_text_atomic",
]
